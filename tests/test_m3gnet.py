"""M3GNet backend (issue 16): a tiny random M3GNet built here, plus the real weights.

The tiny model (2 blocks, 4-wide features, Cu/Au) runs every check offline in seconds.
The real M3GNet-MP-2021.2.8-PES weights are read from ``../shared/models/`` and those
tests skip cleanly where the folder is absent. The module skips without matgl.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT

pytest.importorskip("matgl")

from conftest import make_emt_slabs  # noqa: E402

from ase_surftune.core.errors import HeadError, InvalidStructureError, ModelLoadError  # noqa: E402
from ase_surftune.models.backends import load_model  # noqa: E402
from ase_surftune.models.backends.m3gnet import M3GNetAdapter  # noqa: E402
from ase_surftune.models.bundle import Bundle  # noqa: E402
from ase_surftune.models.calculator import SurfTuneCalculator  # noqa: E402
from ase_surftune.training import TrainingInterrupted, finetune  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "models"
MP_FOLDER = SHARED / "M3GNet-MP-2021.2.8-PES"
needs_weights = pytest.mark.skipif(not (MP_FOLDER / "model.json").is_file(),
                                   reason="real M3GNet weights not in ../shared/models/")

SLABS = make_emt_slabs(8, seed=2, size=(2, 2, 2))
TRAIN, VALID = SLABS[:6], SLABS[6:]


def tiny_potential(seed: int = 0) -> torch.nn.Module:
    """A random extensive M3GNet PES for Cu/Au (~1k parameters)."""
    from matgl.apps.pes import Potential
    from matgl.models import M3GNet

    torch.manual_seed(seed)
    model = M3GNet(element_types=("Cu", "Au"), dim_node_embedding=4, dim_edge_embedding=4,
                   units=4, nblocks=2, max_n=2, max_l=2, is_intensive=False, cutoff=4.0,
                   threebody_cutoff=3.0)
    return Potential(model, element_refs=torch.tensor([-3.5, -3.0]), data_std=0.5)


def tiny(dtype=torch.float64, seed: int = 0) -> M3GNetAdapter:
    return M3GNetAdapter(tiny_potential(seed), name="tiny-m3gnet", dtype=dtype)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("m3g") / "tiny"
    tiny_potential().save(path)
    return str(path)


def _rattled_slab(seed: int = 0) -> Atoms:
    s = fcc111("Cu", (2, 2, 3), a=3.61, vacuum=6.0)
    s[3].symbol = "Au"
    s.rattle(0.1, seed=seed)
    return s


# --------------------------------------------------------------------------- physics


@pytest.mark.slow
@pytest.mark.parametrize("pbc", [(True, True, False), True, False])
def test_forces_are_minus_energy_gradient(pbc):
    ad = tiny()
    atoms = _rattled_slab()
    atoms.pbc = pbc
    f = ad.predict([atoms]).forces[0]
    h = 1e-5
    for i, k in [(0, 0), (5, 2), (11, 1)]:
        e = []
        for d in (h, -h):
            a = atoms.copy()
            a.positions[i, k] += d
            e.append(ad.predict([a]).energy[0])
        assert f[i, k] == pytest.approx(-(e[0] - e[1]) / (2 * h), abs=1e-6)


def test_stress_is_strain_derivative_in_ev_per_a3():
    ad = tiny()
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=1)
    s = ad.predict([atoms], compute_stress=True).stress[0]
    v, h = atoms.get_volume(), 1e-5
    e = []
    for d in (h, -h):
        a = atoms.copy()
        eps = np.eye(3)
        eps[0, 1] = eps[1, 0] = d / 2
        eps[2, 2] += d
        a.set_cell(atoms.cell.array @ eps, scale_atoms=True)
        e.append(ad.predict([a]).energy[0])
    # d/dh of E(strain) = V (s_01 + s_10)/2 + V s_22
    assert (e[0] - e[1]) / (2 * h) == pytest.approx(v * (s[0, 1] + s[2, 2]), abs=1e-6)
    assert np.allclose(s, s.T, atol=1e-10)


def test_nve_conserves_energy():
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = _rattled_slab(5)
    atoms.calc = SurfTuneCalculator(tiny())
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    e0 = atoms.get_total_energy()
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    energies = []
    for _ in range(20):
        dyn.run(2)
        energies.append(atoms.get_total_energy())
    kinetic = 1.5 * units.kB * 300 * len(atoms)
    assert max(abs(e - e0) for e in energies) < 0.01 * kinetic


def test_rotation_invariance():
    ad = tiny()
    atoms = _rattled_slab(3)
    rot = Atoms(atoms)
    rot.rotate(37, (1, 2, 3), rotate_cell=True)
    p0, p1 = ad.predict([atoms]), ad.predict([rot])
    assert p1.energy[0] == pytest.approx(p0.energy[0], abs=1e-9)
    r = rot.cell.array.T @ np.linalg.inv(atoms.cell.array.T)  # the rotation matrix
    assert np.allclose(p1.forces[0], p0.forces[0] @ r.T, atol=1e-9)


def test_slab_keeps_in_plane_images_and_open_z():
    """pbc=(T,T,F): with vacuum beyond the cutoff it equals pbc=True; with less it
    differs (no images across z), and matgl's molecule treatment is not used."""
    ad = tiny()
    wide = _rattled_slab()
    full = wide.copy()
    full.pbc = True
    assert ad.predict([wide]).energy[0] == pytest.approx(ad.predict([full]).energy[0],
                                                         abs=1e-10)
    mol = wide.copy()
    mol.pbc = False
    assert abs(ad.predict([mol]).energy[0] - ad.predict([wide]).energy[0]) > 1e-3
    thin = fcc111("Cu", (2, 2, 3), a=3.61, vacuum=1.0)
    closed = thin.copy()
    closed.pbc = True
    assert abs(ad.predict([thin]).energy[0] - ad.predict([closed]).energy[0]) > 1e-6


