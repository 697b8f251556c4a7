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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.core.io import atomic_write_text
from ase_surftune.models.predict import predict_with  # re-exported: the one prediction path

__all__ = ["ErrorStats", "ModelEvaluation", "EvaluationReport", "predict_with",
           "evaluate_model", "evaluate", "load_configs", "group_of", "relative_energies",
           "formation_energies"]

log = logging.getLogger(__name__)

#: Columns of the per-(model, group) rows in CSV and Markdown output.
STAT_FIELDS = ("n_structures", "n_atoms", "energy_mae_per_atom", "energy_rmse_per_atom",
               "energy_rel_mae_per_atom", "n_energy_rel", "energy_form_mae_per_atom",
               "n_energy_form", "forces_mae", "forces_rmse", "stress_mae", "stress_rmse",
               "softening_scale", "softening_scale_band", "softening_scale_frame_median",
               "n_force_excluded_high", "n_force_excluded_low", "softening_note",
               "softening_scale_high_force")


@dataclass
class ErrorStats:
    """Errors of one model on one set of structures.

    Energies in eV/atom, forces in eV/Å (per component), stress in eV/Å³ (per Voigt
    component; ``None`` when no structure has a stress label). ``energy_rel_*``: energy
    relative to the mean of the same composition (over ``n_energy_rel`` frames in
    compositions with ≥ 2 frames); ``energy_form_*``: formation-like slab − bulk energy
    (``n_energy_form`` frames). Softening scales are dimensionless (1 = no bias, < 1 =
    model too soft; see :func:`ase_surftune.core.metrics.softening_stats`): ``None`` with
    ``softening_note = "n/a (too little force signal)"`` when the group's force signal
    is too small.
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
    energy_rel_mae_per_atom: float | None = None
    n_energy_rel: int = 0
    energy_form_mae_per_atom: float | None = None
    n_energy_form: int = 0
    softening_scale_band: float | None = None
    softening_scale_frame_median: float | None = None
    n_force_excluded_high: int = 0
    n_force_excluded_low: int = 0
    softening_note: str | None = None

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
    #: frames left out by ``max_force`` (``{"index", "source", "group", "max_force"}``)
    dropped_frames: list[dict[str, Any]] = field(default_factory=list)
    #: frames above ``max_force`` that were kept but flagged
    flagged_frames: list[dict[str, Any]] = field(default_factory=list)
    max_force: float | None = None

    @property
    def energy_reference(self) -> str:
        """Short label of where the energy reference came from (shown in every table)."""
        return str((self.alignment or {}).get("label", "none"))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "energy_reference": self.energy_reference,
                "overall": self.overall.to_dict(),
                "groups": {g: s.to_dict() for g, s in self.groups.items()},
                "alignment": self.alignment, "high_force_quantile": self.high_force_quantile,
                "max_force": self.max_force, "dropped_frames": self.dropped_frames,
                "flagged_frames": self.flagged_frames, "wall_time_s": self.wall_time_s}

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows (model, group, metrics...) — overall first, then each group."""
        ref = self.energy_reference
        out = [{"model": self.model, "group": "all", "energy_reference": ref,
                **self.overall.to_dict()}]
        out += [{"model": self.model, "group": g, "energy_reference": ref, **s.to_dict()}
                for g, s in self.groups.items()]
        return out

    def notes(self) -> list[str]:
        """Lines a reader must see next to the table: self-alignment, dropped frames."""
        out = []
        al = self.alignment or {}
        if al.get("warning"):
            out.append(f"{self.model}: {al['warning']}")
        if al.get("reason"):
            out.append(f"{self.model}: energy alignment: {al['reason']}")
        for kind, frames in (("dropped", self.dropped_frames),
                             ("flagged (kept)", self.flagged_frames)):
            for fr in frames:
                out.append(f"{self.model}: {kind} frame {fr['source']} (group {fr['group']}): "
                           f"max |F_ref| = {fr['max_force']:.2f} eV/Å > --max-force "
                           f"{self.max_force:g}")
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
        """Markdown table (model, group, energy reference, n, energies three ways, force
        and stress MAE, softening scales) followed by the notes of every model."""
        from ase_surftune.evaluation.tables import markdown_table

        cols = [("model", "model", None), ("group", "group", None),
                ("energy_reference", "E ref", None), ("n_structures", "n", None),
                ("energy_mae_per_atom", "E MAE (meV/atom)", 1000.0),
                ("energy_rel_mae_per_atom", "E rel. MAE (meV/atom)", 1000.0),
                ("energy_form_mae_per_atom", "E form. MAE (meV/atom)", 1000.0),
                ("forces_mae", "F MAE (eV/Å)", None), ("forces_rmse", "F RMSE (eV/Å)", None),
                ("stress_mae", "σ MAE (meV/Å³)", 1000.0),
                ("softening_scale", "s (all)", None),
                ("softening_scale_band", "s (band)", None),
                ("softening_scale_frame_median", "s (frame median)", None),
                ("n_force_excluded", "F comps excluded", None),
                ("softening_scale_high_force", "s (high |F|)", None)]
        rows = []
        for r in self.rows():
            if not groups and r["group"] != "all":
                continue
            r = dict(r)
            r["n_force_excluded"] = r["n_force_excluded_high"] + r["n_force_excluded_low"]
            if r.get("softening_note"):
                r["softening_scale"] = r["softening_note"]
            rows.append(r)
        text = markdown_table(rows, cols)
        from ase_surftune.core.metrics import FORCE_BAND_MAX, FORCE_NOISE_FLOOR

        text += (f"\n\ns (band): components with {FORCE_NOISE_FLOOR:g} <= |F_ref| <= "
                 f"{FORCE_BAND_MAX:g} eV/Å. E ref: where the energy reference came from "
                 f"(stored = the model's own calibration, align-on = fitted on other "
                 f"frames, SELF-ALIGNED = fitted on the scored frames).")
        notes = [n for m in self.models for n in m.notes()]
        if notes:
            text += "\n\n" + "\n".join(f"- {n}" for n in notes)
        return text

    def write(self, output_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
        """Write ``evaluation.json``, ``evaluation.csv``, ``evaluation.md`` and parity plots."""
        from ase_surftune.evaluation.tables import write_csv, write_json

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": write_json(self.to_dict(), out / "evaluation.json"),
                 "csv": write_csv(self.rows(), out / "evaluation.csv",
                                  ["model", "group", "energy_reference", *STAT_FIELDS,
                                   "n_stress"])}
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


