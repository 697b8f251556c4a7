"""``finetune(config)``: data → alignment → strategy → training loop → bundle."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.errors import ConfigError, DataError, HeadError
from ase_surftune.core.io import atomic_write_text
from ase_surftune.training.checkpoint import load_checkpoint
from ase_surftune.training.config import FinetuneConfig, load_config
from ase_surftune.training.loop import (
    LoopResult,
    Sample,
    plot_history,
    predict_samples,
    train_loop,
    write_metrics,
)
from ase_surftune.training.strategies import get_strategy

__all__ = ["finetune", "FinetuneResult", "featurize_samples"]

log = logging.getLogger(__name__)

BUNDLE_NAME = "model.stbundle"
CHECKPOINT_NAME = "checkpoint.pt"
#: run id and fingerprint of the run a folder holds (a checkpoint of another run is refused)
RUN_FILE = "run.json"
#: the lock file of an output folder (fcntl.flock; holds the owner's PID)
LOCK_FILE = ".surftune.lock"
#: files whose presence means a folder holds a run
RUN_FILES = (BUNDLE_NAME, CHECKPOINT_NAME, "metrics.json", "metrics.csv", "config.yaml",
             RUN_FILE)


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


# --------------------------------------------------------------------------- data helpers


def _read(cfg: FinetuneConfig, paths: Any) -> list[Atoms]:
    from ase_surftune.data import read_labelled

    return read_labelled([str(p) for p in (paths if isinstance(paths, list) else [paths])],
                         energy_key=cfg.energy_key, forces_key=cfg.forces_key,
                         stress_key=cfg.stress_key, group_key=cfg.group_key)


def _labels(atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
    from ase_surftune.data import get_labels

    return get_labels(atoms)


def _free_mask(atoms: Atoms) -> np.ndarray:
    from ase_surftune.data import free_atom_mask

    return free_atom_mask(atoms)


def featurize_samples(adapter, configs: Sequence[Atoms], shifts: dict[str, float] | None = None,
                      exclude_fixed_atoms: bool = False, progress: bool = False,
                      desc: str = "featurize") -> list[Sample]:
    """Featurize each structure once and attach targets in the model frame (E − Σδ)."""
    from tqdm.auto import tqdm

    shifts = shifts or {}
    out = []
    for atoms in tqdm(configs, desc=desc, disable=not progress, unit="struct"):
        adapter.check_atoms(atoms)
        e, f, s = _labels(atoms)
        shift = per_element_sum(shifts, atoms.numbers)
        out.append(Sample(
            graph=adapter.featurize(atoms), energy=float(e - shift),
            forces=torch.as_tensor(f, dtype=adapter.dtype), n_atoms=len(atoms),
            stress=None if s is None else torch.as_tensor(voigt_6_to_full_3x3_stress(s),
                                                          dtype=adapter.dtype),
            force_mask=torch.as_tensor(_free_mask(atoms)) if exclude_fixed_atoms else None,
            numbers=np.asarray(atoms.numbers)))
    return out


def _retarget(samples: list[Sample], configs: Sequence[Atoms], shifts: dict[str, float]) -> None:

    for s, atoms in zip(samples, configs):
        e = _labels(atoms)[0]
        s.energy = float(e - per_element_sum(shifts, atoms.numbers))


def _errors(configs: Sequence[Atoms], energies: np.ndarray, forces: Sequence[np.ndarray],
            exclude_fixed_atoms: bool) -> dict[str, float]:
    """MAE/RMSE of energy per atom (eV/atom) and force components (eV/Å), and the
    softening scale — the same definitions (:mod:`ase_surftune.core.metrics`) and the same
    energy reference (the bundle's stored shifts) as ``evaluate``'s default, so the two
    print the same numbers for the same model and frames."""
    from ase_surftune.core.metrics import mae_rmse, softening_stats

    de, fr, fm = [], [], []
    for atoms, e, f in zip(configs, energies, forces):
        e_ref, f_ref, _ = _labels(atoms)
        de.append((e - e_ref) / len(atoms))
        m = _free_mask(atoms) if exclude_fixed_atoms else slice(None)
        fr.append(np.asarray(f_ref)[m])
        fm.append(np.asarray(f)[m])
    e_mae, e_rmse = mae_rmse(de)
    df = np.concatenate([(b - a).ravel() for a, b in zip(fr, fm)]) if fr else np.zeros(0)
    f_mae, f_rmse = mae_rmse(df)
    soft = softening_stats(fr, fm)
    return {"n_structures": len(de), "energy_mae_per_atom": e_mae,
            "energy_rmse_per_atom": e_rmse, "forces_mae": f_mae, "forces_rmse": f_rmse,
            "softening_scale": soft["s_all"], "softening_scale_band": soft["s_band"],
            "softening_note": soft["note"]}


def _filter_max_force(cfg: FinetuneConfig, sets: dict[str, list[Atoms]]
                      ) -> tuple[dict[str, list[Atoms]], dict[str, Any] | None]:
    """Drop (or flag) frames whose largest reference atomic force exceeds ``max_force``;
    every such frame is logged and listed (JSON-able) for the metrics."""
    if cfg.max_force is None:
        return sets, None
    report: dict[str, Any] = {"threshold": cfg.max_force, "mode": cfg.max_force_mode,
                              "frames": []}
    out = {}
    for name, frames in sets.items():
        keep = []
        for i, a in enumerate(frames):
            f = _labels(a)[1]
            fmax = float(np.max(np.linalg.norm(f, axis=1))) if len(f) else 0.0
            if fmax > cfg.max_force:
                src = str(a.info.get("source", f"{name}[{i}]"))
                report["frames"].append({"set": name, "source": src, "max_force": fmax})
                log.warning("max_force: %s %s frame %s: max |F_ref| %.2f eV/Å > %g",
                            "dropped" if cfg.max_force_mode == "drop" else "flagged",
                            name, src, fmax, cfg.max_force)
                if cfg.max_force_mode == "drop":
                    continue
            keep.append(a)
        out[name] = keep
    return out, report


def _bundle_errors(bundle, head: str, samples: list[Sample], configs: Sequence[Atoms],
                   batch_size: int | str, exclude_fixed_atoms: bool) -> dict[str, float]:
    e_raw, f_raw = predict_samples(bundle.adapter, head, samples, batch_size)
    es, fs = [], []
    for atoms, e, f in zip(configs, e_raw, f_raw):
        e2, f2, _ = bundle.postprocess(head, e, f, atoms.numbers)
        es.append(e2)
        fs.append(f2)
    return _errors(configs, np.asarray(es), fs, exclude_fixed_atoms)


def _residual_shifts(configs: Sequence[Atoms], model_energies: np.ndarray,
                     elements: list[str] | None = None,
                     report: dict[str, Any] | None = None) -> dict[str, float]:
    """Per-element shifts fitted on per-atom energies of ``configs`` (training frames
    only); the fit's method/rank/reason go into ``report`` when given."""
    from ase_surftune.data.alignment import fit_shifts

    e_ref = np.array([_labels(a)[0] for a in configs])
    fit = fit_shifts(list(configs), e_ref - model_energies, elements=elements)
    if report is not None:
        report.update({k: v for k, v in fit.to_dict().items() if k != "shifts"})
    return fit.shifts


def _check_finite_state(state: dict[str, torch.Tensor], epoch: int) -> None:
    """Refuse to write a bundle from weights that hold NaN/inf."""
    from ase_surftune.core.errors import TrainingDivergedError

    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise TrainingDivergedError(
            f"the best model (epoch {epoch}) has non-finite weights in {len(bad)} tensor(s), "
            f"e.g. {bad[0]!r}; no bundle written. Lower optimizer.lr or set clip_grad")


def _split_valid(cfg: FinetuneConfig, configs: list[Atoms]
                 ) -> tuple[list[Atoms], list[Atoms], dict[str, Any]]:
    """Split ``valid_fraction`` off the training data (by trajectory unless told not to)."""
    from ase_surftune.data import split, split_by_trajectory

    if cfg.valid_split == "random":
        parts = split(configs, (1 - cfg.valid_fraction, cfg.valid_fraction, 0.0),
                      seed=cfg.seed)
        info: dict[str, Any] = {"mode": "frames", "reason": "valid_split: random"}
    else:
        parts, info = split_by_trajectory(configs, cfg.valid_fraction, seed=cfg.seed,
                                          split_key=cfg.split_key)
        if info["mode"] == "frames":
            log.warning("validation split by frames, not trajectories (%s): frames of one "
                        "relaxation may sit in both training and validation, so validation "
                        "errors are optimistic", info["reason"])
        else:
            log.info("validation: %d of %d %s groups held out whole", len(info["valid_groups"])
                     or 1, info["n_groups"], info["key"])
    return parts.train, parts.valid, info


def _monitor_indices(cfg: FinetuneConfig, train: Sequence[Atoms], valid: Sequence[Atoms]
                     ) -> tuple[list[int] | None, str]:
    """Validation frames that select the best epoch, and a one-line description.

    Returns ``(None, why)`` when the whole validation set is watched.
    """
    import fnmatch

    from ase_surftune.data import is_slab

    if not valid or cfg.monitor_group is None:
        return None, "whole validation set"
    if cfg.monitor_group != "auto":
        idx = [i for i, a in enumerate(valid)
               if fnmatch.fnmatchcase(str(a.info.get("config_type", "")), cfg.monitor_group)]
        if not idx:
            raise ConfigError(f"monitor_group: {cfg.monitor_group!r} matches no validation "
                              f"frame; config_types are "
                              f"{sorted({str(a.info.get('config_type')) for a in valid})}")
        return idx, f"validation frames with config_type {cfg.monitor_group!r} ({len(idx)})"
    idx = [i for i, a in enumerate(valid) if is_slab(a)]
    if idx:
        return idx, f"slab (surface) validation frames ({len(idx)} of {len(valid)})"
    if any(is_slab(a) for a in train):
        log.warning("the training data contain slabs but the validation set has none: early "
                    "stopping watches non-surface frames and surface accuracy is unmonitored "
                    "(give a valid_file with slabs, or monitor_group)")
    else:
        log.warning("no slab (surface) frame in the data: early stopping watches the whole "
                    "validation set and surface accuracy is unmonitored")
    return None, "whole validation set (no slab frame in it)"


# --------------------------------------------------------------------------- main entry


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
        from ase_surftune.training.distributed import init_distributed

        dist = init_distributed(cfg.device)
        if dist.world_size > 1 and cfg.batch_size < dist.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} is smaller than the number of "
                              f"ranks ({dist.world_size}); the global batch is split across "
                              f"ranks")
        if cfg.device.startswith("cuda"):
            cfg = cfg.model_copy(update={"device": f"cuda:{dist.local_rank}"})
    main_rank = dist is None or dist.is_main
    if cfg.train_file is None and train is None:
        raise ConfigError("Invalid fine-tuning config: train_file: required (or pass "
                          "train=[...] to finetune())")
    out_dir = Path(cfg.output_dir)
    if train is not None or valid is not None or test is not None:
        _validate_in_memory(train, valid, test)  # the checks read_labelled does for files
    with contextlib.ExitStack() as stack:
        if main_rank:  # rank 0 owns the folder: lock, refuse/move aside, check the checkpoint
            run_id, ck = _claim_output_dir(cfg, out_dir, stack)
        else:
            run_id, ck = None, None
            if cfg.resume and (out_dir / CHECKPOINT_NAME).is_file():
                ck = load_checkpoint(out_dir / CHECKPOINT_NAME)
        return _finetune_run(cfg, out_dir, ck, run_id, dist, main_rank, train, valid, test,
                             stop_after_step, t_start)


