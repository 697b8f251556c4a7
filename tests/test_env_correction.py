"""Environment-aware correction: exact gradients, energy conservation, known answers (EMT)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from ase import units
from ase.build import bulk, fcc100, fcc111
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


def assert_exact_gradients(at, corr) -> None:
    """EMT + ``corr`` on ``at``: forces match finite differences to 1e-6 eV/Å and the
    stress to 1e-7 eV/Å³, with a residual large enough for the check to mean something."""
    at.calc = EnvCorrectedCalculator(EMT(), corr)
    assert np.abs(corr.residual(at)[1]).max() > 1e-2
    np.testing.assert_allclose(at.get_forces(), _numeric_forces(at), atol=1e-6)
    numeric = at.calc.calculate_numerical_stress(at, d=1e-6, voigt=True)
    np.testing.assert_allclose(at.get_stress(), numeric, atol=1e-7)


def distorted_cell(kind: str):
    """A rattled 32-atom bulk cell or 12-atom (100) slab (σ = 0.08 Å) for gradient checks."""
    at = (bulk("Cu", cubic=True).repeat(2) if kind == "bulk"
          else fcc100("Cu", (2, 2, 3), vacuum=5.0, periodic=True))
    at.rattle(0.08, seed=5)
    return at


def nve_energy_spread(corr, seed: int) -> float:
    """Total-energy spread (eV/atom) of 300 fs of NVE at 600 K with EMT + ``corr``."""
    at = bulk("Cu", cubic=True).repeat(2)
    at.calc = EnvCorrectedCalculator(EMT(), corr)
    MaxwellBoltzmannDistribution(at, temperature_K=600, rng=np.random.default_rng(seed))
    dyn = VelocityVerlet(at, timestep=2.0 * units.fs)
    energies = []
    dyn.attach(lambda: energies.append(at.get_total_energy()), interval=5)
    dyn.run(150)
    assert at.get_kinetic_energy() / len(at) > 0.01  # atoms really moved (≈ 300 K)
    return float(np.ptp(np.asarray(energies) / len(at)))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bulk", "slab"])
def test_forces_and_stress_are_exact_gradients(kind):
    at = (bulk("Cu", cubic=True).repeat(2) if kind == "bulk"
          else fcc111("Cu", (2, 2, 3), vacuum=5.0, periodic=True))
    at.rattle(0.1, seed=1)
    assert_exact_gradients(at, EnvCorrection(
        scale=1.3, shifts={"Cu": 0.1}, rc=RC, n_pair=3, embed_powers=(2.0, 3.0),
        coefficients=[0.3, -0.2, 0.5, 0.05, -0.01]))


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
    assert nve_energy_spread(KNOWN, seed=0) < 2e-4  # eV/atom over 300 fs


def test_fit_recovers_a_known_pair_and_embedding_term():
    frames = _label(_frames(), EnvCorrectedCalculator(EMT(), KNOWN))
    fit = fit_env_correction(EMT(), frames, rc=RC, n_pair=3, embed_powers=(2.0,), ridge=0.0,
                             relative=False)
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


# --------------------------------------------------------------------------- first-class
# The correction as a fine-tuning strategy (``env``), stored per head in a bundle and
# applied by the bundle calculator and the batched prediction path. Model: a tiny float64
# MACE (conftest); labels: that model with a known correction, i.e. a model with s = 0.6.

#: the "DFT" of these tests: the tiny model stiffened by 1/0.6 plus a short-range residual
#: (the random tiny model has small forces, so the residual dominates: s before ≈ 0.1)
TRUTH = EnvCorrection(scale=1 / 0.6, shifts={"Cu": 0.02}, rc=RC, n_pair=2,
                      embed_powers=(2.0,), coefficients=[5.0, -1.0, 0.5])


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    from conftest import save_tiny_mace

    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield save_tiny_mace(tmp_path_factory.mktemp("env") / "tiny.stbundle", seed=0)
    torch.set_num_threads(n)


def _truth_frames(tiny_file, truth=TRUTH):
    """3 fit frames (bulk, slab, compressed) + 3 held-out ones, labelled by ``truth``."""
    from ase_surftune.models.calculator import SurfTuneCalculator

    calc = EnvCorrectedCalculator(SurfTuneCalculator(tiny_file), truth)
    held = _frames()
    for k, at in enumerate(held):
        at.rattle(0.06, seed=10 + k)
    return _label(_frames(), calc), _label(held, calc)


def _env_cfg(tiny_file, out, **options):
    return {"model": tiny_file, "strategy": "env", "output_dir": str(out),
            "progress": False, "plot": False, "strategy_options": options,
            "forgetting": {"properties": False}}


@pytest.fixture(scope="module")
def env_run(tiny_file, tmp_path_factory):
    from ase_surftune.training import finetune

    fit, held = _truth_frames(tiny_file)
    res = finetune(_env_cfg(tiny_file, tmp_path_factory.mktemp("run"), rc=RC, ridge=0.0),
                   train=fit, valid=held)
    return res, fit, held


def test_strategy_env_restores_the_slope_on_held_out_frames(env_run):
    """s = 0.6 before in every group; after: a = 1/0.6, s = 1 and force MAE ≈ 0 on the
    fit frames and on the validation frames the fit never saw, per group too."""
    res, _, _ = env_run
    corr = res.metrics["env_correction"]
    assert corr["kind"] == "environment"
    assert corr["scale"] == pytest.approx(1 / 0.6, rel=1e-7)
    np.testing.assert_allclose(corr["coefficients"], TRUTH.coefficients, atol=1e-7)
    info = corr["info"]
    for key in ("", "valid_"):
        assert info[f"{key}softening_scale_before"] < 0.75
        assert info[f"{key}softening_scale_after"] == pytest.approx(1.0, abs=1e-7)
        assert info[f"{key}force_mae_after"] < 1e-7 < info[f"{key}force_mae_before"]
        assert set(info[f"{key}groups"]) == {"bulk", "slab", "compressed"}
        for g in info[f"{key}groups"].values():
            assert g["s_after"] == pytest.approx(1.0, abs=1e-6)
    # the shift stays small (it only offsets the residual's energy at the bulk-like
    # environment, ≈ 0.2 eV/atom here): the scale acts about the model's own reference
    # energy, not about zero (that would need (1 − a)·E_m/N ≈ +2 eV/atom)
    assert abs(corr["shifts"]["Cu"]) < 0.5
    assert corr["model_reference"]["Cu"] < -1.0
    assert res.metrics["warnings"] == []
    fin = res.metrics["finetuned"]["valid"]
    assert fin["forces_mae"] < 1e-7 < res.metrics["zero_shot"]["valid"]["forces_mae"]
    assert fin["energy_mae_per_atom"] < 1e-7


def test_bundle_roundtrip_calculator_and_batched_path_agree(env_run):
    """Saved and loaded (JSON, kind "environment"), the bundle calculator gives what
    EnvCorrectedCalculator gives on the same shifted model: E, F, σ to 1e-10; the
    batched path (Bundle.predict / predict_with) agrees too."""
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.models.predict import predict_with

    res, _, held = env_run
    bundle = Bundle.load(res.bundle_path)
    corr = bundle.corrections[bundle.resolve_head(None)]
    assert isinstance(corr, EnvCorrection)
    assert corr.to_dict() == EnvCorrection.from_dict(res.metrics["env_correction"]).to_dict()
    ours = SurfTuneCalculator(str(res.bundle_path))
    wrapped = EnvCorrectedCalculator(SurfTuneCalculator(str(res.bundle_path), correction=False),
                                     corr)
    batched = predict_with(ours, held, compute_stress=True)
    for k, at in enumerate(held):
        a, b = at.copy(), at.copy()
        a.calc, b.calc = ours, wrapped
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-10)
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), atol=1e-10)
        assert batched.energy[k] == pytest.approx(a.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(batched.forces[k], a.get_forces(), atol=1e-9)
        np.testing.assert_allclose(batched.stress[k], a.get_stress(), atol=1e-9)
        # the corrected head reproduces the labels (they were made by the same form)
        np.testing.assert_allclose(a.get_forces(), at.get_forces(), atol=1e-6)


@pytest.mark.slow
def test_bundle_calculator_forces_and_stress_are_exact_gradients(env_run):
    from ase_surftune.models.calculator import SurfTuneCalculator

    res, _, held = env_run
    at = held[1].copy()  # the slab: undercoordinated atoms, vacuum
    at.calc = SurfTuneCalculator(str(res.bundle_path))
    np.testing.assert_allclose(at.get_forces(), _numeric_forces(at), atol=1e-6)
    at = held[0].copy()
    at.calc = SurfTuneCalculator(str(res.bundle_path))
    numeric = at.calc.calculate_numerical_stress(at, d=1e-6, voigt=True)
    np.testing.assert_allclose(at.get_stress(), numeric, atol=1e-7)


def test_slope_mode_on_a_uniformly_soft_model_is_a_pure_scale(tiny_file, tmp_path):
    """Labels = model / 0.6 (a uniformly soft model): a = 1/0.6, residual ≈ 0, s = 1."""
    from ase_surftune.training import finetune

    pure = EnvCorrection(scale=1 / 0.6, rc=RC, n_pair=0, embed_powers=(), coefficients=[])
    fit, held = _truth_frames(tiny_file, pure)
    res = finetune(_env_cfg(tiny_file, tmp_path, rc=RC, scale="slope"), train=fit,
                   valid=held)
    corr = res.metrics["env_correction"]
    assert corr["scale"] == pytest.approx(1 / 0.6, rel=1e-9)
    assert np.abs(corr["coefficients"]).max() < 1e-5
    assert corr["info"]["softening_scale_before"] == pytest.approx(0.6, rel=1e-9)
    assert corr["info"]["valid_softening_scale_after"] == pytest.approx(1.0, abs=1e-6)


def test_cli_finetune_env_then_evaluate(tiny_file, tmp_path, capsys, monkeypatch):
    """``surftune finetune cfg.yaml`` with ``strategy: env`` prints the per-group report,
    and ``surftune evaluate`` scores the corrected head."""
    import yaml
    from ase.io import write

    from ase_surftune.cli import main

    fit, held = _truth_frames(tiny_file)
    write(tmp_path / "train.xyz", fit)
    write(tmp_path / "valid.xyz", held)
    cfg = _env_cfg(tiny_file, "out", rc=RC, ridge=0.0)
    cfg.update(train_file="train.xyz", valid_file="valid.xyz")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert main(["finetune", "c.yaml", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "environment correction a = 1.6667" in out
    assert re.search(r"validation data: s 0\.\d+ -> 1\.000, force MAE 0\.\d+ -> 0\.0000", out)
    assert re.search(r"validation group slab \(1 frame\): s 0\.\d+ -> 1\.000", out)
    assert main(["evaluate", "valid.xyz", "-m", "out/model.stbundle", "--no-plots",
                 "--no-progress", "-o", "ev"]) == 0
    assert (tmp_path / "ev" / "evaluation.json").is_file()
    assert "1.000" in capsys.readouterr().out  # s of the corrected head
    # too many fit frames: one clear message, nothing written
    cfg.update(output_dir="out2", train_file=["train.xyz", "valid.xyz"], valid_file=None,
               valid_fraction=0.0)
    (tmp_path / "c2.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["finetune", "c2.yaml", "--no-progress"]) == 2
    assert "at most 3 training structures" in capsys.readouterr().err
    # bad options are refused before any work
    cfg.update(output_dir="out3", strategy_options={"n_pair": -1})
    (tmp_path / "c3.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["finetune", "c3.yaml", "--check"]) == 2
    assert "strategy_options.n_pair" in capsys.readouterr().err


def test_old_bundle_without_kind_loads_as_linear(tiny_file, tmp_path, monkeypatch):
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.models.correction import LinearCorrection
    from ase_surftune.models.correction_kinds import correction_from_dict

    b = Bundle.load(tiny_file)
    head = b.resolve_head(None)
    b.corrections = {head: LinearCorrection(scale=1.2, shifts={"Cu": 0.1}, mode="relative",
                                            model_reference={"Cu": -3.0})}
    orig = LinearCorrection.to_dict
    monkeypatch.setattr(LinearCorrection, "to_dict",  # as written before the kind tag
                        lambda self: {k: v for k, v in orig(self).items() if k != "kind"})
    path = b.save(tmp_path / "old.stbundle")
    monkeypatch.undo()
    loaded = Bundle.load(path).corrections[head]
    assert isinstance(loaded, LinearCorrection) and loaded.scale == 1.2
    assert loaded.to_dict() == b.corrections[head].to_dict()
    with pytest.raises(DataError, match="unknown correction kind"):
        correction_from_dict({"kind": "neural", "scale": 1.0})
    with pytest.raises(DataError, match="not a linear correction"):
        LinearCorrection.from_dict(TRUTH.to_dict())


def test_relative_reference_changes_the_split_not_the_energy():
    """Model and labels on a far energy reference (−1000 eV/atom, as after alignment to
    some DFT codes): with free shifts, scaling about e_Z^model (relative) gives the same
    E′, F′ as scaling the total energy; only b_Z differ: ~0.1 against (1 − a)·E/N ≈ +400
    eV/atom."""
    offset = EnvCorrection(shifts={"Cu": -1000.0}, rc=RC, n_pair=0, embed_powers=(),
                           coefficients=[])
    far = EnvCorrectedCalculator(EMT(), offset)  # the model
    # the reference: KNOWN about EMT's own zero, then on the same far reference
    frames = _label(_frames(), EnvCorrectedCalculator(EnvCorrectedCalculator(EMT(), KNOWN),
                                                      offset))
    rel = fit_env_correction(far, frames, rc=RC, n_pair=3, ridge=0.0)
    tot = fit_env_correction(far, frames, rc=RC, n_pair=3, ridge=0.0, relative=False)
    assert rel.model_reference["Cu"] < -999 and not tot.model_reference
    for at in frames:
        work = at.copy()
        work.calc = far
        e, f = work.get_potential_energy(), work.get_forces()
        e1, f1, _ = rel.apply(at, e, f)
        e2, f2, _ = tot.apply(at, e, f)
        assert e1 == pytest.approx(e2, abs=1e-6)
        assert e1 == pytest.approx(at.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(f1, f2, atol=1e-8)
    assert abs(rel.shifts["Cu"]) < 1.0 and tot.shifts["Cu"] > 300.0


def test_env_strategy_options_are_checked():
    """Options are typed (errors keyed strategy_options.*); gradient-only keys and the
    linear section are refused with one line each."""
    from ase_surftune.core.errors import ConfigError
    from ase_surftune.training import STRATEGIES, FinetuneConfig

    cfg = FinetuneConfig(model="chgnet", strategy="env",
                         strategy_options={"rc": 3.1, "embed_powers": [2, 3]})
    assert STRATEGIES["env"].check_config(cfg, "chgnet") == []
    assert cfg.options.embed_powers == [2.0, 3.0] and cfg.options.max_frames == 3
    with pytest.raises(ValueError, match="ema_decay: strategy 'env' does no gradient "
                                         "training; linear: only used by strategy 'linear'"):
        FinetuneConfig(model="chgnet", strategy="env", ema_decay=0.9, linear={"fit": "mse"})
    with pytest.raises((ConfigError, ValueError), match="strategy_options.scale"):
        FinetuneConfig(model="chgnet", strategy="env", strategy_options={"scale": "auto"})


def test_properties_and_export_see_the_corrected_head(env_run, tmp_path):
    """A property workflow given the bundle calculator measures the corrected head (the
    same E_vac as the wrapper, not the raw model's); exporting the head to a plain model
    file is refused, since that file could not hold the correction."""
    from ase_surftune.core.errors import HeadError
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.models.export import export_head
    from ase_surftune.properties.bulk import vacancy_formation

    res, _, _ = env_run
    path = str(res.bundle_path)
    corr = Bundle.load(path).corrections[Bundle.load(path).resolve_head(None)]
    cell = bulk("Cu", cubic=True)
    raw = SurfTuneCalculator(path, correction=False)
    e_ours = vacancy_formation(cell, SurfTuneCalculator(path), supercell=2,
                               relax=False).formation_energy
    e_wrap = vacancy_formation(cell, EnvCorrectedCalculator(raw, corr), supercell=2,
                               relax=False).formation_energy
    e_raw = vacancy_formation(cell, raw, supercell=2, relax=False).formation_energy
    assert e_ours == pytest.approx(e_wrap, abs=1e-9)
    assert abs(e_ours - e_raw) > 1e-3
    with pytest.raises(HeadError, match="softening correction"):
        export_head(path, None, tmp_path / "plain.model")
