"""Fitting helpers of the environment-aware correction
(:func:`ase_surftune.models.env_correction.fit_env_correction`): the least-squares layout,
the automatic cutoff, argument checks, and the per-group before/after report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list

from ase_surftune.core.errors import DataError
from ase_surftune.core.metrics import NA_SIGNAL
from ase_surftune.data.labels import DEFAULT_GROUP, get_labels
from ase_surftune.models.correction import compare_before_after

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

__all__ = ["SCALE_MODES", "WEIGHTINGS", "per_group_scales", "frame_group", "auto_rc",
           "auto_r0", "force_row_weights", "eos_cells", "EOS_STRAINS"]

SCALE_MODES = ("fit", "slope", "fixed")


WEIGHTINGS = ("component", "frame")
#: rms reference force (eV/Å) below which ``weighting="frame"`` stops dividing by it
FRAME_WEIGHT_FLOOR = 0.02
#: cutoff as a multiple of the nearest-neighbour distance, by how many shells it spans:
#: between fcc's first (1) and second (√2) shells, or between its second and third (√3)
RC_PER_SHELLS = {1: 1.2, 2: 1.7}


def nearest_neighbour_distance(frames: Sequence[Atoms]) -> float:
    """Median over the fit frames of each frame's smallest interatomic distance (Å)."""
    nn = []
    for at in frames:
        if len(at) < 2 and not any(at.pbc):
            continue
        i, d = neighbor_list("id", at, 6.0)
        if len(d):
            nn.append(np.min(d))
    if not nn:
        raise DataError("cannot choose a cutoff: no neighbours within 6 Å in the fit frames")
    return float(np.median(nn))


def auto_rc(frames: Sequence[Atoms], shells: int = 1) -> float:
    """A cutoff (Å) from the fit frames: 1.2 × the smallest interatomic distance (first
    shell only, between fcc's first and second shells) or, with ``shells=2``, 1.7 × the
    median first-shell bond (:func:`auto_r0`; first and second shells, below fcc's third
    at √3). The two-shell cutoff uses the median bond because rattles shorten the
    smallest distance by more than the 1.7/1.2 margin allows."""
    if shells not in RC_PER_SHELLS:
        raise ValueError(f"shells must be one of {sorted(RC_PER_SHELLS)}, got {shells}")
    if shells == 1:
        return RC_PER_SHELLS[1] * nearest_neighbour_distance(frames)
    return RC_PER_SHELLS[shells] * auto_r0(frames)


def auto_r0(frames: Sequence[Atoms]) -> float:
    """The bulk nearest-neighbour bond length (Å) for the well terms: the median length of
    the first-shell bonds (shorter than 1.2 × the smallest distance) in the fit frames.
    Rattles spread the bonds about it symmetrically, so the median stays near the bulk
    value."""
    cut = RC_PER_SHELLS[1] * nearest_neighbour_distance(frames)
    bonds = np.concatenate([neighbor_list("d", at, cut) for at in frames])
    return float(np.median(bonds))


#: the gate's first-shell edge in units of the bulk bond r0: half-way between fcc's first
#: (r0) and second (√2·r0) shells
GATE_R_PER_R0 = 0.5 * (1.0 + np.sqrt(2.0))


def auto_gate(frames: Sequence[Atoms], r0: float | None = None) -> tuple[float, float]:
    """The bulk-likeness gate's (edge gate_r Å, ideal count n0) from the fit frames:
    gate_r = :data:`GATE_R_PER_R0` × r0 (default :func:`auto_r0`), and n0 the largest
    first-shell count of any fit atom, rounded (12 in fcc, as long as one fit frame is
    bulk)."""
    from ase_surftune.models.env_basis import first_shell_counts

    r0 = float(r0) if r0 is not None else auto_r0(frames)
    gate_r = GATE_R_PER_R0 * r0
    n0 = max(float(np.max(first_shell_counts(at, gate_r))) for at in frames)
    return gate_r, float(round(n0))


