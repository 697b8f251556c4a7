"""Learning-curve driver: monotone N (capped at the pool), one finished row per
(strategy, N, seed), nested subsets, resume after an interruption without redoing runs,
refusal to resume with other data, plots/tables, and the CLI."""

from __future__ import annotations

import json

import ase.io
import pytest
import yaml

from ase_surftune.core.errors import ConfigError
from ase_surftune.evaluation.learning_curve import learning_curve, load_learning_curve_config


@pytest.fixture(scope="module")
def pool_and_test():
    from conftest import make_emt_slabs

    data = make_emt_slabs(8, seed=5, size=(2, 2, 2))
    return data[:6], data[6:]


def _cfg(mace_file, out, **kw):
    cfg = {"model": f"mace:{mace_file}", "strategies": ["linear", "full"],
           "n_train": [2, 1, 50], "seeds": [0], "output_dir": str(out), "progress": False,
           # the random tiny MACE's forces barely correlate with EMT's, so the
           # slope-restoring linear fit (a = 1/s) would give s ~ 4 on the test set; these
           # tests are about the driver, so use the error-minimising fit
           "finetune": {"epochs": 2, "batch_size": 2, "dtype": "float64",
                        "optimizer": {"lr": 0.005}, "scheduler": {"name": "none"},
                        "linear": {"fit": "mse"}}}
    cfg.update(kw)
    return cfg


@pytest.mark.slow
def test_curve_monotone_and_resumes(tiny_mace_file, pool_and_test, tmp_path):
    pool, test = pool_and_test
    out = tmp_path / "lc"
    part = learning_curve(_cfg(tiny_mace_file, out), train=pool, test=test, max_runs=2)
    assert not part.complete
    first = {(r["strategy"], r["n_train"]): r for r in part.rows}
    assert set(first) == {("zero-shot", 0), ("linear", 1), ("linear", 2)}
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert part.rows[1]["n_train"] == 1 and part.rows[2]["n_train"] == 2

    full = learning_curve(_cfg(tiny_mace_file, out), train=pool, test=test)
    assert full.complete
    by_strat = {}
    for r in full.rows:
        by_strat.setdefault(r["strategy"], []).append(r["n_train"])
    assert by_strat == {"zero-shot": [0], "linear": [1, 2], "full": [1, 2]}  # 50 > pool
    for ns in by_strat.values():
        assert ns == sorted(ns)
    # finished runs were not redone: their rows (incl. wall times) are unchanged
    again = {(r["strategy"], r["n_train"]): r for r in full.rows}
    for k, r in first.items():
        assert again[k] == r
    assert len((out / "results.jsonl").read_text().splitlines()) == 5
    # a third call does nothing new
    t = (out / "results.jsonl").stat().st_mtime_ns
    again2 = learning_curve(_cfg(tiny_mace_file, out), train=pool, test=test)
    assert (out / "results.jsonl").stat().st_mtime_ns == t and again2.rows == full.rows
    for r in full.rows:
        assert r["forces_mae"] > 0 and 0 < r["softening_scale"] < 3 and r["n_test"] == 2
    assert all((out / "runs" / f"full_N{n}_seed0" / "model.stbundle").is_file()
               for n in (1, 2))
    # nested subsets: N=1 trains on the first structure of the N=2 subset (seeded order)
    import numpy as np

    from ase_surftune.data import dataset_hash
    from ase_surftune.models.bundle import Bundle

    perm = np.random.default_rng(0).permutation(len(pool))
    for n in (1, 2):
        info = list(Bundle.load(out / "runs" / f"linear_N{n}_seed0" / "model.stbundle")
                    .head_info.values())[0]
        assert info["n_train"] == n
        assert info["train_hash"] == dataset_hash([pool[j] for j in perm[:n]])
    summ = full.summary()
    assert [s["n_train"] for s in summ if s["strategy"] == "full"] == [1, 2]
    md = full.to_markdown()
    assert "N=2" in md and "| linear |" in md
    assert (out / "learning_curve.png").stat().st_size > 1000
    d = json.loads((out / "learning_curve.json").read_text())
    assert d["complete"] and len(d["rows"]) == 5