# --------------------------------------------------------------------------- statistics


def _stats(e_ref_pa: np.ndarray, e_mod_pa: np.ndarray, f_ref: list[np.ndarray],
           f_mod: list[np.ndarray], s_ref: list[np.ndarray | None],
           s_mod: list[np.ndarray | None], quantile: float,
           e_rel: tuple[np.ndarray, np.ndarray], e_form: tuple[np.ndarray, np.ndarray]
           ) -> ErrorStats:
    """Statistics of one set of frames. ``e_rel``/``e_form``: (reference, model) per-atom
    relative / formation-like energies of these frames, NaN where not defined."""
    from ase_surftune.core.metrics import mae_rmse, softening_stats
    from ase_surftune.models.correction import softening_scale_high_force

    fr = np.concatenate([f.reshape(-1, 3) for f in f_ref]) if f_ref else np.zeros((0, 3))
    fm = np.concatenate([f.reshape(-1, 3) for f in f_mod]) if f_mod else np.zeros((0, 3))
    e_mae, e_rmse = mae_rmse(e_mod_pa - e_ref_pa)
    f_mae, f_rmse = mae_rmse(fm - fr)
    soft = softening_stats(f_ref, f_mod)
    s_hf = None
    if soft["s_all"] is not None:
        try:
            s_hf = softening_scale_high_force(fr, fm, quantile)
        except DataError:
            s_hf = None
    pairs = [(a, b) for a, b in zip(s_ref, s_mod) if a is not None and b is not None]
    st_mae = st_rmse = None
    if pairs:
        st_mae, st_rmse = mae_rmse(np.concatenate([b - a for a, b in pairs]))
    extra: dict[str, Any] = {}
    for name, (ref, mod) in (("rel", e_rel), ("form", e_form)):
        ok = np.isfinite(ref) & np.isfinite(mod)
        extra[f"energy_{name}_mae_per_atom"] = mae_rmse(mod[ok] - ref[ok])[0] if ok.any() \
            else None
        extra[f"n_energy_{name}"] = int(ok.sum())
    return ErrorStats(n_structures=len(e_ref_pa), n_atoms=int(len(fr)),
                      energy_mae_per_atom=e_mae, energy_rmse_per_atom=e_rmse,
                      forces_mae=f_mae, forces_rmse=f_rmse, softening_scale=soft["s_all"],
                      softening_scale_high_force=s_hf, stress_mae=st_mae, stress_rmse=st_rmse,
                      n_stress=len(pairs), softening_scale_band=soft["s_band"],
                      softening_scale_frame_median=soft["s_frame_median"],
                      n_force_excluded_high=soft["n_excluded_high"],
                      n_force_excluded_low=soft["n_excluded_low"],
                      softening_note=soft["note"], **extra)


def _free(atoms: Atoms) -> np.ndarray:
    from ase_surftune.data import free_atom_mask

    return free_atom_mask(atoms)


