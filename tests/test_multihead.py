"""Multi-head fine-tuning (issue 4): head growth, replay, forgetting vs naive fine-tuning.

The forgetting case is fully offline: a tiny MACE "foundation" is pre-trained on
EMT bulk Cu/Au; the target data are Cu/Au(111) slabs at a *different level of theory*
(EMT × 1.3, as surface data computed with another functional would be). Naive full
fine-tuning on the slabs drags the bulk PES along (forgetting); multi-head fine-tuning
keeps the foundation head anchored through pseudo-labelled replay.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from _models import chgnet_adapter, tiny_mace
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from conftest import make_emt_slabs, save_tiny_mace

from ase_surftune.core.errors import ConfigError, HeadError, UnsupportedElementError
from ase_surftune.models.backends.mace import MACEAdapter
from ase_surftune.training import finetune, load_config
from ase_surftune.training.forgetting import ForgettingOptions
from ase_surftune.training.multihead import ReplayLoss, add_head
from ase_surftune.training.replay import (
    ReplayOptions,
    build_replay,
    bulk_candidates,
    pseudo_label,
    select_configs,
    structure_descriptor,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def emt_label(configs, scale=1.0):
    out = []
    for a in configs:
        a = a.copy()
        a.calc = EMT()
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=scale * e, forces=scale * f, stress=scale * s)
        out.append(a)
    return out


def _same(p, q):
    return (np.array_equal(p.energy, q.energy)
            and all(np.array_equal(a, b) for a, b in zip(p.forces, q.forces)))


def _probe():
    s = make_emt_slabs(2, seed=5)
    b = bulk_candidates(["Cu", "Au"], 3, seed=3)
    return s + b


# --------------------------------------------------------------------------- add_head


def _close(p, q, tol=1e-12):
    """Equal to float64 rounding: native multi-head readouts renormalise the non-linear
    readout's output weights by sqrt((H+1)/H) when a head is added."""
    return (np.allclose(p.energy, q.energy, rtol=0, atol=tol)
            and all(np.allclose(a, b, rtol=0, atol=tol) for a, b in zip(p.forces, q.forces)))


@pytest.mark.slow
def test_mace_add_head_keeps_existing_heads_to_rounding():
    """L=1 model: linear readout (8x0e+8x1o input) and non-linear readout both grow, in
    mace's native layout; existing heads agree to float64 rounding."""
    ad = tiny_mace()
    probe = _probe()
    ref = ad.predict(probe, compute_stress=True)
    grown = MACEAdapter(copy.deepcopy(ad.model), name="g")
    grown.add_head("surf")
    assert grown.heads == ["Default", "surf"]
    assert grown.model.atomic_energies_fn.atomic_energies.shape == (2, 2)
    assert [str(r.linear.irreps_out) if hasattr(r, "linear") else str(r.linear_2.irreps_out)
            for r in grown.model.readouts] == ["2x0e", "2x0e"]  # mace's native layout
    p = grown.predict(probe, "Default", compute_stress=True)
    assert _close(p, ref) and np.allclose(p.stress, ref.stress, rtol=0, atol=1e-12)
    # the new head starts as a copy of the foundation head
    assert _close(grown.predict(probe, "surf"), ref)
    # grow again after a payload round trip (an already multi-head bundle)
    again = MACEAdapter.from_payload(grown.to_payload())
    again.add_head("surf2", from_head="surf")
    assert again.heads == ["Default", "surf", "surf2"]
    for h in ("Default", "surf", "surf2"):
        assert _close(again.predict(probe, h), ref), h
    # heads are independent: changing the new readout leaves the others alone
    with torch.no_grad():
        again.model.readouts[-1].linear_2.weight[-4:] += 0.3  # last column: head surf2
    assert _close(again.predict(probe, "Default"), ref)
    assert not np.allclose(again.predict(probe, "surf2").energy, ref.energy)


@pytest.mark.slow
def test_mace_add_head_to_native_multihead_model():
    """A mace-native multi-head model (pt_head + one more) grows to three heads;
    existing heads agree to float rounding."""
    ad = tiny_mace(heads=("pt_head", "surface"))
    probe = _probe()
    ref = {h: ad.predict(probe, h) for h in ad.heads}
    grown = MACEAdapter(copy.deepcopy(ad.model))
    grown.add_head("surface2", from_head="surface", atomic_energies={"Cu": -3.7})
    for h in ("pt_head", "surface"):
        p = grown.predict(probe, h)
        assert np.allclose(p.energy, ref[h].energy, rtol=0, atol=1e-12)
        assert max(np.abs(a - b).max() for a, b in zip(p.forces, ref[h].forces)) < 1e-12
    e0 = grown.model.atomic_energies_fn.atomic_energies
    assert e0.shape == (3, 2) and float(e0[2, 0]) == -3.7  # Cu row of the new head
    assert float(e0[2, 1]) == float(e0[1, 1])               # Au copied from 'surface'


