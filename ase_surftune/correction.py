"""Linear softening correction of a potential-energy surface (Deng et al., seed 002).

E' = a·E + Σ_i b_{Z_i},   F' = a·F,   σ' = a·σ

``a`` is a global PES scale and ``b_Z`` a per-element energy shift (eV/atom). Forces
stay the exact negative gradient of the corrected energy, because the shift term does
not depend on positions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from ase.data import chemical_symbols

from ase_surftune.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms
    from ase.calculators.calculator import Calculator

__all__ = ["LinearCorrection", "fit_linear_correction", "fit_linear_correction_from_calc",
           "softening_scale", "softening_scale_high_force"]

log = logging.getLogger(__name__)

ForcesLike = np.ndarray | Sequence[np.ndarray]


@dataclass
class LinearCorrection:
    """A fitted PES scale and per-element energy shifts.

    Attributes:
        scale: dimensionless PES scale ``a`` (1 = no rescaling).
        shifts: per-element energy shift ``b_Z`` in eV/atom, keyed by chemical symbol.
        info: fit diagnostics (softening scale before/after, n_structures, ...).
    """

    scale: float = 1.0
    shifts: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def energy_shift(self, numbers: np.ndarray) -> float:
        """Σ_i b_{Z_i} in eV for atoms with atomic numbers ``numbers``."""
        return float(sum(self.shifts.get(chemical_symbols[int(z)], 0.0) for z in numbers))

    def apply(self, energy: float, forces: np.ndarray, numbers: np.ndarray,
              stress: np.ndarray | None = None
              ) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Corrected (energy eV, forces eV/Å, stress eV/Å³) for one structure."""
        e = self.scale * float(energy) + self.energy_shift(numbers)
        f = self.scale * np.asarray(forces)
        s = None if stress is None else self.scale * np.asarray(stress)
        return e, f, s

    def summary(self) -> str:
        """One-line report: scale, shifts and the softening scale before/after the fit."""
        shifts = ", ".join(f"{k}: {v:+.4f}" for k, v in self.shifts.items()) or "none"
        text = f"linear correction a = {self.scale:.6f}, shifts (eV/atom) {{{shifts}}}"
        if "softening_scale_before" in self.info:
            text += (f"; softening scale {self.info['softening_scale_before']:.4f} -> "
                     f"{self.info['softening_scale_after']:.4f}")
        if "force_mae_before" in self.info:
            text += (f"; force MAE {self.info['force_mae_before']:.4f} -> "
                     f"{self.info['force_mae_after']:.4f} eV/Å")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"scale": float(self.scale),
                "shifts": {k: float(v) for k, v in self.shifts.items()},
                "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearCorrection:
        return cls(scale=float(d["scale"]), shifts={k: float(v) for k, v in d["shifts"].items()},
                   info=dict(d.get("info", {})))


# --------------------------------------------------------------------------- softening scale


def _stack_forces(forces: ForcesLike, name: str) -> np.ndarray:
    """All force components as one flat float array (eV/Å)."""
    if isinstance(forces, np.ndarray):
        arr = np.asarray(forces, dtype=float)
    else:
        parts = [np.asarray(f, dtype=float).reshape(-1) for f in forces]
        arr = np.concatenate(parts) if parts else np.zeros(0)
    arr = arr.reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contain NaN/inf")
    return arr


def _paired(f_ref: ForcesLike, f_model: ForcesLike) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(f_ref, np.ndarray) and not isinstance(f_model, np.ndarray):
        if len(f_ref) != len(f_model):
            raise DataError(f"{len(f_ref)} reference force arrays but {len(f_model)} model "
                            f"force arrays")
        for i, (a, b) in enumerate(zip(f_ref, f_model)):
            if np.shape(a) != np.shape(b):
                raise DataError(f"structure {i}: reference forces have shape {np.shape(a)}, "
                                f"model forces {np.shape(b)}")
    r, m = _stack_forces(f_ref, "reference forces"), _stack_forces(f_model, "model forces")
    if r.shape != m.shape:
        raise DataError(f"{r.size} reference force components but {m.size} model ones")
    return r, m


