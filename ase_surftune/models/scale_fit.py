"""Solvers for the PES scale of the linear correction (:mod:`ase_surftune.models.correction`).

The scale a from force components (slope, total least squares, mean squares), the joint
least squares of a and per-element shifts, the model's own per-element reference
energies, and the softening scale over the highest-force atoms. Forces in eV/Å, energies
in eV, shifts and references in eV/atom.

The joint fit (``fit="mse"`` of :func:`~ase_surftune.models.correction.fit_linear_correction`)
minimises

    L = (1/N_F) Σ_c (F_ref,c − a F_model,c)²
        + energy_weight · (1/N_S) Σ_s ((T_s − a X_s − Σ_Z n_{s,Z} b_Z) / N_s)²

with T_s = E_ref,s − Σe^model, X_s = E_model,s − Σe^model (e^model = 0 in ``"total"``
mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from ase.data import chemical_symbols

from ase_surftune.core.errors import DataError
from ase_surftune.core.metrics import paired_forces, softening_scale

__all__ = ["FitKind", "ForcesLike", "fit_model_reference", "scale_from_forces",
           "softening_scale_high_force"]

ForcesLike = np.ndarray | Sequence[np.ndarray]
FitKind = Literal["slope", "tls", "mse"]


def softening_scale_high_force(f_ref: ForcesLike, f_model: ForcesLike,
                               quantile: float = 0.9) -> float:
    """Softening scale over the atoms with the largest reference forces.

    Keeps atoms whose reference force norm |F_ref,i| (eV/Å) is at or above the given
    quantile of all atoms' norms, then applies :func:`softening_scale` to them.
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    r, m = paired_forces(f_ref, f_model)
    if r.size % 3:
        raise DataError(f"{r.size} force components is not a multiple of 3")
    r3, m3 = r.reshape(-1, 3), m.reshape(-1, 3)
    norms = np.linalg.norm(r3, axis=1)
    keep = norms >= np.quantile(norms, quantile)
    return softening_scale(r3[keep], m3[keep])


def scale_from_forces(f_ref: ForcesLike, f_model: ForcesLike, fit: FitKind = "slope") -> float:
    """The PES scale a from force components alone (dimensionless).

    ``"slope"``: a = Σ F_ref² / Σ F_ref·F_model = 1/s (corrected s is exactly 1);
    ``"tls"``: total least squares of F_ref = a·F_model (orthogonal distances);
    ``"mse"``: a = Σ F_ref·F_model / Σ F_model².

    Raises:
        DataError: the forces cannot determine a (zero or anti-correlated forces).
    """
    r, m = paired_forces(f_ref, f_model)
    srr, smm, srm = float(r @ r), float(m @ m), float(r @ m)
    if srm <= 0.0 or srr <= 0.0 or smm <= 0.0:
        raise DataError(f"cannot determine the PES scale from forces: Σ F_ref·F_model = "
                        f"{srm:.4g} (needs positively correlated, non-zero forces)")
    if fit == "slope":
        return srr / srm
    if fit == "mse":
        return srm / smm
    if fit == "tls":  # y = a x with x = F_model, y = F_ref
        return (srr - smm + np.sqrt((srr - smm) ** 2 + 4 * srm ** 2)) / (2 * srm)
    raise DataError(f"unknown fit {fit!r}; use 'slope', 'tls' or 'mse'")


def fit_model_reference(model_energies: Sequence[float] | np.ndarray,
                        numbers_list: Sequence[Sequence[int] | np.ndarray]
                        ) -> tuple[dict[str, float], dict[str, Any]]:
    """The model's own per-element reference energies e_Z^model (eV/atom).

    Least squares of the model's per-atom energies on the fitting structures against
    their composition fractions (:func:`ase_surftune.data.alignment.fit_shifts`): a reference
    point in the model's own energy scale about which the PES scale acts. When the
    compositions cannot separate the elements, one shared per-atom value is used and the
    reason is returned. Public so that other corrections reuse the same reference.

    Returns:
        ``({symbol: e_Z}, report)`` where ``report`` is JSON-able (method, rank, reason).
    """
    from ase_surftune.data.alignment import fit_shifts

    fit = fit_shifts([np.asarray(z, dtype=int) for z in numbers_list],
                     np.asarray(model_energies, dtype=float))
    rep = fit.to_dict()
    rep.pop("shifts")
    return fit.shifts, rep


def _joint_mse(f_ref: np.ndarray, f_mod: np.ndarray, target: np.ndarray | None,
               e_x: np.ndarray | None, numbers: list[np.ndarray], energy_weight: float,
               fit_shifts: bool) -> tuple[float, dict[str, float]]:
    """Joint least squares of a and b_Z (the ``fit="mse"`` loss)."""
    n_struct = len(numbers)
    have_e = target is not None and e_x is not None and energy_weight > 0
    elements: list[str] = []
    if have_e and fit_shifts:
        elements = [chemical_symbols[z] for z in sorted({int(z) for n in numbers for z in n})]
    col = {chemical_symbols.index(s): k + 1 for k, s in enumerate(elements)}
    n_cols = 1 + len(elements)
    w_f = 1.0 / np.sqrt(f_ref.size)
    rows = [np.column_stack([w_f * f_mod, np.zeros((f_mod.size, n_cols - 1))])]
    targets = [w_f * f_ref]
    if have_e:
        n_at = np.array([len(z) for z in numbers], dtype=float)
        w_e = np.sqrt(energy_weight / n_struct) / n_at
        e_rows = np.zeros((n_struct, n_cols))
        e_rows[:, 0] = w_e * e_x
        for s, z in enumerate(numbers):
            for zz, c in zip(*np.unique(z, return_counts=True)):
                if int(zz) in col:  # no shift columns when fit_shifts=False
                    e_rows[s, col[int(zz)]] = w_e[s] * c
        rows.append(e_rows)
        targets.append(w_e * target)
    mat, y = np.vstack(rows), np.concatenate(targets)
    _check_scale_determined(mat)
    sol, *_ = np.linalg.lstsq(mat, y, rcond=None)
    return float(sol[0]), {s: float(sol[k + 1]) for k, s in enumerate(elements)}


def _check_scale_determined(mat: np.ndarray) -> None:
    """Raise unless column 0 (the scale) is independent of the shift columns."""
    a_col, rest = mat[:, 0], mat[:, 1:]
    norm = float(np.linalg.norm(a_col))
    if norm == 0.0:
        raise DataError("cannot determine the PES scale: all model forces (and energies) "
                        "are zero")
    if rest.shape[1]:
        coef, *_ = np.linalg.lstsq(rest, a_col, rcond=None)
        a_col = a_col - rest @ coef
    if float(np.linalg.norm(a_col)) <= 1e-10 * norm:
        raise DataError("cannot determine the PES scale: model forces are all zero and the "
                        "energies are explained by per-element shifts alone; give "
                        "structures with non-zero forces")
