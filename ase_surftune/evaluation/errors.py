"""Error-level evaluation of models on labelled data: MAE/RMSE and softening scales.

For each model (spec, ``spec@head`` or calculator) on a labelled data set:

* **Energy references never come from the scored frames.** By default
  (``align="stored"``) the model's own calibration is used: a bundle's stored
  per-element shifts, fitted on its training data (plain calculators: none). With
  ``align_on=FILE`` (or Atoms) shifts are fitted on *those* frames and applied to the
  scored ones; a ``{symbol: δ}`` dict gives them directly. ``align="self"`` fits on the
  scored frames themselves — opt-in only, and labelled ``SELF-ALIGNED`` in every table
  and JSON because the absolute energy error is then not an independent number.
* Energies three ways: absolute per atom (after that reference); relative within each
  composition (E/N minus the mean E/N of the frames with the same composition, for
  reference and model alike: independent of any per-element reference); and
  formation-like (E − N·E_bulk/N_bulk against the lowest-energy bulk frame of the same
  composition, bulk frames being those whose group name contains ``"bulk"``).
* force-component (eV/Å) and stress-component (eV/Å³) MAE and RMSE, overall and per
  group (``atoms.info[group_key]``, default ``config_type``; frames without a group are
  grouped by their source file);
* the softening scale (:mod:`ase_surftune.core.metrics`): s on all components, s on the
  band ``FORCE_NOISE_FLOOR <= |F_ref| <= FORCE_BAND_MAX`` (0.05–10 eV/Å), the per-frame
  median, the number of components left out, and "n/a (too little force signal)"
  instead of a number where the signal is too small; also the high-force subset
  (:func:`~ase_surftune.models.correction.softening_scale_high_force`);
* ``max_force``: frames whose largest reference atomic force exceeds it are dropped
  (or only flagged), and every one is named in the result.

Results are dataclasses with ``to_dict()``; :class:`EvaluationReport` writes JSON, CSV,
a Markdown table and parity plots.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from ase import Atoms
from pydantic import Field, field_validator

from ase_surftune.core.config import StrictModel, validate_model
from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.evaluation.error_report import (  # noqa: F401  (_safe: old import path)
    EvaluationReport,
    ModelEvaluation,
    _safe,
)
from ase_surftune.evaluation.error_stats import (
    STAT_FIELDS,
    ErrorStats,
    _bulk_frames,
    _free,
    _max_force,
    _stats,
    formation_energies,
    group_of,
    relative_energies,
)
from ase_surftune.models.predict import predict_with  # re-exported: the one prediction path

__all__ = ["ErrorStats", "ModelEvaluation", "EvaluationReport", "EvaluationSettings",
           "predict_with", "evaluate_model", "evaluate", "load_configs", "group_of",
           "relative_energies", "formation_energies", "STAT_FIELDS"]

log = logging.getLogger(__name__)

_ALIGN_MODES = ("stored", "none", "self")


class EvaluationSettings(StrictModel):
    """How :func:`evaluate_model` scores a model: one source for the API's defaults,
    its validation and the options (names, types, help) of ``surftune evaluate``."""

    align: str | dict[str, float] = Field(
        "stored", description="energy reference: 'stored' the model's own calibration (a "
        "bundle's shifts fitted on its training data); 'none' raw energies; 'self' fit "
        "shifts on the scored frames (opt-in, labelled SELF-ALIGNED: not an independent "
        "energy error); or per-element shifts added to the model's energies, a {symbol: "
        "shift} dict or SYMBOL=SHIFT text such as Cu=-0.1,O=0.2 (eV/atom)")
    group_key: str = Field("config_type", description="atoms.info key of the group")
    high_force_quantile: float = Field(
        0.9, ge=0, lt=1, description="quantile of |F_ref| defining the high-force subset")
    exclude_fixed_atoms: bool = Field(
        False, description="leave FixAtoms atoms out of force statistics")
    stress: bool = Field(True, description="compare stresses (3D periodic frames with a "
                                           "stress label)")
    energy_key: str | None = Field(None, description="atoms.info key of the reference "
                                                     "energy (eV)")
    forces_key: str | None = Field(None, description="atoms.arrays key of the reference "
                                                     "forces (eV/Å)")
    stress_key: str | None = Field(None, description="atoms.info key of the reference "
                                                     "stress (eV/Å³)")
    max_force: float | None = Field(
        None, gt=0, description="drop (or with max_force_mode flag, flag) frames whose "
        "largest reference atomic force exceeds this (eV/Å); every such frame is named")
    max_force_mode: Literal["drop", "flag"] = Field(
        "drop", description="what max_force does with a frame above it")

    @field_validator("align", mode="before")
    @classmethod
    def _shift_text(cls, v: Any) -> Any:
        if isinstance(v, str) and "=" in v:
            try:
                return {k.strip(): float(x) for k, x in
                        (p.split("=", 1) for p in v.split(",") if p.strip())}
            except ValueError:
                raise ValueError("per-element shifts are SYMBOL=SHIFT pairs in eV/atom, "
                                 "e.g. Cu=-0.1,O=0.2") from None
        return v

    @field_validator("align")
    @classmethod
    def _align(cls, v: str | dict[str, float]) -> str | dict[str, float]:
        if v == "fit":
            raise ValueError("align='fit' fitted energy shifts on the scored frames (a "
                             "leak); use align_on=FILE (frames not scored), the model's "
                             "stored shifts (align='stored'), or align='self' to opt in to "
                             "a labelled self-aligned table")
        if isinstance(v, str) and v not in _ALIGN_MODES:
            raise ValueError("align must be 'stored', 'none', 'self' or a dict of shifts")
        return v


_D = EvaluationSettings()  # the defaults of evaluate_model's signature come from here

# --------------------------------------------------------------------------- predictions


def load_configs(data: str | Path | Sequence[Atoms] | Sequence[str | Path],
                 group_key: str = "config_type", energy_key: str | None = None,
                 forces_key: str | None = None, stress_key: str | None = None
                 ) -> tuple[list[Atoms], str | None]:
    """Labelled structures from a path, list of paths, or Atoms list (+ a description).

    ``energy_key``/``forces_key``/``stress_key`` go to
    :func:`~ase_surftune.data.read_labelled` (files only; Atoms are used as given)."""
    from ase_surftune.data import read_labelled

    kw = {"group_key": group_key, "energy_key": energy_key, "forces_key": forces_key,
          "stress_key": stress_key}
    if isinstance(data, (str, Path)):
        return read_labelled(str(data), **kw), str(data)
    data = list(data)
    if data and all(isinstance(d, (str, Path)) for d in data):
        return read_labelled([str(d) for d in data], **kw), ", ".join(map(str, data))
    if not all(isinstance(d, Atoms) for d in data):
        raise DataError("data must be a file path, a list of paths or a list of Atoms")
    return data, None


def _fit_alignment(calc: Any, align_on: Any, group_key: str, keys: dict[str, Any],
                   scored: Sequence[Atoms]) -> dict[str, Any]:
    """Shifts fitted on the ``align_on`` frames (never the scored ones), with a report."""
    from ase_surftune.data import get_labels
    from ase_surftune.data.alignment import ReferenceAlignment

    frames, desc = load_configs(align_on, group_key, **keys)
    if not frames:
        raise DataError("align_on: no labelled structures")
    e_ref = np.array([get_labels(a)[0] for a in frames])
    e_mod, _, _ = predict_with(calc, frames)
    ra = ReferenceAlignment.fit(frames, e_ref - e_mod)
    scored_keys = {_frame_key(a) for a in scored}
    overlap = sum(_frame_key(a) in scored_keys for a in frames)
    out = {**ra.to_dict(), "source": f"align_on: {desc or f'{len(frames)} structures'}",
           "label": "align-on", "n_overlap_with_scored": int(overlap)}
    if overlap:
        out["label"] = "align-on (OVERLAPS scored)"
        out["warning"] = (f"{overlap} align_on frame(s) are also scored: the energy "
                          f"reference is partly fitted on the scored frames")
        log.warning("%s", out["warning"])
    return out


def _frame_key(atoms: Atoms) -> tuple:
    return (tuple(int(z) for z in atoms.numbers),
            tuple(np.round(np.asarray(atoms.positions), 6).ravel().tolist()))


def evaluate_model(model: Any, data: Any, *, align: str | dict[str, float] = _D.align,
                   align_on: Any = None, group_key: str = _D.group_key,
                   high_force_quantile: float = _D.high_force_quantile,
                   exclude_fixed_atoms: bool = _D.exclude_fixed_atoms,
                   stress: bool = _D.stress, device: str = "cpu", progress: bool = False,
                   label: str | None = None, energy_key: str | None = _D.energy_key,
                   forces_key: str | None = _D.forces_key,
                   stress_key: str | None = _D.stress_key,
                   max_force: float | None = _D.max_force,
                   max_force_mode: str = _D.max_force_mode) -> ModelEvaluation:
    """Errors and softening scales of one model on labelled data.

    Args:
        model: a spec (``"chgnet"``, ``"run/model.stbundle@surface"``, ``"emt"``), a
            ``(label, calculator)`` pair or an ASE calculator.
        data: an extxyz/ASE-readable path, a list of paths, or labelled Atoms.
        align: where the energy reference comes from. ``"stored"`` (default): the
            model's own calibration (a bundle's stored shifts from its training data;
            nothing for other calculators); ``"none"``: the same, named as raw energies;
            a ``{symbol: δ}`` dict (eV/atom) added to the model's energies; ``"self"``:
            fit shifts on the scored frames themselves — opt-in, labelled SELF-ALIGNED
            (not an independent energy error). Ignored when ``align_on`` is given.
        align_on: frames (path(s) or labelled Atoms) on which to fit per-element shifts
            δ_Z (eV/atom) that are then applied to the scored frames. Overlap with the
            scored frames is detected and labelled.
        group_key: ``atoms.info`` key for the per-group breakdown; frames without it are
            grouped by source file (:func:`group_of`).
        high_force_quantile: atoms with |F_ref| at or above this quantile form the
            high-force subset of :func:`softening_scale_high_force`.
        exclude_fixed_atoms: leave FixAtoms-constrained atoms out of force statistics.
        stress: compare stresses where a label exists and the cell is 3D periodic.
        label: name used in tables (default: the spec).
        energy_key, forces_key, stress_key: label keys when reading files (see
            :func:`ase_surftune.data.read_labelled`).
        max_force: eV/Å; frames whose largest reference atomic force exceeds it are
            dropped from scoring (``max_force_mode="drop"``) or kept and flagged
            (``"flag"``); every such frame is named in the result.

    Returns:
        :class:`ModelEvaluation` (overall + per-group :class:`ErrorStats`).

    Raises:
        ConfigError: bad settings (all at once); DataError: no frames left to score.
    """
    given = {k: v for k, v in locals().items() if k in EvaluationSettings.model_fields}
    st = validate_model(EvaluationSettings, given, "evaluation")
    import time

    from ase_surftune.data import get_labels
    from ase_surftune.evaluation._spec import make_calculator, spec_label

    keys = {"energy_key": st.energy_key, "forces_key": st.forces_key,
            "stress_key": st.stress_key}
    t0 = time.perf_counter()
    configs, _ = load_configs(data, st.group_key, **keys)
    if not configs:
        raise DataError("no labelled structures to evaluate on")
    labels = [get_labels(a) for a in configs]
    configs, labels, dropped, flagged = _apply_max_force(configs, labels, st)
    calc = make_calculator(model, device=device)
    want_s = [st.stress and lab[2] is not None and bool(all(a.pbc)) and a.cell.rank == 3
              for a, lab in zip(configs, labels)]
    e_mod, f_mod, s_mod = predict_with(calc, configs, compute_stress=want_s, progress=progress)
    e_ref = np.array([lab[0] for lab in labels])
    alignment = _alignment(calc, st, align_on, keys, configs, e_ref - e_mod)
    e_mod = e_mod + np.array([per_element_sum(alignment["shifts"], a.numbers)
                              for a in configs])
    overall, groups, parity = _score(configs, labels, e_mod, f_mod,
                                     [s if w else None for s, w in zip(s_mod, want_s)], st)
    name = label or spec_label(model)
    res = ModelEvaluation(model=name, overall=overall, groups=groups, alignment=alignment,
                          high_force_quantile=st.high_force_quantile,
                          n_skipped_stress=int(sum(lab[2] is not None and not w
                                                   for lab, w in zip(labels, want_s))),
                          wall_time_s=round(time.perf_counter() - t0, 3), parity=parity,
                          dropped_frames=dropped, flagged_frames=flagged,
                          max_force=st.max_force)
    log.info("%s: force MAE %.4f eV/Å, softening scale %s", name, overall.forces_mae,
             overall.softening_note or f"{overall.softening_scale:.4f}")
    return res


def _apply_max_force(configs: list[Atoms], labels: list[tuple], st: EvaluationSettings
                     ) -> tuple[list[Atoms], list[tuple], list[dict[str, Any]],
                                list[dict[str, Any]]]:
    """Frames and labels left after ``max_force`` (all, without it), and the dropped and
    flagged frames, each named (index, source, group, max |F_ref| in eV/Å)."""
    dropped: list[dict[str, Any]] = []
    flagged: list[dict[str, Any]] = []
    if st.max_force is None:
        return configs, labels, dropped, flagged
    drop = st.max_force_mode == "drop"
    keep = []
    for i, (a, lab) in enumerate(zip(configs, labels)):
        fmax = _max_force(lab[1])
        if fmax > st.max_force:
            entry = {"index": i, "source": str(a.info.get("source", f"frame {i}")),
                     "group": group_of(a, st.group_key), "max_force": fmax}
            (dropped if drop else flagged).append(entry)
            if drop:
                continue
        keep.append(i)
    for e in dropped + flagged:
        log.warning("%s frame %s (group %s): max |F_ref| %.2f eV/Å > max_force %g",
                    "dropped" if drop else "flagged", e["source"], e["group"],
                    e["max_force"], st.max_force)
    if not keep:
        raise DataError(f"max_force {st.max_force} eV/Å drops every frame")
    return [configs[i] for i in keep], [labels[i] for i in keep], dropped, flagged


def _alignment(calc: Any, st: EvaluationSettings, align_on: Any, keys: dict[str, Any],
               configs: list[Atoms], residual: np.ndarray) -> dict[str, Any]:
    """Where the energy reference comes from, with its per-element ``shifts`` (eV/atom):
    fitted on ``align_on``, given, self-fitted on ``residual`` (E_ref − E_model of the
    scored frames; labelled) or the model's own (no shifts)."""
    from ase_surftune.data.alignment import ReferenceAlignment

    if align_on is not None:
        return _fit_alignment(calc, align_on, st.group_key, keys, configs)
    if isinstance(st.align, dict):
        shifts = {str(k): float(v) for k, v in st.align.items()}
        return {"shifts": shifts, "source": "given", "label": "given"}
    if st.align == "self":
        ra = ReferenceAlignment.fit(configs, residual)
        return {**ra.to_dict(), "source": "self", "label": "SELF-ALIGNED",
                "warning": "SELF-ALIGNED: energy shifts were fitted on the scored "
                           "frames; the absolute energy error is not independent"}
    return {"shifts": {}, "source": "stored", "label": st.align,
            "note": "the model's own calibration (a bundle's stored shifts, "
                    "fitted on its training data); no fit on the scored frames"}