@pytest.mark.slow
def test_add_head_errors():
    ad = tiny_mace()
    with pytest.raises(HeadError, match="already exists"):
        ad.add_head("Default")
    with pytest.raises(UnsupportedElementError, match="Pt"):
        ad.add_head("x", atomic_energies={"Pt": -5.0})
    with pytest.raises(HeadError, match="valid heads"):
        ad.add_head("x", from_head="nope")
    with pytest.raises(HeadError, match="already exists"):
        add_head(ad, "Default")


def test_chgnet_add_head_unchanged_at_initialisation():
    ad = chgnet_adapter()
    probe = make_emt_slabs(2, seed=1)
    ref = ad.predict(probe)
    new = add_head(ad, "surface")
    assert ad.heads == ["foundation"] and new.heads == ["foundation", "surface"]
    assert _same(new.predict(probe, "foundation"), ref)
    assert _same(new.predict(probe, "surface"), ref)


# --------------------------------------------------------------------------- replay


@pytest.mark.slow
def test_replay_generation_selection_and_pseudo_labels():
    pool = bulk_candidates(["Au", "Cu"], 12, seed=0, min_atoms=4)
    formulas = {a.get_chemical_formula() for a in pool}
    assert {"Cu4", "Au4", "Au2Cu2"} <= formulas  # ground states + B2 alloy (2x1x1... ok)
    assert all(a.pbc.all() and len(a) >= 4 for a in pool)
    x = np.stack([structure_descriptor(a, ["Cu", "Au"]) for a in pool])

    def min_dist(idx):
        d = [np.linalg.norm(x[i] - x[j]) for i in idx for j in idx if i < j]
        return min(d)

    fps = select_configs(pool, 4, "fps", seed=0, elements=["Cu", "Au"])
    rnd = [select_configs(pool, 4, "random", seed=s) for s in range(5)]
    assert len(set(fps)) == 4
    assert min_dist(fps) >= np.median([min_dist(r) for r in rnd])
    ad = tiny_mace()
    lab = pseudo_label(ad, pool[:3])
    pred = ad.predict(pool[:3])
    assert [a.get_potential_energy() for a in lab] == pytest.approx(pred.energy, abs=0)
    reps = build_replay(ad, ["Cu", "Au"], ReplayOptions(n=5, selection="random"), seed=3)
    assert len(reps) == 5 and all("label_source" in a.info for a in reps)
    reps = build_replay(ad, ["Cu", "Au"], ReplayOptions(n=5, selection="random",
                                                          eos_points=4), seed=3)
    assert len(reps) == 5 + 2 * 4  # + a 4-point EOS ladder per element
    assert all(a.calc.results["stress"].shape == (6,) for a in reps)  # stress pseudo-labels


def test_eos_ladder_spans_the_volume_window_unrattled():
    """The ladder pins E(V) where the forgetting report measures B: evenly spaced volumes
    over V0·(1 ± 6 %), ideal positions (zero forces by symmetry), per bulk element."""
    from ase.build import bulk

    from ase_surftune.training.replay import eos_ladder

    lad = eos_ladder(["Cu", "O", "Au"], 5, 0.06)
    assert [a.get_chemical_formula() for a in lad] == ["Cu4"] * 5 + ["Au4"] * 5
    for sym, part in (("Cu", lad[:5]), ("Au", lad[5:])):
        v0 = bulk(sym).get_volume()
        ratio = [a.get_volume() / len(a) / v0 for a in part]
        np.testing.assert_allclose(ratio, [0.94, 0.97, 1.0, 1.03, 1.06], rtol=1e-12)
        assert all(a.info["config_type"] == f"replay/{sym}-eos" for a in part)
    a = lad[0].copy()
    a.calc = EMT()
    assert np.abs(a.get_forces()).max() < 1e-10
    assert eos_ladder(["Cu"], 0) == []


