"""Phonopy set-up shared by the phonon workflows: supercell parsing and size checks,
forces on phonopy's displacements, force constants, and the :class:`PhononResult`."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.properties._base import (
    PropertyResult,
    attach_calc,
    check_positive,
)

logger = logging.getLogger(__name__)

#: Å; the smallest supercell width (distance between opposite faces) accepted without a
#: warning when the calculator does not expose its cutoff; otherwise 2 × cutoff is used.
MIN_SUPERCELL_WIDTH = 10.0

#: phonopy force-constant solvers accepted by ``fc_calculator`` (None = traditional)
FC_CALCULATORS = ("traditional", "symfc", "alm")


class SupercellSizeWarning(UserWarning):
    """The phonon supercell is narrower than twice the interaction cutoff: force constants
    of atoms and their periodic images overlap, so frequencies are not converged."""


def _new_phonopy(atoms: Atoms, P: np.ndarray, primitive_matrix: Any, symprec: float) -> Any:
    """A ``Phonopy`` object for the unit cell ``atoms`` and supercell matrix ``P``.

    phonopy ≥ 4 warns whenever ``"auto"`` resolves to a non-identity primitive matrix;
    here ``"auto"`` is the documented choice, so that warning is not repeated per call.
    """
    import warnings

    from phonopy import Phonopy

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="primitive_matrix defaulted to 'auto'")
        return Phonopy(_phonopy_atoms(atoms), supercell_matrix=P,
                       primitive_matrix=primitive_matrix, symprec=symprec)


def parse_supercell(value: Any) -> np.ndarray:
    """Supercell matrix from an int n, three ints (diagonal) or a 3×3 integer matrix.

    Raises :class:`ConfigError` (naming the value) for anything else or a
    singular matrix.
    """
    msg = f"supercell must be an int, 3 ints or a 3x3 integer matrix, got {value!r}"
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(msg)
    if isinstance(value, (int, np.integer)):
        value = [int(value)] * 3
    try:
        arr = np.array(value, dtype=object)
    except Exception:
        raise ConfigError(msg) from None
    if arr.shape == (3,):
        flat = list(arr)
    elif arr.shape == (3, 3):
        flat = list(arr.ravel())
    else:
        raise ConfigError(msg)
    for v in flat:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ConfigError(msg)
    mat = np.array(flat, dtype=int)
    mat = np.diag(mat) if arr.shape == (3,) else mat.reshape(3, 3)
    if round(abs(np.linalg.det(mat))) < 1:
        raise ConfigError(f"supercell matrix is singular: {mat.tolist()}")
    return mat


def parse_mesh(value: Any) -> list[int]:
    """q-mesh: an int n (n×n×n) or three positive ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [int(value)] * 3
    if (not isinstance(value, (list, tuple, np.ndarray)) or len(value) != 3
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                       for v in value)):
        raise ConfigError(f"mesh must be an int or three positive ints, got {value!r}")
    return [int(v) for v in value]


def _phonopy_atoms(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.asarray(atoms.get_cell()),
                        scaled_positions=atoms.get_scaled_positions())


def _ase_atoms(patoms) -> Atoms:
    return Atoms(symbols=list(patoms.symbols), cell=np.asarray(patoms.cell),
                 scaled_positions=patoms.scaled_positions, pbc=True)


def model_cutoff(calc: Any) -> float | None:
    """Interaction cutoff of ``calc`` in Å where it exposes one (surftune models:
    the backend's ``r_max``; ASE's EMT: ``rc``), else None."""
    for obj, attr in ((getattr(calc, "adapter", None), "r_max"), (calc, "r_max"),
                      (calc, "cutoff"), (calc, "rc")):
        try:
            v = getattr(obj, attr, None) if obj is not None else None
            v = float(v) if v is not None else None
        except (TypeError, ValueError, RuntimeError):
            v = None
        if v is not None and math.isfinite(v) and v > 0:
            return v
    return None


