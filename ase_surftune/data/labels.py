"""Labels of one configuration, and the report of what a data step kept or skipped.

Units: energy eV, forces eV/Å ``(n, 3)``, stress eV/Å³ Voigt (ASE sign convention).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from ase_surftune.core.errors import DataError

log = logging.getLogger(__name__)

#: Group name given to configurations that carry no group key.
DEFAULT_GROUP = "default"


OnError = Literal["raise", "skip"]
PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class SkippedConfig:
    """One configuration (or whole file, ``index=None``) that was dropped, and why."""

    source: str
    index: int | None
    reason: str

    def __str__(self) -> str:
        where = self.source if self.index is None else f"{self.source}[{self.index}]"
        return f"{where}: {self.reason}"


@dataclass
class DataReport:
    """What a reading/filtering step kept and what it skipped.

    Pass an instance as ``report=`` to :func:`read_labelled`, :func:`check_elements` or
    :func:`label`; the function appends to it. ``n_read`` counts frames seen, ``n_kept``
    frames returned.
    """

    n_read: int = 0
    n_kept: int = 0
    skipped: list[SkippedConfig] = field(default_factory=list)

    def add_skip(self, source: str, index: int | None, reason: str) -> None:
        """Record a skip and log it as a warning."""
        entry = SkippedConfig(str(source), index, reason)
        self.skipped.append(entry)
        log.warning("skipped %s", entry)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        """One line, then one line per skipped entry."""
        lines = [f"read {self.n_read} configuration(s), kept {self.n_kept}, "
                 f"skipped {self.n_skipped}"]
        lines += [f"  - {s}" for s in self.skipped]
        return "\n".join(lines)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")

# --------------------------------------------------------------------------- labels


def _as_voigt(stress: Any, where: str) -> np.ndarray:
    """Stress as a Voigt 6-vector in eV/Å³ from 6, 9 or 3x3 input."""
    s = np.asarray(stress, dtype=float)
    if s.shape == (6,):
        return s.copy()
    if s.shape in ((9,), (3, 3)):
        return full_3x3_to_voigt_6_stress(s.reshape(3, 3))
    raise DataError(f"{where}: stress has shape {s.shape}; expected (6,), (9,) or (3, 3)")


def free_atom_mask(atoms: Atoms) -> np.ndarray:
    """(n,) bool: True for atoms not held by a ``FixAtoms`` constraint."""
    from ase.constraints import FixAtoms

    mask = np.ones(len(atoms), dtype=bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            mask[c.get_indices()] = False
    return mask


#: the ``atoms.info`` key of a structure's energy-term weight in a fine-tune's loss
#: (mace's name for the same thing)
ENERGY_WEIGHT_KEY = "config_energy_weight"


def energy_weight(atoms: Atoms, where: str | None = None) -> float:
    """The structure's energy-term weight in the loss: ``info["config_energy_weight"]``
    (a number ≥ 0; 1 when absent). ``where`` names the structure in the error.

    Raises:
        DataError: when it is not a finite number ≥ 0.
    """
    raw = atoms.info.get(ENERGY_WEIGHT_KEY, 1.0)
    try:
        w = float(raw)
    except (TypeError, ValueError):
        w = float("nan")
    if not (np.isfinite(w) and w >= 0):
        raise DataError(f"{where or atoms.get_chemical_formula()}: "
                        f"info[{ENERGY_WEIGHT_KEY!r}] = {raw!r}; expected a number >= 0")
    return w


def get_labels(atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
    """The labels of one configuration.

    Returns:
        ``(energy, forces, stress)``: energy in eV, forces in eV/Å with shape
        ``(n_atoms, 3)`` (raw values from the calculator results, constraints not
        applied), stress in eV/Å³ as a Voigt 6-vector or ``None`` if absent.

    Raises:
        DataError: no calculator/results, no energy, or no forces.
    """
    results = getattr(atoms.calc, "results", None)
    if not results:
        raise DataError(f"{atoms.get_chemical_formula()}: no labels (no calculator results)")
    if "energy" in results:
        energy = float(np.asarray(results["energy"]).reshape(()))
    elif "free_energy" in results:
        energy = float(np.asarray(results["free_energy"]).reshape(()))
    else:
        raise DataError(f"{atoms.get_chemical_formula()}: no energy label")
    if results.get("forces") is None:
        raise DataError(f"{atoms.get_chemical_formula()}: no forces label")
    forces = np.array(results["forces"], dtype=float)
    stress = results.get("stress")
    stress_v = None if stress is None else _as_voigt(stress, atoms.get_chemical_formula())
    return energy, forces, stress_v


def _set_labels(atoms: Atoms, energy: float, forces: np.ndarray | None,
                stress: np.ndarray | None) -> None:
    """Attach labels as a fresh SinglePointCalculator (only the given ones)."""
    kwargs: dict[str, Any] = {"energy": float(energy)}
    if forces is not None:
        kwargs["forces"] = np.asarray(forces, dtype=float)
    if stress is not None:
        kwargs["stress"] = np.asarray(stress, dtype=float)
    atoms.calc = SinglePointCalculator(atoms, **kwargs)
