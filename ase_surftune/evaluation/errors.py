"""Error-level evaluation of models on labelled data: MAE/RMSE and softening scales.

For each model (spec, ``spec@head`` or calculator) on a labelled data set:

* energies are first put on the model's reference by per-element shifts
  (:class:`~ase_surftune.alignment.ReferenceAlignment`, ``align="fit"``), or by given
  shifts, or not at all (``align="none"``, e.g. for fine-tuned bundles that store their
  own shifts);
* energy per atom (eV/atom), force-component (eV/Å) and stress-component (eV/Å³) MAE and
  RMSE, overall and per group (``atoms.info[group_key]``, default ``config_type``);
* the softening scale s = Σ F_ref·F_model / Σ F_ref² (seed 002;
  :func:`ase_surftune.correction.softening_scale`) overall, per group and on the atoms
  with the largest reference forces (:func:`~ase_surftune.correction.softening_scale_high_force`).

Results are dataclasses with ``to_dict()``; :class:`EvaluationReport` writes JSON, CSV,
a Markdown table and parity plots.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

from ase_surftune._io import atomic_write_text
from ase_surftune.errors import ConfigError, DataError

__all__ = ["ErrorStats", "ModelEvaluation", "EvaluationReport", "predict_with",
           "evaluate_model", "evaluate", "load_configs"]

log = logging.getLogger(__name__)

#: Columns of the per-(model, group) rows in CSV and Markdown output.
STAT_FIELDS = ("n_structures", "n_atoms", "energy_mae_per_atom", "energy_rmse_per_atom",
               "forces_mae", "forces_rmse", "stress_mae", "stress_rmse", "softening_scale",
               "softening_scale_high_force")


@dataclass
class ErrorStats:
    """Errors of one model on one set of structures.

    Energies in eV/atom, forces in eV/Å (per component), stress in eV/Å³ (per Voigt
    component; ``None`` when no structure has a stress label). ``softening_scale`` is
    dimensionless (1 = no bias, < 1 = model too soft); ``None`` if all reference forces
    are zero.
    """

    n_structures: int
    n_atoms: int
    energy_mae_per_atom: float
    energy_rmse_per_atom: float
    forces_mae: float
    forces_rmse: float
    softening_scale: float | None
    softening_scale_high_force: float | None
    stress_mae: float | None = None
    stress_rmse: float | None = None
    n_stress: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (*STAT_FIELDS, "n_stress")}


@dataclass
class ModelEvaluation:
    """One model on one data set: overall and per-group :class:`ErrorStats`.

    ``parity`` holds the raw arrays for plots (not serialised): reference and model
    energies per atom (aligned), force components, and the group of each.
    """

    model: str
    overall: ErrorStats
    groups: dict[str, ErrorStats]
    alignment: dict[str, Any] | None
    high_force_quantile: float
    n_skipped_stress: int = 0
    wall_time_s: float | None = None
    parity: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "overall": self.overall.to_dict(),
                "groups": {g: s.to_dict() for g, s in self.groups.items()},
                "alignment": self.alignment, "high_force_quantile": self.high_force_quantile,
                "wall_time_s": self.wall_time_s}

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows (model, group, metrics...) — overall first, then each group."""
        out = [{"model": self.model, "group": "all", **self.overall.to_dict()}]
        out += [{"model": self.model, "group": g, **s.to_dict()} for g, s in self.groups.items()]
        return out


@dataclass
class EvaluationReport:
    """Several models evaluated on the same data set."""

    models: list[ModelEvaluation]
    data: str | None = None
    group_key: str = "config_type"

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "group_key": self.group_key,
                "models": [m.to_dict() for m in self.models]}

    def rows(self) -> list[dict[str, Any]]:
        return [r for m in self.models for r in m.rows()]

    def to_markdown(self, groups: bool = True) -> str:
        """Markdown table: model, group, n, energy/force/stress MAE and softening scales."""
        from ase_surftune.evaluation.tables import markdown_table

        cols = [("model", "model", None), ("group", "group", None),
                ("n_structures", "n", None),
                ("energy_mae_per_atom", "E MAE (meV/atom)", 1000.0),
                ("forces_mae", "F MAE (eV/Å)", None), ("forces_rmse", "F RMSE (eV/Å)", None),
                ("stress_mae", "σ MAE (meV/Å³)", 1000.0),
                ("softening_scale", "softening s", None),
                ("softening_scale_high_force", "s (high |F|)", None)]
        rows = [r for r in self.rows() if groups or r["group"] == "all"]
        return markdown_table(rows, cols)

    def write(self, output_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
        """Write ``evaluation.json``, ``evaluation.csv``, ``evaluation.md`` and parity plots."""
        from ase_surftune.evaluation.tables import write_csv, write_json

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": write_json(self.to_dict(), out / "evaluation.json"),
                 "csv": write_csv(self.rows(), out / "evaluation.csv",
                                  ["model", "group", *STAT_FIELDS, "n_stress"])}
        atomic_write_text(out / "evaluation.md", self.to_markdown() + "\n")
        paths["markdown"] = out / "evaluation.md"
        if plots:
            from ase_surftune.evaluation.plots import plot_parity

            for i, m in enumerate(self.models):
                paths[f"parity_{i}"] = plot_parity(m, out / f"parity_{_safe(m.model)}.png")
        return paths