def test_batched_equals_single_and_dtypes():
    ad = tiny()
    structs = [_rattled_slab(i) for i in range(3)] + [bulk("Au", "fcc", a=4.1)]
    batched = ad.predict(structs, batch_size=4, compute_stress=True)
    for i, a in enumerate(structs):
        one = ad.predict([a], compute_stress=True)
        assert batched.energy[i] == pytest.approx(one.energy[0], abs=1e-9)
        assert np.allclose(batched.forces[i], one.forces[0], atol=1e-9)
    assert np.allclose(batched.stress[-1], ad.predict([structs[-1]], compute_stress=True
                                                      ).stress[0], atol=1e-12)
    f32 = tiny(torch.float32)
    assert f32.dtype == torch.float32
    assert next(f32.model.parameters()).dtype == torch.float32
    assert f32.predict(structs[:1]).energy[0] == pytest.approx(batched.energy[0], abs=1e-4)


def test_size_reuse_one_calculator():
    calc = SurfTuneCalculator(tiny())
    for n in [(2, 2, 3), (3, 2, 2), (2, 2, 3)]:
        a = fcc111("Cu", n, a=3.61, vacuum=6.0)
        a.rattle(0.05, seed=len(a))
        a.calc = calc
        e = a.get_potential_energy()
        assert e == pytest.approx(calc.bundle.predict([a]).energy[0], abs=1e-10)
        assert a.get_forces().shape == (len(a), 3)


def test_calculator_stress_comes_with_forces_for_periodic_cells():
    calc = SurfTuneCalculator(tiny())
    cu = bulk("Cu", "fcc", a=3.7, cubic=True)
    cu.rattle(0.05, seed=2)
    cu.calc = calc
    cu.get_forces()
    assert "stress" in calc.results  # no second pass for get_stress
    ref = calc.bundle.predict([cu], compute_stress=True).stress[0]
    assert np.allclose(cu.get_stress(voigt=False), ref, atol=1e-12)
    slab = _rattled_slab()
    slab.calc = calc
    slab.get_forces()
    assert "stress" not in calc.results  # open along z: only when asked