def _face_widths(cell: np.ndarray) -> np.ndarray:
    """Distances (Å) between opposite faces of the cell spanned by the rows of ``cell``."""
    cell = np.asarray(cell, dtype=float)
    vol = abs(np.linalg.det(cell))
    return np.array([vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
                     for i in range(3)])


def check_supercell_size(unitcell: Any, supercell: Any, *, cutoff: float | None = None,
                         min_width: float | None = None, warn: bool = True) -> dict[str, Any]:
    """Is the supercell wide enough for the interaction range?

    The width is the smallest distance between opposite faces of the supercell (the
    diameter of the largest sphere it holds). It must be at least ``min_width`` if given,
    else 2 × ``cutoff`` (so an atom's interaction sphere does not meet its own periodic
    image), else :data:`MIN_SUPERCELL_WIDTH`. Message-passing models reach further than
    one cutoff, so this is a necessary, not a sufficient, condition.

    Args:
        unitcell: 3×3 cell (Å, rows are lattice vectors) of the unit cell.
        supercell: supercell matrix (anything :func:`parse_supercell` takes).
        cutoff: interaction cutoff in Å (e.g. :func:`model_cutoff`).
        min_width: required width in Å (overrides the cutoff rule).
        warn: emit a :class:`SupercellSizeWarning` when too small.

    Returns:
        ``{"width": Å, "required": Å, "rule": str, "ok": bool, "suggested": [n1, n2, n3],
        "message": str | None}``; ``suggested`` is the smallest diagonal supercell of the
        unit cell that is wide enough.
    """
    P = parse_supercell(supercell)
    cell = np.asarray(unitcell, dtype=float)
    if min_width is not None:
        required, rule = check_positive("min_supercell_width", min_width), "min_supercell_width"
    elif cutoff is not None:
        required, rule = 2.0 * float(cutoff), f"2 x cutoff {float(cutoff):.2f} Å"
    else:
        required, rule = MIN_SUPERCELL_WIDTH, "default minimum (cutoff unknown)"
    width = float(_face_widths(P @ cell).min())
    suggested = [max(1, math.ceil(required / h - 1e-9)) for h in _face_widths(cell)]
    ok = width >= required - 1e-6
    msg = None
    if not ok:
        msg = (f"phonon supercell {P.tolist()} is {width:.2f} Å wide, less than "
               f"{required:.2f} Å ({rule}): force constants overlap their periodic images; "
               f"supercell {' '.join(map(str, suggested))} would be wide enough")
        if warn:
            warnings.warn(msg, SupercellSizeWarning, stacklevel=3)
    return {"width": width, "required": required, "rule": rule, "ok": ok,
            "suggested": suggested, "message": msg}


def _fc_drift(ph) -> float:
    """Largest |Σ_j Φ_ij| (eV/Å²) over atoms and Cartesian pairs: the acoustic sum rule
    violation of the force constants (phonopy's own drift measure)."""
    from phonopy.harmonic.force_constants import get_drift_force_constants

    d1, d2, _, _ = get_drift_force_constants(ph.force_constants, primitive=ph.primitive)
    return float(max(abs(d1), abs(d2)))