@pytest.mark.slow
def test_new_structures_are_pseudo_labelled_by_the_original_model():
    from ase_surftune.training.replay import pseudolabel_new_structures

    ad = tiny_mace()
    slabs = make_emt_slabs(5, seed=4)
    lab = pseudolabel_new_structures(ad, slabs, ReplayOptions(n=8, n_new=3), seed=0)
    assert len(lab) == 3 and all(a.info["config_type"].startswith("replay-new/") for a in lab)
    pred = ad.predict(lab)
    assert [a.get_potential_energy() for a in lab] == pytest.approx(pred.energy, abs=0)
    for a, f in zip(lab, pred.forces):  # the DFT/EMT labels are gone, the model's are in
        np.testing.assert_array_equal(a.get_forces(), f)
    assert slabs[0].get_potential_energy() == make_emt_slabs(5, seed=4)[0].get_potential_energy()
    assert pseudolabel_new_structures(ad, slabs, ReplayOptions(pseudolabel_new=False)) == []


@pytest.mark.slow
def test_replay_file_checks_elements(tmp_path):
    from ase.build import bulk

    ni = emt_label([bulk("Ni", cubic=True)])
    path = tmp_path / "mptrj_subset.extxyz"
    write(path, ni)
    with pytest.raises(UnsupportedElementError, match="Ni"):
        build_replay(tiny_mace(), ["Cu"], ReplayOptions(file=str(path)))


def test_replay_stress_option_validates(tiny_mace_file):
    from ase_surftune.training.multihead import MultiheadOptions

    o = MultiheadOptions()
    assert o.replay_stress_weight == 3000.0 and o.replay_new_weight == 1.0
    assert o.replay.eos_points == 0 and o.replay.eos_range == 0.06
    base = {"model": f"mace:{tiny_mace_file}", "strategy": "multihead"}
    for bad in ({"replay_stress_weight": -1.0}, {"replay_new_weight": -0.5},
                {"replay": {"eos_points": -1}}, {"replay": {"eos_range": 0.7}}):
        with pytest.raises(ConfigError, match="replay"):
            load_config({**base, "strategy_options": bad})
    cfg = load_config({**base, "strategy_options": {"replay_stress_weight": None}})
    assert cfg.strategy_options["replay_stress_weight"] is None  # the run's stress weight


def test_replay_loss_sees_a_stress_only_mismatch():
    """Replay targets equal to the model's own energies and forces but with every stress
    component off by δ: the replay loss is 0 without a stress weight and exactly
    w·δ² (MSE in (eV/Å³)²) with one — the stress pseudo-labels reach the foundation head."""
    from ase_surftune.training.config import LossConfig
    from ase_surftune.training.scoring import featurize_samples

    ad = tiny_mace()
    cells = pseudo_label(ad, bulk_candidates(["Cu", "Au"], 4, seed=2))
    samples = featurize_samples(ad, cells)
    delta = 0.01  # eV/Å³ = 1.6 GPa
    for s in samples:
        s.stress = s.stress + delta
    for w, expected in ((0.0, 0.0), (100.0, 100.0 * delta ** 2)):
        cfg = LossConfig(energy_weight=100.0, forces_weight=10.0, stress_weight=w)
        rl = ReplayLoss(samples, ad.heads[0], 4, 2.0, cfg, seed=0)
        rl.step = 0
        loss = float(rl(ad, [], {}).detach())
        assert loss == pytest.approx(2.0 * expected, abs=1e-9)
    # the pseudo-labelled-new pool has its own weight; 0 drops it
    rl = ReplayLoss(samples, ad.heads[0], 4, 1.0, cfg, new_samples=samples, new_weight=0.5)
    rl.step = 0
    assert float(rl(ad, [], {}).detach()) == pytest.approx(1.5 * expected, abs=1e-9)
    assert ReplayLoss(samples, "Default", 4, 1.0, cfg, new_samples=samples,
                      new_weight=0.0).new_samples == []


def test_replay_batches_depend_only_on_step():
    rl = ReplayLoss(list(range(10)), "Default", 3, 1.0, None, seed=4)
    assert rl.batch_indices(7) == rl.batch_indices(7)
    assert rl.batch_indices(7) != rl.batch_indices(8)


