"""The named stages of :func:`~ase_surftune.training.api.finetune`.

``finetune`` is this pipeline, run while the output folder is locked::

    load_data → build_model → featurize → align_references → train_model
              → assemble_bundle → score → collect_metrics → write_outputs

Each stage is a small typed function of the run's :class:`RunSpec` and the results of
earlier stages (dataclasses), so no stage reaches back into another's locals.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_surftune.core.errors import ConfigError, HeadError, TrainingDivergedError
from ase_surftune.training.config import FinetuneConfig
from ase_surftune.training.datasets import RunData
from ase_surftune.training.loop import LoopResult, train_loop
from ase_surftune.training.losses import Sample, predict_samples
from ase_surftune.training.scoring import (
    bundle_errors,
    featurize_samples,
    residual_shifts,
    retarget,
)
from ase_surftune.training.strategies import Strategy

__all__ = ["RunSpec", "ModelSetup", "Features", "Alignment", "Trained", "build_model",
           "featurize", "align_references", "train_model", "assemble_bundle", "score",
           "collect_metrics", "check_finite_state"]

log = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """What a run is: validated config, output folder, resume state, ranks, debug stop."""

    cfg: FinetuneConfig
    out_dir: Path
    checkpoint: dict[str, Any] | None = None
    run_id: str | None = None
    dist: Any = None
    stop_after_step: int | None = None
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def main_rank(self) -> bool:
        return self.dist is None or self.dist.is_main

    @property
    def vbs(self) -> int | str:
        """Validation/evaluation batch size (structures, or ``"auto"``)."""
        return self.cfg.valid_batch_size or "auto"


@dataclass
class ModelSetup:
    """The base bundle, the model to train (a copy), its head and trainable parameters."""

    bundle0: Any
    base: Any
    base_head: str
    model: Any
    head: str
    strategy: Strategy
    params: list[tuple[str, torch.nn.Parameter]]
    report: dict[str, Any]


@dataclass
class Features:
    """Graphs of each set for the trained model and (when it cannot share them) the base."""

    train: list[Sample]
    valid: list[Sample]
    test: list[Sample]
    base_train: list[Sample]
    base_valid: list[Sample]
    base_test: list[Sample]
    seconds: float


@dataclass
class Alignment:
    """Per-element reference energies (eV/atom) and the errors before training."""

    shifts: dict[str, float]
    zero_shot_shifts: dict[str, float]
    fit_report: dict[str, Any]
    zero_shot: dict[str, dict[str, Any]]
    initial: dict[str, dict[str, Any]]
    base_train_energies: np.ndarray
    base_train_forces: list[np.ndarray]


@dataclass
class Trained:
    """The training loop's result (gradient strategies) or the fitted corrections."""

    loop: LoopResult | None = None
    corrections: dict[str, Any] = field(default_factory=dict)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.loop.history if self.loop is not None else []


def _sets(data: RunData, *samples: list[Sample]):
    """``(name, samples, structures)`` of the non-empty valid and test sets."""
    return [(n, s, a) for n, s, a in zip(("valid", "test"), samples, (data.valid, data.test))
            if a]


def build_model(cfg: FinetuneConfig, strategy: Strategy, data: RunData) -> ModelSetup:
    """Load the base model, resolve the head, check elements, let the strategy build the
    model to train and choose its parameters."""
    from ase_surftune.data import check_elements
    from ase_surftune.models.backends import load_model

    bundle0 = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    base = bundle0.adapter
    try:
        head = base.resolve_head(cfg.head)
    except HeadError as exc:
        raise ConfigError(f"Invalid fine-tuning config: head: {exc}") from None
    check_elements(data.all, base.elements, base.name)
    strategy.bind_data(data.train, data.valid, data.test)
    model = strategy.prepare(base, head)
    new_head = strategy.train_head(model, head)
    params = strategy.trainable_parameters(model)
    report = strategy.report(model)
    log.info("strategy %s: %d trainable, %d frozen parameters", cfg.strategy,
             report["parameters"]["trainable"], report["parameters"]["frozen"])
    return ModelSetup(bundle0=bundle0, base=base, base_head=head, model=model, head=new_head,
                      strategy=strategy, params=params, report=report)


def featurize(cfg: FinetuneConfig, setup: ModelSetup, data: RunData) -> Features:
    """Featurize every set once (graphs are reused by every epoch and evaluation)."""
    t0 = time.perf_counter()
    kw = {"exclude_fixed_atoms": cfg.exclude_fixed_atoms, "progress": cfg.progress}
    own = [featurize_samples(setup.model, x, desc=f"featurize {n}", **kw)
           for n, x in (("train", data.train), ("valid", data.valid), ("test", data.test))]
    if getattr(setup.strategy, "shares_graphs", True):
        base = own
    else:  # e.g. distillation: the base (teacher) cannot read the trained model's graphs
        base = [featurize_samples(setup.base, x, desc="featurize (base)", **kw)
                for x in (data.train, data.valid, data.test)]
    return Features(*own, *base, seconds=time.perf_counter() - t0)


