"""Reference calculators: EMT always, GPAW (real PBE) when the [dft] extra is installed."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from ase_surftune.models.references import get_calculator, get_reference_calculator


def test_unknown_reference_names_the_choices():
    with pytest.raises(ValueError, match="emt"):
        get_reference_calculator("vasp-please")


def test_emt_reference_gives_known_cu_energy():
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = get_calculator("emt")
    # ASE's EMT Cu reference: E ≈ 0 at its own lattice constant 3.61 Å
    assert abs(atoms.get_potential_energy()) < 0.02


@pytest.mark.dft
def test_gpaw_reference_follows_symmetry_breaking_moves():
    """One GPAW calculator reused on a displaced copy (as phonons, NEB and relaxations
    do) must not raise SymmetryBrokenError, and forces obey Newton's third law."""
    pytest.importorskip("gpaw")
    from ase_surftune.demo import GPAW_DEMO_SETTINGS

    calc = get_reference_calculator("gpaw", **{**GPAW_DEMO_SETTINGS,
                                               "kpts": {"size": (2, 2, 2), "gamma": True}})
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    assert np.allclose(atoms.get_forces(), 0.0, atol=1e-3)  # perfect fcc: no forces
    atoms.positions[0, 0] += 0.05
    f = atoms.get_forces()
    assert f[0, 0] < -1e-3  # restoring force on the displaced atom (eV/Å)
    assert np.allclose(f.sum(axis=0), 0.0, atol=5e-3)
    assert atoms.get_potential_energy() > e0  # displacement from equilibrium costs energy