def test_check_atoms_and_blocks():
    ad = tiny()
    with pytest.raises(InvalidStructureError, match="not 3D"):
        ad.check_atoms(Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]], pbc=(True, True, False)))
    ad.check_atoms(Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]))  # a molecule is fine
    blocks = ad.blocks()
    assert [b.name for b in blocks] == ["embedding", "interaction_0", "interaction_1",
                                        "readout"]
    names = [n for b in blocks for n in b.parameter_names]
    assert sorted(names) == sorted(n for n, _ in ad.model.named_parameters())
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------- heads, bundles


def test_add_head_keeps_foundation_bit_identical():
    ad = tiny()
    atoms = [_rattled_slab(1), bulk("Cu", "fcc", a=3.6, cubic=True)]
    before = ad.predict(atoms, compute_stress=True)
    ad.add_head("surf")
    assert ad.heads == ["foundation", "surf"]
    after = ad.predict(atoms, compute_stress=True)
    new = ad.predict(atoms, head="surf", compute_stress=True)
    assert np.array_equal(before.energy, after.energy)
    assert all(np.array_equal(a, b) for a, b in zip(before.forces, after.forces))
    assert np.array_equal(new.energy, before.energy)
    with torch.no_grad():  # train the new head: the foundation head does not move
        for p in ad.model.extra_readouts.parameters():
            p.add_(0.1)
    assert np.array_equal(ad.predict(atoms).energy, before.energy)
    assert not np.allclose(ad.predict(atoms, head="surf").energy, before.energy)
    with pytest.raises(HeadError):
        ad.add_head("surf")
    with pytest.raises(HeadError):
        ad.predict(atoms, head="nope")


def test_payload_is_json_plus_tensors_and_round_trips_bit_exact(tmp_path):
    ad = tiny()
    ad.add_head("surf")
    payload = ad.to_payload()
    json.dumps({k: v for k, v in payload.items() if k != "state_dict"})
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    path = Bundle(adapter=ad).save(tmp_path / "m.stbundle")
    back = Bundle.load(path).adapter
    assert isinstance(back, M3GNetAdapter) and back.heads == ["foundation", "surf"]
    assert back.dtype == torch.float64
    atoms = [_rattled_slab(2)]
    for head in ad.heads:
        a = ad.predict(atoms, head=head, compute_stress=True)
        b = back.predict(atoms, head=head, compute_stress=True)
        assert np.array_equal(a.energy, b.energy)
        assert np.array_equal(a.forces[0], b.forces[0])
        assert np.array_equal(a.stress, b.stress)
    clone = ad.clone()
    with torch.no_grad():
        next(clone.model.parameters()).add_(1.0)
    assert np.array_equal(ad.predict(atoms).energy, back.predict(atoms).energy)