def produce_force_constants(ph, *, symmetrize: bool = True,
                            fc_calculator: str | None = None) -> dict[str, Any]:
    """Force constants of a Phonopy object with forces, with phonopy's own tools.

    ``symmetrize`` imposes the translational (acoustic sum rule: drift removal) and index
    permutation symmetries with :meth:`Phonopy.symmetrize_force_constants`, which removes
    the spurious imaginary acoustic modes at Γ. The ``symfc`` and ``alm`` solvers impose
    these symmetries in their fit, so no further step is run for them.

    Returns ``{"symmetrize_fc", "fc_calculator", "fc_drift" (eV/Å², before),
    "fc_drift_after" (eV/Å²)}``.
    """
    if fc_calculator is not None and fc_calculator not in FC_CALCULATORS:
        raise ConfigError(f"fc_calculator must be one of {list(FC_CALCULATORS)} or None, "
                          f"got {fc_calculator!r}")
    ds = ph.dataset or {}
    if "displacements" in ds and fc_calculator in (None, "traditional"):
        raise DataError("the dataset displaces all atoms at once (type-II FORCE_SETS): "
                        "pass fc_calculator='symfc' (--fc-calculator symfc) or 'alm'")
    try:
        ph.produce_force_constants(fc_calculator=fc_calculator, show_drift=False)
    except ImportError as exc:
        raise ConfigError(f"fc_calculator {fc_calculator!r} needs a package that is not "
                          f"installed: {exc}") from exc
    before = _fc_drift(ph)
    if symmetrize and fc_calculator in (None, "traditional"):
        ph.symmetrize_force_constants(show_drift=False)
    return {"symmetrize_fc": bool(symmetrize), "fc_calculator": fc_calculator,
            "fc_drift": before, "fc_drift_after": _fc_drift(ph)}


def _read_born(ph, born: str | Path) -> dict:
    """NAC parameters of ``born`` (phonopy BORN format) for the primitive cell of ``ph``."""
    from phonopy.file_IO import parse_BORN

    if not Path(born).is_file():
        raise FileNotFoundError(f"BORN not found: {str(born)!r}")
    from phonopy.physical_units import get_calculator_physical_units

    try:
        params = parse_BORN(ph.primitive, filename=str(born))
        # as phonopy.load does: the unit factor of the calculator interface (None = VASP
        # units, eV and Å, as for every ASE calculator)
        params.setdefault("factor", get_calculator_physical_units(None).nac_factor)
        return params
    except Exception as exc:
        raise DataError(f"cannot read BORN {str(born)!r} for the {len(ph.primitive)}-atom "
                        f"primitive cell: {exc}") from exc


def compute_forces(phonon, calc: BaseCalculator, *, progress: bool = False) -> np.ndarray:
    """Forces (eV/Å) of calc on every displaced supercell of a Phonopy object."""
    from tqdm.auto import tqdm

    scs = phonon.supercells_with_displacements
    out = []
    for sc in tqdm(scs, desc="phonon displacements", disable=not progress):
        a = _ase_atoms(sc)
        attach_calc(a, calc)
        out.append(np.array(a.get_forces(), dtype=float))
    return np.array(out)


@dataclass
class PhononResult(PropertyResult):
    """Outcome of :func:`phonons`. Frequencies in THz; DOS in states/THz per primitive
    cell; thermal properties per unit cell in phonopy units: free energy kJ/mol, entropy
    and heat capacity J/(K·mol), temperatures K.

    ``nac``/``nac_source``: whether (and from which file) the LO–TO correction was
    applied. ``fc_drift``: acoustic-sum-rule violation of the raw force constants
    (eV/Å²), before the symmetrisation that ``symmetrize_fc`` says was applied.
    ``supercell_width`` (Å) and ``supercell_warning``: see :func:`check_supercell_size`.
    """

    formula: str
    supercell: list[list[int]]
    displacement: float
    n_displacements: int
    band_labels: list[tuple[float, str]]
    band_distances: list[list[float]]
    band_frequencies: list[list[list[float]]]
    dos_frequencies: list[float]
    dos: list[float]
    thermal: dict[str, list[float]]
    mesh: list[int]
    min_frequency: float
    has_imaginary: bool
    imaginary_modes: list[dict[str, Any]]
    imaginary_tol: float
    plot: str | None = None
    phonopy_params: str | None = None
    label: str | None = None
    nac: bool = False
    nac_source: str | None = None
    symmetrize_fc: bool = True
    fc_calculator: str | None = None
    fc_drift: float | None = None
    supercell_width: float | None = None
    supercell_warning: str | None = None
    phonon: Any = field(default=None, metadata={"json": False})


