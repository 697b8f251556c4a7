"""``surftune demo --quick`` end to end: labels, fine-tuned bundles, error and property
tables with the expected structure and physically sensible numbers."""

from __future__ import annotations

import csv
import json

import pytest


@pytest.mark.slow
def test_demo_quick(tmp_path, capsys):
    from ase_surftune.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for text in ("[1/5]", "[5/5]", "force softening s", "| zero-shot |", "| linear |",
                 "| frozen |", "γ(111)", "vacancy barrier"):
        assert text in printed, text
    d = json.loads((out / "demo_summary.json").read_text())
    assert d["quick"] and d["reference"] == "emt"
    rows = {r["model"]: r for r in d["summary"]}
    assert set(rows) == {"zero-shot", "linear", "frozen"}
    # zero-shot CHGNet is softer than EMT for Cu; the linear correction's fitted scale
    # brings the force-level softening scale towards 1
    s0, s_lin = rows["zero-shot"]["force_softening_s"], rows["linear"]["force_softening_s"]
    assert 0.5 < s0 < 0.95
    assert abs(s_lin - 1) < abs(s0 - 1)
    # the EMT reference is deterministic: pinned to the values this code computes (quick
    # settings: 3-layer unrelaxed Cu(111) slab, 1-image vacancy hop in the 2x2x1 cubic
    # cell, 15 NEB steps (not converged), phonons in the 4-atom cell)
    with open(out / "compare" / "comparison.csv", newline="") as fh:
        ref = {r["property"]: float(r["reference"]) for r in csv.DictReader(fh)}
    assert ref["lattice_a"] == pytest.approx(3.58948, rel=1e-5)  # EMT a0 (E(V) fit 3.58983)
    assert ref["gamma_111"] == pytest.approx(1.04424, rel=1e-4)  # EMT γ(111), J/m²
    assert ref["barrier_vacancy"] == pytest.approx(0.92828, rel=1e-3)  # eV
    assert ref["phonon_mean_THz"] == pytest.approx(5.60556, rel=1e-4)
    assert ref["phonon_max_THz"] == pytest.approx(8.14643, rel=1e-4)
    # zero-shot CHGNet (bundled weights, float32) vs EMT: deterministic too
    z = rows["zero-shot"]
    assert z["lattice_a"] == pytest.approx(1.00777, rel=1e-3)
    assert z["gamma_111"] == pytest.approx(0.82410, rel=2e-3)
    assert z["barrier_vacancy"] == pytest.approx(0.80346, rel=2e-3)
    assert z["phonon_max_THz"] == pytest.approx(0.60694, rel=2e-3)
    # the demo's claim: fine-tuning on a few slabs moves γ(111) and the vacancy barrier
    # towards the reference (measured: γ ratio 0.824 -> 0.894 linear, 0.936 frozen;
    # barrier 0.803 -> 0.870, 0.891)
    for name in ("linear", "frozen"):
        for key in ("gamma_111", "barrier_vacancy"):
            assert z[key] < rows[name][key] < 1.0, (name, key)
    for path in ("labels_emt_quick.xyz", "demo_summary.md", "evaluate/evaluation.csv",
                 "evaluate/parity_zero-shot.png", "compare/comparison.png",
                 "compare/comparison.csv", "finetune/linear/model.stbundle",
                 "finetune/frozen/model.stbundle"):
        assert (out / path).is_file(), path
    assert set(d["timings"]) >= {"total"}  # recorded for the README; not asserted (shared CPUs)