def test_folder_spec_named_offline_and_bad_folder(tiny_folder, tmp_path, monkeypatch):
    bundle = load_model(f"m3gnet:{tiny_folder}")
    assert bundle.adapter.backend == "m3gnet" and bundle.adapter.dtype == torch.float32
    assert load_model(f"m3gnet:{tiny_folder}", dtype="float64").adapter.dtype == torch.float64
    with pytest.raises(ModelLoadError, match="missing"):
        load_model(f"m3gnet:{tmp_path}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError, match="m3gnet:/path/to/folder"):
        load_model("m3gnet-mp-2021.2.8-pes")
    assert time.monotonic() - t0 < 60  # generous: it must not wait on a network timeout


# --------------------------------------------------------------------------- strategies


def _cfg(folder, out, **kw):
    cfg = {"model": f"m3gnet:{folder}", "dtype": "float64", "epochs": 3, "batch_size": 2,
           "output_dir": str(out), "progress": False, "plot": False,
           "optimizer": {"lr": 1e-2}, "scheduler": {"name": "none"}}
    cfg.update(kw)
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full", "scratch", "linear"])
def test_strategies_run_and_bundle(tiny_folder, tmp_path, strategy):
    res = finetune(_cfg(tiny_folder, tmp_path, strategy=strategy), train=TRAIN, valid=VALID)
    m = res.metrics
    bundle = Bundle.load(res.bundle_path)
    assert bundle.adapter.backend == "m3gnet"
    e = bundle.predict(VALID).energy
    assert np.all(np.isfinite(e))
    if strategy == "full":  # an EMT-labelled target the random model misses by far
        assert m["finetuned"]["valid"]["forces_mae"] < m["initial"]["valid"]["forces_mae"]
    if strategy == "linear":
        assert "linear_correction" in m


def test_frozen_blocks_unchanged_after_training(tiny_folder, tmp_path):
    res = finetune(_cfg(tiny_folder, tmp_path, strategy="frozen", freeze={"k": 2}),
                   train=TRAIN, valid=VALID)
    m = res.metrics
    assert m["frozen_blocks"] == ["embedding", "interaction_0"]
    base = load_model(f"m3gnet:{tiny_folder}", dtype="float64").adapter.model.state_dict()
    ad = Bundle.load(res.bundle_path).adapter
    new = ad.model.state_dict()
    frozen = [n for b in ad.blocks() if b.name in m["frozen_blocks"] for n in b.parameter_names]
    trained = [n for b in ad.blocks() if b.name not in m["frozen_blocks"]
               for n in b.parameter_names]
    assert frozen and all(torch.equal(new[n], base[n]) for n in frozen)
    assert any(not torch.equal(new[n], base[n]) for n in trained)


@pytest.mark.slow
def test_multihead_with_replay_keeps_foundation(tiny_folder, tmp_path):
    res = finetune(_cfg(tiny_folder, tmp_path, strategy="multihead",
                        strategy_options={"new_head": "surf", "replay": {"n": 4}}),
                   train=TRAIN, valid=VALID)
    b = Bundle.load(res.bundle_path)
    assert b.adapter.heads == ["foundation", "surf"]
    assert "surf" in b.head_info
    atoms = [bulk("Cu", "fcc", a=3.6, cubic=True)]
    p_new = b.adapter.predict(atoms, head="surf").energy
    assert np.all(np.isfinite(p_new))


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted(tiny_folder, tmp_path):
    kw = {"strategy": "full", "checkpoint_every_steps": 2, "ema_decay": 0.5}
    ref = finetune(_cfg(tiny_folder, tmp_path / "ref", **kw), train=TRAIN, valid=VALID)
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        finetune(_cfg(tiny_folder, out, **kw), train=TRAIN, valid=VALID, stop_after_step=5)
    res = finetune(_cfg(tiny_folder, out, resume=True, **kw), train=TRAIN, valid=VALID)
    assert res.metrics["resumed_from"]["global_step"] == 4
    a = Bundle.load(ref.bundle_path).adapter.model.state_dict()
    b = Bundle.load(res.bundle_path).adapter.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reinitialized_keeps_statistics_and_is_seeded(tmp_path):
    ad = tiny()
    ad.add_head("surf")
    torch.manual_seed(3)
    a = ad.reinitialized()
    torch.manual_seed(3)
    b = ad.reinitialized()
    old, sa, sb = ad.model.state_dict(), a.model.state_dict(), b.model.state_dict()
    params = {n for n, _ in ad.model.named_parameters()}
    assert a.heads == ["foundation", "surf"] and a.dtype == torch.float64
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(sa[k], old[k]) for k in sa if k not in params)  # refs, std
    assert any(not torch.equal(sa[k], old[k]) for k in params)


def test_config_errors_name_the_folder(tmp_path):
    from ase_surftune.core.errors import ConfigError
    from ase_surftune.training import load_config

    with pytest.raises(ConfigError, match="M3GNet model folder not found"):
        load_config({"model": f"m3gnet:{tmp_path / 'nope'}"})
    assert load_config({"model": "m3gnet-mp-2021.2.8-pes"}).backend == "m3gnet"


@pytest.mark.slow
def test_m3gnet_teacher_distills(tiny_folder, tmp_path):
    from ase_surftune.evaluation.distill import distill

    teacher = Bundle(adapter=load_model(f"m3gnet:{tiny_folder}").adapter)
    tpath = teacher.save(tmp_path / "teacher.stbundle")
    res = distill({"teacher": str(tpath), "output_dir": str(tmp_path / "student"),
                   "sampling": {"temperatures": [300], "md_steps": 10, "md_interval": 5,
                                "n_rattled": 4, "n_strained": 2},
                   "student": {"channels": 8, "max_L": 0},
                   "training": {"epochs": 3, "batch_size": 4}},
                  seeds=[bulk("Cu", "fcc", a=3.62, cubic=True)])
    st = Bundle.load(res.bundle_path)
    assert st.adapter.backend == "mace"
    r = res.report
    assert r["n_samples"]["test"] >= 1
    assert np.isfinite(r["student_vs_teacher"]["forces_mae"])
    assert r["student_vs_teacher"]["forces_mae"] > 0