def force_row_weights(f_refs: Sequence[np.ndarray], weighting: str) -> np.ndarray:
    """Weight of each force component in the least squares (one per component).

    ``"component"``: every component alike, 1/√N_F (the mean squared error). ``"frame"``:
    each frame's components divided by that frame's rms reference force (floored at
    :data:`FRAME_WEIGHT_FLOOR`) and by √(n_frame·N_frames), so every frame counts as much
    *relative to its own force signal*: small-force frames, where the softening of
    universal potentials is largest, are not drowned by large-force ones.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    sizes = [f.size for f in f_refs]
    if weighting == "component":
        return np.full(sum(sizes), 1.0 / np.sqrt(sum(sizes)))
    return np.concatenate([
        np.full(f.size, 1.0 / (max(float(np.sqrt(np.mean(f ** 2))), FRAME_WEIGHT_FLOOR)
                               * np.sqrt(f.size * len(f_refs)))) for f in f_refs])


def check_fit_args(frames: Sequence[Atoms], max_frames: int | None, scale: str,
                   weighting: str = "component") -> list[Atoms]:
    frames = list(frames)
    if not frames:
        raise DataError("no frames to fit an environment correction on")
    if max_frames is not None and len(frames) > max_frames:
        raise DataError(f"{len(frames)} fit frames; the environment correction is meant "
                        f"to be fitted on at most {max_frames} (pass max_frames=None)")
    if scale not in SCALE_MODES:
        raise ValueError(f"scale must be one of {SCALE_MODES}, got {scale!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    return frames


@dataclass
class _Problem:
    """The least-squares layout of :func:`fit_env_correction`: columns [a?] [c_k, d_m] [b_Z]."""

    elements: list[str]
    free_scale: bool
    a_fixed: float
    k_res: int

    @property
    def c0(self) -> int:
        return int(self.free_scale)

    @property
    def n_cols(self) -> int:
        return self.c0 + self.k_res + len(self.elements)

    def _target(self, ref: Any, model: Any) -> Any:
        """What the residual columns fit: ref, or ref − a·model when a is not free."""
        return ref - (0.0 if self.free_scale else self.a_fixed * model)

    def rows(self, frames: Sequence[Atoms], refs: list[Any], mods: list[Any],
             bases: list[Any], f_ref: np.ndarray, f_mod: np.ndarray, energy_weight: float,
             stress_weight: float, weighting: str = "component"
             ) -> tuple[np.ndarray, np.ndarray]:
        """Weighted design matrix and target: force, energy and stress rows."""
        k_res, n_el = self.k_res, len(self.elements)
        w_f = force_row_weights([np.asarray(r[1]) for r in refs], weighting)[:, None]
        bf = np.concatenate([b.forces.reshape(k_res, 3 * b.forces.shape[1]) for b in bases],
                            axis=1).T
        cols = ([f_mod[:, None]] if self.free_scale else []) + [bf, np.zeros((f_ref.size,
                                                                               n_el))]
        rows, ys = [w_f * np.hstack(cols)], [w_f[:, 0] * self._target(f_ref, f_mod)]
        if energy_weight > 0:
            for at, r, m, b in zip(frames, refs, mods, bases):
                w_e = np.sqrt(energy_weight / len(frames)) / len(at)
                row = np.zeros(self.n_cols)
                if self.free_scale:
                    row[0] = m[0]
                row[self.c0:self.c0 + k_res] = b.energies
                for z in at.numbers:
                    sym = chemical_symbols[int(z)]
                    if sym in self.elements:
                        row[self.c0 + k_res + self.elements.index(sym)] += 1.0
                rows.append(w_e * row[None, :])
                ys.append(np.array([w_e * self._target(r[0], m[0])]))
        st = [(r[2], m[2], b.stresses) for r, m, b in zip(refs, mods, bases)
              if r[2] is not None and m[2] is not None and b.stresses is not None]
        if stress_weight > 0 and st:
            w_s = np.sqrt(stress_weight / (6 * len(st)))
            for s_ref, s_mod, s_b in st:
                block = np.zeros((6, self.n_cols))
                if self.free_scale:
                    block[:, 0] = s_mod
                block[:, self.c0:self.c0 + k_res] = s_b.T
                rows.append(w_s * block)
                ys.append(w_s * self._target(np.asarray(s_ref), s_mod))
        return np.vstack(rows), np.concatenate(ys)


def eos_constraints(problem: _Problem, model_energies: Sequence[float],
                    bases: Sequence[Any], n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows C·x = d that keep the model's equation of state: for every strained cell k of
    :func:`eos_cells`, E′_k − E′_0 = E_m,k − E_m,0 (per atom), i.e.
    a·ΔE_m + Σ c·ΔB = ΔE_m (a free) or Σ c·ΔB = (1 − a)·ΔE_m (a fixed)."""
    e0, b0 = model_energies[0], bases[0].energies
    rows, ds = [], []
    for e_m, b in zip(model_energies[1:], bases[1:]):
        de, db = (e_m - e0) / n_atoms, (b.energies - b0) / n_atoms
        row = np.zeros(problem.n_cols)
        if problem.free_scale:
            row[0] = de
        row[problem.c0:problem.c0 + problem.k_res] = db
        rows.append(row)
        ds.append(problem._target(de, de))
    return np.array(rows), np.array(ds)


