"""Moment and well terms of the environment-aware correction, and per-frame weighting
(issue 12): exact gradients, where the terms vanish, known answers, energy conservation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc100
from ase.calculators.emt import EMT
from test_env_correction import (
    _frames,
    _label,
    assert_exact_gradients,
    distorted_cell,
    nve_energy_spread,
)

from ase_surftune.models.env_basis import BasisSpec, basis_terms
from ase_surftune.models.env_correction import (
    EnvCorrectedCalculator,
    EnvCorrection,
    fit_env_correction,
)
from ase_surftune.models.env_fit import FRAME_WEIGHT_FLOOR, auto_r0, force_row_weights

RC2 = 4.3  # Å, first and second neighbour shells of EMT Cu (2.55, 3.61), below the third
R0 = 3.61 / np.sqrt(2)  # Å, EMT Cu's nearest-neighbour distance (a = 3.61 Å)

MOMENTS = EnvCorrection(scale=1.2, shifts={"Cu": 0.03}, rc=RC2, n_pair=2, embed_powers=(2.0,),
                        moments=(1, 2), wells=(0.05,), r0=R0,
                        coefficients=[0.2, -0.1, 0.01, 0.3, 0.2, 0.05])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bulk", "slab"])
def test_moment_and_well_forces_and_stress_are_exact_gradients(kind):
    assert_exact_gradients(distorted_cell(kind), MOMENTS)


@pytest.mark.parametrize("a", [3.45, 3.61, 3.75])
def test_moments_vanish_in_ideal_cubic_bulk_at_any_volume(a):
    """No l = 1 or l = 2 component in a cubic crystal's shells: zero energy, force and
    stress, so the moments leave the ideal bulk's equation of state alone."""
    b = basis_terms(bulk("Cu", "fcc", a=a, cubic=True).repeat(2), RC2, 0, (), (1, 2))
    assert np.abs(b.energies).max() < 1e-12
    assert np.abs(b.forces).max() < 1e-12
    assert np.abs(b.stresses).max() < 1e-12
    for at in (bulk("Cu", "bcc", a=2.9, cubic=True), bulk("Cu", "sc", a=2.5)):
        assert np.abs(basis_terms(at, RC2, 0, (), (1, 2)).energies).max() < 1e-12


def test_moments_see_rattles_and_surfaces():
    rattled = bulk("Cu", cubic=True)
    rattled.rattle(0.05, seed=1)
    slab = fcc100("Cu", (1, 1, 4), vacuum=5.0, periodic=True)
    for at in (rattled, slab):
        b = basis_terms(at, RC2, 0, (), (1, 2))
        assert (b.energies > 1e-6).all()  # sums of squares: positive
        assert np.abs(b.forces).max() > 1e-3


def test_well_is_flat_at_r0_and_saturates():
    """A dimer at r0 feels neither energy nor force from the well; beyond a few widths
    the well is the plain envelope (1 − r/rc)²/2 … (one bond, counted once)."""
    def dimer(d):
        return Atoms("Cu2", positions=[[0, 0, 0], [d, 0, 0]], cell=[20, 20, 20])

    at_r0 = basis_terms(dimer(R0), RC2, 0, (), (), (0.05,), r0=R0)
    assert abs(at_r0.energies[0]) < 1e-15 and np.abs(at_r0.forces).max() < 1e-12
    far = R0 + 0.5  # ten widths
    b = basis_terms(dimer(far), RC2, 0, (), (), (0.05,), r0=R0)
    assert b.energies[0] == pytest.approx((1 - far / RC2) ** 2, rel=1e-12)