def _score(configs: list[Atoms], labels: list[tuple], e_mod: np.ndarray,
           f_mod: list[np.ndarray], s_mod: list[np.ndarray | None],
           st: EvaluationSettings) -> tuple[ErrorStats, dict[str, ErrorStats],
                                            dict[str, np.ndarray]]:
    """Overall and per-group :class:`ErrorStats` of aligned model energies ``e_mod`` (eV),
    forces and stresses (``None`` where not compared), and the parity-plot arrays."""
    n_at = np.array([len(a) for a in configs], dtype=float)
    masks = [(_free(a) if st.exclude_fixed_atoms else np.ones(len(a), bool))
             for a in configs]
    f_ref = [lab[1][m] for lab, m in zip(labels, masks)]
    f_m = [f[m] for f, m in zip(f_mod, masks)]
    s_ref = [lab[2] if s is not None else None for lab, s in zip(labels, s_mod)]
    e_ref = np.array([lab[0] for lab in labels])
    e_ref_pa, e_mod_pa = e_ref / n_at, e_mod / n_at
    groups_of = [group_of(a, st.group_key) for a in configs]
    rel = (relative_energies(configs, e_ref_pa), relative_energies(configs, e_mod_pa))
    bulk = _bulk_frames(configs, groups_of, e_ref)
    form = (formation_energies(configs, e_ref, bulk), formation_energies(configs, e_mod, bulk))

    def sub(idx: list[int]) -> ErrorStats:
        return _stats(e_ref_pa[idx], e_mod_pa[idx], [f_ref[i] for i in idx],
                      [f_m[i] for i in idx], [s_ref[i] for i in idx],
                      [s_mod[i] for i in idx], st.high_force_quantile,
                      (rel[0][idx], rel[1][idx]), (form[0][idx], form[1][idx]))

    overall = sub(list(range(len(configs))))
    groups = {g: sub([i for i, gi in enumerate(groups_of) if gi == g])
              for g in sorted(set(groups_of))}
    parity = {"energy_ref": e_ref_pa, "energy_model": e_mod_pa,
              "forces_ref": np.concatenate([f.ravel() for f in f_ref]),
              "forces_model": np.concatenate([f.ravel() for f in f_m]),
              "force_groups": np.concatenate([[g] * f.size for g, f in zip(groups_of, f_ref)]),
              "energy_groups": np.asarray(groups_of)}
    return overall, groups, parity


