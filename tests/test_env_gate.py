"""The bulk-likeness gate of the environment-aware correction (issue 12): every term a
second time, weighted atom by atom by how bulk-like the atom's first shell is. Exact
gradients, where the gate is open and shut, known answers, energy conservation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from test_env_correction import (
    _frames,
    _label,
    assert_exact_gradients,
    distorted_cell,
    nve_energy_spread,
)
from test_env_moments import R0, RC2  # EMT Cu's two-shell cutoff and bond (Å)

from ase_surftune.models.env_basis import GATE_STEP, BasisSpec, first_shell_counts, spec_terms
from ase_surftune.models.env_correction import (
    EnvCorrectedCalculator,
    EnvCorrection,
    fit_env_correction,
)
from ase_surftune.models.env_fit import GATE_R_PER_R0, auto_gate

GATE_R = GATE_R_PER_R0 * R0  # 3.08 Å, between the first and second shells

GATED = EnvCorrection(scale=1.2, shifts={"Cu": 0.03}, rc=RC2, n_pair=2, embed_powers=(2.0,),
                      moments=(2,), wells=(0.1,), r0=R0, gate=0.5, gate_r=GATE_R,
                      gate_n0=12.0,
                      coefficients=[0.2, -0.1, 0.01, 0.3, 0.05, 0.1, 0.05, -0.02, 0.4, 0.1])


def _vacancy_cell():
    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    del cell[0]
    return cell


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bulk", "slab"])
def test_gated_forces_and_stress_are_exact_gradients(kind):
    assert_exact_gradients(distorted_cell(kind), GATED)


def test_first_shell_counts_of_bulk_vacancy_and_surfaces():
    b = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    b.rattle(0.05, seed=1)  # rattles leave every count at 12
    np.testing.assert_allclose(first_shell_counts(b, GATE_R), 12.0)
    vac = first_shell_counts(_vacancy_cell(), GATE_R)
    assert sorted(np.unique(vac)) == [11.0, 12.0] and np.sum(vac == 11.0) == 12
    slab = fcc111("Cu", (1, 1, 4), a=3.61, vacuum=6.0, periodic=True)
    np.testing.assert_allclose(first_shell_counts(slab, GATE_R), [9, 12, 12, 9])


@pytest.mark.parametrize("a", [3.50, 3.61, 3.72])
def test_gate_is_open_in_ideal_bulk_at_any_volume_and_shut_at_surfaces(a):
    """In ideal fcc (±3 % in a) every atom has 12 first neighbours, φ = 1: each gated
    term equals its plain copy. On a (100) slab's surface atoms (8 neighbours) φ =
    e^(−32) ≈ 0: the gated copies act only on the inner layers."""
    spec = GATED.spec
    ideal = spec_terms(bulk("Cu", "fcc", a=a, cubic=True).repeat(2), spec)
    k = spec.n_plain
    np.testing.assert_allclose(ideal.energies[k:], ideal.energies[:k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ideal.stresses[k:], ideal.stresses[:k], rtol=1e-10, atol=1e-14)
    slab = fcc100("Cu", (1, 1, 5), a=a, vacuum=6.0, periodic=True)
    one_pair = BasisSpec(RC2, 1, gate=0.5, gate_r=GATE_R, gate_n0=12.0)
    b = spec_terms(slab, one_pair)
    # the gated pair energy is the inner three atoms' share only (their φ = 1)
    i_share = 0.5 * sum(np.sum((1 - d / RC2) ** 3)
                        for d in _distances(slab, RC2)[1:4])
    assert b.energies[1] == pytest.approx(i_share, rel=1e-9)


def _distances(atoms, rc):
    from ase.neighborlist import neighbor_list

    i, d = neighbor_list("id", atoms, rc)
    return [d[i == q] for q in range(len(atoms))]


def test_vacancy_neighbours_are_half_gated():
    """An atom next to a vacancy (11 neighbours) has φ = exp(−1/(2δ²)); with δ = 1 that is
    e^(−1/2): the gated embedding term of the vacancy cell is the φ-weighted sum of ρ²."""
    cell = _vacancy_cell()
    spec = BasisSpec(RC2, 0, (2.0,), gate=1.0, gate_r=GATE_R, gate_n0=12.0)
    b = spec_terms(cell, spec)
    rho = np.array([np.sum((1 - d / RC2) ** 3) for d in _distances(cell, RC2)])
    phi = np.where(first_shell_counts(cell, GATE_R) == 11.0, np.exp(-0.5), 1.0)
    assert b.energies[0] == pytest.approx(np.sum(rho ** 2), rel=1e-12)
    assert b.energies[1] == pytest.approx(np.sum(phi * rho ** 2), rel=1e-9)


def test_fit_recovers_a_known_gated_correction():
    frames = _label(_frames(), EnvCorrectedCalculator(EMT(), GATED))
    for weighting in ("component", "frame"):
        fit = fit_env_correction(EMT(), frames, rc=RC2, n_pair=2, embed_powers=(2.0,),
                                 moments=(2,), wells=(0.1,), r0=R0, gate=0.5, gate_r=GATE_R,
                                 gate_n0=12.0, ridge=0.0, relative=False,
                                 weighting=weighting)
        assert fit.scale == pytest.approx(1.2, abs=1e-7)
        np.testing.assert_allclose(fit.coefficients, GATED.coefficients, atol=1e-6)
        assert fit.shifts["Cu"] == pytest.approx(0.03, abs=1e-7)
        assert "gated by bulk-likeness (n0 = 12" in fit.summary()


def test_auto_gate_from_the_fit_frames():
    """Default edge 1.207 × the bulk bond; default n0 the largest count among the fit
    atoms (a rattled bulk cell gives 12 even next to a slab)."""
    gate_r, n0 = auto_gate(_frames())
    assert gate_r == pytest.approx(GATE_R_PER_R0 * 3.61 / np.sqrt(2), abs=0.02)
    assert n0 == 12.0
    labelled = _label(_frames(), EnvCorrectedCalculator(EMT(), GATED))
    fit = fit_env_correction(EMT(), labelled, rc=RC2, n_pair=2, embed_powers=(2.0,),
                             gate=0.5)
    assert fit.gate_n0 == 12.0 and fit.gate_r == pytest.approx(gate_r)
    assert fit.spec.n_terms == 2 * 3


def test_gated_roundtrip_and_old_dicts():
    restored = EnvCorrection.from_dict(json.loads(json.dumps(GATED.to_dict())))
    assert restored.spec == GATED.spec
    at = bulk("Cu", cubic=True)
    at.rattle(0.05, seed=2)
    np.testing.assert_array_equal(restored.residual(at)[1], GATED.residual(at)[1])
    old = {k: v for k, v in GATED.to_dict().items() if k not in ("gate", "gate_r", "gate_n0")}
    old["coefficients"] = old["coefficients"][:5]  # written before the gate existed
    assert EnvCorrection.from_dict(old).spec.gate is None


def test_bad_gates_are_refused():
    with pytest.raises(ValueError, match="gate width"):
        BasisSpec(rc=4.0, n_pair=1, gate=0.0, gate_r=3.0, gate_n0=12)
    with pytest.raises(ValueError, match="gate_r"):
        BasisSpec(rc=4.0, n_pair=1, gate=0.5, gate_r=4.0 - GATE_STEP / 2, gate_n0=12)
    with pytest.raises(ValueError, match="gate_n0"):
        BasisSpec(rc=4.0, n_pair=1, gate=0.5, gate_r=3.0)
    with pytest.raises(ValueError, match="give gate"):
        fit_env_correction(EMT(), _label(_frames(), EMT()), gate_r=3.0)
    from ase_surftune.training import FinetuneConfig

    with pytest.raises(ValueError, match="strategy_options.gate"):
        FinetuneConfig(model="chgnet", strategy="env", strategy_options={"gate": -1})
    with pytest.raises(ValueError, match="give gate"):
        FinetuneConfig(model="chgnet", strategy="env", strategy_options={"gate_n0": 12})


@pytest.mark.slow
def test_nve_with_the_gate_conserves_energy():
    assert nve_energy_spread(GATED, seed=2) < 2e-4  # eV/atom over 300 fs


def test_strategy_env_fits_a_gated_correction_through_finetune(tmp_path):
    """``strategy: env`` with a gate: a model whose truth holds gated terms is corrected
    exactly on frames it never saw, and the bundle keeps the gate."""
    from conftest import save_tiny_mace
    from test_env_correction import _env_cfg, _truth_frames

    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.training import finetune

    tiny = save_tiny_mace(tmp_path / "tiny.stbundle", seed=0)
    truth = EnvCorrection(scale=1 / 0.6, shifts={"Cu": 0.02}, rc=RC2, n_pair=1,
                          embed_powers=(2.0,), gate=0.5, gate_r=GATE_R, gate_n0=12.0,
                          coefficients=[2.0, 0.5, -1.0, 0.3])
    fit, held = _truth_frames(tiny, truth)
    opts = {"rc": RC2, "n_pair": 1, "embed_powers": [2.0], "gate": 0.5, "gate_r": GATE_R,
            "gate_n0": 12.0, "weighting": "frame", "ridge": 0.0}
    res = finetune(_env_cfg(tiny, tmp_path / "run", **opts), train=fit, valid=held)
    corr = res.metrics["env_correction"]
    assert corr["gate"] == 0.5 and corr["gate_n0"] == 12.0
    np.testing.assert_allclose(corr["coefficients"], truth.coefficients, atol=1e-6)
    calc = SurfTuneCalculator(str(res.bundle_path))
    work = held[0].copy()
    work.calc = calc
    np.testing.assert_allclose(work.get_forces(), held[0].get_forces(), atol=1e-6)