def test_fit_recovers_known_moment_and_well_terms():
    frames = _label(_frames(), EnvCorrectedCalculator(EMT(), MOMENTS))
    for weighting in ("component", "frame"):
        fit = fit_env_correction(EMT(), frames, rc=RC2, n_pair=2, embed_powers=(2.0,),
                                 moments=(1, 2), wells=(0.05,), r0=R0, ridge=0.0,
                                 relative=False, weighting=weighting)
        assert fit.scale == pytest.approx(1.2, abs=1e-7)
        np.testing.assert_allclose(fit.coefficients, MOMENTS.coefficients, atol=1e-6)
        assert fit.shifts["Cu"] == pytest.approx(0.03, abs=1e-7)
        assert fit.info["weighting"] == weighting
        assert "moments l=1,2" in fit.summary()


def test_roundtrip_and_old_dicts():
    restored = EnvCorrection.from_dict(json.loads(json.dumps(MOMENTS.to_dict())))
    assert restored.spec == MOMENTS.spec
    at = bulk("Cu", cubic=True)
    at.rattle(0.05, seed=2)
    np.testing.assert_array_equal(restored.residual(at)[1], MOMENTS.residual(at)[1])
    old = {k: v for k, v in MOMENTS.to_dict().items() if k not in ("moments", "wells", "r0")}
    old["coefficients"] = old["coefficients"][:3]  # a correction written before the terms
    assert EnvCorrection.from_dict(old).spec.n_terms == 3


def test_bad_terms_are_refused():
    with pytest.raises(ValueError, match="moment orders"):
        BasisSpec(rc=4.0, moments=(3,))
    with pytest.raises(ValueError, match="r0"):
        BasisSpec(rc=4.0, wells=(0.05,))
    with pytest.raises(ValueError, match="widths"):
        BasisSpec(rc=4.0, wells=(-0.1,), r0=2.5)
    with pytest.raises(ValueError, match="weighting"):
        fit_env_correction(EMT(), _label(_frames(), EMT()), weighting="bogus")


def test_frame_weighting_counts_each_frame_relative_to_its_signal():
    small, large = np.full((4, 3), 0.05), np.full((2, 3), 1.0)
    w = force_row_weights([small, large], "frame")
    # each frame's weighted squared signal is the same: 1/N_frames
    assert np.sum((w[:12] * small.ravel()) ** 2) == pytest.approx(0.5)
    assert np.sum((w[12:] * large.ravel()) ** 2) == pytest.approx(0.5)
    quiet = force_row_weights([np.zeros((2, 3))], "frame")  # no signal: the floor
    assert quiet[0] == pytest.approx(1 / (FRAME_WEIGHT_FLOOR * np.sqrt(6)))
    np.testing.assert_allclose(force_row_weights([small, large], "component"), 1 / np.sqrt(18))


def test_auto_r0_is_the_bulk_bond_of_rattled_frames():
    at = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    at.rattle(0.03, seed=3)
    assert auto_r0([at]) == pytest.approx(R0, abs=0.01)


@pytest.mark.slow
def test_nve_with_moments_and_well_conserves_energy():
    assert nve_energy_spread(MOMENTS, seed=1) < 2e-4  # eV/atom over 300 fs


def test_strategy_env_fits_moments_and_wells_through_finetune(tmp_path):
    """``strategy: env`` with moment and well options: a model whose truth holds those
    terms is corrected exactly on frames it never saw, and the bundle keeps the terms."""
    from conftest import save_tiny_mace
    from test_env_correction import _env_cfg, _truth_frames

    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.training import FinetuneConfig, finetune

    tiny = save_tiny_mace(tmp_path / "tiny.stbundle", seed=0)
    truth = EnvCorrection(scale=1 / 0.6, shifts={"Cu": 0.02}, rc=RC2, n_pair=1,
                          embed_powers=(), moments=(1, 2), wells=(0.05,), r0=R0,
                          coefficients=[2.0, 0.5, 0.3, 0.1])
    fit, held = _truth_frames(tiny, truth)
    opts = {"rc": RC2, "n_pair": 1, "embed_powers": [], "moments": [1, 2], "wells": [0.05],
            "r0": R0, "weighting": "frame", "ridge": 0.0}
    res = finetune(_env_cfg(tiny, tmp_path / "run", **opts), train=fit, valid=held)
    corr = res.metrics["env_correction"]
    assert corr["moments"] == [1, 2] and corr["wells"] == [0.05]
    np.testing.assert_allclose(corr["coefficients"], truth.coefficients, atol=1e-6)
    assert corr["info"]["valid_softening_scale_after"] == pytest.approx(1.0, abs=1e-6)
    calc = SurfTuneCalculator(str(res.bundle_path))
    work = held[0].copy()
    work.calc = calc
    np.testing.assert_allclose(work.get_forces(), held[0].get_forces(), atol=1e-6)
    with pytest.raises(ValueError, match="strategy_options.moments"):
        FinetuneConfig(model="chgnet", strategy="env", strategy_options={"moments": [3]})
    with pytest.raises(ValueError, match="strategy_options.wells"):
        FinetuneConfig(model="chgnet", strategy="env", strategy_options={"wells": [-0.1]})