def align_references(spec: RunSpec, setup: ModelSetup, data: RunData,
                     feats: Features) -> Alignment:
    """Zero-shot errors of the base model (shifts fitted on the training set), then the
    shifts of the strategy's starting model; the samples' targets are re-expressed."""
    from ase_surftune.models.bundle import Bundle

    cfg, vbs, h0 = spec.cfg, spec.vbs, setup.base_head
    e_base, f_base = predict_samples(setup.base, h0, feats.base_train, vbs)
    fit_report: dict[str, Any] = {}
    zs_shifts = (residual_shifts(data.train, e_base, report=fit_report) if cfg.align_energies
                 else dict(setup.bundle0.reference_energies.get(h0, {})))
    if fit_report.get("reason"):
        log.warning("reference-energy alignment: %s", fit_report["reason"])
    zs_bundle = Bundle(adapter=setup.base, reference_energies={h0: zs_shifts})
    zero_shot = {n: bundle_errors(zs_bundle, h0, s, a, vbs, cfg.exclude_fixed_atoms)
                 for n, s, a in _sets(data, feats.base_valid, feats.base_test)}
    keeps = setup.strategy.keeps_base_weights
    if spec.checkpoint is not None:
        shifts = dict(spec.checkpoint["reference_energies"])
    elif keeps or not cfg.align_energies:
        shifts = zs_shifts
    else:
        shifts = residual_shifts(data.train,
                                 predict_samples(setup.model, setup.head, feats.train, vbs)[0])
    for s, a in ((feats.train, data.train), (feats.valid, data.valid), (feats.test, data.test)):
        retarget(s, a, shifts)
    if shifts:
        log.info("reference-energy shifts (eV/atom) for head %s: %s", setup.head,
                 {k: round(v, 4) for k, v in shifts.items()})
    if keeps:
        initial = zero_shot
    else:  # the strategy's own starting point (e.g. the random scratch model)
        init_bundle = Bundle(adapter=setup.model, reference_energies={setup.head: shifts})
        initial = {n: bundle_errors(init_bundle, setup.head, s, a, vbs, cfg.exclude_fixed_atoms)
                   for n, s, a in _sets(data, feats.valid, feats.test)}
    return Alignment(shifts=shifts, zero_shot_shifts=zs_shifts, fit_report=fit_report,
                     zero_shot=zero_shot, initial=initial, base_train_energies=e_base,
                     base_train_forces=f_base)