def _ridge_lstsq(mat: np.ndarray, y: np.ndarray, c0: int, k_res: int,
                 ridge: float, constraints: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> np.ndarray:
    """Least squares on normalised columns, ridge only on columns ``c0:c0 + k_res``;
    ``constraints`` (C, d): C·x = d exactly where it can hold (least squares in C·x − d
    where it cannot), through the KKT system."""
    norms = np.linalg.norm(mat, axis=0)
    norms[norms == 0] = 1.0
    mat_n = mat / norms
    if ridge > 0 and k_res:
        reg = np.zeros((k_res, mat.shape[1]))
        reg[np.arange(k_res), c0 + np.arange(k_res)] = np.sqrt(ridge)
        mat_n = np.vstack([mat_n, reg])
        y = np.concatenate([y, np.zeros(k_res)])
    if constraints is None or not len(constraints[1]):
        sol_n, *_ = np.linalg.lstsq(mat_n, y, rcond=None)
        return sol_n / norms
    c_n, d = constraints[0] / norms, constraints[1]
    scale = np.abs(c_n).max(axis=1, keepdims=True)  # rows of unit size: conditioning
    c_n, d = c_n / scale, d / scale[:, 0]
    n, m = mat_n.shape[1], len(d)
    kkt = np.block([[mat_n.T @ mat_n, c_n.T], [c_n, np.zeros((m, m))]])
    sol, *_ = np.linalg.lstsq(kkt, np.concatenate([mat_n.T @ y, d]), rcond=None)
    return sol[:n] / norms


#: isotropic strains (fraction of the lattice constant) at which ``keep_eos`` holds the
#: model's equation of state
EOS_STRAINS = (-0.02, -0.01, 0.01, 0.02)


def eos_cells(anchor: Atoms) -> list[Atoms]:
    """``anchor`` and its isotropically strained copies (:data:`EOS_STRAINS`)."""
    out = [anchor.copy()]
    for eps in EOS_STRAINS:
        cell = anchor.copy()
        cell.set_cell(anchor.cell.array * (1.0 + eps), scale_atoms=True)
        out.append(cell)
    return out


def frame_group(atoms: Atoms) -> str:
    """A frame's group: ``info["config_type"]``; without one, its source file
    (``info["source"]`` = ``"file@k"``), else ``"default"``. (The same rule as
    ``evaluation.error_stats.group_of``, which this layer cannot import.)"""
    from pathlib import Path

    from ase_surftune.data.io import source_file

    g = atoms.info.get("config_type")
    if g is None or str(g) == DEFAULT_GROUP:
        src = source_file(atoms)
        return (Path(src).name or DEFAULT_GROUP) if src else DEFAULT_GROUP
    return str(g)


def per_group_scales(frames: Sequence[Atoms], before: Sequence[np.ndarray],
                     after: Sequence[np.ndarray], name: str = "fitting data"
                     ) -> dict[str, dict[str, Any]]:
    """Softening scale s and force MAE (eV/Å) per group (:func:`frame_group`) before and
    after a correction, with the same warnings as the whole set
    (:func:`~ase_surftune.models.correction.compare_before_after`).

    A group with too little force signal (:func:`ase_surftune.core.metrics.force_signal_ok`)
    gets ``None`` for s and ``note`` = "n/a (too little force signal)": never a number.
    """
    idx: dict[str, list[int]] = {}
    for k, at in enumerate(frames):
        idx.setdefault(frame_group(at), []).append(k)
    out: dict[str, dict[str, Any]] = {}
    for g, ks in idx.items():
        rep = compare_before_after([get_labels(frames[k])[1] for k in ks],
                                   [before[k] for k in ks], [after[k] for k in ks],
                                   name=f"{name}, group {g}", strict_signal=True)
        out[g] = {"n_frames": len(ks), "s_before": rep["softening_scale_before"],
                  "s_after": rep["softening_scale_after"],
                  "force_mae_before": rep["force_mae_before"],
                  "force_mae_after": rep["force_mae_after"],
                  "note": NA_SIGNAL if rep["softening_scale_before"] is None else None,
                  "warnings": rep["warnings"]}
    return out


def format_groups(groups: dict[str, dict[str, Any]], name: str) -> list[str]:
    """One line per group: s and force MAE before -> after ("n/a ..." without signal)."""
    lines = []
    for g, r in groups.items():
        s = (r["note"] if r["s_before"] is None
             else f"s {r['s_before']:.3f} -> {r['s_after']:.3f}")
        n = r["n_frames"]
        lines.append(f"  {name} group {g} ({n} frame{'s' if n != 1 else ''}): {s}, force MAE "
                     f"{r['force_mae_before']:.4f} -> {r['force_mae_after']:.4f} eV/Å")
    return lines