def softening_scale(f_ref: ForcesLike, f_model: ForcesLike) -> float:
    """Softening scale s = Σ F_ref·F_model / Σ F_ref² (dimensionless; seed 002).

    The least-squares slope through the origin of model force components against
    reference ones: s < 1 means the model's PES is too soft (typical for uMLIPs), s = 1
    means no systematic bias.

    Args:
        f_ref, f_model: forces in eV/Å, each an ``(n, 3)`` array or a list of them (one
            per structure, matching shapes).

    Raises:
        DataError: mismatched shapes, NaN/inf, or all reference forces zero.
    """
    r, m = _paired(f_ref, f_model)
    denom = float(r @ r)
    if denom <= 0.0:
        raise DataError("softening scale undefined: all reference forces are zero")
    return float(r @ m) / denom


def softening_scale_high_force(f_ref: ForcesLike, f_model: ForcesLike,
                               quantile: float = 0.9) -> float:
    """Softening scale over the atoms with the largest reference forces.

    Keeps atoms whose reference force norm |F_ref,i| (eV/Å) is at or above the given
    quantile of all atoms' norms, then applies :func:`softening_scale` to them. High-force
    atoms (far from equilibrium) show the softening most clearly.
    """
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    r, m = _paired(f_ref, f_model)
    if r.size % 3:
        raise DataError(f"{r.size} force components is not a multiple of 3")
    r3, m3 = r.reshape(-1, 3), m.reshape(-1, 3)
    norms = np.linalg.norm(r3, axis=1)
    keep = norms >= np.quantile(norms, quantile)
    return softening_scale(r3[keep], m3[keep])


# --------------------------------------------------------------------------- fitting