def check_finite_state(state: dict[str, torch.Tensor], epoch: int) -> None:
    """Refuse to write a bundle from weights that hold NaN/inf."""
    bad = [k for k, v in state.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise TrainingDivergedError(
            f"the best model (epoch {epoch}) has non-finite weights in {len(bad)} tensor(s), "
            f"e.g. {bad[0]!r}; no bundle written. Lower optimizer.lr or set clip_grad")


def _train_gradient(spec: RunSpec, setup: ModelSetup, data: RunData, feats: Features,
                    align: Alignment) -> LoopResult:
    """The training loop on the strategy's parameters; the model ends with the best weights."""
    model = setup.model
    monitor = (None if data.monitor_idx is None or len(data.monitor_idx) == len(feats.valid)
               else [feats.valid[i] for i in data.monitor_idx])
    if spec.dist is not None:
        model.wrap_ddp()
    try:
        res = train_loop(model, setup.head, setup.params, feats.train, feats.valid, spec.cfg,
                         spec.out_dir, resume_from=spec.checkpoint,
                         extra_loss=setup.strategy.extra_loss(),
                         checkpoint_extra={"reference_energies": align.shifts,
                                           "run_id": spec.run_id,
                                           "train_hash": data.train_hash},
                         stop_after_step=spec.stop_after_step, dist=spec.dist,
                         monitor=monitor)
    finally:
        model.unwrap_ddp()
    check_finite_state(res.best_state, res.best_epoch)
    model.model.load_state_dict(res.best_state)
    return res


def train_model(spec: RunSpec, setup: ModelSetup, data: RunData, feats: Features,
                align: Alignment) -> Trained:
    """Gradient training (the loop) or, for ``linear``, the fitted correction."""
    if setup.strategy.trains:
        out = Trained(loop=_train_gradient(spec, setup, data, feats, align))
    else:
        out = Trained(corrections={setup.head: setup.strategy.fit_correction(
            spec, setup, data, feats, align)})
    for p in setup.model.model.parameters():
        p.requires_grad_(True)
    return out


def assemble_bundle(cfg: FinetuneConfig, setup: ModelSetup, data: RunData, align: Alignment,
                    trained: Trained) -> Any:
    """The trained model as a bundle; heads other than the trained one keep the base
    bundle's calibration, head info and provenance (multi-head)."""
    from ase_surftune.data import element_counts
    from ase_surftune.models.bundle import Bundle

    b0, head = setup.bundle0, setup.head
    keep = [h for h in setup.model.heads if h != head and h in setup.base.heads]
    bundle = Bundle(adapter=setup.model,
                    reference_energies={**{h: dict(b0.reference_energies[h]) for h in keep
                                           if h in b0.reference_energies},
                                        head: align.shifts},
                    corrections={**{h: b0.corrections[h] for h in keep if h in b0.corrections},
                                 **trained.corrections},
                    default_head=head)
    bundle.train_config = cfg.model_dump(mode="json")
    files = bundle.train_config.get("train_file")
    bundle.head_info = {
        **{h: dict(b0.head_info[h]) for h in keep if h in b0.head_info},
        **setup.strategy.head_info(),
        head: {"trained_on": files or "in-memory structures", "n_configs": len(data.train),
               "strategy": cfg.strategy, "element_counts": element_counts(data.train),
               "n_train": len(data.train), "train_hash": data.train_hash,
               "train_files": files}}
    bundle.provenance = {"base_model": setup.base.name, "strategy": cfg.strategy,
                         "dataset_hash": data.train_hash}
    return bundle


def score(spec: RunSpec, bundle: Any, head: str, data: RunData,
          feats: Features) -> dict[str, dict[str, Any]]:
    """Errors of the final bundle on the validation and test sets (eV/atom, eV/Å)."""
    return {n: bundle_errors(bundle, head, s, a, spec.vbs, spec.cfg.exclude_fixed_atoms)
            for n, s, a in _sets(data, feats.valid, feats.test)}


def collect_metrics(spec: RunSpec, setup: ModelSetup, data: RunData, feats: Features,
                    align: Alignment, trained: Trained,
                    finetuned: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The run's summary (``metrics["summary"]`` of metrics.json, ``Bundle.metrics``)."""
    cfg = spec.cfg
    metrics: dict[str, Any] = {
        "strategy": cfg.strategy, "backend": setup.model.backend,
        "base_model": setup.base.name, "head": setup.head, "n_train": len(data.train),
        "n_valid": len(data.valid), "n_test": len(data.test), "zero_shot": align.zero_shot,
        "initial": align.initial, "finetuned": finetuned, "reference_energies": align.shifts,
        "reference_energies_fit": align.fit_report or None, **setup.report,
        "validation_split": data.split_info, "early_stopping_monitors": data.monitor_desc,
        "featurize_time_s": round(feats.seconds, 3),
        "total_time_s": round(time.perf_counter() - spec.t_start, 3)}
    if trained.corrections:
        corr = trained.corrections[setup.head]
        metrics[getattr(corr, "metrics_key", "linear_correction")] = corr.to_dict()
        metrics["warnings"] = list(corr.info.get("warnings", []))
    if data.max_force_report is not None:
        metrics["max_force"] = data.max_force_report
    lr = trained.loop
    if lr is not None:
        metrics.update(best_epoch=lr.best_epoch, best_valid_loss=lr.best_valid_loss,
                       model_selection=lr.selected_by,
                       epochs_run=len(lr.history), stopped_early=lr.stopped_early,
                       n_steps=lr.n_steps, resumed_from=lr.resumed_from,
                       mean_epoch_time_s=float(np.mean([r["epoch_time_s"] for r in lr.history]))
                       if lr.history else None)
    return metrics


def forgetting(spec: RunSpec, setup: ModelSetup, data: RunData, align: Alignment,
               bundle: Any, finetuned: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Error-level forgetting of the base model's heads (properties: ``evaluation``)."""
    from ase_surftune.training.forgetting import describe_set, forgetting_report

    head = setup.head
    rep = forgetting_report(
        setup.bundle0, bundle, head_pairs=setup.strategy.head_pairs() or {head: head},
        target_head=head, options=spec.cfg.forgetting, elements=data.elements,
        target_before=align.zero_shot.get("valid") or align.zero_shot.get("test"),
        target_after=finetuned.get("valid") or finetuned.get("test"),
        target_set=describe_set(data.valid or data.test), output_dir=spec.out_dir,
        seed=spec.cfg.seed)
    log.info("forgetting: %s", rep["summary"])
    return rep


def write_outputs(spec: RunSpec, bundle: Any, metrics: dict[str, Any],
                  history: list[dict[str, Any]]) -> Path:
    """Bundle, ``config.yaml`` and the final ``metrics.csv``/``metrics.json`` (rank 0)."""
    import yaml

    from ase_surftune.core.io import atomic_write_text
    from ase_surftune.training.callbacks import write_metrics
    from ase_surftune.training.rundir import BUNDLE_NAME

    path = bundle.save(spec.out_dir / BUNDLE_NAME)
    atomic_write_text(spec.out_dir / "config.yaml",
                      yaml.safe_dump(spec.cfg.model_dump(mode="json"), sort_keys=False))
    write_metrics(history, spec.out_dir, {"summary": metrics})
    return path
