"""Environment-aware correction: exact gradients, energy conservation, known answers (EMT)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import units
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from ase_surftune.core.errors import DataError
from ase_surftune.models.env_correction import (
    EnvCorrectedCalculator,
    EnvCorrection,
    basis_terms,
    fit_env_correction,
)

RC = 3.1  # Å, between the first (2.55) and second (3.61) neighbour shells of EMT Cu

KNOWN = EnvCorrection(scale=1.4, shifts={"Cu": 0.05}, rc=RC, n_pair=3, embed_powers=(2.0,),
                      coefficients=[0.3, -0.2, 0.4, 0.02])


def _scaled_emt(scale: float) -> EnvCorrectedCalculator:
    """EMT with its whole PES multiplied by ``scale`` (a uniformly soft/stiff 'model')."""
    return EnvCorrectedCalculator(EMT(), EnvCorrection(scale=scale, rc=RC, n_pair=0,
                                                       embed_powers=(), coefficients=[]))


def _frames() -> list:
    """Three small Cu structures of different kinds: rattled bulk, slab, compressed bulk."""
    b = bulk("Cu", cubic=True).repeat((2, 1, 1))
    b.rattle(0.08, seed=2)
    b.info["config_type"] = "bulk"
    s = fcc111("Cu", (1, 1, 4), vacuum=5.0, periodic=True)
    s.rattle(0.05, seed=3)
    s.info["config_type"] = "slab"
    c = bulk("Cu", cubic=True, a=3.45)
    c.rattle(0.05, seed=4)
    c.info["config_type"] = "compressed"
    return [b, s, c]


def _label(frames, calc) -> list:
    out = []
    for at in frames:
        at = at.copy()
        at.calc = calc
        e, f, st = at.get_potential_energy(), at.get_forces(), at.get_stress()
        at.calc = SinglePointCalculator(at, energy=e, forces=f, stress=st)
        out.append(at)
    return out


def _numeric_forces(atoms, h=1e-5):
    fd = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for c in range(3):
            x0 = atoms.positions[a, c]
            atoms.positions[a, c] = x0 + h
            ep = atoms.get_potential_energy()
            atoms.positions[a, c] = x0 - h
            em = atoms.get_potential_energy()
            atoms.positions[a, c] = x0
            fd[a, c] = -(ep - em) / (2 * h)
    return fd


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bulk", "slab"])
def test_forces_and_stress_are_exact_gradients(kind):
    at = (bulk("Cu", cubic=True).repeat(2) if kind == "bulk"
          else fcc111("Cu", (2, 2, 3), vacuum=5.0, periodic=True))
    at.rattle(0.1, seed=1)
    corr = EnvCorrection(scale=1.3, shifts={"Cu": 0.1}, rc=RC, n_pair=3,
                         embed_powers=(2.0, 3.0), coefficients=[0.3, -0.2, 0.5, 0.05, -0.01])
    at.calc = EnvCorrectedCalculator(EMT(), corr)
    forces = at.get_forces()
    # the residual alone must be non-trivial for the check to mean anything
    assert np.abs(corr.residual(at)[1]).max() > 1e-2
    np.testing.assert_allclose(forces, _numeric_forces(at), atol=1e-6)
    stress = at.get_stress()
    numeric = at.calc.calculate_numerical_stress(at, d=1e-6, voigt=True)
    np.testing.assert_allclose(stress, numeric, atol=1e-7)


def test_basis_is_smooth_at_the_cutoff():
    """A pair crossing rc changes nothing abruptly: energy and force go to 0 there."""
    from ase import Atoms

    for d in (RC - 1e-4, RC + 1e-4):
        dimer = Atoms("Cu2", positions=[[0, 0, 0], [d, 0, 0]], cell=[20, 20, 20])
        b = basis_terms(dimer, RC, 3, (2.0, 3.0))
        assert np.abs(b.energies).max() < 1e-9
        assert np.abs(b.forces).max() < 1e-6


@pytest.mark.slow
def test_nve_conserves_energy():
    at = bulk("Cu", cubic=True).repeat(2)
    at.calc = EnvCorrectedCalculator(EMT(), KNOWN)
    MaxwellBoltzmannDistribution(at, temperature_K=600, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(at, timestep=2.0 * units.fs)
    energies = []
    dyn.attach(lambda: energies.append(at.get_total_energy()), interval=5)
    dyn.run(150)
    energies = np.asarray(energies) / len(at)
    kinetic = at.get_kinetic_energy() / len(at)
    assert kinetic > 0.01  # atoms really moved (≈ 300 K after equipartition)
    assert np.ptp(energies) < 2e-4  # eV/atom over 300 fs


def test_fit_recovers_a_known_pair_and_embedding_term():
    frames = _label(_frames(), EnvCorrectedCalculator(EMT(), KNOWN))
    fit = fit_env_correction(EMT(), frames, rc=RC, n_pair=3, embed_powers=(2.0,), ridge=0.0)
    assert fit.scale == pytest.approx(1.4, abs=1e-8)
    np.testing.assert_allclose(fit.coefficients, KNOWN.coefficients, atol=1e-8)
    assert fit.shifts["Cu"] == pytest.approx(0.05, abs=1e-8)
    groups = fit.info["groups"]
    assert set(groups) == {"bulk", "slab", "compressed"}
    for g in groups.values():  # per-group s before (soft) and after (restored)
        assert g["s_before"] < 0.8
        assert g["s_after"] == pytest.approx(1.0, abs=1e-8)
        assert g["force_mae_after"] < 1e-8 < g["force_mae_before"]


def test_uniformly_soft_model_gets_a_pure_scale():
    """Model = 0.6·EMT, reference = EMT: a = 1/0.6, residual ≈ 0, s = 1 (slope mode)."""
    frames = _label(_frames(), EMT())
    fit = fit_env_correction(_scaled_emt(0.6), frames, rc=RC, scale="slope")
    assert fit.scale == pytest.approx(1 / 0.6, rel=1e-10)
    assert np.abs(fit.coefficients).max() < 1e-6
    assert fit.info["softening_scale_before"] == pytest.approx(0.6, rel=1e-10)
    assert fit.info["softening_scale_after"] == pytest.approx(1.0, abs=1e-6)


def test_held_out_structure_improves_and_roundtrips_through_json():
    frames = _label(_frames(), EnvCorrectedCalculator(EMT(), KNOWN))
    fit = fit_env_correction(EMT(), frames[:2], rc=RC, n_pair=3, embed_powers=(2.0,))
    restored = EnvCorrection.from_dict(json.loads(json.dumps(fit.to_dict())))
    held = frames[2]  # compressed bulk, not in the fit
    calc = EnvCorrectedCalculator(EMT(), restored)
    work = held.copy()
    work.calc = calc
    f_ref = held.get_forces()
    mae_after = np.abs(work.get_forces() - f_ref).mean()
    work.calc = EMT()
    mae_before = np.abs(work.get_forces() - f_ref).mean()
    assert mae_after < 0.1 * mae_before


def test_bad_input_is_refused():
    frames = _label(_frames(), EMT())
    with pytest.raises(DataError, match="at most 3"):
        fit_env_correction(EMT(), frames + frames[:1])
    with pytest.raises(DataError, match="no frames"):
        fit_env_correction(EMT(), [])
    with pytest.raises(ValueError, match="scale must be"):
        fit_env_correction(EMT(), frames, scale="bogus")
    with pytest.raises(ValueError, match="coefficients"):
        EnvCorrection.from_dict({"scale": 1.0, "rc": 3.0, "n_pair": 2, "coefficients": [1.0]})


def test_group_without_force_signal_gets_no_slope():
    """An ideal bulk cell has zero forces: its s is None ('n/a'), never a number."""
    from ase_surftune.models.env_correction import per_group_scales

    ideal = _label([bulk("Cu", cubic=True)], EMT())[0]
    ideal.info["config_type"] = "bulk_eq"
    rattled = _label(_frames()[:1], EMT())[0]
    f0 = [np.zeros((len(ideal), 3)), 0.7 * rattled.get_forces()]
    out = per_group_scales([ideal, rattled], f0, [f0[0], rattled.get_forces()])
    assert out["bulk_eq"]["s_before"] is None and out["bulk_eq"]["s_after"] is None
    assert out["bulk"]["s_before"] == pytest.approx(0.7)
    assert out["bulk"]["s_after"] == pytest.approx(1.0)
