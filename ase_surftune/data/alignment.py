"""Per-element energy-reference alignment between a reference data set and a model.

Reference DFT data from another code or setting differ from the Materials Project
energies a foundation model learned by a large, mostly per-element offset (e.g. Mo PBE
from another code: about -1865 eV/atom against about -10.9 eV/atom in MP). Before any
training we fit per-element shifts δ_Z (eV/atom) by least squares on *per-atom*
energies, so that every structure counts once whatever its size:

    min_δ  Σ_s ( ΔE_s / N_s − Σ_Z x_{s,Z} δ_Z )²  +  ridge · Σ_Z δ_Z²,

with ΔE_s = E_ref,s − E_model,s (total energies, eV), N_s the number of atoms and
x_{s,Z} = n_{s,Z} / N_s the fraction of element Z in structure s.

Identifiability. When the compositions cannot separate the elements (one structure,
or elements always in the same ratio, e.g. every frame Cu3Au), the composition matrix
x is rank-deficient (or its condition number exceeds :data:`MAX_CONDITION`). The fit
then says so and, by default, falls back to one shared per-atom shift δ for every
element (``on_rank_deficient="shared"``) or refuses (``"raise"``); the reason is
recorded in the result (:class:`ShiftFit`). After alignment, E_ref ≈ E_model + Σ_i δ_{Z_i}.

Never fit these shifts on the frames you then score (see
:mod:`ase_surftune.evaluation.errors`): a per-element fit on a single composition
absorbs the model's whole energy error for that composition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.errors import DataError
from ase_surftune.core.metrics import mae_rmse
from ase_surftune.data.labels import _set_labels, get_labels

__all__ = ["ReferenceAlignment", "ShiftFit", "composition_matrix", "fit_element_shifts",
           "fit_shifts", "MAX_CONDITION"]

#: condition number of the composition-fraction matrix above which per-element shifts
#: are considered not separable
MAX_CONDITION = 1e6

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


@dataclass
class ShiftFit:
    """Per-element shifts and how they were obtained (JSON-able via :meth:`to_dict`).

    Attributes:
        shifts: ``{symbol: δ_Z}`` in eV/atom.
        method: ``"per_element"`` or ``"shared_per_atom"`` (one δ for every element).
        rank: rank of the composition-fraction matrix; ``n_elements`` its columns.
        condition_number: ratio of its largest to smallest singular value (inf when
            rank-deficient).
        reason: why the fit fell back to a shared shift (None when it did not).
    """

    shifts: dict[str, float]
    method: str = "per_element"
    rank: int = 0
    n_elements: int = 0
    condition_number: float = 1.0
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        cond = self.condition_number
        return {"shifts": {k: float(v) for k, v in self.shifts.items()},
                "method": self.method, "rank": int(self.rank),
                "n_elements": int(self.n_elements),
                "condition_number": float(cond) if np.isfinite(cond) else None,
                "reason": self.reason}


def _check_inputs(configs_or_numbers: Sequence[NumbersLike], y: np.ndarray) -> None:
    if len(configs_or_numbers) != len(y):
        raise DataError(f"{len(configs_or_numbers)} structures but {len(y)} residual "
                        f"energies")
    if len(y) == 0:
        raise DataError("no structures to fit element shifts on")
    if not np.all(np.isfinite(y)):
        raise DataError(f"{int(np.count_nonzero(~np.isfinite(y)))} residual energies are "
                        f"NaN/inf")


def fit_shifts(configs_or_numbers: Sequence[NumbersLike],
               residual_energies: Sequence[float] | np.ndarray,
               elements: Sequence[str] | None = None, ridge: float = 0.0,
               on_rank_deficient: Literal["shared", "raise"] = "shared") -> ShiftFit:
    """Per-element shifts δ_Z (eV/atom) with ΔE_s / N_s ≈ Σ_Z x_{s,Z} δ_Z, plus a report.

    Args:
        configs_or_numbers: one entry per structure: Atoms or atomic numbers.
        residual_energies: ΔE_s = E_ref,s − E_model,s, total energies in eV.
        elements: symbols to fit (column order); default: all present.
        ridge: Tikhonov weight on Σ δ_Z² (per-atom units); ``0`` = plain least squares.
        on_rank_deficient: when the compositions cannot separate the elements (rank <
            number of elements, or condition number > :data:`MAX_CONDITION`):
            ``"shared"`` fits one per-atom shift for all elements and records why;
            ``"raise"`` raises :class:`DataError`.

    Raises:
        DataError: lengths differ, no structures, non-finite energies, or a
            rank-deficient fit with ``on_rank_deficient="raise"``.
    """
    y = np.asarray(residual_energies, dtype=float).ravel()
    _check_inputs(configs_or_numbers, y)
    mat, elements = composition_matrix(configs_or_numbers, elements)
    n_at = mat.sum(axis=1)
    if np.any(n_at == 0):
        raise DataError("a structure has no atoms of the fitted elements")
    x, y_pa = mat / n_at[:, None], y / n_at
    sv = np.linalg.svd(x, compute_uv=False)
    k = len(elements)
    rank = int(np.count_nonzero(sv > 1e-10 * sv[0])) if sv.size else 0
    cond = float(sv[0] / sv[-1]) if sv.size == k and sv[-1] > 0 else float("inf")
    if k > 1 and (rank < k or cond > MAX_CONDITION):
        reason = (f"compositions cannot separate the elements {elements}: composition "
                  f"matrix rank {rank} < {k}" if rank < k else
                  f"compositions barely separate the elements {elements}: condition "
                  f"number {cond:.3g} > {MAX_CONDITION:g}")
        if on_rank_deficient == "raise":
            raise DataError(f"per-element energy shifts are not determined: {reason}")
        delta = float(np.mean(y_pa))
        log.warning("%s; using one shared per-atom shift %+.4f eV/atom", reason, delta)
        return ShiftFit({s: delta for s in elements}, "shared_per_atom", rank, k, cond,
                        reason + "; one shared per-atom shift used instead")
    sol = _solve(x, y_pa, ridge)
    return ShiftFit({s: float(v) for s, v in zip(elements, sol)}, "per_element", rank, k,
                    cond)


def fit_element_shifts(configs_or_numbers: Sequence[NumbersLike],
                       residual_energies: Sequence[float] | np.ndarray,
                       elements: Sequence[str] | None = None,
                       ridge: float = 0.0,
                       on_rank_deficient: Literal["shared", "raise"] = "shared"
                       ) -> dict[str, float]:
    """The ``shifts`` of :func:`fit_shifts` (eV/atom, keyed by symbol)."""
    return fit_shifts(configs_or_numbers, residual_energies, elements, ridge,
                      on_rank_deficient).shifts


@dataclass
class ReferenceAlignment:
    """Fitted per-element energy shifts and how much they explain.

    Attributes:
        shifts: δ_Z in eV/atom, keyed by chemical symbol; E_ref ≈ E_model + Σ_i δ_{Z_i}.
        rmse_before: RMSE of ΔE_s / N_s (eV/atom) without the shifts.
        rmse_after: RMSE of (ΔE_s − Σ δ) / N_s (eV/atom) with the shifts.
        n_structures: number of structures fitted.
        method: ``"per_element"`` or ``"shared_per_atom"`` (see :func:`fit_shifts`).
        reason: why the fit fell back to one shared shift (None otherwise).
    """

    shifts: dict[str, float] = field(default_factory=dict)
    rmse_before: float = 0.0
    rmse_after: float = 0.0
    n_structures: int = 0
    method: str = "per_element"
    reason: str | None = None

    @classmethod
    def fit(cls, configs_or_numbers: Sequence[NumbersLike],
            residual_energies: Sequence[float] | np.ndarray,
            elements: Sequence[str] | None = None, ridge: float = 0.0,
            on_rank_deficient: Literal["shared", "raise"] = "shared"
            ) -> ReferenceAlignment:
        """Fit shifts with :func:`fit_shifts` and record per-atom RMSEs."""
        sf = fit_shifts(configs_or_numbers, residual_energies, elements, ridge,
                        on_rank_deficient)
        shifts = sf.shifts
        y = np.asarray(residual_energies, dtype=float).ravel()
        nums = [_numbers(c) for c in configs_or_numbers]
        n_at = np.array([len(n) for n in nums], dtype=float)
        fitted = np.array([per_element_sum(shifts, n) for n in nums])
        out = cls(shifts=shifts,
                  rmse_before=mae_rmse(y / n_at)[1],
                  rmse_after=mae_rmse((y - fitted) / n_at)[1],
                  n_structures=len(y), method=sf.method, reason=sf.reason)
        log.info("%s", out.summary())
        return out

    def energy_shift(self, numbers: Iterable[int]) -> float:
        """Σ_i δ_{Z_i} in eV for atoms with atomic numbers ``numbers``."""
        return per_element_sum(self.shifts, numbers)

    def to_model_frame(self, configs: Iterable[Atoms]) -> list[Atoms]:
        """Copies of labelled ``configs`` with energies moved into the model's frame.

        Energy labels become E_ref − Σ_i δ_{Z_i} (eV); forces and stress are unchanged
        (the shift does not depend on positions). Uses :func:`ase_surftune.data.get_labels`.
        """
        out = []
        for atoms in configs:
            energy, forces, stress = get_labels(atoms)
            new = atoms.copy()
            _set_labels(new, energy - self.energy_shift(atoms.numbers), forces, stress)
            out.append(new)
        return out

    def summary(self) -> str:
        """Human-readable report of the shifts and the per-atom RMSE before/after."""
        parts = ", ".join(f"{s}: {v:+.4f}" for s, v in self.shifts.items())
        return (f"reference alignment over {self.n_structures} structure(s): shifts "
                f"(eV/atom) {{{parts}}}; per-atom energy RMSE {self.rmse_before:.4f} -> "
                f"{self.rmse_after:.4f} eV/atom"
                + (f" [{self.reason}]" if self.reason else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"shifts": {k: float(v) for k, v in self.shifts.items()},
                "rmse_before": float(self.rmse_before), "rmse_after": float(self.rmse_after),
                "n_structures": int(self.n_structures), "method": self.method,
                "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceAlignment:
        return cls(shifts={k: float(v) for k, v in d["shifts"].items()},
                   rmse_before=float(d.get("rmse_before", 0.0)),
                   rmse_after=float(d.get("rmse_after", 0.0)),
                   n_structures=int(d.get("n_structures", 0)),
                   method=str(d.get("method", "per_element")), reason=d.get("reason"))
