"""Bulk properties on any ASE calculator: equation of state (a, B) and vacancy formation.

* :func:`equation_of_state` — energies over ±``eps`` in volume around the given cell
  (:func:`ase.eos.calculate_eos`, positions scaled with the cell) fitted by
  :class:`ase.eos.EquationOfState` (Birch–Murnaghan by default): V0 (Å³), E0 (eV),
  B (GPa) and the conventional lattice constants at V0 (Å).
* :func:`vacancy_formation` — E_f = E(N−1) − (N−1)/N · E(N) (eV) in a supercell of the
  given bulk, the defect cell's positions relaxed at fixed cell by default.

Both take the bulk as given: relax it first (:func:`~ase_surftune.properties.relax`)
if the numbers should belong to the calculator's own equilibrium.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_surftune.core.errors import DataError
from ase_surftune.core.threads import single_threaded_numpy
from ase_surftune.properties._base import (
    PropertyResult,
    check_atoms,
    check_int,
    check_positive,
    resolve_calc,
)
from ase_surftune.properties.settings import EOS, VACANCY_FORMATION

__all__ = ["EOSResult", "VacancyFormationResult", "conventional_lattice",
           "equation_of_state", "vacancy_formation"]


def conventional_lattice(atoms: Atoms, symprec: float = 1e-3) -> tuple[float, float, str]:
    """``(a, c, crystal_system)`` of the conventional standard cell (pymatgen/spglib), Å.

    A primitive fcc cell gives the cubic a (not the primitive vector length), so values
    compare with tabulated lattice constants whatever cell the structure comes in.
    """
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    sga = SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(atoms), symprec=symprec)
    conv = sga.get_conventional_standard_structure()
    a, _, c = conv.lattice.abc
    return float(a), float(c), str(sga.get_crystal_system())


@dataclass
class EOSResult(PropertyResult):
    """Equation-of-state fit: V0 in Å³ (of the given cell), E0 in eV, B in GPa,
    a and c in Å (conventional cell scaled to V0)."""

    v0: float
    e0: float
    bulk_modulus: float
    a: float
    c: float
    eos: str
    volumes: list[float]
    energies: list[float]


@single_threaded_numpy
def equation_of_state(atoms: Atoms, calc: BaseCalculator, *, npoints: int = EOS.npoints,
                      eps: float = EOS.eps, eos: str = EOS.eos) -> EOSResult:
    """Fit E(V) over volumes ``V·(1 ± eps)`` (``npoints`` points) around ``atoms``' cell.

    Raises:
        DataError: the fit fails or its minimum lies outside the sampled volumes.
    """
    from ase.eos import EquationOfState, calculate_eos
    from ase.units import GPa

    check_atoms(atoms, need_cell=True)
    npoints = check_int("npoints", npoints, minimum=5)
    eps = check_positive("eps", eps)
    work = atoms.copy()
    work.calc = resolve_calc(calc)
    raw = calculate_eos(work, npoints=npoints, eps=eps)
    vols, ens = np.asarray(raw.v, float), np.asarray(raw.e, float)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v0, e0, b0 = EquationOfState(vols, ens, eos=eos).fit()
    except Exception as exc:
        raise DataError(f"EOS fit failed for {atoms.get_chemical_formula()}: {exc}") from exc
    if not (np.isfinite(v0) and vols.min() <= v0 <= vols.max() and np.isfinite(b0)):
        raise DataError(f"EOS of {atoms.get_chemical_formula()}: the fitted minimum "
                        f"V0 = {v0:.4g} Å³ lies outside the sampled {vols.min():.4g}–"
                        f"{vols.max():.4g} Å³; relax the bulk first or widen eps")
    a, c, _ = conventional_lattice(atoms)
    s = float((v0 / atoms.get_volume()) ** (1 / 3))
    return EOSResult(v0=float(v0), e0=float(e0), bulk_modulus=float(b0 / GPa), a=a * s,
                     c=c * s, eos=eos, volumes=vols.tolist(), energies=ens.tolist())


@dataclass
class VacancyFormationResult(PropertyResult):
    """E_f = E(N−1) − (N−1)/N·E(N) in eV; energies in eV; ``converged`` refers to the
    relaxation of the defect cell (None when it was not relaxed)."""

    formation_energy: float
    energy_perfect: float
    energy_defect: float
    n_atoms: int
    supercell: list[list[int]]
    relaxed: bool
    converged: bool | None
    steps: int


@single_threaded_numpy
def vacancy_formation(bulk: Atoms, calc: BaseCalculator, *,
                      supercell: Any = VACANCY_FORMATION.supercell,
                      vacancy_index: int = VACANCY_FORMATION.vacancy_index,
                      relax: bool = VACANCY_FORMATION.relax,
                      fmax: float = VACANCY_FORMATION.fmax,
                      steps: int = VACANCY_FORMATION.steps,
                      optimizer: str = VACANCY_FORMATION.optimizer) -> VacancyFormationResult:
    """Vacancy formation energy (eV) of ``bulk`` (kept as given) in a supercell.

    Args:
        bulk: periodic bulk cell (relax it first for the calculator's own equilibrium).
        calc: any ASE calculator.
        supercell: 1, 3 or 9 integers (see :func:`~ase_surftune.properties.parse_supercell`)
            applied to ``bulk``.
        vacancy_index: atom removed (index in the supercell).
        relax: relax the defect cell's positions at fixed cell (``fmax`` eV/Å, ``steps``).
    """
    from ase.build import make_supercell

    from ase_surftune.properties.phonons import parse_supercell
    from ase_surftune.properties.relax import relax as relax_atoms

    check_atoms(bulk, name="bulk", need_cell=True)
    P = parse_supercell(supercell)
    c = resolve_calc(calc)
    sc = make_supercell(bulk, P)
    n = len(sc)
    vacancy_index = check_int("vacancy_index", vacancy_index)
    if vacancy_index >= n:
        raise DataError(f"vacancy_index {vacancy_index} out of range for {n} atoms")
    sc.calc = c
    e_perfect = float(sc.get_potential_energy())
    defect = sc.copy()
    del defect[vacancy_index]
    converged: bool | None = None
    n_steps = 0
    if relax:
        r = relax_atoms(defect, c, fmax=fmax, steps=steps, optimizer=optimizer)
        e_defect, converged, n_steps = float(r.energy), bool(r.converged), int(r.steps)
    else:
        defect.calc = c
        e_defect = float(defect.get_potential_energy())
    return VacancyFormationResult(
        formation_energy=e_defect - (n - 1) / n * e_perfect, energy_perfect=e_perfect,
        energy_defect=e_defect, n_atoms=n, supercell=P.tolist(), relaxed=bool(relax),
        converged=converged, steps=n_steps)