def _validate_in_memory(*parts: Sequence[Atoms] | None) -> None:
    from ase_surftune.data import validate_config

    for name, part in zip(("train", "valid", "test"), parts):
        for i, atoms in enumerate(part or []):
            if not isinstance(atoms, Atoms):
                raise DataError(f"{name}[{i}]: expected an ase.Atoms, got {type(atoms).__name__}")
            validate_config(atoms, where=f"{name}[{i}] ({atoms.get_chemical_formula()})")


def _read_run_file(out_dir: Path) -> dict[str, Any]:
    import json

    p = out_dir / RUN_FILE
    try:
        return dict(json.loads(p.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def _claim_output_dir(cfg: FinetuneConfig, out_dir: Path, stack: contextlib.ExitStack
                      ) -> tuple[str, dict[str, Any] | None]:
    """Lock ``out_dir`` for this run and decide new run vs resume; returns (run id, checkpoint).

    A folder that holds a run (any of :data:`RUN_FILES`) is refused to a new run unless
    ``overwrite`` (the old run is moved aside to ``NAME.old-<time>``); ``resume="auto"``
    continues a checkpoint if there is one and otherwise does the same as ``overwrite``. ``resume=True``
    without a checkpoint is an error, as is a checkpoint of another run (run id in
    ``run.json``) or of another configuration (fingerprint; see
    :meth:`FinetuneConfig.fingerprint` for what may change).
    """
    import uuid

    from ase_surftune.core.errors import OutputExistsError
    from ase_surftune.core.io import (
        atomic_write_json,
        clean_orphan_temps,
        exclusive_lock,
        move_aside,
    )

    def lock() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(exclusive_lock(out_dir / LOCK_FILE,
                                           f"output folder {str(out_dir)!r}"))
        clean_orphan_temps(out_dir)

    ckpt_path = out_dir / CHECKPOINT_NAME
    if cfg.resume is True and not out_dir.is_dir():
        raise ConfigError(f"cannot resume: output folder {str(out_dir)!r} does not exist; "
                          f"run without --resume (resume: false) to start a new run")
    lock()
    held = [n for n in RUN_FILES if (out_dir / n).exists()]
    if cfg.resume is True and not ckpt_path.is_file():
        what = f"it holds {held} but no checkpoint" if held else "it holds no run"
        raise ConfigError(f"cannot resume: no {CHECKPOINT_NAME} in {str(out_dir)!r} ({what}); "
                          f"run without --resume (resume: false) to start a new run")
    if cfg.resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        if ck.get("fingerprint") != cfg.fingerprint():
            raise ConfigError(
                f"cannot resume from {str(ckpt_path)!r}: it was written with a different "
                f"configuration (only epochs — extended, and not with the cosine scheduler — "
                f"patience, progress, plot, output_dir and checkpoint_every_steps may change); "
                f"use the run's config.yaml, or start a new run with --overwrite")
        run_id = _read_run_file(out_dir).get("run_id")
        if run_id and ck.get("run_id") and ck["run_id"] != run_id:
            raise ConfigError(
                f"cannot resume from {str(ckpt_path)!r}: the checkpoint belongs to run "
                f"{ck['run_id']}, but {RUN_FILE} names run {run_id}; the folder mixes two "
                f"runs, start a new run with --overwrite")
        done = int(ck.get("loop", {}).get("epoch", 0))
        if cfg.epochs < done:
            raise ConfigError(f"cannot resume with epochs {cfg.epochs}: the checkpoint has "
                              f"already run {done} epochs (epochs may be extended, not cut)")
        return str(ck.get("run_id") or run_id or uuid.uuid4().hex), ck
    if held:
        if not (cfg.overwrite or cfg.resume == "auto"):
            raise OutputExistsError(
                f"output folder {str(out_dir)!r} already holds a run ({', '.join(held)}); "
                f"pass --resume (resume: true) to continue it, --overwrite (overwrite: true) "
                f"to move it aside to {out_dir.name}.old-<time>, or choose another output_dir")
        old = move_aside(out_dir)
        log.warning("moved the previous run in %s aside to %s", out_dir, old)
        lock()  # the old folder's lock stays held until the end: nobody can slip in
    run_id = uuid.uuid4().hex
    atomic_write_json(out_dir / RUN_FILE, {"run_id": run_id, "fingerprint": cfg.fingerprint(),
                                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return run_id, None


def _finetune_run(cfg: FinetuneConfig, out_dir: Path, ck: dict[str, Any] | None,
                  run_id: str | None, dist: Any, main_rank: bool,
                  train: Sequence[Atoms] | None, valid: Sequence[Atoms] | None,
                  test: Sequence[Atoms] | None, stop_after_step: int | None,
                  t_start: float) -> FinetuneResult:
    """The body of :func:`finetune`, run while the output folder is locked."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    strategy = get_strategy(cfg.strategy, cfg)

    # ---- data
    split_info: dict[str, Any] | None = None
    train_atoms = list(train) if train is not None else _read(cfg, cfg.train_file)
    if valid is not None:
        valid_atoms = list(valid)
    elif cfg.valid_file is not None:
        valid_atoms = _read(cfg, cfg.valid_file)
    elif cfg.valid_fraction > 0:
        train_atoms, valid_atoms, split_info = _split_valid(cfg, train_atoms)
    else:
        valid_atoms = []
    test_atoms = list(test) if test is not None else (
        _read(cfg, cfg.test_file) if cfg.test_file is not None else [])
    filtered, max_force_report = _filter_max_force(
        cfg, {"train": train_atoms, "valid": valid_atoms, "test": test_atoms})
    train_atoms, valid_atoms, test_atoms = (filtered["train"], filtered["valid"],
                                            filtered["test"])
    if not train_atoms:
        raise DataError("no training structures"
                        + (f" left after max_force {cfg.max_force} eV/Å" if cfg.max_force
                           else ""))
    from ase_surftune.data import dataset_hash

    train_hash = dataset_hash(train_atoms)
    if ck is not None and ck.get("train_hash") not in (None, train_hash):
        raise ConfigError(f"cannot resume from {str(out_dir / CHECKPOINT_NAME)!r}: it was "
                          f"trained on other data (dataset hash differs); give the same "
                          f"training structures, or start a new run with --overwrite")
    monitor_idx, monitor_desc = _monitor_indices(cfg, train_atoms, valid_atoms)

    # ---- model
    from ase_surftune.data import check_elements, element_counts
    from ase_surftune.models.backends import load_model
    from ase_surftune.models.bundle import Bundle

    bundle0 = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    base = bundle0.adapter
    try:
        head = base.resolve_head(cfg.head)
    except HeadError as exc:
        raise ConfigError(f"Invalid fine-tuning config: head: {exc}") from None
    check_elements(train_atoms + valid_atoms + test_atoms, base.elements, base.name)
    strategy.bind_data(train_atoms, valid_atoms, test_atoms)
    base_head = head  # the base model's head the trained head starts from
    model = strategy.prepare(base, head)
    head = strategy.train_head(model, head)
    params = strategy.trainable_parameters(model)
    strat_report = strategy.report(model)
    log.info("strategy %s: %d trainable, %d frozen parameters", cfg.strategy,
             strat_report["parameters"]["trainable"], strat_report["parameters"]["frozen"])

    # ---- featurize once (graphs are reused by every epoch and every evaluation)
    t0 = time.perf_counter()
    kw = {"exclude_fixed_atoms": cfg.exclude_fixed_atoms, "progress": cfg.progress}
    s_train = featurize_samples(model, train_atoms, desc="featurize train", **kw)
    s_valid = featurize_samples(model, valid_atoms, desc="featurize valid", **kw)
    s_test = featurize_samples(model, test_atoms, desc="featurize test", **kw)
    t_feat = time.perf_counter() - t0
    vbs: int | str = cfg.valid_batch_size or "auto"

    # ---- zero-shot baseline (the base model, aligned on the training set)
    if getattr(strategy, "shares_graphs", True):
        b_train, b_valid, b_test = s_train, s_valid, s_test
    else:  # e.g. distillation: the base (teacher) cannot read the trained model's graphs
        b_train, b_valid, b_test = (featurize_samples(base, x, desc="featurize (base)", **kw)
                                    for x in (train_atoms, valid_atoms, test_atoms))
    e_base_train, f_base_train = predict_samples(base, base_head, b_train, vbs)
    shift_report: dict[str, Any] = {}
    zs_shifts = (_residual_shifts(train_atoms, e_base_train, report=shift_report)
                 if cfg.align_energies
                 else dict(bundle0.reference_energies.get(base_head, {})))
    if shift_report.get("reason"):
        log.warning("reference-energy alignment: %s", shift_report["reason"])
    zs_bundle = Bundle(adapter=base, reference_energies={base_head: zs_shifts})
    zero_shot = {name: _bundle_errors(zs_bundle, base_head, s, a, vbs, cfg.exclude_fixed_atoms)
                 for name, s, a in (("valid", b_valid, valid_atoms), ("test", b_test, test_atoms))
                 if a}

    # ---- energy-reference alignment against the strategy's starting model
    if ck is not None:
        shifts = dict(ck["reference_energies"])
    elif strategy.keeps_base_weights or not cfg.align_energies:
        shifts = zs_shifts
    else:
        shifts = _residual_shifts(train_atoms, predict_samples(model, head, s_train, vbs)[0])
    for s, a in ((s_train, train_atoms), (s_valid, valid_atoms), (s_test, test_atoms)):
        _retarget(s, a, shifts)
    if shifts:
        log.info("reference-energy shifts (eV/atom) for head %s: %s", head,
                 {k: round(v, 4) for k, v in shifts.items()})

    if strategy.keeps_base_weights:
        initial = zero_shot
    else:  # the strategy's own starting point (e.g. the random scratch model)
        init_bundle = Bundle(adapter=model, reference_energies={head: shifts})
        initial = {name: _bundle_errors(init_bundle, head, s, a, vbs, cfg.exclude_fixed_atoms)
                   for name, s, a in (("valid", s_valid, valid_atoms),
                                      ("test", s_test, test_atoms)) if a}

    corrections = {}
    loop_res: LoopResult | None = None
    if strategy.trains:
        if dist is not None:
            model.wrap_ddp()
        try:
            loop_res = train_loop(model, head, params, s_train, s_valid, cfg, out_dir,
                                  resume_from=ck, extra_loss=strategy.extra_loss(),
                                  checkpoint_extra={"reference_energies": shifts,
                                                    "run_id": run_id,
                                                    "train_hash": train_hash},
                                  stop_after_step=stop_after_step, dist=dist,
                                  monitor=None if monitor_idx is None
                                  or len(monitor_idx) == len(s_valid)
                                  else [s_valid[i] for i in monitor_idx])
        finally:
            model.unwrap_ddp()
        _check_finite_state(loop_res.best_state, loop_res.best_epoch)
        model.model.load_state_dict(loop_res.best_state)
    else:  # linear: PES scale and per-element shifts on the aligned model
        from ase_surftune.models.correction import assess_correction, fit_linear_correction

        e_m = np.array([e + per_element_sum(shifts, a.numbers)
                        for e, a in zip(e_base_train, train_atoms)])
        labels = [_labels(a) for a in train_atoms]
        corr = fit_linear_correction(
            [x[0] for x in labels], [x[1] for x in labels], e_m, f_base_train,
            [a.numbers for a in train_atoms], energy_weight=cfg.linear.energy_weight,
            fit_shifts=cfg.linear.fit_shifts, use_energies=cfg.linear.use_energies,
            fit=cfg.linear.fit)
        if valid_atoms:  # s before/after on data the fit never saw
            e_v, f_v = predict_samples(base, base_head, b_valid, vbs)
            lab_v = [_labels(a) for a in valid_atoms]
            check = assess_correction(
                corr, [x[1] for x in lab_v], f_v, [x[0] for x in lab_v],
                [e + per_element_sum(shifts, a.numbers) for e, a in zip(e_v, valid_atoms)],
                [a.numbers for a in valid_atoms], prefix="valid_", name="validation data")
            corr.info["warnings"] = corr.info.get("warnings", []) + check.pop("warnings")
            corr.info.update(check)
        else:
            corr.info["warnings"] = corr.info.get("warnings", []) + [
                "no validation data: the correction's effect on unseen frames is unchecked"]
        corrections[head] = corr
        log.info("%s", corr.summary())
        for w in corr.info["warnings"]:
            log.warning("linear correction: %s", w)
    for p in model.model.parameters():
        p.requires_grad_(True)

    # ---- bundle and final metrics
    # heads other than the trained one keep the base bundle's calibration (multi-head)
    keep = [h for h in model.heads if h != head and h in base.heads]
    bundle = Bundle(adapter=model,
                    reference_energies={**{h: dict(bundle0.reference_energies[h]) for h in keep
                                           if h in bundle0.reference_energies}, head: shifts},
                    corrections={**{h: bundle0.corrections[h] for h in keep
                                    if h in bundle0.corrections}, **corrections},
                    default_head=head)
    finetuned = {name: _bundle_errors(bundle, head, s, a, vbs, cfg.exclude_fixed_atoms)
                 for name, s, a in (("valid", s_valid, valid_atoms), ("test", s_test, test_atoms))
                 if a}
    metrics: dict[str, Any] = {
        "strategy": cfg.strategy, "backend": model.backend, "base_model": base.name,
        "head": head, "n_train": len(train_atoms), "n_valid": len(valid_atoms),
        "n_test": len(test_atoms), "zero_shot": zero_shot, "initial": initial,
        "finetuned": finetuned,
        "reference_energies": shifts, "reference_energies_fit": shift_report or None,
        **strat_report,
        "validation_split": split_info or {"mode": "given" if valid_atoms else "none"},
        "early_stopping_monitors": monitor_desc,
        "featurize_time_s": round(t_feat, 3),
        "total_time_s": round(time.perf_counter() - t_start, 3),
    }
    if corrections:
        metrics["linear_correction"] = corrections[head].to_dict()
        metrics["warnings"] = list(corrections[head].info.get("warnings", []))
    if max_force_report is not None:
        metrics["max_force"] = max_force_report
    if loop_res is not None:
        metrics.update(best_epoch=loop_res.best_epoch, best_valid_loss=loop_res.best_valid_loss,
                       epochs_run=len(loop_res.history), stopped_early=loop_res.stopped_early,
                       n_steps=loop_res.n_steps, resumed_from=loop_res.resumed_from,
                       mean_epoch_time_s=float(np.mean([r["epoch_time_s"]
                                                        for r in loop_res.history]))
                       if loop_res.history else None)
    bundle.metrics = metrics
    bundle.train_config = cfg.model_dump(mode="json")
    train_files = bundle.train_config.get("train_file")
    bundle.head_info = {
        **{h: dict(bundle0.head_info[h]) for h in keep if h in bundle0.head_info},
        **strategy.head_info(),
        head: {"trained_on": train_files or "in-memory structures",
               "n_configs": len(train_atoms), "strategy": cfg.strategy,
               "element_counts": element_counts(train_atoms),
               "n_train": len(train_atoms), "train_hash": train_hash,
               "train_files": train_files}}
    bundle.provenance = {"base_model": base.name, "strategy": cfg.strategy,
                         "dataset_hash": train_hash}
    if not main_rank:  # rank 0 writes the bundle, metrics and reports
        dist.barrier()
        return FinetuneResult(bundle_path=out_dir / BUNDLE_NAME, output_dir=out_dir,
                              metrics=metrics,
                              history=loop_res.history if loop_res is not None else [],
                              config=cfg)
    if cfg.forgetting.enabled:  # error-level forgetting; properties: evaluation.forgetting
        from ase_surftune.training.forgetting import describe_set, forgetting_report

        metrics["forgetting"] = forgetting_report(
            bundle0, bundle, head_pairs=strategy.head_pairs() or {head: head},
            target_head=head, options=cfg.forgetting, elements=sorted(
                {s for a in train_atoms for s in a.get_chemical_symbols()}),
            target_before=zero_shot.get("valid") or zero_shot.get("test"),
            target_after=finetuned.get("valid") or finetuned.get("test"),
            target_set=describe_set(valid_atoms or test_atoms),
            output_dir=out_dir, seed=cfg.seed)
        log.info("forgetting: %s", metrics["forgetting"]["summary"])
    bundle_path = bundle.save(out_dir / BUNDLE_NAME)

    import yaml

    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"),
                                                              sort_keys=False))
    history = loop_res.history if loop_res is not None else []
    write_metrics(history, out_dir, {"summary": metrics})
    if cfg.plot and history:
        plot_history(history, out_dir / "loss_curve.png")
    if dist is not None:
        dist.barrier()
    return FinetuneResult(bundle_path=bundle_path, output_dir=out_dir, metrics=metrics,
                          history=history, config=cfg)
