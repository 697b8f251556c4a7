"""Per-element energy-reference alignment between a reference data set and a model.

Reference DFT data from another code or setting differ from the Materials Project
energies a foundation model learned by a large, mostly per-element offset (e.g. Mo PBE
from another code: about -1865 eV/atom against about -10.9 eV/atom in MP). Before any
training we fit per-element shifts δ_Z (eV/atom) by least squares:

    min_δ  Σ_s ( ΔE_s − Σ_Z n_{s,Z} δ_Z )²  +  ridge · Σ_Z δ_Z²,

with ΔE_s = E_ref,s − E_model,s (total energies, eV) and n_{s,Z} the number of atoms of
element Z in structure s. The tiny ridge makes rank-deficient cases (one structure,
elements always appearing in the same ratio) well posed; it then picks the
minimum-norm shifts. After alignment, E_ref ≈ E_model + Σ_i δ_{Z_i}.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from ase_surftune.errors import DataError

__all__ = ["ReferenceAlignment", "composition_matrix", "fit_element_shifts"]

log = logging.getLogger(__name__)

NumbersLike = Atoms | Sequence[int] | np.ndarray


def _numbers(item: NumbersLike) -> np.ndarray:
    return np.asarray(item.numbers if isinstance(item, Atoms) else item, dtype=int).ravel()


def composition_matrix(configs_or_numbers: Sequence[NumbersLike],
                       elements: Sequence[str] | None = None
                       ) -> tuple[np.ndarray, list[str]]:
    """Counts ``n[s, k]`` of element ``elements[k]`` in structure ``s``.

    Args:
        configs_or_numbers: Atoms objects or arrays of atomic numbers.
        elements: column order (chemical symbols); default: the elements present,
            sorted by atomic number.

    Raises:
        DataError: a structure contains an element not in ``elements``.
    """
    nums = [_numbers(c) for c in configs_or_numbers]
    present = sorted({int(z) for n in nums for z in n})
    if elements is None:
        elements = [chemical_symbols[z] for z in present]
    else:
        elements = list(elements)
        unknown = sorted({chemical_symbols[z] for z in present} - set(elements))
        if unknown:
            raise DataError(f"structures contain element(s) {unknown} not in elements="
                            f"{elements}")
    col = {atomic_numbers[s]: k for k, s in enumerate(elements)}
    mat = np.zeros((len(nums), len(elements)))
    for s, n in enumerate(nums):
        for z, c in zip(*np.unique(n, return_counts=True)):
            mat[s, col[int(z)]] = c
    return mat, elements


def _solve(mat: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge least squares via an augmented system (stable, no normal equations)."""
    k = mat.shape[1]
    if ridge > 0:
        mat = np.vstack([mat, np.sqrt(ridge) * np.eye(k)])
        y = np.concatenate([y, np.zeros(k)])
    sol, *_ = np.linalg.lstsq(mat, y, rcond=None)
    return sol


def fit_element_shifts(configs_or_numbers: Sequence[NumbersLike],
                       residual_energies: Sequence[float] | np.ndarray,
                       elements: Sequence[str] | None = None,
                       ridge: float = 1e-8) -> dict[str, float]:
    """Per-element shifts δ_Z (eV/atom) with ΔE_s ≈ Σ_Z n_{s,Z} δ_Z.

    Args:
        configs_or_numbers: one entry per structure: Atoms or atomic numbers.
        residual_energies: ΔE_s = E_ref,s − E_model,s, total energies in eV.
        elements: symbols to fit (column order); default: all present.
        ridge: Tikhonov weight on Σ δ_Z² (relative to the squared atom counts in the
            design matrix) for rank-deficient data; ``0`` = plain minimum-norm least
            squares.

    Returns:
        ``{symbol: δ_Z}`` in eV/atom.

    Raises:
        DataError: lengths differ, no structures, or non-finite energies.
    """
    y = np.asarray(residual_energies, dtype=float).ravel()
    if len(configs_or_numbers) != len(y):
        raise DataError(f"{len(configs_or_numbers)} structures but {len(y)} residual "
                        f"energies")
    if len(y) == 0:
        raise DataError("no structures to fit element shifts on")
    if not np.all(np.isfinite(y)):
        raise DataError(f"{int(np.count_nonzero(~np.isfinite(y)))} residual energies are "
                        f"NaN/inf")
    mat, elements = composition_matrix(configs_or_numbers, elements)
    sol = _solve(mat, y, ridge)
    return {s: float(v) for s, v in zip(elements, sol)}


