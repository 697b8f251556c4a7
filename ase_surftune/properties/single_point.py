"""Single points: energy (eV), forces (eV/Å) and stress (eV/Å³) of structures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

from ase_surftune.properties._base import attach_calc, check_atoms

__all__ = ["single_point", "default_slab"]


def default_slab() -> Atoms:
    """The built-in test structure: a 3×3×4 Cu(111) slab with 8 Å vacuum."""
    from ase.build import fcc111

    return fcc111("Cu", (3, 3, 4), vacuum=8.0)


def single_point(images: Sequence[Atoms], calc: Any, *, stress: bool = False
                 ) -> list[dict[str, Any]]:
    """One row per structure: index, formula, n_atoms, ``energy_eV``,
    ``energy_per_atom_eV``, ``fmax_eV_per_A`` (largest force norm), ``forces_eV_per_A``
    and, with ``stress``, ``stress_eV_per_A3`` (Voigt). The structures are not changed."""
    rows = []
    for i, atoms in enumerate(images):
        atoms = attach_calc(check_atoms(atoms).copy(), calc)
        e = float(atoms.get_potential_energy())
        f = atoms.get_forces()
        row = {"index": i, "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms),
               "energy_eV": e, "energy_per_atom_eV": e / len(atoms),
               "fmax_eV_per_A": float(np.linalg.norm(f, axis=1).max()),
               "forces_eV_per_A": f}
        if stress:
            row["stress_eV_per_A3"] = atoms.get_stress()
        rows.append(row)
    return rows