def _safe(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return keep.strip("._")[-60:] or "model"


# --------------------------------------------------------------------------- predictions


def load_configs(data: str | Path | Sequence[Atoms] | Sequence[str | Path],
                 group_key: str = "config_type") -> tuple[list[Atoms], str | None]:
    """Labelled structures from a path, list of paths, or Atoms list (+ a description)."""
    from ase_surftune.data import read_labelled

    if isinstance(data, (str, Path)):
        return read_labelled(str(data), group_key=group_key), str(data)
    data = list(data)
    if data and all(isinstance(d, (str, Path)) for d in data):
        return read_labelled([str(d) for d in data], group_key=group_key), ", ".join(map(str, data))
    if not all(isinstance(d, Atoms) for d in data):
        raise DataError("data must be a file path, a list of paths or a list of Atoms")
    return data, None


def predict_with(calc: Any, configs: Sequence[Atoms], *, compute_stress: Sequence[bool] | bool
                 = False, progress: bool = False, batch_size: int | str = "auto"
                 ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray | None]]:
    """Energies (eV), raw forces (eV/Å) and Voigt stresses (eV/Å³ or None) of ``calc``.

    Batched for :class:`~ase_surftune.calculator.SurfTuneCalculator`, one structure at a
    time for any other ASE calculator. ``compute_stress`` may be one flag per structure.
    """
    n = len(configs)
    want = [bool(compute_stress)] * n if isinstance(compute_stress, bool) else \
        [bool(x) for x in compute_stress]
    if len(want) != n:
        raise ValueError("compute_stress must have one flag per structure")
    energies = np.zeros(n)
    forces: list[np.ndarray] = [np.zeros((len(a), 3)) for a in configs]
    stresses: list[np.ndarray | None] = [None] * n
    if hasattr(calc, "predict") and hasattr(calc, "bundle"):
        idx_s = [i for i in range(n) if want[i]]
        idx_n = [i for i in range(n) if not want[i]]
        for idx, stress in ((idx_s, True), (idx_n, False)):
            if not idx:
                continue
            pred = calc.predict([configs[i] for i in idx], batch_size=batch_size,
                                compute_stress=stress, progress=progress)
            for k, i in enumerate(idx):
                energies[i] = float(pred.energy[k])
                forces[i] = np.asarray(pred.forces[k], dtype=float)
                if stress:
                    stresses[i] = full_3x3_to_voigt_6_stress(np.asarray(pred.stress[k]))
        return energies, forces, stresses
    from tqdm.auto import tqdm

    for i in tqdm(range(n), desc="predict", disable=not progress, unit="struct"):
        work = configs[i].copy()
        work.calc = calc
        energies[i] = float(work.get_potential_energy())
        forces[i] = np.array(work.get_forces(apply_constraint=False), dtype=float)
        if want[i]:
            stresses[i] = np.array(work.get_stress(voigt=True), dtype=float)
    return energies, forces, stresses


# --------------------------------------------------------------------------- statistics


def _mae_rmse(x: np.ndarray) -> tuple[float, float]:
    if x.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(np.abs(x))), float(np.sqrt(np.mean(x ** 2)))


