"""``finetune(config)``: data → alignment → strategy → training loop → bundle."""

from __future__ import annotations

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

from ase_surftune.errors import ConfigError, DataError, HeadError
from ase_surftune.finetune.checkpoint import load_checkpoint
from ase_surftune.finetune.config import FinetuneConfig, load_config
from ase_surftune.finetune.loop import (LoopResult, Sample, plot_history, predict_samples,
                                        train_loop, write_metrics)
from ase_surftune.finetune.strategies import get_strategy

__all__ = ["finetune", "FinetuneResult", "featurize_samples"]

log = logging.getLogger(__name__)

BUNDLE_NAME = "model.stbundle"


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
        from ase_surftune.bundle import Bundle

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
    from ase.data import chemical_symbols
    from tqdm.auto import tqdm

    shifts = shifts or {}
    out = []
    for atoms in tqdm(configs, desc=desc, disable=not progress, unit="struct"):
        adapter.check_atoms(atoms)
        e, f, s = _labels(atoms)
        shift = sum(shifts.get(chemical_symbols[int(z)], 0.0) for z in atoms.numbers)
        out.append(Sample(
            graph=adapter.featurize(atoms), energy=float(e - shift),
            forces=torch.as_tensor(f, dtype=adapter.dtype), n_atoms=len(atoms),
            stress=None if s is None else torch.as_tensor(voigt_6_to_full_3x3_stress(s),
                                                          dtype=adapter.dtype),
            force_mask=torch.as_tensor(_free_mask(atoms)) if exclude_fixed_atoms else None,
            numbers=np.asarray(atoms.numbers)))
    return out


def _retarget(samples: list[Sample], configs: Sequence[Atoms], shifts: dict[str, float]) -> None:
    from ase.data import chemical_symbols

    for s, atoms in zip(samples, configs):
        e = _labels(atoms)[0]
        s.energy = float(e - sum(shifts.get(chemical_symbols[int(z)], 0.0) for z in atoms.numbers))


def _errors(configs: Sequence[Atoms], energies: np.ndarray, forces: Sequence[np.ndarray],
            exclude_fixed_atoms: bool) -> dict[str, float]:
    """MAE/RMSE of energy per atom (eV/atom) and force components (eV/Å)."""
    de, df = [], []
    for atoms, e, f in zip(configs, energies, forces):
        e_ref, f_ref, _ = _labels(atoms)
        de.append((e - e_ref) / len(atoms))
        m = _free_mask(atoms) if exclude_fixed_atoms else slice(None)
        df.append((np.asarray(f) - f_ref)[m].ravel())
    de_a, df_a = np.asarray(de), np.concatenate(df) if df else np.zeros(0)
    return {"n_structures": len(de_a),
            "energy_mae_per_atom": float(np.mean(np.abs(de_a))),
            "energy_rmse_per_atom": float(np.sqrt(np.mean(de_a ** 2))),
            "forces_mae": float(np.mean(np.abs(df_a))),
            "forces_rmse": float(np.sqrt(np.mean(df_a ** 2)))}


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
                     elements: list[str] | None = None) -> dict[str, float]:
    from ase_surftune.alignment import fit_element_shifts

    e_ref = np.array([_labels(a)[0] for a in configs])
    return fit_element_shifts(list(configs), e_ref - model_energies, elements=elements)


def _shift_sum(shifts: dict[str, float], numbers: np.ndarray) -> float:
    from ase.data import chemical_symbols

    return float(sum(shifts.get(chemical_symbols[int(z)], 0.0) for z in numbers))


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
        DataError / UnsupportedElementError: unusable data.
    """
    t_start = time.perf_counter()
    cfg = load_config(config, **overrides)
    split_info: dict[str, Any] | None = None
    dist = None
    if distributed:
        from ase_surftune.finetune.distributed import init_distributed

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
    ckpt_path = out_dir / "checkpoint.pt"
    ck = None
    if cfg.resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        if ck.get("fingerprint") != cfg.fingerprint():
            raise ConfigError(f"cannot resume from {str(ckpt_path)!r}: it was written with a "
                              f"different configuration (only epochs, patience, progress, "
                              f"plot, output_dir and checkpoint_every_steps may change)")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    strategy = get_strategy(cfg.strategy, cfg)

    # ---- data
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
    if not train_atoms:
        raise DataError("no training structures")
    monitor_idx, monitor_desc = _monitor_indices(cfg, train_atoms, valid_atoms)

    # ---- model
    from ase_surftune.backends import load_model
    from ase_surftune.bundle import Bundle
    from ase_surftune.data import check_elements, dataset_hash, element_counts

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
    zs_shifts = (_residual_shifts(train_atoms, e_base_train) if cfg.align_energies
                 else dict(bundle0.reference_energies.get(base_head, {})))
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
                                  checkpoint_extra={"reference_energies": shifts},
                                  stop_after_step=stop_after_step, dist=dist,
                                  monitor=None if monitor_idx is None
                                  or len(monitor_idx) == len(s_valid)
                                  else [s_valid[i] for i in monitor_idx])
        finally:
            model.unwrap_ddp()
        model.model.load_state_dict(loop_res.best_state)
    else:  # linear: least-squares PES scale and per-element shifts on the aligned model
        from ase_surftune.correction import fit_linear_correction

        e_m = np.array([e + _shift_sum(shifts, a.numbers)
                        for e, a in zip(e_base_train, train_atoms)])
        labels = [_labels(a) for a in train_atoms]
        corr = fit_linear_correction(
            [x[0] for x in labels], [x[1] for x in labels], e_m, f_base_train,
            [a.numbers for a in train_atoms], energy_weight=cfg.linear.energy_weight,
            fit_shifts=cfg.linear.fit_shifts, use_energies=cfg.linear.use_energies)
        corrections[head] = corr
        log.info("%s", corr.summary())
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
        "reference_energies": shifts, **strat_report,
        "validation_split": split_info or {"mode": "given" if valid_atoms else "none"},
        "early_stopping_monitors": monitor_desc,
        "featurize_time_s": round(t_feat, 3),
        "total_time_s": round(time.perf_counter() - t_start, 3),
    }
    if corrections:
        metrics["linear_correction"] = corrections[head].to_dict()
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
               "n_train": len(train_atoms), "train_hash": dataset_hash(train_atoms),
               "train_files": train_files}}
    bundle.provenance = {"base_model": base.name, "strategy": cfg.strategy,
                         "dataset_hash": dataset_hash(train_atoms)}
    if not main_rank:  # rank 0 writes the bundle, metrics and reports
        dist.barrier()
        return FinetuneResult(bundle_path=out_dir / BUNDLE_NAME, output_dir=out_dir,
                              metrics=metrics,
                              history=loop_res.history if loop_res is not None else [],
                              config=cfg)
    if cfg.forgetting.enabled:  # error-level forgetting; properties: evaluation.forgetting
        from ase_surftune.finetune.forgetting import describe_set, forgetting_report

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

    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"),
                                                        sort_keys=False))
    history = loop_res.history if loop_res is not None else []
    write_metrics(history, out_dir, {"summary": metrics})
    if cfg.plot and history:
        plot_history(history, out_dir / "loss_curve.png")
    if dist is not None:
        dist.barrier()
    return FinetuneResult(bundle_path=bundle_path, output_dir=out_dir, metrics=metrics,
                          history=history, config=cfg)