# --------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def mp_model():
    return load_model(f"m3gnet:{MP_FOLDER}")


@pytest.fixture(scope="module")
def pes_calc():
    import matgl
    from matgl.ext.ase import PESCalculator

    return PESCalculator(matgl.load_model(str(MP_FOLDER)), stress_unit="eV/A3")


@needs_weights
def test_real_energy_forces_stress_equal_pescalculator(mp_model, pes_calc):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    assert mp_model.predict([cu]).energy[0] == pytest.approx(-16.38103, abs=1e-5)
    cu.rattle(0.03, seed=4)
    cu.set_cell(cu.cell.array @ np.diag([1.01, 0.99, 1.0]), scale_atoms=True)
    ref = cu.copy()
    ref.calc = pes_calc
    p = mp_model.predict([cu], compute_stress=True)
    assert p.energy[0] == pytest.approx(ref.get_potential_energy(), abs=1e-5)
    assert np.allclose(p.forces[0], ref.get_forces(), atol=1e-5)
    assert np.allclose(p.stress[0], ref.get_stress(voigt=False), atol=1e-6)
    assert np.abs(p.stress[0]).max() < 0.05  # eV/Å³ (GPa would be ~160x larger)


@needs_weights
def test_real_slab_with_ase_default_pbc(mp_model, pes_calc):
    slab = fcc111("Cu", (3, 3, 4), a=3.6, vacuum=10.0)
    assert tuple(slab.pbc) == (True, True, False)
    e = mp_model.predict([slab]).energy[0]
    assert e == pytest.approx(-143.01405, abs=1e-4)  # matgl, pbc=True (not -121.50)
    periodic = slab.copy()
    periodic.pbc = True
    periodic.calc = pes_calc
    assert e == pytest.approx(periodic.get_potential_energy(), abs=1e-4)
    slab.calc = SurfTuneCalculator(mp_model)
    assert slab.get_potential_energy() == pytest.approx(e, abs=1e-8)


@needs_weights
@pytest.mark.slow
def test_real_short_finetune(tmp_path):
    slabs = []
    for i in range(4):
        s = fcc111("Cu", (2, 2, 3), a=3.6, vacuum=6.0)
        s.rattle(0.05, seed=i)
        s.calc = EMT()
        s.get_potential_energy()
        slabs.append(s)
    res = finetune({"model": f"m3gnet:{MP_FOLDER}", "strategy": "frozen", "freeze": {"k": 3},
                    "epochs": 1, "batch_size": 2, "output_dir": str(tmp_path),
                    "progress": False, "plot": False, "optimizer": {"lr": 1e-3}},
                   train=slabs[:3], valid=slabs[3:])
    assert np.isfinite(res.metrics["finetuned"]["valid"]["forces_mae"])
    assert Bundle.load(res.bundle_path).adapter.backend == "m3gnet"


def test_crafted_folder_naming_a_non_matgl_class_runs_no_code(tiny_folder, tmp_path):
    """matgl imports every ``@module`` named in model.pt and calls the class: a crafted
    folder naming ``subprocess.Popen`` would run a command. The adapter refuses it."""
    import shutil

    folder = tmp_path / "crafted"
    shutil.copytree(tiny_folder, folder)
    marker = tmp_path / "marker"
    d = torch.load(folder / "model.pt", weights_only=True)
    d["model"] = {"@module": "subprocess", "@class": "Popen",
                  "init_args": {"args": ["touch", str(marker)]}}
    torch.save(d, folder / "model.pt")
    with pytest.raises(ModelLoadError, match="outside matgl"):
        load_model(f"m3gnet:{folder}")
    assert not marker.exists()