def _evaluate_task(model: Any, configs: Any, kwargs: dict[str, Any]) -> ModelEvaluation:
    """Module-level task for executors: one model on one data set."""
    return evaluate_model(model, configs, **kwargs)


def evaluate(models: Sequence[Any], data: Any, *, progress: bool = True,
             executor: Any = None, **kwargs: Any) -> EvaluationReport:
    """:func:`evaluate_model` for each of ``models`` on the same data.

    ``kwargs`` go to :func:`evaluate_model` (``align``, ``align_on``, ``group_key``,
    ``energy_key``, ``max_force``, ...).
    ``executor`` (``"process[:N]"``, a Dask client's executor, any
    ``concurrent.futures.Executor``; default in-process) evaluates the models in parallel;
    give them as spec strings so they pickle. Failures raise after all models ran, with
    every failed model named.
    """
    from ase_surftune.core.parallel import map_tasks, raise_failures

    if isinstance(models, (str, Path)):
        models = [models]
    if not models:
        raise ConfigError("give at least one model to evaluate")
    validate_model(EvaluationSettings,  # every problem once, before any model runs
                   {k: v for k, v in kwargs.items() if k in EvaluationSettings.model_fields},
                   "evaluation")
    configs, desc = load_configs(data, kwargs.get("group_key", _D.group_key),
                                 **{k: kwargs.get(k) for k in ("energy_key", "forces_key",
                                                               "stress_key")})
    runs = map_tasks(_evaluate_task, [(m, configs, kwargs) for m in models], executor,
                     labels=[str(m) for m in models], progress=progress,
                     desc="evaluate models")
    raise_failures(runs)
    return EvaluationReport(models=[r.value for r in runs], data=desc,
                            group_key=kwargs.get("group_key", _D.group_key))


def _evaluate_file_task(models: Sequence[Any], path: str,
                        kwargs: dict[str, Any]) -> EvaluationReport:
    return evaluate(models, path, progress=False, **kwargs)


def evaluate_files(models: Sequence[Any], files: Sequence[str | Path], *,
                   executor: Any = None, progress: bool = True, **kwargs: Any) -> list[Any]:
    """Evaluate ``models`` on each data file separately, one task per file.

    Returns one :class:`~ase_surftune.core.parallel.TaskResult` per file, in order: ``value`` is
    the file's :class:`EvaluationReport`, ``error`` says why a file failed (the other files
    still run).
    """
    from ase_surftune.core.parallel import map_tasks

    models = [models] if isinstance(models, (str, Path)) else list(models)
    return map_tasks(_evaluate_file_task, [(models, str(f), kwargs) for f in files], executor,
                     labels=[str(f) for f in files], progress=progress, desc="evaluate files")