"""Fine-tuning engine (issue 3): strategies, loop, resume, bundles, config validation.

Offline and small: EMT-labelled rattled 2×2×3 Cu/Au slabs, a tiny float64 MACE and the
bundled CHGNet with a few steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import build_tiny_mace, make_emt_slabs, save_tiny_mace

from ase_surftune.core.errors import ConfigError
from ase_surftune.models.bundle import Bundle
from ase_surftune.training import (
    STRATEGIES,
    FinetuneConfig,
    TrainingInterrupted,
    finetune,
    load_config,
)

SLABS = make_emt_slabs(12)
TRAIN, VALID = SLABS[:8], SLABS[8:]


@pytest.fixture(scope="module")
def mace_file(tmp_path_factory) -> str:
    return save_tiny_mace(tmp_path_factory.mktemp("m") / "tiny.stbundle", seed=0)


def _mace_cfg(mace_file, out, **kw):
    cfg = {"model": f"mace:{mace_file}", "epochs": 4, "batch_size": 2, "output_dir": str(out),
           "progress": False, "plot": False, "optimizer": {"lr": 5e-3},
           "scheduler": {"name": "none"}}
    cfg.update(kw)
    return cfg


def _state(bundle_path):
    return Bundle.load(bundle_path).adapter.model.state_dict()


# --------------------------------------------------------------------------- strategies (MACE)

#: settings shared by the module's reference full run and the resume test
FULL_KW = {"strategy": "full", "epochs": 3, "ema_decay": 0.5, "checkpoint_every_steps": 3,
           "optimizer": {"lr": 1e-2},
           "scheduler": {"name": "plateau", "patience": 0, "factor": 0.5},
           "loss": {"stress_weight": 1.0}, "plot": True}


@pytest.fixture(scope="module")
def full_run(mace_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return finetune(_mace_cfg(mace_file, out, **FULL_KW), train=TRAIN, valid=VALID)


@pytest.fixture(scope="module")
def frozen_run(mace_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("frozen")
    return finetune(_mace_cfg(mace_file, out, strategy="frozen", epochs=3, freeze={"k": 2},
                              optimizer={"name": "adamw", "lr": 1e-2, "weight_decay": 0.1},
                              loss={"kind": "huber", "huber_delta": 0.05}, ema_decay=0.8),
                    train=TRAIN, valid=VALID)


@pytest.fixture(scope="module")
def scratch_run(mace_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("scratch")
    return finetune(_mace_cfg(mace_file, out, strategy="scratch", epochs=3,
                              scheduler={"name": "cosine"}), train=TRAIN, valid=VALID)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["full_run", "frozen_run", "scratch_run"])
def test_mace_strategies_lower_valid_force_error(run, request):
    res = request.getfixturevalue(run)
    m = res.metrics
    before = m["initial"]["valid"]["forces_mae"]
    after = m["finetuned"]["valid"]["forces_mae"]
    assert after < 0.9 * before, (run, before, after)
    if run == "scratch_run":  # a new random model, not the base model
        assert m["initial"]["valid"] != m["zero_shot"]["valid"]
    else:
        assert m["initial"] == m["zero_shot"]
        assert after < m["zero_shot"]["valid"]["forces_mae"]
    assert m["parameters"]["total"] == m["parameters"]["trainable"] + m["parameters"]["frozen"]
    for name in ("model.stbundle", "checkpoint.pt", "metrics.csv", "metrics.json",
                 "config.yaml"):
        assert (res.output_dir / name).is_file(), name
    assert len(res.history) == 3
    assert set(m["reference_energies"]) == {"Cu", "Au"}


def test_frozen_blocks_bit_identical_mace(mace_file, frozen_run):
    base = Bundle.load(mace_file).adapter.model.state_dict()
    res = frozen_run
    frozen_blocks = res.metrics["frozen_blocks"]
    assert frozen_blocks == ["embedding", "interaction_0"]
    bundle = Bundle.load(res.bundle_path)
    blocks = {b.name: b.parameter_names for b in bundle.adapter.blocks()}
    new = bundle.adapter.model.state_dict()
    frozen_names = [n for b in frozen_blocks for n in blocks[b]]
    assert frozen_names
    for n in frozen_names:
        assert torch.equal(new[n], base[n]), n
    changed = [n for n in blocks["readout"] + blocks["interaction_1"]
               if not torch.equal(new[n], base[n])]
    assert changed
    counts = res.metrics["parameters"]
    assert counts["frozen"] == sum(b["n_params"] for b in res.metrics["blocks"] if b["frozen"])
    assert counts["frozen"] > 0 and counts["trainable"] > 0


@pytest.mark.slow
def test_frozen_selection_by_pattern_and_k():
    from ase_surftune.models.backends.mace import MACEAdapter
    from ase_surftune.training.strategies import get_strategy

    adapter = MACEAdapter(build_tiny_mace())
    cfg = load_config({"model": "chgnet", "strategy": "frozen",
                       "freeze": {"patterns": ["interaction_*", "readouts.0.*"], "k": 1}})
    strat = get_strategy("frozen", cfg)
    params = strat.trainable_parameters(adapter)
    rep = strat.report(adapter)
    assert rep["frozen_blocks"] == ["embedding", "interaction_0", "interaction_1"]
    names = [n for n, _ in params]
    assert names and all(n.startswith(("readouts.1", "scale_shift")) for n in names), names
    assert all(not p.requires_grad for n, p in adapter.model.named_parameters()
               if n not in names)


def test_linear_recovers_known_scale(mace_file, tmp_path):
    """Labels = 1.3 × the model (+ per-element offsets): the strategy finds a = 1.3."""
    from ase_surftune.models.backends.mace import MACEAdapter

    adapter = MACEAdapter.load_file(mace_file)
    pred = adapter.predict(SLABS)
    offsets = {29: -0.7, 79: 2.1}
    labelled = []
    for atoms, e, f in zip(SLABS, pred.energy, pred.forces):
        a = atoms.copy()
        e_ref = 1.3 * e + sum(offsets[int(z)] for z in a.numbers)
        a.calc = SinglePointCalculator(a, energy=e_ref, forces=1.3 * f)
        labelled.append(a)
    res = finetune(_mace_cfg(mace_file, tmp_path, strategy="linear"),
                   train=labelled[:8], valid=labelled[8:])
    corr = res.metrics["linear_correction"]
    assert abs(corr["scale"] - 1.3) < 1e-6
    fin, zs = res.metrics["finetuned"]["valid"], res.metrics["zero_shot"]["valid"]
    assert fin["forces_mae"] < 1e-6 < zs["forces_mae"]
    assert fin["energy_mae_per_atom"] < 1e-6
    # the bundle applies shifts + correction
    bundle = Bundle.load(res.bundle_path)
    p = bundle.predict(labelled[8:])
    e_ref = [a.get_potential_energy() for a in labelled[8:]]
    np.testing.assert_allclose(p.energy, e_ref, atol=1e-6)
    assert res.history == []
    assert bundle.corrections["Default"].scale == pytest.approx(1.3, abs=1e-6)


def test_finetune_test_metrics_equal_evaluate(mace_file, tmp_path):
    """finetune's printed test errors and ``evaluate`` agree for the same model and
    frames (both use the bundle's stored shifts, fitted on the training data only);
    the correction reports s before/after on the validation data too."""
    from ase_surftune.evaluation import evaluate_model

    res = finetune(_mace_cfg(mace_file, tmp_path, strategy="linear"),
                   train=TRAIN, valid=VALID, test=VALID)
    ev = evaluate_model(str(res.bundle_path), VALID)
    fin = res.metrics["finetuned"]["test"]
    assert ev.energy_reference == "stored"
    assert ev.overall.energy_mae_per_atom == pytest.approx(fin["energy_mae_per_atom"],
                                                           rel=1e-6, abs=1e-9)
    assert ev.overall.forces_mae == pytest.approx(fin["forces_mae"], rel=1e-6)
    corr = res.metrics["linear_correction"]
    assert corr["mode"] == "relative" and corr["info"]["fit"] == "slope"
    assert corr["info"]["softening_scale_after"] == pytest.approx(1.0, abs=1e-9)
    assert "valid_softening_scale_after" in corr["info"]
    assert isinstance(res.metrics["warnings"], list)
    fit = res.metrics["reference_energies_fit"]
    assert fit["method"] == "per_element" and fit["rank"] == 2 and fit["reason"] is None


def test_max_force_drops_and_names_frames(mace_file, tmp_path):
    hot = TRAIN[0].copy()
    f = TRAIN[0].get_forces().copy()
    f[0] = [200.0, 0.0, 0.0]
    hot.calc = SinglePointCalculator(hot, energy=TRAIN[0].get_potential_energy(), forces=f)
    hot.info["source"] = "hot.xyz@0"
    res = finetune(_mace_cfg(mace_file, tmp_path, strategy="linear", max_force=50.0),
                   train=[hot] + TRAIN[1:], valid=VALID)
    assert res.metrics["n_train"] == len(TRAIN) - 1
    assert [x["source"] for x in res.metrics["max_force"]["frames"]] == ["hot.xyz@0"]


@pytest.mark.slow
def test_frozen_default_k_is_documented_per_backend():
    from ase_surftune.models.backends.mace import MACEAdapter
    from ase_surftune.training.strategies import DEFAULT_FROZEN_K, get_strategy

    assert DEFAULT_FROZEN_K == {"chgnet": 4, "mace": 2}
    cfg = load_config({"model": "chgnet", "strategy": "frozen"})  # no freeze: default k
    assert cfg.freeze is None
    strat = get_strategy("frozen", cfg)
    adapter = MACEAdapter(build_tiny_mace())
    strat.trainable_parameters(adapter)
    rep = strat.report(adapter)
    assert rep["frozen_blocks"] == ["embedding", "interaction_0"] and rep["freeze_k"] == 2


def test_alignment_off_keeps_raw_targets(mace_file, tmp_path):
    res = finetune(_mace_cfg(mace_file, tmp_path, strategy="linear", align_energies=False),
                   train=TRAIN, valid=VALID)
    assert res.metrics["reference_energies"] == {}
    assert Bundle.load(res.bundle_path).reference_energies == {"Default": {}}


# --------------------------------------------------------------------------- determinism


@pytest.mark.slow
def test_resume_after_mid_epoch_kill_equals_uninterrupted(mace_file, tmp_path, full_run):
    """Same seed => same weights, and a killed + resumed run ends bit-identical."""
    out = tmp_path / "run"
    # 8 training structures / batch 2 = 4 steps per epoch; checkpoints at steps 3, 4
    # (end of epoch 1) and 6; the "kill" after step 7 loses step 7.
    with pytest.raises(TrainingInterrupted):
        finetune(_mace_cfg(mace_file, out, **FULL_KW), train=TRAIN, valid=VALID,
                 stop_after_step=7)
    assert not (out / "model.stbundle").exists()
    # resuming under a different config is refused before any training
    with pytest.raises(ConfigError, match="different configuration"):
        finetune(_mace_cfg(mace_file, out, resume=True, **dict(FULL_KW, seed=5)),
                 train=TRAIN, valid=VALID)
    res = finetune(_mace_cfg(mace_file, out, resume=True, **FULL_KW), train=TRAIN, valid=VALID)
    assert res.metrics["resumed_from"] == {"epoch": 1, "step_in_epoch": 2, "global_step": 6}
    a, b = _state(full_run.bundle_path), _state(res.bundle_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ck_ref = torch.load(full_run.output_dir / "checkpoint.pt", weights_only=True)
    ck_res = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(ck_ref["model"][k], ck_res["model"][k]) for k in ck_ref["model"])
    assert all(torch.equal(ck_ref["ema"]["shadow"][k], ck_res["ema"]["shadow"][k])
               for k in ck_ref["ema"]["shadow"])
    drop = lambda h: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in h]  # noqa
    assert drop(full_run.history) == drop(res.history)
    assert res.metrics["finetuned"] == full_run.metrics["finetuned"]


# --------------------------------------------------------------------------- bundles, files


def test_bundle_round_trip_and_calculator(full_run):
    from ase_surftune.models.calculator import SurfTuneCalculator

    res = full_run
    assert (res.output_dir / "loss_curve.png").is_file()
    bundle = Bundle.load(res.bundle_path)
    assert bundle.default_head == "Default"
    assert bundle.reference_energies["Default"] == res.metrics["reference_energies"]
    assert bundle.train_config["strategy"] == "full"
    assert bundle.metrics["finetuned"] == res.metrics["finetuned"]
    assert bundle.provenance["dataset_hash"]
    atoms = VALID[0].copy()
    atoms.calc = SurfTuneCalculator(model=str(res.bundle_path))
    e = atoms.get_potential_energy()
    p = bundle.predict([VALID[0]])
    assert e == pytest.approx(p.energy[0], abs=1e-8)
    # the bundle's energies are in the reference (EMT) frame
    assert abs(e - VALID[0].get_potential_energy()) / len(atoms) < 0.2
    saved = yaml.safe_load((res.output_dir / "config.yaml").read_text())
    assert saved["strategy"] == "full"
    import csv

    rows = list(csv.DictReader((res.output_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["valid_forces_mae"]) > 0


@pytest.mark.slow
def test_files_from_yaml_and_cli(mace_file, tmp_path, capsys):
    from ase.io import write

    from ase_surftune.cli import main

    write(tmp_path / "train.xyz", TRAIN)
    write(tmp_path / "valid.xyz", VALID)
    cfg = _mace_cfg(mace_file, "out", strategy="full", epochs=1, train_file="train.xyz",
                    valid_file="valid.xyz", test_file="valid.xyz")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["finetune", str(tmp_path / "c.yaml"), "--check"]) == 0
    rc = main(["finetune", str(tmp_path / "c.yaml"), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "model.stbundle" in out and "forces MAE" in out
    assert (tmp_path / "out" / "model.stbundle").is_file()
    summary = __import__("json").loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["summary"]["n_test"] == 4
    # the CLI adds the property level to the run's forgetting report
    fg = __import__("json").loads((tmp_path / "out" / "forgetting.json").read_text())
    assert set(fg["properties"]["Default"]) == {"started_from", "Cu", "Au"}
    assert "gamma_111" in fg["properties"]["Default"]["Cu"]
    assert f"forgetting: {fg['summary']}" in out
    # a bad config: one clear message, exit code 2, nothing written
    bad = dict(cfg, epochs="many", colour="blue", output_dir="out2")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    rc = main(["finetune", str(tmp_path / "bad.yaml")])
    err = capsys.readouterr().err
    assert rc == 2 and "epochs" in err and "colour: unknown key" in err
    assert not (tmp_path / "out2").exists()


# --------------------------------------------------------------------------- CHGNet


#: 8-atom slabs keep the CHGNet runs short (CHGNet is the slow backend on CPU)
SMALL = make_emt_slabs(6, seed=1, size=(2, 2, 2))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full", "frozen", "linear", "scratch"])
def test_chgnet_strategies(tmp_path, strategy):
    # frozen: no freeze section, so CHGNet's documented default k = 4 is used.
    # linear: on 4 tiny EMT slabs CHGNet's forces are weakly correlated with EMT's, so the
    # slope-restoring default (a = 1/s) overshoots and the run warns (see
    # test_correction); the error-minimising fit is the one expected to lower the MAE.
    extra = {"linear": {"fit": "mse"}} if strategy == "linear" else {}
    lr = 2e-3 if strategy != "scratch" else 5e-3
    res = finetune({"model": "chgnet", "strategy": strategy, "epochs": 2,
                    "batch_size": 2, "output_dir": str(tmp_path), "progress": False,
                    "plot": False, "optimizer": {"lr": lr}, "scheduler": {"name": "none"},
                    **extra}, train=SMALL[:4], valid=SMALL[4:])
    m = res.metrics
    assert m["finetuned"]["valid"]["forces_mae"] < m["initial"]["valid"]["forces_mae"]
    bundle = Bundle.load(res.bundle_path)
    if strategy == "frozen":
        from ase_surftune.models.backends.chgnet import CHGNetAdapter

        base = CHGNetAdapter.load("0.3.0").model.state_dict()
        new = bundle.adapter.model.state_dict()
        names = [n for b in bundle.adapter.blocks() if b.name in m["frozen_blocks"]
                 for n in b.parameter_names]
        assert m["frozen_blocks"] == ["embedding", "interaction_0", "interaction_1",
                                      "interaction_2"]
        assert all(torch.equal(new[n], base[n]) for n in names)
        assert m["parameters"]["frozen"] > 0 and m["parameters"]["trainable"] > 0
    if strategy == "linear":
        assert 0.5 < m["linear_correction"]["scale"] < 2.0


# --------------------------------------------------------------------------- config validation


def _err(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    return str(info.value)


def test_config_defaults_and_registry():
    cfg = FinetuneConfig()
    assert cfg.strategy == "full" and cfg.align_energies is True
    assert {"full", "frozen", "scratch", "linear"} <= set(STRATEGIES)


@pytest.mark.parametrize("cfg, expected", [
    ({"epocs": 3}, "epocs: unknown key"),
    ({"loss": {"forces_weigth": 1}}, "loss.forces_weigth: unknown key"),
    ({"epochs": "ten"}, "epochs: "),
    ({"batch_size": 0}, "batch_size: "),
    ({"optimizer": {"name": "sgd"}}, "optimizer.name"),
    ({"loss": {"kind": "l1"}}, "loss.kind"),
    ({"train_file": "/nonexistent/train.xyz"}, "train_file: file(s) not found"),
    ({"valid_file": ["/nonexistent/v.xyz"]}, "valid_file: file(s) not found"),
    ({"model": "mace:/nonexistent.model"}, "MACE model file not found"),
    ({"model": "not-a-model"}, "unknown model 'not-a-model'"),
    ({"strategy": "magic"}, "unknown strategy 'magic'"),
    ({"strategy": "full", "freeze": {"k": 2}}, "only used by strategy 'frozen'"),
    ({"dtype": "float64"}, "CHGNet runs in float32 only"),
    ({"strategy": "linear", "ema_decay": 0.99}, "no gradient training"),
    ({"ema_decay": 1.5}, "ema_decay"),
    ({"loss": {"energy_weight": 0, "forces_weight": 0}}, "at least one"),
    ({"strategy_options": {"x": 1}}, "takes no options"),
    ({"device": "quantum"}, "not a torch device"),
])
def test_bad_config_one_clear_message(cfg, expected):
    msg = _err(cfg)
    assert expected in msg, msg
    assert msg.startswith("Invalid fine-tuning config")


def test_all_problems_in_one_message():
    msg = _err({"epocs": 1, "batch_size": -1, "seed": "x"})
    assert "3 problems" in msg and "epocs" in msg and "batch_size" in msg and "seed" in msg


def test_missing_train_data_and_yaml_errors(tmp_path, mace_file):
    with pytest.raises(ConfigError, match="train_file: required"):
        finetune({"model": f"mace:{mace_file}", "output_dir": str(tmp_path / "o")})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_model_dependent_errors_before_training(mace_file, tmp_path):
    for freeze, expected in [({"k": 4}, "would freeze every block"),
                             ({"patterns": ["nope*"]}, "matches no block")]:
        out = tmp_path / str(len(expected))
        with pytest.raises(ConfigError, match=expected):
            finetune(_mace_cfg(mace_file, out, strategy="frozen", freeze=freeze),
                     train=TRAIN, valid=VALID)
        assert not (out / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match="head: .*valid heads"):
        finetune(_mace_cfg(mace_file, tmp_path / "h", head="nohead"), train=TRAIN, valid=VALID)


def test_example_configs_validate():
    from pathlib import Path

    examples = sorted(Path(__file__).parent.parent.glob("examples/finetune_*.yaml"))
    assert examples
    for path in examples:
        data = yaml.safe_load(path.read_text())
        for key in ("train_file", "valid_file", "test_file"):
            data.pop(key, None)
        if str(data.get("model", "")).startswith("mace:"):
            continue  # needs a local model file
        FinetuneConfig.model_validate(data)


def test_energy_term_per_atom_or_per_structure_by_hand():
    """``loss.energy_per``: one energy error δ on a 4-atom and a 16-atom structure costs
    w·mean((δ/N)²) per atom, w·mean(δ²/N) with ``sqrt_atoms`` and w·mean(δ²) per
    structure (MSE, no forces)."""
    import torch

    from ase_surftune.training.config import LossConfig
    from ase_surftune.training.losses import compute_loss

    n = torch.tensor([4.0, 16.0], dtype=torch.float64)
    tgt = {"energy": torch.tensor([-10.0, -50.0], dtype=torch.float64), "n_atoms": n,
           "forces": torch.zeros(20, 3, dtype=torch.float64)}
    out = {"energy": tgt["energy"] + 0.08, "forces": tgt["forces"].clone()}
    per_atom = compute_loss(out, tgt, LossConfig(energy_weight=2.0, forces_weight=0.0))
    per_structure = compute_loss(out, tgt, LossConfig(energy_weight=2.0, forces_weight=0.0,
                                                      energy_per="structure"))
    per_sqrt = compute_loss(out, tgt, LossConfig(energy_weight=2.0, forces_weight=0.0,
                                                 energy_per="sqrt_atoms"))
    assert float(per_atom) == pytest.approx(2.0 * ((0.08 / 4) ** 2 + (0.08 / 16) ** 2) / 2)
    assert float(per_sqrt) == pytest.approx(2.0 * (0.08 ** 2 / 4 + 0.08 ** 2 / 16) / 2)
    assert float(per_structure) == pytest.approx(2.0 * 0.08 ** 2)


def test_per_structure_energy_weights_by_hand():
    """``info["config_energy_weight"]`` (mace's key) multiplies a structure's energy term:
    w·mean(c_i·δ_i²) for MSE and w·mean(c_i·huber(δ_i)) for Huber; forces are untouched;
    a batch without weights keeps the plain criterion; a bad weight is a one-line
    DataError naming the structure."""
    import torch
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from ase_surftune.core.errors import DataError
    from ase_surftune.data import energy_weight, validate_config
    from ase_surftune.training.config import LossConfig
    from ase_surftune.training.losses import Sample, batch_targets, compute_loss

    dt = torch.float64
    samples = [Sample(graph=None, energy=-10.0, forces=torch.zeros(4, 3, dtype=dt), n_atoms=4,
                      energy_weight=5.0),
               Sample(graph=None, energy=-50.0, forces=torch.zeros(16, 3, dtype=dt), n_atoms=16)]
    tgt = batch_targets(samples, dt, torch.device("cpu"))
    assert tgt["energy_weight"].tolist() == [5.0, 1.0]
    out = {"energy": tgt["energy"] + torch.tensor([0.08, -0.16], dtype=dt),
           "forces": tgt["forces"] + 0.1}
    loss = compute_loss(out, tgt, LossConfig(energy_weight=2.0, forces_weight=3.0))
    assert float(loss) == pytest.approx(
        2.0 * (5.0 * (0.08 / 4) ** 2 + (0.16 / 16) ** 2) / 2 + 3.0 * 0.1 ** 2)
    hub = compute_loss(out, tgt, LossConfig(energy_weight=2.0, forces_weight=0.0,
                                            kind="huber", huber_delta=0.015))
    # per atom: 0.02 (beyond δ: δ·(|x| − δ/2)) and 0.01 (inside: x²/2)
    assert float(hub) == pytest.approx(
        2.0 * (5.0 * 0.015 * (0.02 - 0.0075) + 0.5 * 0.01 ** 2) / 2)
    del tgt["energy_weight"]  # unweighted: the plain criterion
    plain = compute_loss(out, tgt, LossConfig(energy_weight=2.0, forces_weight=0.0))
    assert float(plain) == pytest.approx(2.0 * ((0.08 / 4) ** 2 + (0.16 / 16) ** 2) / 2)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    assert energy_weight(cu) == 1.0
    cu.info["config_energy_weight"] = "3"
    assert energy_weight(cu) == 3.0
    cu.calc = EMT()
    cu.get_potential_energy()
    cu.get_forces()
    for bad in (-1.0, float("nan"), "heavy"):
        cu.info["config_energy_weight"] = bad
        with pytest.raises(DataError, match=r"^frame 3: info\['config_energy_weight'\]") as exc:
            validate_config(cu, where="frame 3")
        assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- min_steps


def test_planned_epochs_and_fingerprint():
    cfg = FinetuneConfig(epochs=45)
    assert cfg.planned_epochs(1) == 45  # no min_steps: epochs as given
    cfg = FinetuneConfig(epochs=45, min_steps=400)
    assert [cfg.planned_epochs(n) for n in (1, 4, 9, 10)] == [400, 100, 45, 45]
    # runs from before the option keep their fingerprint; min_steps, like epochs, only
    # enters it under the cosine schedule (whose length it sets)
    base = FinetuneConfig()
    assert FinetuneConfig(min_steps=400).fingerprint() == base.fingerprint()
    cos = {"scheduler": {"name": "cosine"}}
    assert (FinetuneConfig(min_steps=400, **cos).fingerprint()
            != FinetuneConfig(**cos).fingerprint())


def test_min_steps_raises_epochs_and_cosine_length(mace_file, tmp_path):
    # 8 structures in batches of 2: 4 steps per epoch; min_steps 9 -> 3 epochs (12 steps)
    res = finetune(_mace_cfg(mace_file, tmp_path, epochs=1, min_steps=9,
                             scheduler={"name": "cosine", "min_lr": 0.0}),
                   train=TRAIN, valid=VALID)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert res.history[-1]["step"] == 12
    # the cosine schedule spans the 3 epochs: lr(epoch e) = lr0 (1 + cos(pi e / 3)) / 2
    lr0 = 5e-3
    assert [r["lr"] for r in res.history] == pytest.approx(
        [lr0 * (1 + np.cos(np.pi * e / 3)) / 2 for e in range(3)], rel=1e-12)