def group_of(atoms: Atoms, group_key: str = "config_type") -> str:
    """The evaluation group of a frame: ``info[group_key]``; without one, the source file
    (``info["source"]`` = ``"file@k"`` from :func:`~ase_surftune.data.read_labelled`), so
    frames of different trajectories are not lumped into one ``"default"`` group."""
    from ase_surftune.data import DEFAULT_GROUP, source_file

    g = atoms.info.get(group_key)
    if g is None or str(g) == DEFAULT_GROUP:
        src = source_file(atoms)
        if src:
            return Path(src).name or DEFAULT_GROUP
        return DEFAULT_GROUP
    return str(g)


def _composition_key(atoms: Atoms) -> str:
    from ase.formula import Formula

    return str(Formula(atoms.get_chemical_formula()).reduce()[0])


def relative_energies(configs: Sequence[Atoms], e_pa: np.ndarray) -> np.ndarray:
    """E/N minus the mean E/N of the frames with the same reduced composition (eV/atom);
    NaN for compositions with a single frame. Independent of per-element references."""
    keys = [_composition_key(a) for a in configs]
    out = np.full(len(configs), np.nan)
    for k in set(keys):
        idx = [i for i, kk in enumerate(keys) if kk == k]
        if len(idx) >= 2:
            out[idx] = e_pa[idx] - np.mean(e_pa[idx])
    return out


def formation_energies(configs: Sequence[Atoms], energies: np.ndarray, bulk_index: dict[str, int]
                       ) -> np.ndarray:
    """(E − N·E_bulk/N_bulk)/N (eV/atom) of non-bulk frames against the bulk frame
    ``bulk_index[composition]``; NaN for bulk frames and compositions without bulk."""
    out = np.full(len(configs), np.nan)
    for i, a in enumerate(configs):
        j = bulk_index.get(_composition_key(a))
        if j is None or j == i:
            continue
        out[i] = (energies[i] - len(a) * energies[j] / len(configs[j])) / len(a)
    return out


def _bulk_frames(configs: Sequence[Atoms], groups: Sequence[str], e_ref: np.ndarray
                 ) -> dict[str, int]:
    """Lowest reference E/N bulk frame (group name contains "bulk") per composition."""
    best: dict[str, int] = {}
    for i, (a, g) in enumerate(zip(configs, groups)):
        if "bulk" not in g.lower():
            continue
        k = _composition_key(a)
        if k not in best or e_ref[i] / len(a) < e_ref[best[k]] / len(configs[best[k]]):
            best[k] = i
    return best


def _max_force(forces: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(forces, axis=1))) if len(forces) else 0.0


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