def test_bad_multihead_config_is_rejected(tmp_path, tiny_mace_file):
    base = {"model": f"mace:{tiny_mace_file}", "strategy": "multihead"}
    with pytest.raises(ConfigError, match="head weights must be > 0"):
        load_config({**base, "strategy_options": {"replay_weight": 0}})
    with pytest.raises(ConfigError, match="head weights must be > 0"):
        load_config({**base, "strategy_options": {"head_weight": -1.0}})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config({**base, "strategy_options": {"replay": {"size": 3}}})
    with pytest.raises(ConfigError, match="not found"):
        load_config({**base, "strategy_options": {"replay": {"file": "/nope.extxyz"}}})
    with pytest.raises(HeadError, match="already exists"):
        finetune({**base, "strategy_options": {"new_head": "Default"}, "epochs": 1,
                  "output_dir": str(tmp_path), "progress": False},
                 train=make_emt_slabs(3), valid=make_emt_slabs(1, seed=9))


# --------------------------------------------------------------------------- forgetting


@pytest.fixture(scope="module")
def emt_foundation(tmp_path_factory):
    """A tiny MACE pre-trained on EMT bulk (the 'foundation') + an EMT bulk hold-out."""
    d = tmp_path_factory.mktemp("fg")
    save_tiny_mace(d / "tiny.stbundle")
    train = emt_label(bulk_candidates(["Cu", "Au"], 24, seed=1, rattle=0.08, strain=0.05))
    hold = emt_label(bulk_candidates(["Cu", "Au"], 8, seed=2, rattle=0.08, strain=0.05))
    write(d / "bulk_hold.extxyz", hold)
    # pre-trained like a foundation: the epoch of lowest validation loss is kept (with no
    # validation set the loop keeps the last epoch, at a constant lr 0.01 one noisy step
    # of many, and the forgetting claims below then depend on which one it was)
    pre = finetune({"model": f"mace:{d / 'tiny.stbundle'}", "strategy": "full", "epochs": 20,
                    "batch_size": 4, "optimizer": {"lr": 0.01}, "scheduler": {"name": "none"},
                    "valid_fraction": 0.2, "output_dir": str(d / "pre"), "progress": False,
                    "plot": False, "forgetting": {"enabled": False}}, train=train)
    slabs = emt_label(make_emt_slabs(10), scale=1.3)
    common = {"model": str(pre.bundle_path), "epochs": 6, "batch_size": 2,
              "optimizer": {"lr": 0.01}, "scheduler": {"name": "none"}, "patience": None,
              "progress": False, "plot": False,
              "forgetting": {"bulk_file": str(d / "bulk_hold.extxyz")}}
    return {"dir": d, "slabs": slabs, "common": common, "bundle": pre.bundle_path}


@pytest.fixture(scope="module")
def naive_and_mhft(emt_foundation):
    f = emt_foundation
    out = {}
    for strat, opts in (("full", {}),
                        ("multihead", {"new_head": "surf", "replay_weight": 5.0,
                                       "replay": {"n": 12}})):
        out[strat] = finetune({**f["common"], "strategy": strat, "strategy_options": opts,
                               "output_dir": str(f["dir"] / strat)},
                              train=f["slabs"][:8], valid=f["slabs"][8:])
    return out


@pytest.mark.slow
def test_naive_finetuning_forgets_and_mhft_does_not(naive_and_mhft):
    from ase_surftune.evaluation.forgetting import report_run

    opts = ForgettingOptions(facets=["111"], vacancy=False)  # EOS + one facet: quick
    naive = report_run(naive_and_mhft["full"], opts)
    mh = report_run(naive_and_mhft["multihead"], opts)
    # error level, on EMT-labelled bulk hold-out structures
    nb = naive["heads"]["Default"]
    assert nb["bulk_after"]["forces_mae"] > 1.2 * nb["bulk_before"]["forces_mae"]
    assert "(FLAG: forgetting)" in naive["summary"]
    assert "target validation (2 structures: " in naive["summary"]
    fb = mh["heads"]["Default"]
    assert fb["started_from"] == "Default"
    # the replay-anchored head's bulk force error rises by at most a third of naive
    # fine-tuning's rise (measured with this foundation: +13.7 % vs +62 %; an absolute
    # bound of +10 % held for one foundation and not for two others)
    assert fb["bulk_forces_mae_change_percent"] <= nb["bulk_forces_mae_change_percent"] / 3
    assert fb["bulk_forces_mae_change_percent"] < nb["bulk_forces_mae_change_percent"] - 20
    # the new head learns the target
    assert mh["target"]["head"] == "surf"
    assert mh["target"]["after"]["forces_mae"] < 0.8 * mh["target"]["before"]["forces_mae"]
    assert mh["summary"].startswith("bulk force MAE") and "[head surf]" in mh["summary"]
    # property level: lattice constant and bulk modulus per element, every head
    assert set(mh["properties"]) == {"Default", "surf"}
    for sym in ("Cu", "Au"):
        props = mh["properties"]["Default"][sym]
        assert set(props) == {"a", "B_GPa", "gamma_111"}
        for p in props.values():
            assert p["before"] > 0 and p["after"] > 0
        assert 3.0 < props["a"]["after"] < 4.6
        # the anchored head keeps the original bulk modulus closer than naive FT
        naive_dB = abs(naive["properties"]["Default"][sym]["B_GPa"]["change_percent"])
        assert abs(props["B_GPa"]["change_percent"]) < naive_dB
    assert any("B_GPa" in f for f in naive["flags"]) and naive["summary"].count("FLAG") >= 2
    written = json.loads((naive_and_mhft["multihead"].output_dir / "forgetting.json").read_text())
    assert written["summary"] == mh["summary"]


