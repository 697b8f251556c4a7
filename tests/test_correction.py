"""Linear softening correction (seed 002): softening scale, fit, apply."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ase_surftune.core.errors import DataError
from ase_surftune.models.correction import (
    LinearCorrection,
    fit_linear_correction,
    fit_linear_correction_from_calc,
    softening_scale,
    softening_scale_high_force,
)

A_TRUE = 1.3
SHIFTS = {"Cu": 0.7, "Au": -0.4}


def _structures() -> list[Atoms]:
    out = []
    for i, n_au in enumerate([0, 3, 6, 12]):
        slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
        slab.info.clear()
        symbols = slab.get_chemical_symbols()
        for k in range(n_au):
            symbols[k] = "Au"
        slab.set_chemical_symbols(symbols)
        slab.rattle(0.08, seed=i)
        out.append(slab)
    return out


def _emt(atoms: Atoms) -> tuple[float, np.ndarray]:
    a = atoms.copy()
    a.calc = EMT()
    return a.get_potential_energy(), a.get_forces()


def _ref(atoms: Atoms, shifts=SHIFTS) -> tuple[float, np.ndarray]:
    e, f = _emt(atoms)
    shift = sum(shifts.get(s, 0.0) for s in atoms.get_chemical_symbols())
    return A_TRUE * e + shift, A_TRUE * f


def _fit_inputs(structs, shifts=SHIFTS):
    model = [_emt(a) for a in structs]
    ref = [_ref(a, shifts) for a in structs]
    return ([r[0] for r in ref], [r[1] for r in ref], [m[0] for m in model],
            [m[1] for m in model], [a.numbers for a in structs])


def test_softening_scale_definition():
    rng = np.random.default_rng(0)
    f = [rng.normal(size=(5, 3)), rng.normal(size=(7, 3))]
    assert softening_scale(f, f) == pytest.approx(1.0)
    assert softening_scale(f, [0.7 * x for x in f]) == pytest.approx(0.7)
    assert softening_scale(f[0], 0.7 * f[0]) == pytest.approx(0.7)
    assert softening_scale_high_force(f, [0.7 * x for x in f], quantile=0.8) == \
        pytest.approx(0.7)
    # slope through the origin of model vs reference: s = Σ F_ref·F_model / Σ F_ref²
    m = [x + rng.normal(scale=0.1, size=x.shape) for x in f]
    r, mm = np.concatenate(f).ravel(), np.concatenate(m).ravel()
    assert softening_scale(f, m) == pytest.approx(r @ mm / (r @ r))
    with pytest.raises(DataError):
        softening_scale([f[0]], [f[1]])
    with pytest.raises(DataError):
        softening_scale(np.zeros((2, 3)), np.ones((2, 3)))


def test_recovers_known_scale_and_shifts():
    corr = fit_linear_correction(*_fit_inputs(_structures()), mode="total")
    assert corr.scale == pytest.approx(A_TRUE, abs=1e-6)
    assert corr.shifts["Cu"] == pytest.approx(SHIFTS["Cu"], abs=1e-6)
    assert corr.shifts["Au"] == pytest.approx(SHIFTS["Au"], abs=1e-6)
    info = corr.info
    assert info["softening_scale_before"] == pytest.approx(1 / A_TRUE, abs=1e-6)
    assert info["softening_scale_after"] == pytest.approx(1.0, abs=1e-6)
    assert info["force_mae_after"] < 1e-8 < info["force_mae_before"]
    assert info["energy_mae_per_atom_after"] < 1e-8
    assert info["n_structures"] == 4 and info["used_energies"] is True
    assert "softening scale" in corr.summary()


def test_single_structure():
    slab = _structures()[0]  # pure Cu: forces fix a, the energy fixes b_Cu
    corr = fit_linear_correction(*_fit_inputs([slab]), mode="total")
    assert corr.scale == pytest.approx(A_TRUE, abs=1e-6)
    assert corr.shifts == pytest.approx({"Cu": SHIFTS["Cu"]}, abs=1e-6)
    # two elements in one structure: a still exact, shifts reproduce the energy
    alloy = _structures()[2]
    e_ref, f_ref, e_mod, f_mod, nums = _fit_inputs([alloy])
    corr = fit_linear_correction(e_ref, f_ref, e_mod, f_mod, nums)
    assert corr.scale == pytest.approx(A_TRUE, abs=1e-6)
    e_corr, _, _ = corr.apply(e_mod[0], f_mod[0], nums[0])
    assert e_corr == pytest.approx(e_ref[0], abs=1e-6)


def test_forces_only_and_options():
    e_ref, f_ref, e_mod, f_mod, nums = _fit_inputs(_structures())
    corr = fit_linear_correction(None, f_ref, None, f_mod, nums)
    assert corr.scale == pytest.approx(A_TRUE, abs=1e-6) and corr.shifts == {}
    assert corr.info["used_energies"] is False
    corr = fit_linear_correction(e_ref, f_ref, e_mod, f_mod, nums, use_energies=False)
    assert corr.shifts == {}
    # without shifts, energies labelled without offsets are consistent with a alone
    e_ref0, f_ref0, e_mod0, f_mod0, _ = _fit_inputs(_structures(), shifts={})
    corr = fit_linear_correction(e_ref0, f_ref0, e_mod0, f_mod0, nums, fit_shifts=False,
                                 energy_weight=10.0)
    assert corr.scale == pytest.approx(A_TRUE, abs=1e-6) and corr.shifts == {}


def test_from_calc_and_roundtrip():
    structs = _structures()[:2]
    labelled = []
    for a in structs:
        e, f = _ref(a)
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=e, forces=f)
        labelled.append(b)
    corr = fit_linear_correction_from_calc(labelled, EMT())
    assert corr.scale == pytest.approx(A_TRUE, abs=1e-6)
    back = LinearCorrection.from_dict(corr.to_dict())
    assert back.scale == corr.scale and back.shifts == corr.shifts
    assert back.info == corr.info
    assert back.mode == "relative" and back.model_reference == corr.model_reference
    import json

    json.dumps(corr.to_dict())  # bundle metadata must be JSON-able


def test_old_bundle_dict_without_mode_behaves_as_before():
    old = {"scale": 1.3, "shifts": {"Cu": 0.7}, "info": {}}  # a version-1 correction
    corr = LinearCorrection.from_dict(old)
    assert corr.mode == "total" and corr.model_reference == {}
    e, f, _ = corr.apply(-10.0, np.ones((2, 3)), np.array([29, 29]))
    assert e == pytest.approx(1.3 * -10.0 + 2 * 0.7)
    np.testing.assert_allclose(f, 1.3)
    with pytest.raises(DataError, match="mode"):
        LinearCorrection.from_dict({**old, "mode": "weird"})


def _scaled_emt_set(scale=0.6, offset=0.0, noise=0.0):
    """Model = EMT (+ a per-atom offset); reference = EMT with E and F divided by ``scale``."""
    rng = np.random.default_rng(3)
    structs = _structures() + [bulk("Cu", "fcc", a=3.5).repeat(2)]
    structs[-1].rattle(0.05, seed=9)
    e_ref, f_ref, e_mod, f_mod, nums = [], [], [], [], []
    for a in structs:
        e, f = _emt(a)
        e_mod.append(e + offset * len(a))
        f_mod.append(f)
        e_ref.append(e / scale + offset * len(a))
        f_ref.append(f / scale + rng.normal(scale=noise, size=f.shape))
        nums.append(a.numbers)
    return e_ref, f_ref, e_mod, f_mod, nums


def test_seed_faithful_fit_recovers_inverse_of_scaled_emt():
    """Reference = EMT with forces and energies x 1/0.6: a = 1/0.6 exactly, s = 1."""
    e_ref, f_ref, e_mod, f_mod, nums = _scaled_emt_set()
    corr = fit_linear_correction(e_ref, f_ref, e_mod, f_mod, nums)
    assert corr.info["fit"] == "slope" and corr.mode == "relative"
    assert corr.scale == pytest.approx(1 / 0.6, abs=1e-6)
    assert corr.info["softening_scale_before"] == pytest.approx(0.6, abs=1e-9)
    assert corr.info["softening_scale_after"] == pytest.approx(1.0, abs=1e-9)
    assert corr.info["warnings"] == []
    for er, em, fm, z in zip(e_ref, e_mod, f_mod, nums):
        e2, f2, _ = corr.apply(em, fm, z)
        assert e2 == pytest.approx(er, abs=1e-6)
        np.testing.assert_allclose(f2, fm / 0.6, atol=1e-9)


def test_slope_fit_gives_s_one_where_mse_fit_cannot():
    """With noisy reference forces the MSE slope is cos² < 1; the default restores s = 1."""
    e_ref, f_ref, e_mod, f_mod, nums = _scaled_emt_set(noise=0.3)
    slope = fit_linear_correction(e_ref, f_ref, e_mod, f_mod, nums)
    mse = fit_linear_correction(e_ref, f_ref, e_mod, f_mod, nums, fit="mse",
                                use_energies=False)
    tls = fit_linear_correction(e_ref, f_ref, e_mod, f_mod, nums, fit="tls")
    r = np.concatenate(f_ref).ravel()
    m = np.concatenate(f_mod).ravel()
    cos2 = (r @ m) ** 2 / ((r @ r) * (m @ m))
    assert slope.info["softening_scale_after"] == pytest.approx(1.0, abs=1e-12)
    assert mse.info["softening_scale_after"] == pytest.approx(cos2, rel=1e-12)
    assert cos2 < 0.999
    assert mse.scale < tls.scale < slope.scale
    assert slope.scale == pytest.approx(r @ r / (r @ m), rel=1e-12)


def test_relative_mode_keeps_shifts_small_on_another_codes_reference():
    """Energies already moved to a DFT code's reference (-1850 eV/atom): the scale acts
    about the model's own per-element reference, so b_Z stay small; the old mode gives
    b_Z of about (1 - a)·E/N = +1233 eV/atom."""
    e_ref, f_ref, e_mod, f_mod, nums = _scaled_emt_set(offset=-1850.0)
    rel = fit_linear_correction(e_ref, f_ref, e_mod, f_mod, nums)
    tot = fit_linear_correction(e_ref, f_ref, e_mod, f_mod, nums, mode="total")
    # exact: b_Z = (a - 1)·ε_Z with ε_Z = e_Z^model + 1850 the model's own EMT level
    for el, b in rel.shifts.items():
        assert b == pytest.approx((rel.scale - 1) * (rel.model_reference[el] + 1850.0),
                                  abs=1e-6)
    assert max(abs(v) for v in rel.shifts.values()) < 2.0
    assert min(abs(v) for v in tot.shifts.values()) > 1000.0
    assert rel.model_reference["Cu"] == pytest.approx(-1850.0, abs=5.0)
    for er, em, fm, z in zip(e_ref, e_mod, f_mod, nums):
        assert rel.apply(em, fm, z)[0] == pytest.approx(er, abs=1e-6)


def test_correction_that_makes_things_worse_says_so():
    e_ref, f_ref, e_mod, f_mod, nums = _scaled_emt_set()
    corr = fit_linear_correction(e_ref, f_ref, e_mod, f_mod, nums)
    # judged on data where the model was already right (s = 1): s moves away from 1
    from ase_surftune.models.correction import assess_correction

    check = assess_correction(corr, f_mod, f_mod, name="validation data")
    assert any("AWAY from 1" in w for w in check["warnings"])
    assert any("GREW" in w for w in check["warnings"])
    corr.info["warnings"] = check["warnings"]
    assert "WARNING" in corr.summary()


def test_bad_inputs():
    e_ref, f_ref, e_mod, f_mod, nums = _fit_inputs(_structures()[:2])
    with pytest.raises(DataError, match="atoms"):
        fit_linear_correction(e_ref, [f_ref[0][:-1], f_ref[1]], e_mod, f_mod, nums)
    with pytest.raises(DataError, match="energies"):
        fit_linear_correction(e_ref[:1], f_ref, e_mod, f_mod, nums)
    with pytest.raises(DataError, match="NaN"):
        fit_linear_correction([np.nan, 1.0], f_ref, e_mod, f_mod, nums)
    zeros = [np.zeros_like(f) for f in f_mod]
    with pytest.raises(DataError, match="cannot determine"):
        fit_linear_correction(e_ref, f_ref, e_mod, zeros, nums)


class Corrected(Calculator):
    """EMT wrapped by a LinearCorrection (what SurfTuneCalculator does for a model)."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, corr: LinearCorrection) -> None:
        super().__init__()
        self.corr = corr

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        work.calc = EMT()
        e, f, s = self.corr.apply(work.get_potential_energy(), work.get_forces(),
                                  work.numbers, work.get_stress())
        self.results = {"energy": e, "forces": f, "stress": s}


@pytest.mark.parametrize("mode", ["total", "relative"])
def test_corrected_forces_are_negative_gradient(mode):
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms[1].symbol = "Au"
    atoms.rattle(0.05, seed=3)
    corr = LinearCorrection(scale=1.3, shifts={"Cu": 0.7, "Au": -0.4}, mode=mode,
                            model_reference={"Cu": -3.5, "Au": -2.9})
    atoms.calc = Corrected(corr)
    f = atoms.get_forces()
    h = 1e-4
    num = np.zeros_like(f)
    for i in range(len(atoms)):
        for k in range(3):
            for sign in (1, -1):
                disp = atoms.copy()
                disp.calc = Corrected(corr)
                disp.positions[i, k] += sign * h
                num[i, k] -= sign * disp.get_potential_energy() / (2 * h)
    np.testing.assert_allclose(f, num, atol=1e-5)
    emt = atoms.copy()
    emt.calc = EMT()
    np.testing.assert_allclose(f, 1.3 * emt.get_forces(), atol=1e-12)
    np.testing.assert_allclose(atoms.get_stress(), 1.3 * emt.get_stress(), atol=1e-12)