def fit_linear_correction(ref_energies: Sequence[float] | np.ndarray | None,
                          ref_forces: Sequence[np.ndarray],
                          model_energies: Sequence[float] | np.ndarray | None,
                          model_forces: Sequence[np.ndarray],
                          numbers_list: Sequence[Sequence[int] | np.ndarray], *,
                          energy_weight: float = 1.0, fit_shifts: bool = True,
                          use_energies: bool = True) -> LinearCorrection:
    """Fit the PES scale ``a`` and per-element shifts ``b_Z`` by joint least squares.

    Model: F_ref ≈ a·F_model (every force component) and
    E_ref,s ≈ a·E_model,s + Σ_Z n_{s,Z} b_Z (every structure with energies).

    Weighting. The loss is

        L = (1/N_F) Σ_c (F_ref,c − a F_model,c)²
            + energy_weight · (1/N_S) Σ_s ((E_ref,s − a E_model,s − Σ_Z n_{s,Z} b_Z) / N_s)²

    i.e. the mean squared force-component error (eV²/Å²) plus ``energy_weight`` times
    the mean squared *per-atom* energy error (eV²/atom²). Averaging each term over its
    own count keeps the balance independent of how many atoms or structures there are
    (a 100-atom slab gives 300 force rows but one energy row), and per-atom energies put
    1 eV/atom and 1 eV/Å on the same footing at ``energy_weight=1``.

    Identifiability. With free shifts, each structure's energy row can be matched by
    ``b`` for any ``a``, so ``a`` comes from the forces plus any energy variation that
    composition cannot explain. A single structure is enough: forces fix ``a``, the
    energy fixes the shift of a single-element structure. Shifts that the data cannot
    separate (one multi-element structure, elements always in the same ratio) get the
    minimum-norm solution (SVD least squares), which never affects ``a`` when forces are
    non-zero. Without energies (``ref_energies``/``model_energies`` None or
    ``use_energies=False``) only ``a`` is fitted, from forces, and shifts are empty.
    With ``fit_shifts=False`` energies constrain ``a`` directly; only do that with
    energies already on the model's reference (see :mod:`ase_surftune.alignment`).

    Args:
        ref_energies: reference total energies per structure, eV (or None).
        ref_forces: reference forces per structure, ``(n_s, 3)`` eV/Å.
        model_energies: model total energies per structure, eV (or None).
        model_forces: model forces per structure, ``(n_s, 3)`` eV/Å.
        numbers_list: atomic numbers per structure.
        energy_weight: weight of the per-atom energy term relative to forces.
        fit_shifts: fit per-element shifts ``b_Z`` (eV/atom).
        use_energies: use energies at all.

    Returns:
        A :class:`LinearCorrection` whose ``info`` holds ``softening_scale_before``
        (s of model vs reference), ``softening_scale_after`` (s of a·model vs
        reference), ``force_mae_before/after`` (eV/Å), ``energy_mae_per_atom_after``
        (eV/atom, when energies are used), ``n_structures``, ``n_atoms``,
        ``energy_weight``, ``used_energies``.

    Raises:
        DataError: inconsistent lengths/shapes, NaN/inf, or data that cannot determine
            ``a`` (all model forces zero and no informative energies).
    """
    n_struct = len(numbers_list)
    if n_struct == 0:
        raise DataError("no structures to fit a linear correction on")
    if len(ref_forces) != n_struct or len(model_forces) != n_struct:
        raise DataError(f"{n_struct} structures but {len(ref_forces)} reference and "
                        f"{len(model_forces)} model force arrays")
    numbers = [np.asarray(z, dtype=int).ravel() for z in numbers_list]
    for i, (z, fr, fm) in enumerate(zip(numbers, ref_forces, model_forces)):
        if np.shape(fr) != (len(z), 3) or np.shape(fm) != (len(z), 3):
            raise DataError(f"structure {i}: {len(z)} atoms but reference forces "
                            f"{np.shape(fr)} and model forces {np.shape(fm)}")
    f_ref, f_mod = _paired(list(ref_forces), list(model_forces))
    if energy_weight < 0:
        raise ValueError(f"energy_weight must be >= 0, got {energy_weight}")

    have_e = use_energies and ref_energies is not None and model_energies is not None
    have_e = have_e and energy_weight > 0
    if have_e:
        e_ref = np.asarray(ref_energies, dtype=float).ravel()
        e_mod = np.asarray(model_energies, dtype=float).ravel()
        if e_ref.size != n_struct or e_mod.size != n_struct:
            raise DataError(f"{n_struct} structures but {e_ref.size} reference and "
                            f"{e_mod.size} model energies")
        if not (np.all(np.isfinite(e_ref)) and np.all(np.isfinite(e_mod))):
            raise DataError("energies contain NaN/inf")

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
        e_rows[:, 0] = w_e * e_mod
        for s, z in enumerate(numbers):
            for zz, c in zip(*np.unique(z, return_counts=True)):
                if int(zz) in col:  # no shift columns when fit_shifts=False
                    e_rows[s, col[int(zz)]] = w_e[s] * c
        rows.append(e_rows)
        targets.append(w_e * e_ref)
    mat, y = np.vstack(rows), np.concatenate(targets)

    _check_scale_determined(mat)
    sol, *_ = np.linalg.lstsq(mat, y, rcond=None)
    a = float(sol[0])
    shifts = {s: float(sol[k + 1]) for k, s in enumerate(elements)}

    info: dict[str, Any] = {
        "softening_scale_before": softening_scale(f_ref, f_mod) if f_ref.any() else None,
        "softening_scale_after": softening_scale(f_ref, a * f_mod) if f_ref.any() else None,
        "force_mae_before": float(np.mean(np.abs(f_ref - f_mod))),
        "force_mae_after": float(np.mean(np.abs(f_ref - a * f_mod))),
        "n_structures": int(n_struct),
        "n_atoms": int(sum(len(z) for z in numbers)),
        "energy_weight": float(energy_weight),
        "used_energies": bool(have_e),
    }
    if have_e:
        shift_e = np.array([sum(shifts.get(chemical_symbols[int(q)], 0.0) for q in z)
                            for z in numbers])
        info["energy_mae_per_atom_after"] = float(
            np.mean(np.abs(e_ref - a * e_mod - shift_e) / n_at))
    corr = LinearCorrection(scale=a, shifts=shifts, info=info)
    log.info("%s", corr.summary())
    return corr


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


def fit_linear_correction_from_calc(configs: Sequence[Atoms], calc: Calculator,
                                    **kwargs: Any) -> LinearCorrection:
    """Evaluate ``calc`` (the model) on labelled ``configs`` and fit a correction.

    Reference labels come from :func:`ase_surftune.data.get_labels`; model energies (eV)
    and raw forces (eV/Å, constraints not applied) from ``calc``. ``kwargs`` go to
    :func:`fit_linear_correction`.
    """
    from ase_surftune.data import get_labels

    e_ref, f_ref, e_mod, f_mod, nums = [], [], [], [], []
    for atoms in configs:
        energy, forces, _ = get_labels(atoms)
        work = atoms.copy()
        work.calc = calc
        e_ref.append(energy)
        f_ref.append(forces)
        e_mod.append(work.get_potential_energy())
        f_mod.append(work.get_forces(apply_constraint=False))
        nums.append(atoms.numbers.copy())
    return fit_linear_correction(e_ref, f_ref, e_mod, f_mod, nums, **kwargs)