@pytest.mark.slow
def test_resume_refuses_other_data(tiny_mace_file, pool_and_test, tmp_path):
    pool, test = pool_and_test
    out = tmp_path / "lc"
    cfg = _cfg(tiny_mace_file, out, strategies=["linear"], n_train=[1], zero_shot=False)
    res = learning_curve(cfg, train=pool, test=test)
    assert [(r["strategy"], r["n_train"]) for r in res.rows] == [("linear", 1)]
    with pytest.raises(ConfigError, match="other data or settings"):
        learning_curve(cfg, train=pool[1:], test=test)
    # resume=False starts over
    res2 = learning_curve(cfg, train=pool[1:], test=test, resume=False)
    assert len(res2.rows) == 1 and (out / "results.jsonl.old").is_file()


def test_config_validation(tiny_mace_file, tmp_path):
    with pytest.raises(ConfigError, match="unknown strategies"):
        load_learning_curve_config(_cfg(tiny_mace_file, tmp_path, strategies=["magic"]))
    with pytest.raises(ConfigError, match="n_train"):
        load_learning_curve_config(_cfg(tiny_mace_file, tmp_path, n_train=[0, 2]))
    with pytest.raises(ConfigError, match="set by the learning-curve driver"):
        load_learning_curve_config(_cfg(tiny_mace_file, tmp_path,
                                        finetune={"train_file": "x.xyz"}))
    # per-run fine-tuning configs are validated up front
    with pytest.raises(ConfigError, match="frozen"):
        load_learning_curve_config(_cfg(tiny_mace_file, tmp_path, strategies=["frozen"],
                                        strategy_options={"frozen": {"freeze": {"k": 0}}}))
    # frozen without a freeze section uses the backend's documented default k
    load_learning_curve_config(_cfg(tiny_mace_file, tmp_path, strategies=["frozen"]))
    ok = load_learning_curve_config(_cfg(tiny_mace_file, tmp_path, strategies=["frozen"],
                                         strategy_options={"frozen": {"freeze": {"k": 1}}}))
    assert ok.n_train == [1, 2, 50]


@pytest.mark.slow
def test_cli_learning_curve(tiny_mace_file, pool_and_test, tmp_path, capsys):
    from ase_surftune.cli import main

    pool, test = pool_and_test
    ase.io.write(tmp_path / "pool.xyz", pool, format="extxyz")
    ase.io.write(tmp_path / "test.xyz", test, format="extxyz")
    cfg = _cfg(tiny_mace_file, "out", strategies=["linear"], n_train=[1, 3],
               train_file="pool.xyz", test_file="test.xyz")
    (tmp_path / "lc.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["learning-curve", str(tmp_path / "lc.yaml"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| linear |" in printed and "N=3" in printed
    rows = (tmp_path / "out" / "learning_curve.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # zero-shot + N=1, N=3
    assert main(["learning-curve", str(tmp_path / "missing.yaml")]) == 2


def test_max_force_drops_and_names_frames(tiny_mace_file, pool_and_test, tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    pool, test = pool_and_test
    hot = pool[0].copy()
    f = pool[0].get_forces().copy()
    f[0] = [0.0, 150.0, 0.0]
    hot.calc = SinglePointCalculator(hot, energy=pool[0].get_potential_energy(), forces=f)
    hot.info["source"] = "hot.xyz@3"
    res = learning_curve(_cfg(tiny_mace_file, tmp_path, strategies=["linear"], n_train=[1],
                              max_force=50.0), train=[hot] + pool[1:], test=test, max_runs=0)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [d["source"] for d in manifest["max_force_dropped"]] == ["hot.xyz@3"]
    assert manifest["n_pool"] == len(pool) - 1
    assert res.rows and res.rows[0]["strategy"] == "zero-shot"
