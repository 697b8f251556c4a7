"""Data-parallel fine-tuning with ``torch.distributed`` and ``DistributedDataParallel``.

Run under torchrun::

    torchrun --standalone --nproc_per_node=2 -m ase_surftune finetune cfg.yaml --distributed

Every rank featurizes the data and walks the *same* global batch sequence as a
single-process run; each global batch is split across ranks (``chunk[rank::world]``),
DDP averages the gradients, and each rank's loss is weighted by its share of the global
batch, so the update equals the single-process update with the same global batch.
Training metrics are summed over ranks; checkpoints, metrics and the bundle are written
by rank 0 only. CPU runs use the gloo backend, CUDA runs NCCL (one GPU per local rank).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as tdist

from ase_surftune.core.errors import ConfigError

T = TypeVar("T")

TORCHRUN_HINT = ("torchrun --standalone --nproc_per_node=N -m ase_surftune finetune "
                 "CONFIG.yaml --distributed")


@dataclass
class DistContext:
    """This process's place in the group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, chunk: Sequence[T]) -> tuple[list[T], float]:
        """This rank's part of a global batch and its loss weight.

        The weight ``world · n_local / n_global`` makes DDP's gradient average equal the
        global-batch mean. A rank left without structures (last, short batch) gets one
        structure with weight 0 so that every rank still joins the all-reduce.
        """
        local = list(chunk[self.rank::self.world_size])
        if not local:
            return [chunk[0]], 0.0
        return local, self.world_size * len(local) / len(chunk)

    def all_reduce_sum(self, values: dict[str, float]) -> dict[str, float]:
        """Sum a dict of floats over ranks (keys may differ between ranks)."""
        keys: list[Any] = [None] * self.world_size
        tdist.all_gather_object(keys, sorted(values))
        all_keys = sorted(set().union(*keys))
        t = torch.tensor([values.get(k, 0.0) for k in all_keys], dtype=torch.float64)
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return dict(zip(all_keys, t.tolist()))

    def any_rank(self, flag: bool, device: Any = "cpu") -> bool:
        """True if ``flag`` is set on any rank (one small all-reduce; every rank must call)."""
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        tdist.barrier()


def init_distributed(device: str = "cpu") -> DistContext:
    """Join the process group that torchrun set up (env RANK, WORLD_SIZE, LOCAL_RANK...).

    Raises:
        ConfigError: not launched by torchrun (no WORLD_SIZE in the environment).
    """
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise ConfigError(f"--distributed needs to run under torchrun, e.g. {TORCHRUN_HINT}")
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        v = os.environ.get(var)
        if v is not None and not v.strip().isdigit():
            raise ConfigError(f"environment variable {var}={v!r} is invalid: it must be a "
                              f"non-negative integer (torchrun sets it; unset it or launch "
                              f"with {TORCHRUN_HINT})")
    cuda = device.startswith("cuda")
    backend = "nccl" if cuda and torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend)
    return DistContext(rank=tdist.get_rank(), world_size=tdist.get_world_size(),
                       local_rank=local_rank, backend=backend)


def shutdown_distributed() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()