def _shift_of(shifts: dict[str, float], numbers: Iterable[int]) -> float:
    return float(sum(shifts.get(chemical_symbols[int(z)], 0.0) for z in numbers))


@dataclass
class ReferenceAlignment:
    """Fitted per-element energy shifts and how much they explain.

    Attributes:
        shifts: δ_Z in eV/atom, keyed by chemical symbol; E_ref ≈ E_model + Σ_i δ_{Z_i}.
        rmse_before: RMSE of ΔE_s / N_s (eV/atom) without the shifts.
        rmse_after: RMSE of (ΔE_s − Σ δ) / N_s (eV/atom) with the shifts.
        n_structures: number of structures fitted.
    """

    shifts: dict[str, float] = field(default_factory=dict)
    rmse_before: float = 0.0
    rmse_after: float = 0.0
    n_structures: int = 0

    @classmethod
    def fit(cls, configs_or_numbers: Sequence[NumbersLike],
            residual_energies: Sequence[float] | np.ndarray,
            elements: Sequence[str] | None = None, ridge: float = 1e-8
            ) -> ReferenceAlignment:
        """Fit shifts with :func:`fit_element_shifts` and record per-atom RMSEs."""
        shifts = fit_element_shifts(configs_or_numbers, residual_energies, elements, ridge)
        y = np.asarray(residual_energies, dtype=float).ravel()
        nums = [_numbers(c) for c in configs_or_numbers]
        n_at = np.array([len(n) for n in nums], dtype=float)
        fitted = np.array([_shift_of(shifts, n) for n in nums])
        out = cls(shifts=shifts,
                  rmse_before=float(np.sqrt(np.mean((y / n_at) ** 2))),
                  rmse_after=float(np.sqrt(np.mean(((y - fitted) / n_at) ** 2))),
                  n_structures=len(y))
        log.info("%s", out.summary())
        return out

    def energy_shift(self, numbers: Iterable[int]) -> float:
        """Σ_i δ_{Z_i} in eV for atoms with atomic numbers ``numbers``."""
        return _shift_of(self.shifts, numbers)

    def to_model_frame(self, configs: Iterable[Atoms]) -> list[Atoms]:
        """Copies of labelled ``configs`` with energies moved into the model's frame.

        Energy labels become E_ref − Σ_i δ_{Z_i} (eV); forces and stress are unchanged
        (the shift does not depend on positions). Uses :func:`ase_surftune.data.get_labels`.
        """
        from ase.calculators.singlepoint import SinglePointCalculator

        from ase_surftune.data import get_labels

        out = []
        for atoms in configs:
            energy, forces, stress = get_labels(atoms)
            new = atoms.copy()
            kw: dict[str, Any] = {"energy": energy - self.energy_shift(atoms.numbers),
                                  "forces": forces}
            if stress is not None:
                kw["stress"] = stress
            new.calc = SinglePointCalculator(new, **kw)
            out.append(new)
        return out

    def summary(self) -> str:
        """Human-readable report of the shifts and the per-atom RMSE before/after."""
        parts = ", ".join(f"{s}: {v:+.4f}" for s, v in self.shifts.items())
        return (f"reference alignment over {self.n_structures} structure(s): shifts "
                f"(eV/atom) {{{parts}}}; per-atom energy RMSE {self.rmse_before:.4f} -> "
                f"{self.rmse_after:.4f} eV/atom")

    def to_dict(self) -> dict[str, Any]:
        return {"shifts": {k: float(v) for k, v in self.shifts.items()},
                "rmse_before": float(self.rmse_before), "rmse_after": float(self.rmse_after),
                "n_structures": int(self.n_structures)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceAlignment:
        return cls(shifts={k: float(v) for k, v in d["shifts"].items()},
                   rmse_before=float(d.get("rmse_before", 0.0)),
                   rmse_after=float(d.get("rmse_after", 0.0)),
                   n_structures=int(d.get("n_structures", 0)))