def _stats(e_ref_pa: np.ndarray, e_mod_pa: np.ndarray, f_ref: list[np.ndarray],
           f_mod: list[np.ndarray], s_ref: list[np.ndarray | None],
           s_mod: list[np.ndarray | None], quantile: float) -> ErrorStats:
    from ase_surftune.correction import softening_scale, softening_scale_high_force

    fr = np.concatenate([f.reshape(-1, 3) for f in f_ref]) if f_ref else np.zeros((0, 3))
    fm = np.concatenate([f.reshape(-1, 3) for f in f_mod]) if f_mod else np.zeros((0, 3))
    e_mae, e_rmse = _mae_rmse(e_mod_pa - e_ref_pa)
    f_mae, f_rmse = _mae_rmse(fm - fr)
    s = s_hf = None
    if fr.size and np.any(fr):
        s = softening_scale(fr, fm)
        try:
            s_hf = softening_scale_high_force(fr, fm, quantile)
        except DataError:
            s_hf = None
    pairs = [(a, b) for a, b in zip(s_ref, s_mod) if a is not None and b is not None]
    st_mae = st_rmse = None
    if pairs:
        st_mae, st_rmse = _mae_rmse(np.concatenate([b - a for a, b in pairs]))
    return ErrorStats(n_structures=len(e_ref_pa), n_atoms=int(len(fr)),
                      energy_mae_per_atom=e_mae, energy_rmse_per_atom=e_rmse,
                      forces_mae=f_mae, forces_rmse=f_rmse, softening_scale=s,
                      softening_scale_high_force=s_hf, stress_mae=st_mae, stress_rmse=st_rmse,
                      n_stress=len(pairs))


def _free(atoms: Atoms) -> np.ndarray:
    from ase_surftune.data import free_atom_mask

    return free_atom_mask(atoms)


def evaluate_model(model: Any, data: Any, *, align: str | dict[str, float] = "fit",
                   group_key: str = "config_type", high_force_quantile: float = 0.9,
                   exclude_fixed_atoms: bool = False, stress: bool = True,
                   device: str = "cpu", progress: bool = False,
                   label: str | None = None) -> ModelEvaluation:
    """Errors and softening scales of one model on labelled data.

    Args:
        model: a spec (``"chgnet"``, ``"run/model.stbundle@surface"``, ``"emt"``), a
            ``(label, calculator)`` pair or an ASE calculator.
        data: an extxyz/ASE-readable path, a list of paths, or labelled Atoms.
        align: ``"fit"`` — fit per-element shifts δ_Z on this data so that
            E_ref ≈ E_model + Σδ (energy-reference alignment); ``"none"`` — compare raw
            energies (bundles already carry their shifts); or a ``{symbol: δ}`` dict.
        group_key: ``atoms.info`` key for the per-group breakdown.
        high_force_quantile: atoms with |F_ref| at or above this quantile form the
            high-force subset of :func:`softening_scale_high_force`.
        exclude_fixed_atoms: leave FixAtoms-constrained atoms out of force statistics.
        stress: compare stresses where a label exists and the cell is 3D periodic.
        label: name used in tables (default: the spec).

    Returns:
        :class:`ModelEvaluation` (overall + per-group :class:`ErrorStats`).
    """
    import time

    from ase.data import chemical_symbols

    from ase_surftune.alignment import ReferenceAlignment
    from ase_surftune.data import DEFAULT_GROUP, get_labels
    from ase_surftune.evaluation._spec import make_calculator, spec_label

    if not 0.0 <= high_force_quantile < 1.0:
        raise ConfigError(f"high_force_quantile must be in [0, 1), got {high_force_quantile}")
    t0 = time.perf_counter()
    configs, _ = load_configs(data, group_key)
    if not configs:
        raise DataError("no labelled structures to evaluate on")
    labels = [get_labels(a) for a in configs]
    calc = make_calculator(model, device=device)
    want_s = [stress and lab[2] is not None and bool(all(a.pbc)) and a.cell.rank == 3
              for a, lab in zip(configs, labels)]
    e_mod, f_mod, s_mod = predict_with(calc, configs, compute_stress=want_s, progress=progress)
    e_ref = np.array([lab[0] for lab in labels])
    n_at = np.array([len(a) for a in configs], dtype=float)

    alignment: dict[str, Any] | None = None
    if isinstance(align, dict):
        shifts = {str(k): float(v) for k, v in align.items()}
        alignment = {"shifts": shifts, "source": "given"}
    elif align == "fit":
        ra = ReferenceAlignment.fit(configs, e_ref - e_mod)
        shifts = ra.shifts
        alignment = {**ra.to_dict(), "source": "fit"}
    elif align == "none":
        shifts = {}
    else:
        raise ConfigError(f"align must be 'fit', 'none' or a dict of shifts, got {align!r}")
    shift_e = np.array([sum(shifts.get(chemical_symbols[int(z)], 0.0) for z in a.numbers)
                        for a in configs])
    e_mod_aligned = e_mod + shift_e

    masks = [(_free(a) if exclude_fixed_atoms else np.ones(len(a), bool)) for a in configs]
    f_ref = [lab[1][m] for lab, m in zip(labels, masks)]
    f_m = [f[m] for f, m in zip(f_mod, masks)]
    s_ref = [lab[2] if w else None for lab, w in zip(labels, want_s)]
    e_ref_pa, e_mod_pa = e_ref / n_at, e_mod_aligned / n_at

    overall = _stats(e_ref_pa, e_mod_pa, f_ref, f_m, s_ref, s_mod, high_force_quantile)
    groups_of = [str(a.info.get(group_key, DEFAULT_GROUP)) for a in configs]
    groups: dict[str, ErrorStats] = {}
    for g in sorted(set(groups_of)):
        idx = [i for i, gi in enumerate(groups_of) if gi == g]
        groups[g] = _stats(e_ref_pa[idx], e_mod_pa[idx], [f_ref[i] for i in idx],
                           [f_m[i] for i in idx], [s_ref[i] for i in idx],
                           [s_mod[i] for i in idx], high_force_quantile)
    parity = {"energy_ref": e_ref_pa, "energy_model": e_mod_pa,
              "forces_ref": np.concatenate([f.ravel() for f in f_ref]),
              "forces_model": np.concatenate([f.ravel() for f in f_m]),
              "force_groups": np.concatenate([[g] * f.size for g, f in zip(groups_of, f_ref)]),
              "energy_groups": np.asarray(groups_of)}
    name = label or spec_label(model)
    res = ModelEvaluation(model=name, overall=overall, groups=groups, alignment=alignment,
                          high_force_quantile=high_force_quantile,
                          n_skipped_stress=int(sum(lab[2] is not None and not w
                                                   for lab, w in zip(labels, want_s))),
                          wall_time_s=round(time.perf_counter() - t0, 3), parity=parity)
    log.info("%s: force MAE %.4f eV/Å, softening scale %s", name, overall.forces_mae,
             "n/a" if overall.softening_scale is None else f"{overall.softening_scale:.4f}")
    return res


