"""SurfTuneCalculator inside ASE: optimizers, filters, NEB, MD, phonopy, heads."""

from __future__ import annotations

import numpy as np
import pytest
from _models import chgnet_adapter, tiny_mace
from ase import units
from ase.build import add_adsorbate, bulk, fcc100, fcc111
from ase.constraints import FixAtoms
from ase.filters import FrechetCellFilter
from ase.md.verlet import VelocityVerlet
from ase.mep import NEB
from ase.optimize import BFGS, FIRE

from ase_surftune import SurfTuneCalculator
from ase_surftune.models.bundle import Bundle
from ase_surftune.models.correction import LinearCorrection


@pytest.fixture(scope="module")
def calc():
    return SurfTuneCalculator(Bundle(chgnet_adapter()))


@pytest.fixture()
def mace_calc():
    return SurfTuneCalculator(Bundle(tiny_mace(heads=("pt_head", "surface"))), head="surface")


def test_is_ase_calculator_with_properties(calc):
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    slab.calc = calc
    e = slab.get_potential_energy()
    assert slab.get_potential_energy(force_consistent=True) == e
    assert slab.get_forces().shape == (12, 3)
    assert slab.get_stress().shape == (6,)
    assert -4.5 < e / len(slab) < -3.0  # CHGNet Cu ~ -4.1 eV/atom in bulk


def test_reusable_across_sizes(calc):
    """CHGNet's own calculator raises on a different atom count; ours must not."""
    for n in (3, 4, 5):
        a = fcc111("Cu", (2, 2, n), vacuum=6.0)
        a.calc = calc
        assert np.isfinite(a.get_potential_energy())
        assert a.get_forces().shape == (4 * n, 3)


def test_predict_equals_get_forces(calc):
    structs = [fcc111("Cu", (2, 2, n), vacuum=6.0) for n in (3, 4)]
    for i, s in enumerate(structs):
        s.rattle(0.05, seed=i)
    pred = calc.predict(structs, batch_size=2)
    for i, s in enumerate(structs):
        s.calc = calc
        assert pred.energy[i] == pytest.approx(s.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(pred.forces[i], s.get_forces(), atol=1e-5)


@pytest.mark.slow
def test_fire_relaxation_lowers_energy(calc):
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 3]))
    slab.rattle(0.1, seed=2)
    slab.calc = calc
    e0 = slab.get_potential_energy()
    opt = FIRE(slab, logfile=None)
    opt.run(fmax=0.05, steps=200)
    assert slab.get_potential_energy() < e0 - 0.05
    assert np.linalg.norm(slab.get_forces(), axis=1).max() < 0.05


def test_frechet_cell_filter_relaxes_bulk(calc):
    atoms = bulk("Cu", "fcc", a=3.8)  # strained
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.01, steps=100)
    a = atoms.cell.cellpar()[0] * np.sqrt(2)
    assert atoms.get_potential_energy() < e0
    assert 3.5 < a < 3.7  # CHGNet Cu lattice constant ~3.6 Å
    assert np.abs(atoms.get_stress()).max() < 2e-3


@pytest.mark.parametrize("shared", [True, False])
def test_neb_with_shared_and_per_image_calculators(shared):
    slab = fcc100("Cu", (2, 2, 2), vacuum=5.0)
    add_adsorbate(slab, "Cu", 1.7, "hollow")
    init = slab.copy()
    final = slab.copy()
    final.positions[-1, 0] += slab.cell[0, 0] / 2
    images = [init] + [init.copy() for _ in range(3)] + [final]
    neb = NEB(images, allow_shared_calculator=shared, method="improvedtangent")
    neb.interpolate()
    bundle = Bundle(chgnet_adapter())
    if shared:
        c = SurfTuneCalculator(bundle)
        for im in images:
            im.calc = c
    else:
        for im in images:
            im.calc = SurfTuneCalculator(bundle)
    f = neb.get_forces()
    assert f.shape == (3 * len(init), 3) and np.all(np.isfinite(f))
    energies = [im.get_potential_energy() for im in images]
    assert max(energies[1:-1]) > energies[0]  # bridge site is above the hollow


@pytest.mark.slow
def test_md_velocity_verlet_conserves_energy(mace_calc):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=0)
    atoms.calc = mace_calc
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    etot = []
    for _ in range(20):
        dyn.run(1)
        etot.append(atoms.get_total_energy())
    assert np.ptp(etot) < 5e-3


def test_phonopy_through_ase(calc):
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    prim = bulk("Cu", "fcc", a=3.6)
    unit = PhonopyAtoms(symbols=prim.get_chemical_symbols(), cell=prim.cell.array,
                        scaled_positions=prim.get_scaled_positions())
    ph = Phonopy(unit, supercell_matrix=np.diag([2, 2, 2]))
    ph.generate_displacements(distance=0.01)
    forces = []
    for sc in ph.supercells_with_displacements:
        from ase import Atoms

        a = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        a.calc = calc
        forces.append(a.get_forces())
    ph.forces = forces
    ph.produce_force_constants()
    ph.run_qpoints([[0.5, 0.5, 0.5]])
    freqs = ph.get_qpoints_dict()["frequencies"][0]
    assert np.all(freqs > 1.0) and np.all(freqs < 12.0)  # THz, Cu L-point modes


@pytest.mark.slow
def test_head_selection_and_switching(mace_calc):
    assert mace_calc.heads == ["pt_head", "surface"]
    atoms = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    atoms.calc = mace_calc
    e_surface = atoms.get_potential_energy()
    mace_calc.head = "pt_head"
    assert mace_calc.results == {}  # switching head resets cached results
    e_pt = atoms.get_potential_energy()
    assert e_pt != e_surface
    with pytest.raises(ValueError, match=r"valid heads: \['pt_head', 'surface'\]"):
        mace_calc.head = "bulk"
    assert mace_calc.head == "pt_head"  # a failed switch changes nothing


@pytest.mark.slow
def test_correction_and_reference_shifts_are_applied():
    ad = tiny_mace()
    atoms = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    atoms.rattle(0.05, seed=1)
    plain = SurfTuneCalculator(Bundle(ad))
    atoms.calc = plain
    e0, f0 = atoms.get_potential_energy(), atoms.get_forces()
    corr = LinearCorrection(scale=1.3, shifts={"Cu": -0.2})
    b = Bundle(ad, reference_energies={"Default": {"Cu": 1.0}}, corrections={"Default": corr})
    c = SurfTuneCalculator(b)
    atoms.calc = c
    assert atoms.get_potential_energy() == pytest.approx(1.3 * (e0 + 12 * 1.0) - 12 * 0.2)
    np.testing.assert_allclose(atoms.get_forces(), 1.3 * f0)
    atoms.calc = SurfTuneCalculator(b, correction=False)
    assert atoms.get_potential_energy() == pytest.approx(e0 + 12.0)
    np.testing.assert_allclose(c.predict([atoms]).forces[0], 1.3 * f0)
