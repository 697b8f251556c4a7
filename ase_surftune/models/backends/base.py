"""The common interface every uMLIP family adapter implements.

An adapter owns one ``torch.nn.Module`` and knows how to

* turn an :class:`ase.Atoms` into the backend's graph (``featurize``) — done once
  per structure and cacheable across training epochs;
* collate many graphs into a batch and run a differentiable forward pass
  (``forward``) that returns total energies (eV), forces (eV/Å) and stresses
  (eV/Å³, ASE sign convention) for a chosen head;
* list its heads, supported elements, cutoff and an ordered list of parameter
  *blocks* (input embedding → interactions → readouts) for frozen fine-tuning;
* serialise itself into a payload for :mod:`ase_surftune.models.bundle`.

Payload contract (every adapter, every backend): :meth:`ModelAdapter.to_payload`
returns a ``dict`` whose values are JSON-able — ``str``, ``int``, ``float``, ``bool``,
``None``, ``list`` and ``dict`` with ``str`` keys, nested freely — except under the
top-level key ``"state_dict"``, which is a ``dict[str, torch.Tensor]``. It holds the
``"backend"`` name. :meth:`ModelAdapter.from_payload` rebuilds an identical adapter from
that dict (with the backend's own constructors: nothing in a payload names code to
import or run). Bundles store the JSON part as JSON and the state dict as safetensors,
so loading never unpickles; :meth:`Bundle.save <ase_surftune.models.bundle.Bundle.save>`
enforces the contract with :func:`check_payload`.

Everything above the adapters (calculator, fine-tuning loop, evaluation) only talks
to this interface, so CHGNet and MACE are compared on equal terms.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from ase_surftune.core.errors import HeadError, InvalidStructureError, UnsupportedElementError


@dataclass(frozen=True)
class Block:
    """A named, ordered group of parameters (e.g. ``"embedding"``, ``"interaction_0"``)."""

    name: str
    parameters: tuple[tuple[str, torch.nn.Parameter], ...]

    @property
    def n_params(self) -> int:
        """Number of scalar parameters in the block."""
        return int(sum(p.numel() for _, p in self.parameters))

    @property
    def parameter_names(self) -> list[str]:
        return [n for n, _ in self.parameters]


@dataclass
class Prediction:
    """Batched model output as NumPy arrays.

    Attributes:
        energy: (n_structures,) total energies in eV.
        forces: list of (n_atoms_i, 3) arrays in eV/Å.
        stress: (n_structures, 3, 3) stresses in eV/Å³ (ASE sign), or ``None``.
        n_atoms: (n_structures,) atom counts.
    """

    energy: np.ndarray
    forces: list[np.ndarray]
    stress: np.ndarray | None
    n_atoms: np.ndarray

    def __len__(self) -> int:
        return len(self.energy)


class ModelAdapter(ABC):
    """Base class of backend adapters. See the module docstring for the contract."""

    backend: ClassVar[str] = ""
    #: dtypes the backend can run in.
    supported_dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.float64)
    #: whether the backend needs a periodic cell (CHGNet does, MACE does not).
    needs_cell: ClassVar[bool] = False
    #: whether the stress comes out of the forces' backward pass at little extra cost
    #: (M3GNet): the calculator then computes it with the forces for fully periodic
    #: cells, so that a later ``get_stress`` does not repeat the whole pass.
    stress_with_forces: ClassVar[bool] = False
    #: a DistributedDataParallel wrapper of :attr:`model` during data-parallel training;
    #: ``forward`` routes through it so gradients are averaged over ranks.
    ddp: torch.nn.Module | None = None

    def __init__(self, model: torch.nn.Module, name: str, device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        if dtype not in self.supported_dtypes:
            raise ValueError(
                f"{self.backend} does not support dtype={dtype}; "
                f"supported: {[str(d) for d in self.supported_dtypes]}"
            )
        self.model = model
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.model.to(device=self.device)

    # ------------------------------------------------------------------ metadata
    @property
    @abstractmethod
    def heads(self) -> list[str]:
        """Names of the model's readout heads, in model order."""

    @property
    def default_head(self) -> str:
        """Head used when none is given: the first (foundation) head."""
        return self.heads[0]

    @property
    @abstractmethod
    def atomic_numbers(self) -> list[int]:
        """Atomic numbers the model covers, ascending."""

    @property
    def elements(self) -> list[str]:
        """Chemical symbols the model covers, by ascending Z."""
        return [chemical_symbols[z] for z in self.atomic_numbers]

    @property
    @abstractmethod
    def r_max(self) -> float:
        """Interaction cutoff in Å."""

    @property
    def n_params(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    @abstractmethod
    def blocks(self) -> list[Block]:
        """Ordered parameter groups from the input embedding to the readouts.

        Every trainable parameter of :attr:`model` belongs to exactly one block.
        """

    def describe(self) -> dict[str, Any]:
        """Plain-dict summary (name, backend, heads, elements, r_max, dtype, device, blocks)."""
        return {
            "name": self.name,
            "backend": self.backend,
            "heads": self.heads,
            "default_head": self.default_head,
            "elements": self.elements,
            "r_max": self.r_max,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "n_params": self.n_params,
            "blocks": [{"name": b.name, "n_params": b.n_params} for b in self.blocks()],
        }

    # ------------------------------------------------------------------ checks
    def resolve_head(self, head: str | None) -> str:
        """Return ``head`` (or the default head) after checking it exists.

        Raises:
            HeadError: the head is unknown; the message lists the valid heads.
        """
        if head is None:
            return self.default_head
        if head not in self.heads:
            raise HeadError(f"Unknown head {head!r} for model {self.name!r}; "
                            f"valid heads: {self.heads}")
        return head

    def check_atoms(self, atoms: Atoms) -> None:
        """Raise a clear error if ``atoms`` cannot be evaluated by this model.

        Rejects NaN/inf positions, empty structures, a missing cell where the backend
        needs one, uncovered elements, and atoms closer than
        :data:`ase_surftune.data.MIN_INTERATOMIC_DISTANCE` (0.5 Å; models return NaN or
        meaningless numbers on overlapping atoms).
        """
        pos = atoms.get_positions()
        if not np.all(np.isfinite(pos)):
            bad = np.where(~np.isfinite(pos).all(axis=1))[0].tolist()
            raise InvalidStructureError(
                f"Non-finite (NaN/inf) positions for atom indices {bad[:10]} in "
                f"{atoms.get_chemical_formula()}")
        if len(atoms) == 0:
            raise InvalidStructureError("Empty Atoms object (0 atoms)")
        if self.needs_cell and (atoms.cell.rank < 3 or abs(atoms.cell.volume) < 1e-6):
            raise InvalidStructureError(
                f"{self.backend} needs a 3D periodic cell, but {atoms.get_chemical_formula()} "
                f"has cell {atoms.cell.cellpar().round(3).tolist()}; set atoms.cell (add vacuum "
                f"with atoms.center(vacuum=...)) before evaluating")
        from ase_surftune.data import check_min_distance

        check_min_distance(atoms, atoms.get_chemical_formula(), error=InvalidStructureError)
        allowed = set(self.atomic_numbers)
        missing = sorted({int(z) for z in atoms.numbers} - allowed)
        if missing:
            raise UnsupportedElementError(
                f"Model {self.name!r} does not cover element(s) "
                f"{[chemical_symbols[z] for z in missing]} found in "
                f"{atoms.get_chemical_formula()}; it covers {len(allowed)} elements")

    # ------------------------------------------------------------------ compute
    @abstractmethod
    def featurize(self, atoms: Atoms) -> Any:
        """Convert one structure into the backend's graph on CPU (cacheable)."""

    @abstractmethod
    def forward(self, graphs: Sequence[Any], head: str | None = None, *,
                compute_stress: bool = False, training: bool = False) -> dict[str, torch.Tensor]:
        """Differentiable forward pass over a list of featurized structures.

        Returns a dict with ``energy`` (B,) eV, ``forces`` (N, 3) eV/Å (concatenated),
        ``n_atoms`` (B,) and, if asked, ``stress`` (B, 3, 3) eV/Å³.
        With ``training=True`` the force graph is kept so a force loss can backpropagate.
        """

    #: atoms per batch used by ``batch_size="auto"`` on CPU (GPU: from free memory).
    #: On CPU the models are compute-bound, so large batches do not pay (see
    #: benchmarks/RESULTS.md); backends lower this where batching even slows down.
    cpu_atoms_per_batch: ClassVar[int] = 512
    #: rough GPU memory per atom of a forward+force pass, bytes (conservative)
    gpu_bytes_per_atom: ClassVar[int] = 2_000_000

    def auto_atoms_per_batch(self) -> int:
        """Atom budget of one batch for ``batch_size="auto"``.

        CPU: :attr:`cpu_atoms_per_batch` (larger batches give no speed-up there).
        CUDA: half of the free device memory divided by :attr:`gpu_bytes_per_atom`.
        """
        if self.device.type == "cuda" and torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(self.device)
            return max(64, int(0.5 * free / self.gpu_bytes_per_atom))
        return self.cpu_atoms_per_batch

    def plan_batches(self, atoms_list: Sequence[Atoms], batch_size: int | str = 16,
                     max_atoms: int | None = None) -> list[list[int]]:
        """Indices of each batch: fixed ``batch_size``, or ``"auto"`` by an atom budget."""
        return self.plan_batches_by_size([len(a) for a in atoms_list], batch_size, max_atoms)

    def plan_batches_by_size(self, n_atoms: Sequence[int], batch_size: int | str = 16,
                             max_atoms: int | None = None) -> list[list[int]]:
        """:meth:`plan_batches` from the structures' atom counts alone."""
        if batch_size == "auto":
            budget = max_atoms or self.auto_atoms_per_batch()
            batches: list[list[int]] = [[]]
            count = 0
            for i, n in enumerate(n_atoms):
                if batches[-1] and count + n > budget:
                    batches.append([])
                    count = 0
                batches[-1].append(i)
                count += n
            return [b for b in batches if b]
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
        n = len(n_atoms)
        return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]

    def _forward_backoff(self, graphs: list[Any], head: str, compute_stress: bool
                         ) -> list[dict[str, torch.Tensor]]:
        """Forward a batch; on out-of-memory split it in halves and retry."""
        try:
            return [self.forward(graphs, head, compute_stress=compute_stress)]
        except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            if len(graphs) == 1:
                raise MemoryError(f"A single structure does not fit in memory on "
                                  f"{self.device}: {exc}") from exc
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(graphs) // 2
            return (self._forward_backoff(graphs[:half], head, compute_stress)
                    + self._forward_backoff(graphs[half:], head, compute_stress))

    def predict(self, atoms_list: Sequence[Atoms], head: str | None = None, *,
                batch_size: int | str = "auto", compute_stress: bool = False,
                progress: bool = False, max_atoms_per_batch: int | None = None) -> Prediction:
        """Evaluate many structures in batches.

        Args:
            atoms_list: structures (any sizes, mixed compositions).
            head: head name, default :attr:`default_head`.
            batch_size: structures per forward pass, or ``"auto"``: batches filled up to
                an atom budget (:meth:`auto_atoms_per_batch`, or ``max_atoms_per_batch``).
                Either way a batch that runs out of memory is split and retried.
            compute_stress: also return stresses (eV/Å³).
            progress: show a tqdm progress bar.
        """
        head = self.resolve_head(head)
        atoms_list = list(atoms_list)
        for a in atoms_list:
            self.check_atoms(a)
        plan = self.plan_batches(atoms_list, batch_size, max_atoms_per_batch)
        energies: list[np.ndarray] = []
        forces: list[np.ndarray] = []
        stresses: list[np.ndarray] = []
        iterator: Any = plan
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(plan, desc=f"predict[{self.name}:{head}]", unit="batch")
        self.model.eval()
        for idx in iterator:
            chunk = [atoms_list[i] for i in idx]
            graphs = [self.featurize(a) for a in chunk]
            outs = self._forward_backoff(graphs, head, compute_stress)
            e = torch.cat([o["energy"] for o in outs]).detach().cpu().double().numpy()
            f = torch.cat([o["forces"] for o in outs]).detach().cpu().double().numpy()
            counts = [len(a) for a in chunk]
            energies.append(e)
            forces.extend(np.split(f, np.cumsum(counts)[:-1]))
            if compute_stress:
                stresses.append(torch.cat([o["stress"] for o in outs]).detach().cpu()
                                .double().numpy())
        return Prediction(
            energy=np.concatenate(energies) if energies else np.zeros(0),
            forces=forces,
            stress=np.concatenate(stresses) if compute_stress and stresses else None,
            n_atoms=np.asarray([len(a) for a in atoms_list], dtype=int),
        )

    def _forward_module(self) -> torch.nn.Module:
        return self.ddp if self.ddp is not None else self.model

    def wrap_ddp(self) -> None:
        """Wrap :attr:`model` in DistributedDataParallel (process group must exist)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index or 0] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.model, device_ids=ids,
                                           find_unused_parameters=True)

    def unwrap_ddp(self) -> None:
        self.ddp = None

    # ------------------------------------------------------------------ heads
    @abstractmethod
    def add_head(self, name: str, from_head: str | None = None) -> None:
        """Add head ``name`` whose readout starts as an exact copy of ``from_head``'s.

        Existing heads stay bit-identical. Raises HeadError if ``name`` exists.
        """

    def export_head(self, head: str, path: str | Path,
                    energy_shifts: dict[str, float] | None = None) -> Path:
        """Write ``head`` as a single-head model file in the backend's own format.

        Args:
            head: the head to export.
            path: output file (written atomically).
            energy_shifts: ``{symbol: eV/atom}`` folded into the exported model's
                per-element reference energies (a bundle's alignment shifts).

        Raises:
            HeadError: unknown head, or the backend has no single-head file format.
        """
        raise HeadError(f"exporting a head is not supported for the {self.backend} backend "
                        f"(supported: chgnet, mace)")

    # ------------------------------------------------------------------ persistence
    @abstractmethod
    def to_payload(self) -> dict[str, Any]:
        """A dict from which :meth:`from_payload` rebuilds an identical adapter.

        JSON-able values only, except ``"state_dict"``: ``dict[str, torch.Tensor]``
        (see the module docstring and :func:`check_payload`).
        """

    @classmethod
    @abstractmethod
    def from_payload(cls, payload: dict[str, Any], device: str = "cpu",
                     dtype: torch.dtype | None = None) -> ModelAdapter:
        """Rebuild an adapter saved by :meth:`to_payload`."""

    def clone(self) -> ModelAdapter:
        """A deep copy (independent weights) of this adapter."""
        return copy.deepcopy(self)

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> ModelAdapter:
        if device is not None:
            self.device = torch.device(device)
            self.model.to(device=self.device)
        if dtype is not None:
            if dtype not in self.supported_dtypes:
                raise ValueError(f"{self.backend} does not support dtype={dtype}")
            self.dtype = dtype
            self.model.to(dtype=dtype)
        return self


_JSON_SCALARS = (str, int, float, bool, type(None))


def check_payload(payload: dict[str, Any]) -> None:
    """Enforce the payload contract of :meth:`ModelAdapter.to_payload`.

    Raises:
        TypeError: naming the first offending key path and its type.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"an adapter payload must be a dict, got {type(payload).__name__}")
    if not isinstance(payload.get("backend"), str):
        raise TypeError("an adapter payload must name its 'backend' (a str)")
    state = payload.get("state_dict")
    if state is not None:
        if not isinstance(state, dict):
            raise TypeError(f"payload['state_dict'] must be a dict of tensors, got "
                            f"{type(state).__name__}")
        for k, v in state.items():
            if not isinstance(k, str) or not isinstance(v, torch.Tensor):
                raise TypeError(f"payload['state_dict'][{k!r}] must map a str to a "
                                f"torch.Tensor, got {type(k).__name__} -> {type(v).__name__}")

    def walk(obj: Any, where: str) -> None:
        if isinstance(obj, _JSON_SCALARS) and not isinstance(obj, np.generic):
            return
        if isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, f"{where}[{i}]")
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                if not isinstance(k, str):
                    raise TypeError(f"payload{where} has a non-str key {k!r}")
                walk(v, f"{where}[{k!r}]")
            return
        raise TypeError(f"payload{where} is a {type(obj).__module__}.{type(obj).__name__}; "
                        f"adapter payloads may hold only str/int/float/bool/None/list/dict "
                        f"(tensors only under 'state_dict')")

    for key, value in payload.items():
        if key != "state_dict":
            walk(value, f"[{key!r}]")


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    msg = str(exc).lower()
    return "out of memory" in msg or "can't allocate memory" in msg