def _evaluate_task(model: Any, configs: Any, kwargs: dict[str, Any]) -> ModelEvaluation:
    """Module-level task for executors: one model on one data set."""
    return evaluate_model(model, configs, **kwargs)


def evaluate(models: Sequence[Any], data: Any, *, progress: bool = True,
             executor: Any = None, **kwargs: Any) -> EvaluationReport:
    """:func:`evaluate_model` for each of ``models`` on the same data.

    ``kwargs`` go to :func:`evaluate_model` (``align``, ``group_key``, ...).
    ``executor`` (``"process[:N]"``, a Dask client's executor, any
    ``concurrent.futures.Executor``; default in-process) evaluates the models in parallel;
    give them as spec strings so they pickle. Failures raise after all models ran, with
    every failed model named.
    """
    from ase_surftune.parallel import map_tasks, raise_failures

    if isinstance(models, (str, Path)):
        models = [models]
    if not models:
        raise ConfigError("give at least one model to evaluate")
    configs, desc = load_configs(data, kwargs.get("group_key", "config_type"))
    runs = map_tasks(_evaluate_task, [(m, configs, kwargs) for m in models], executor,
                     labels=[str(m) for m in models], progress=progress,
                     desc="evaluate models")
    raise_failures(runs)
    return EvaluationReport(models=[r.value for r in runs], data=desc,
                            group_key=kwargs.get("group_key", "config_type"))


def _evaluate_file_task(models: Sequence[Any], path: str,
                        kwargs: dict[str, Any]) -> EvaluationReport:
    return evaluate(models, path, progress=False, **kwargs)


def evaluate_files(models: Sequence[Any], files: Sequence[str | Path], *,
                   executor: Any = None, progress: bool = True, **kwargs: Any) -> list[Any]:
    """Evaluate ``models`` on each data file separately, one task per file.

    Returns one :class:`~ase_surftune.parallel.TaskResult` per file, in order: ``value`` is
    the file's :class:`EvaluationReport`, ``error`` says why a file failed (the other files
    still run).
    """
    from ase_surftune.parallel import map_tasks

    models = [models] if isinstance(models, (str, Path)) else list(models)
    return map_tasks(_evaluate_file_task, [(models, str(f), kwargs) for f in files], executor,
                     labels=[str(f) for f in files], progress=progress, desc="evaluate files")