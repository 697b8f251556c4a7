"""Per-element reference-energy alignment."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ase_surftune.core.errors import DataError
from ase_surftune.data import get_labels
from ase_surftune.data.alignment import (
    ReferenceAlignment,
    composition_matrix,
    fit_element_shifts,
    fit_shifts,
)

SHIFTS = {"Cu": 3.0, "Au": -1.5}


def _alloy_slabs() -> list[Atoms]:
    """Cu/Au fcc111 slabs with several compositions, rattled."""
    rng = np.random.default_rng(0)
    out = []
    for i, n_au in enumerate([0, 2, 3, 5, 8, 12]):
        slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
        slab.info.clear()
        idx = rng.choice(len(slab), size=n_au, replace=False)
        symbols = slab.get_chemical_symbols()
        for k in idx:
            symbols[k] = "Au"
        slab.set_chemical_symbols(symbols)
        slab.rattle(0.05, seed=i)
        out.append(slab)
    return out


def _emt_energy(atoms: Atoms) -> float:
    a = atoms.copy()
    a.calc = EMT()
    return a.get_potential_energy()


def _ref_energy(atoms: Atoms) -> float:
    n = atoms.get_chemical_symbols()
    return _emt_energy(atoms) + SHIFTS["Cu"] * n.count("Cu") + SHIFTS["Au"] * n.count("Au")


def test_recovers_known_shifts():
    slabs = _alloy_slabs()
    d_e = [_ref_energy(a) - _emt_energy(a) for a in slabs]
    shifts = fit_element_shifts(slabs, d_e)
    assert set(shifts) == {"Cu", "Au"}
    assert shifts["Cu"] == pytest.approx(3.0, abs=1e-6)
    assert shifts["Au"] == pytest.approx(-1.5, abs=1e-6)
    # atomic numbers work as well as Atoms
    shifts2 = fit_element_shifts([a.numbers for a in slabs], d_e, ridge=0.0)
    assert shifts2["Cu"] == pytest.approx(3.0, abs=1e-9)


def test_reference_alignment_report_and_roundtrip():
    slabs = _alloy_slabs()
    d_e = np.array([_ref_energy(a) - _emt_energy(a) for a in slabs])
    d_e[1] += 0.12  # one structure with a non-compositional residual
    al = ReferenceAlignment.fit(slabs, d_e)
    assert al.n_structures == len(slabs)
    assert al.rmse_before > 1.0 and al.rmse_after < 0.02
    assert al.energy_shift(slabs[2].numbers) == pytest.approx(
        sum(al.shifts[s] for s in slabs[2].get_chemical_symbols()))
    assert "Cu" in al.summary() and "RMSE" in al.summary()
    back = ReferenceAlignment.from_dict(al.to_dict())
    assert back == al


def test_to_model_frame_moves_energies_only():
    slabs = _alloy_slabs()[:3]
    labelled = []
    for a in slabs:
        b = a.copy()
        b.calc = EMT()
        f = b.get_forces()
        b.calc = SinglePointCalculator(b, energy=_ref_energy(a), forces=f)
        labelled.append(b)
    al = ReferenceAlignment.fit(labelled, [_ref_energy(a) - _emt_energy(a) for a in slabs])
    moved = al.to_model_frame(labelled)
    for a, m in zip(labelled, moved):
        assert get_labels(m)[0] == pytest.approx(_emt_energy(a), abs=1e-6)
        np.testing.assert_array_equal(get_labels(m)[1], get_labels(a)[1])


def test_rank_deficient_single_structure_falls_back_and_says_so():
    slab = _alloy_slabs()[2]  # Cu and Au in one structure: shifts not separable
    n_cu = slab.get_chemical_symbols().count("Cu")
    n_au = len(slab) - n_cu
    d_e = 3.0 * n_cu - 1.5 * n_au
    fit = fit_shifts([slab], [d_e])
    assert fit.method == "shared_per_atom"
    assert fit.rank == 1 and fit.n_elements == 2
    assert "cannot separate" in fit.reason
    # one shared per-atom shift still reproduces the energy of that composition
    assert fit.shifts["Cu"] == fit.shifts["Au"] == pytest.approx(d_e / len(slab))
    with pytest.raises(DataError, match="not determined"):
        fit_shifts([slab], [d_e], on_rank_deficient="raise")


def test_rank_deficient_same_ratio_cu3au_is_reported():
    """Every frame Cu3Au (different cell sizes): Cu and Au cannot be separated."""
    from ase.build import bulk

    frames = []
    for rep in (1, 2):
        a = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((rep, 1, 1))
        sym = a.get_chemical_symbols()
        for k in range(0, len(sym), 4):
            sym[k] = "Au"
        a.set_chemical_symbols(sym)
        frames.append(a)
    d_e = [_ref_energy(a) - _emt_energy(a) for a in frames]
    al = ReferenceAlignment.fit(frames, d_e)
    assert al.method == "shared_per_atom" and "cannot separate" in al.reason
    assert "cannot separate" in al.summary()
    assert ReferenceAlignment.from_dict(al.to_dict()) == al


def test_fit_is_per_atom_so_large_cells_do_not_dominate():
    """One per-atom residual per structure: a 96-atom cell weighs as much as a 4-atom one."""
    small, big = np.full(4, 29), np.full(96, 29)
    # per-atom residuals +0.1 (small) and -0.1 (big): per-atom mean is 0
    fit = fit_shifts([small, big], [0.1 * 4, -0.1 * 96], ridge=0.0)
    assert fit.shifts["Cu"] == pytest.approx(0.0, abs=1e-12)
    assert fit.method == "per_element" and fit.reason is None


def test_large_offsets_like_another_code():
    """A Mo set at about -1865 eV/atom against about -10.9 eV/atom in the model."""
    rng = np.random.default_rng(1)
    sizes = rng.integers(2, 60, size=8)
    model = -10.9 * sizes + rng.normal(0, 0.05, size=8)
    ref = model + (-1865.0 + 10.9) * sizes
    shifts = fit_element_shifts([np.full(n, 42) for n in sizes], ref - model)
    assert shifts["Mo"] == pytest.approx(-1854.1, abs=1e-6)


def test_bad_inputs():
    with pytest.raises(DataError, match="residual"):
        fit_element_shifts([np.array([29])], [1.0, 2.0])
    with pytest.raises(DataError, match="NaN"):
        fit_element_shifts([np.array([29])], [np.nan])
    with pytest.raises(DataError, match="not in elements"):
        composition_matrix([np.array([29, 79])], elements=["Cu"])
    mat, els = composition_matrix([np.array([79, 29, 29])], elements=["Au", "Cu", "Ag"])
    np.testing.assert_array_equal(mat, [[1, 2, 0]])
