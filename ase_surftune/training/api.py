"""``finetune(config)``: a pipeline of named stages (:mod:`ase_surftune.training.stages`).

data → model + strategy → featurize → align references → train → bundle → score → write.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ase import Atoms

from ase_surftune.core.errors import ConfigError
from ase_surftune.training import stages
from ase_surftune.training.checkpoint import load_checkpoint
from ase_surftune.training.config import FinetuneConfig, load_config
from ase_surftune.training.datasets import load_data, validate_in_memory
from ase_surftune.training.rundir import (  # noqa: F401  (old import paths)
    BUNDLE_NAME,
    CHECKPOINT_NAME,
    LOCK_FILE,
    RUN_FILE,
    RUN_FILES,
    claim_output_dir,
)
from ase_surftune.training.scoring import featurize_samples, residual_shifts
from ase_surftune.training.strategies import get_strategy

__all__ = ["finetune", "FinetuneResult", "featurize_samples"]

log = logging.getLogger(__name__)

#: old private names, kept for callers and tests that import them from here
_claim_output_dir = claim_output_dir
_residual_shifts = residual_shifts


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        bundle_path: the best model as a bundle (loads in ``SurfTuneCalculator``).
        output_dir: folder with checkpoint, metrics.csv/json, config.yaml, loss_curve.png.
        metrics: summary: ``zero_shot`` (base model, aligned), ``initial`` (the
            strategy's starting model: the random one for ``scratch``) and ``finetuned``
            errors on valid/test (energy eV/atom, forces eV/Å), reference-energy shifts,
            parameter counts, best epoch, timings.
        history: per-epoch metric rows (empty for ``linear``).
        config: the validated configuration.
    """

    bundle_path: Path
    output_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    config: FinetuneConfig | None = None

    def load_bundle(self, device: str = "cpu"):
        from ase_surftune.models.bundle import Bundle

        return Bundle.load(self.bundle_path, device=device)


def finetune(config: FinetuneConfig | dict[str, Any] | str | Path, *,
             train: Sequence[Atoms] | None = None, valid: Sequence[Atoms] | None = None,
             test: Sequence[Atoms] | None = None, stop_after_step: int | None = None,
             distributed: bool = False, **overrides: Any) -> FinetuneResult:
    """Fine-tune a model as described by ``config``; write the best model as a bundle.

    Args:
        config: a :class:`FinetuneConfig`, a dict, or a YAML file path.
        train, valid, test: labelled structures in memory (instead of ``train_file`` /
            ``valid_file`` / ``test_file``). Without validation structures,
            ``valid_fraction`` of ``train`` is split off (seeded).
        stop_after_step: debug hook that aborts with ``TrainingInterrupted`` after this
            many optimiser steps (simulates a kill; resume with ``resume=True``).
        distributed: data-parallel training under torchrun (DDP; gloo on CPU, NCCL on
            CUDA). Every rank returns the result; only rank 0 writes files.
        **overrides: config keys that override ``config`` (e.g. ``epochs=3``).

    Returns:
        :class:`FinetuneResult` with the bundle path and the metrics.

    Raises:
        ConfigError: invalid configuration (all problems in one message), before any work.
        DataError / UnsupportedElementError: unusable data (in-memory structures get the
            same checks as files: finite labels, forces of shape (n, 3), no overlapping atoms).
        OutputExistsError: ``output_dir`` holds a run and neither ``resume`` nor
            ``overwrite`` is set. LockedError: another process writes to ``output_dir``.
        TrainingDivergedError: a non-finite loss (names the epoch and step); no bundle.
    """
    t_start = time.perf_counter()
    cfg = load_config(config, **overrides)
    dist = None
    if distributed:
        cfg, dist = _init_distributed(cfg)
    if cfg.train_file is None and train is None:
        raise ConfigError("Invalid fine-tuning config: train_file: required (or pass "
                          "train=[...] to finetune())")
    if train is not None or valid is not None or test is not None:
        validate_in_memory(train, valid, test)  # the checks read_labelled does for files
    spec = stages.RunSpec(cfg=cfg, out_dir=Path(cfg.output_dir), dist=dist,
                          stop_after_step=stop_after_step, t_start=t_start)
    with contextlib.ExitStack() as stack:
        if spec.main_rank:  # rank 0 owns the folder: lock, refuse/move aside, check resume
            spec.run_id, spec.checkpoint = claim_output_dir(cfg, spec.out_dir, stack)
        elif cfg.resume and (spec.out_dir / CHECKPOINT_NAME).is_file():
            spec.checkpoint = load_checkpoint(spec.out_dir / CHECKPOINT_NAME)
        return _run(spec, train, valid, test)


def _init_distributed(cfg: FinetuneConfig) -> tuple[FinetuneConfig, Any]:
    from ase_surftune.training.distributed import init_distributed

    dist = init_distributed(cfg.device)
    if dist.world_size > 1 and cfg.batch_size < dist.world_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is smaller than the number of "
                          f"ranks ({dist.world_size}); the global batch is split across ranks")
    if cfg.device.startswith("cuda"):
        cfg = cfg.model_copy(update={"device": f"cuda:{dist.local_rank}"})
    return cfg, dist


def _run(spec: stages.RunSpec, train: Sequence[Atoms] | None, valid: Sequence[Atoms] | None,
         test: Sequence[Atoms] | None) -> FinetuneResult:
    """The stages, in order, while the output folder is locked."""
    cfg = spec.cfg
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    strategy = get_strategy(cfg.strategy, cfg)
    data = load_data(cfg, train, valid, test, spec.checkpoint, spec.out_dir)
    setup = stages.build_model(cfg, strategy, data)
    feats = stages.featurize(cfg, setup, data)
    align = stages.align_references(spec, setup, data, feats)
    trained = stages.train_model(spec, setup, data, feats, align)
    bundle = stages.assemble_bundle(cfg, setup, data, align, trained)
    finetuned = stages.score(spec, bundle, setup.head, data, feats)
    bundle.metrics = metrics = stages.collect_metrics(spec, setup, data, feats, align,
                                                      trained, finetuned)
    path = spec.out_dir / BUNDLE_NAME
    if spec.main_rank:  # rank 0 writes the bundle, metrics and reports
        if cfg.forgetting.enabled:
            metrics["forgetting"] = stages.forgetting(spec, setup, data, align, bundle,
                                                      finetuned)
        path = stages.write_outputs(spec, bundle, metrics, trained.history)
    if spec.dist is not None:
        spec.dist.barrier()
    return FinetuneResult(bundle_path=path, output_dir=spec.out_dir, metrics=metrics,
                          history=trained.history, config=cfg)