def evaluate_model(model: Any, data: Any, *, align: str | dict[str, float] = "stored",
                   align_on: Any = None, group_key: str = "config_type",
                   high_force_quantile: float = 0.9, exclude_fixed_atoms: bool = False,
                   stress: bool = True, device: str = "cpu", progress: bool = False,
                   label: str | None = None, energy_key: str | None = None,
                   forces_key: str | None = None, stress_key: str | None = None,
                   max_force: float | None = None,
                   max_force_mode: str = "drop") -> ModelEvaluation:
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
    """
    import time

    from ase_surftune.data import get_labels
    from ase_surftune.data.alignment import ReferenceAlignment
    from ase_surftune.evaluation._spec import make_calculator, spec_label

    if not 0.0 <= high_force_quantile < 1.0:
        raise ConfigError(f"high_force_quantile must be in [0, 1), got {high_force_quantile}")
    if max_force is not None and not max_force > 0:
        raise ConfigError(f"max_force must be > 0 eV/Å, got {max_force}")
    if max_force_mode not in ("drop", "flag"):
        raise ConfigError(f"max_force_mode must be 'drop' or 'flag', got {max_force_mode!r}")
    if align == "fit":
        raise ConfigError("align='fit' fitted energy shifts on the scored frames (a leak); "
                          "use align_on=FILE (frames not scored), the model's stored "
                          "shifts (align='stored'), or align='self' to opt in to a "
                          "labelled self-aligned table")
    if not (isinstance(align, dict) or align in ("stored", "none", "self")):
        raise ConfigError(f"align must be 'stored', 'none', 'self' or a dict of shifts, got "
                          f"{align!r}")
    keys = {"energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key}
    t0 = time.perf_counter()
    configs, _ = load_configs(data, group_key, **keys)
    if not configs:
        raise DataError("no labelled structures to evaluate on")
    labels = [get_labels(a) for a in configs]
    dropped: list[dict[str, Any]] = []
    flagged: list[dict[str, Any]] = []
    if max_force is not None:
        keep = []
        for i, (a, lab) in enumerate(zip(configs, labels)):
            fmax = _max_force(lab[1])
            if fmax > max_force:
                entry = {"index": i, "source": str(a.info.get("source", f"frame {i}")),
                         "group": group_of(a, group_key), "max_force": fmax}
                (dropped if max_force_mode == "drop" else flagged).append(entry)
                if max_force_mode == "drop":
                    continue
            keep.append(i)
        for e in dropped + flagged:
            log.warning("%s frame %s (group %s): max |F_ref| %.2f eV/Å > max_force %g",
                        "dropped" if max_force_mode == "drop" else "flagged", e["source"],
                        e["group"], e["max_force"], max_force)
        configs = [configs[i] for i in keep]
        labels = [labels[i] for i in keep]
        if not configs:
            raise DataError(f"max_force {max_force} eV/Å drops every frame")
    calc = make_calculator(model, device=device)
    want_s = [stress and lab[2] is not None and bool(all(a.pbc)) and a.cell.rank == 3
              for a, lab in zip(configs, labels)]
    e_mod, f_mod, s_mod = predict_with(calc, configs, compute_stress=want_s, progress=progress)
    e_ref = np.array([lab[0] for lab in labels])
    n_at = np.array([len(a) for a in configs], dtype=float)

    shifts: dict[str, float] = {}
    if align_on is not None:
        alignment = _fit_alignment(calc, align_on, group_key, keys, configs)
        shifts = alignment["shifts"]
    elif isinstance(align, dict):
        shifts = {str(k): float(v) for k, v in align.items()}
        alignment = {"shifts": shifts, "source": "given", "label": "given"}
    elif align == "self":
        ra = ReferenceAlignment.fit(configs, e_ref - e_mod)
        shifts = ra.shifts
        alignment = {**ra.to_dict(), "source": "self", "label": "SELF-ALIGNED",
                     "warning": "SELF-ALIGNED: energy shifts were fitted on the scored "
                                "frames; the absolute energy error is not independent"}
    else:
        alignment = {"shifts": {}, "source": "stored", "label": align,
                     "note": "the model's own calibration (a bundle's stored shifts, "
                             "fitted on its training data); no fit on the scored frames"}
    shift_e = np.array([per_element_sum(shifts, a.numbers) for a in configs])
    e_mod_aligned = e_mod + shift_e

    masks = [(_free(a) if exclude_fixed_atoms else np.ones(len(a), bool)) for a in configs]
    f_ref = [lab[1][m] for lab, m in zip(labels, masks)]
    f_m = [f[m] for f, m in zip(f_mod, masks)]
    s_ref = [lab[2] if w else None for lab, w in zip(labels, want_s)]
    e_ref_pa, e_mod_pa = e_ref / n_at, e_mod_aligned / n_at
    groups_of = [group_of(a, group_key) for a in configs]
    rel = (relative_energies(configs, e_ref_pa), relative_energies(configs, e_mod_pa))
    bulk = _bulk_frames(configs, groups_of, e_ref)
    form = (formation_energies(configs, e_ref, bulk),
            formation_energies(configs, e_mod_aligned, bulk))

    def sub(idx: list[int]) -> ErrorStats:
        return _stats(e_ref_pa[idx], e_mod_pa[idx], [f_ref[i] for i in idx],
                      [f_m[i] for i in idx], [s_ref[i] for i in idx],
                      [s_mod[i] for i in idx], high_force_quantile,
                      (rel[0][idx], rel[1][idx]), (form[0][idx], form[1][idx]))

    overall = sub(list(range(len(configs))))
    groups = {g: sub([i for i, gi in enumerate(groups_of) if gi == g])
              for g in sorted(set(groups_of))}
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
                          wall_time_s=round(time.perf_counter() - t0, 3), parity=parity,
                          dropped_frames=dropped, flagged_frames=flagged, max_force=max_force)
    log.info("%s: force MAE %.4f eV/Å, softening scale %s", name, overall.forces_mae,
             overall.softening_note or f"{overall.softening_scale:.4f}")
    return res


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
    configs, desc = load_configs(data, kwargs.get("group_key", "config_type"),
                                 **{k: kwargs.get(k) for k in ("energy_key", "forces_key",
                                                               "stress_key")})
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

    Returns one :class:`~ase_surftune.core.parallel.TaskResult` per file, in order: ``value`` is
    the file's :class:`EvaluationReport`, ``error`` says why a file failed (the other files
    still run).
    """
    from ase_surftune.core.parallel import map_tasks

    models = [models] if isinstance(models, (str, Path)) else list(models)
    return map_tasks(_evaluate_file_task, [(models, str(f), kwargs) for f in files], executor,
                     labels=[str(f) for f in files], progress=progress, desc="evaluate files")