@pytest.mark.slow
def test_multihead_bundle_heads_calculator_and_cli(naive_and_mhft):
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.models.calculator import SurfTuneCalculator

    res = naive_and_mhft["multihead"]
    b = Bundle.load(res.bundle_path)
    assert b.heads == ["Default", "surf"] and b.resolve_head(None) == "surf"
    assert b.head_info["surf"]["n_configs"] == 8 and b.head_info["surf"]["strategy"] == "multihead"
    assert "replay" in b.head_info["Default"]["trained_on"]
    slab = make_emt_slabs(1, seed=11)[0]
    e = {}
    for h in ("Default", "surf"):
        a = slab.copy()
        a.calc = SurfTuneCalculator(str(res.bundle_path), head=h)
        e[h] = a.get_potential_energy()
    assert e["Default"] != e["surf"]
    out = subprocess.run([sys.executable, "-m", "ase_surftune", "heads", str(res.bundle_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "surf" in out and "replay: pseudo-labelled bulk" in out


@pytest.mark.slow
def test_add_further_head_to_multihead_bundle(naive_and_mhft, tmp_path):
    """A second surface system on an already multi-head bundle: heads grow to three,
    the two existing heads are unchanged (to rounding) at initialisation, and training runs."""
    from ase_surftune.models.bundle import Bundle

    b = Bundle.load(naive_and_mhft["multihead"].bundle_path)
    probe = _probe()
    ref = {h: b.adapter.predict(probe, h) for h in b.heads}
    grown = add_head(b.adapter, "surf2", from_head="surf")
    for h in ("Default", "surf"):
        assert _close(grown.predict(probe, h), ref[h])  # native layout: float rounding
    res = finetune({"model": str(naive_and_mhft["multihead"].bundle_path),
                    "strategy": "multihead", "head": "Default", "epochs": 1, "batch_size": 2,
                    "strategy_options": {"new_head": "surf2", "from_head": "surf",
                                         "replay": {"n": 4}},
                    "forgetting": {"eos": False}, "output_dir": str(tmp_path),
                    "progress": False, "plot": False},
                   train=make_emt_slabs(4, seed=21), valid=make_emt_slabs(2, seed=22))
    nb = Bundle.load(res.bundle_path)
    assert nb.heads == ["Default", "surf", "surf2"]
    assert set(nb.head_info) == {"Default", "surf", "surf2"}
    assert nb.head_info["surf"]["strategy"] == "multihead"  # kept from the first run
    assert nb.reference_energies["surf"] == b.reference_energies["surf"]


@pytest.mark.slow
def test_chgnet_multihead_finetune(tmp_path):
    slabs = make_emt_slabs(6, seed=3)
    res = finetune({"model": "chgnet", "strategy": "multihead", "epochs": 1, "batch_size": 2,
                    "strategy_options": {"new_head": "surface", "replay": {"n": 2,
                                                                           "max_atoms": 8}},
                    "forgetting": {"eos": False, "n_bulk": 2}, "output_dir": str(tmp_path),
                    "progress": False, "plot": False},
                   train=slabs[:4], valid=slabs[4:])
    m = res.metrics
    assert m["head"] == "surface" and m["multihead"]["heads"] == ["foundation", "surface"]
    assert m["multihead"]["replay"]["n_new_pseudolabelled"] == 2  # default n_new = n
    fg = m["forgetting"]
    assert set(fg["heads"]) == {"foundation", "surface"}
    # default bulk set is labelled by the original model: 'before' error is exactly 0
    assert fg["heads"]["foundation"]["bulk_before"]["forces_mae"] < 1e-5
    assert "drift" in fg["summary"]
    b = res.load_bundle()
    assert b.heads == ["foundation", "surface"]


def test_example_configs_validate(tmp_path):
    """The shipped examples parse; only their data/model files are missing here."""
    from pathlib import Path

    import yaml

    ex = Path(__file__).resolve().parents[1] / "examples"
    for name in ("finetune_multihead_mace.yaml", "finetune_multihead_chgnet.yaml"):
        data = yaml.safe_load((ex / name).read_text())
        data.update(model="chgnet", dtype=None, output_dir=str(tmp_path))
        data.pop("train_file", None)
        data.pop("valid_file", None)
        cfg = load_config(data)
        assert cfg.strategy == "multihead" and cfg.forgetting.enabled
    from ase_surftune.training.distill import DistillConfig

    d = yaml.safe_load((ex / "distill_chgnet_teacher.yaml").read_text())
    assert DistillConfig.model_validate(d).student.channels == 16


def test_molecular_elements_are_left_out_of_bulk_sets():
    """H/N/O (adsorbates in OC20-like data) have no bulk crystal; an fcc 'H crystal' at
    bonding distance made CHGNet graphs with thousands of neighbours and ran out of memory."""
    from ase_surftune.core.errors import ConfigError
    from ase_surftune.training.replay import bulk_candidates, ground_state_bulk, has_bulk_state

    assert not any(has_bulk_state(s) for s in ("H", "N", "O"))
    assert all(has_bulk_state(s) for s in ("Cu", "C", "Ga", "Te"))
    with pytest.raises(ConfigError, match="H has no bulk crystal"):
        ground_state_bulk("H")
    cands = bulk_candidates(["Cu", "H", "O", "Au"], 12)
    assert {s for a in cands for s in a.get_chemical_symbols()} == {"Cu", "Au"}
    for a in cands:  # physically sensible cells: no atoms closer than 1.5 Å
        d = a.get_all_distances(mic=True) + 10 * np.eye(len(a))
        assert d.min() > 1.5
    with pytest.raises(ConfigError, match="none of"):
        bulk_candidates(["H", "O"], 4)


@pytest.mark.slow
def test_pseudolabel_replay_keeps_foundation_gamma_and_bulk_modulus(tmp_path):
    """Bundled CHGNet, new head on EMT×1.3 Cu(111) slabs (a 'stiffer functional'): the
    new head's γ moves towards the target while the foundation head, anchored by bulk
    replay (energies and, by default, stresses) plus the training slabs pseudo-labelled
    by the original model, keeps γ(111) and B within 3 %. Without the stress term B moved
    +5.5 % in this run (``replay_stress_weight: 0``; bench_multihead.py --forgetting)."""
    from ase_surftune.evaluation.forgetting import element_properties
    from ase_surftune.models.backends import load_model
    from ase_surftune.models.calculator import SurfTuneCalculator

    opts = ForgettingOptions(facets=["111"], vacancy=False, eos_points=5)
    p0 = element_properties(SurfTuneCalculator(load_model("chgnet")), "Cu", opts)
    slabs = emt_label(make_emt_slabs(8, symbols=("Cu",), seed=3), scale=1.3)
    res = finetune({"model": "chgnet", "strategy": "multihead", "epochs": 4, "batch_size": 2,
                    "optimizer": {"lr": 3e-4}, "scheduler": {"name": "none"}, "patience": None,
                    "strategy_options": {"new_head": "surf", "replay_energy_weight": 100.0,
                                         "replay": {"n": 6, "batch_size": 12}},
                    "forgetting": {"enabled": False}, "progress": False, "plot": False,
                    "output_dir": str(tmp_path)}, train=slabs[:6], valid=slabs[6:])
    m = res.metrics
    assert m["multihead"]["replay"]["n_new_pseudolabelled"] == 6
    assert m["multihead"]["replay_stress_weight"] == 3000.0  # the default
    assert m["finetuned"]["valid"]["forces_mae"] < 0.6 * m["zero_shot"]["valid"]["forces_mae"]
    b = res.load_bundle()
    p = {h: element_properties(SurfTuneCalculator(b, head=h), "Cu", opts)
         for h in ("foundation", "surf")}
    assert abs(p["foundation"]["gamma_111"] / p0["gamma_111"] - 1) < 0.03
    assert abs(p["foundation"]["B_GPa"] / p0["B_GPa"] - 1) < 0.03, (p, p0)
    assert p["surf"]["gamma_111"] / p0["gamma_111"] - 1 > 0.05  # the new head learns