def test_keep_eos_leaves_the_models_equation_of_state():
    """Model 0.6·EMT, reference EMT: the free fit stiffens the ideal bulk's E(V) too; with
    ``keep_eos`` the corrected E(V) at ±1, ±2 % strain is the model's, to rounding, while
    the forces of the distorted fit frames are still stiffened."""
    from test_env_correction import _scaled_emt

    from ase_surftune.models.env_fit import eos_cells

    model = _scaled_emt(0.6)
    frames = _label(_frames(), EMT())
    anchor = bulk("Cu", "fcc", a=3.61, cubic=True)
    kw = {"rc": RC2, "n_pair": 2, "embed_powers": (2.0,), "moments": (1, 2),
          "wells": (0.05,), "r0": R0, "weighting": "frame"}

    def eos(calc):
        out = []
        for cell in eos_cells(anchor):
            cell.calc = calc
            out.append(cell.get_potential_energy() / len(cell))
        return np.asarray(out[1:]) - out[0]

    free = fit_env_correction(model, frames, **kw)
    kept = fit_env_correction(model, frames, keep_eos=anchor, **kw)
    e_model = eos(model)
    np.testing.assert_allclose(eos(EnvCorrectedCalculator(model, kept)), e_model, atol=1e-9)
    assert np.abs(eos(EnvCorrectedCalculator(model, free)) - e_model).max() > 1e-3
    assert kept.info["keep_eos"] == "Cu4"
    assert kept.info["softening_scale_before"] == pytest.approx(0.6, abs=1e-6)
    assert kept.info["softening_scale_after"] > 0.9


def test_two_shell_cutoff_follows_the_bond_not_the_rattle():
    """``shells=2``: 1.7 × the median first-shell bond, the same for a rattled cell as for
    the ideal one (the smallest distance of a rattled cell would give ~0.2 Å less)."""
    from ase_surftune.models.env_fit import auto_rc

    ideal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    rattled = ideal.copy()
    rattled.rattle(0.05, seed=4)
    assert auto_rc([ideal], shells=2) == pytest.approx(1.7 * R0, rel=1e-9)
    assert auto_rc([rattled], shells=2) == pytest.approx(1.7 * R0, abs=0.03)
    assert auto_rc([rattled], shells=1) < 1.2 * R0 - 0.05  # the first-shell rule, as before


def test_keep_eos_in_a_run_needs_one_element():
    """``strategy_options.keep_eos`` holds the one training element's ASE reference
    crystal; two elements get one clear configuration error."""
    from ase.build import bulk as build

    from ase_surftune.core.errors import ConfigError
    from ase_surftune.training.env_strategy import _eos_anchor

    anchor = _eos_anchor([build("Cu", cubic=True), build("Cu", "fcc", a=3.5)])
    assert anchor.get_chemical_formula() == "Cu" and anchor.cell.volume > 11
    alloy = build("Cu", cubic=True)
    alloy[0].symbol = "Au"
    with pytest.raises(ConfigError, match="keep_eos needs training data of one element"):
        _eos_anchor([alloy])
