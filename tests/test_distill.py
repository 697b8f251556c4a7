"""Distilled surrogate (issue 4 / seed 001): a small MACE student of a CHGNet teacher."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from _models import chgnet_adapter
from ase.build import bulk, fcc111
from ase.io import write

from ase_surftune.core.errors import ConfigError, ModelLoadError
from ase_surftune.evaluation.distill import distill, load_distill_config

#: the module fixture distils a student (~35 s): slow lane
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]




@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    from ase_surftune.models.bundle import Bundle

    d = tmp_path_factory.mktemp("distill")
    teacher = Bundle(adapter=chgnet_adapter(), head_info={"foundation": {"trained_on": "MPtrj"}})
    tpath = teacher.save(d / "teacher.stbundle")
    slab = fcc111("Cu", (2, 2, 3), a=3.62, vacuum=6.0, periodic=True)
    write(d / "slab.extxyz", slab)
    res = distill({"teacher": str(tpath), "seeds": [str(d / "slab.extxyz")],
                   "output_dir": str(d / "student"),
                   "sampling": {"temperatures": [300, 600], "md_steps": 20, "md_interval": 5,
                                "n_rattled": 5, "n_strained": 5},
                   "student": {"channels": 8, "max_L": 0},
                   "training": {"epochs": 20, "batch_size": 4, "optimizer": {"lr": 0.01}}},
                  seeds=[bulk("Cu", "fcc", a=3.62, cubic=True)])
    return {"res": res, "teacher": tpath, "dir": d, "slab": slab}


def test_student_tracks_teacher_and_is_faster(distilled):
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.models.calculator import SurfTuneCalculator

    r = distilled["res"].report
    assert r["n_samples"]["test"] >= 3
    # held-out student-vs-teacher errors are small compared with the forces' spread
    st = r["student_vs_teacher"]
    assert st["forces_mae"] < 0.15 and st["energy_mae_per_atom"] < 0.05
    # the report carries the measured per-call times (speed itself is a benchmark figure,
    # not a test assertion: shared CPUs make timing asserts flaky)
    sp = r["speedup"]
    assert sp["teacher_s_per_call"] > 0 and sp["student_s_per_call"] > 0
    assert sp["speedup"] == pytest.approx(sp["teacher_s_per_call"] / sp["student_s_per_call"])
    # the student loads in the calculator and follows the teacher on a new structure
    a = distilled["slab"].copy()
    a.rattle(0.05, seed=7)
    t, s = a.copy(), a.copy()
    t.calc = SurfTuneCalculator(str(distilled["teacher"]))
    s.calc = SurfTuneCalculator(str(distilled["res"].bundle_path))
    ft, fs = t.get_forces(), s.get_forces()
    assert np.mean(np.abs(fs - ft)) < 0.5 * np.mean(np.abs(ft))
    assert abs(s.get_potential_energy() - t.get_potential_energy()) / len(a) < 0.05
    b = Bundle.load(distilled["res"].bundle_path)
    assert b.adapter.backend == "mace" and "teacher labels" in b.head_info["Default"]["trained_on"]
    assert b.metrics["distillation"]["teacher_head"] == "foundation"


def test_property_check_surface_energy_and_phonon(distilled):
    props = distilled["res"].report["properties"]
    g = props["surface_energy_J_m2"]
    # the teacher is the bundled CHGNet (deterministic, float32): pinned to its values,
    # unrelaxed Cu(111) 2x2x3 slab at a = 3.62 Å against the cubic bulk seed
    assert g["teacher"] == pytest.approx(0.86207, rel=2e-3)  # J/m²
    assert g["difference_percent"] == pytest.approx(
        100 * (g["student"] - g["teacher"]) / g["teacher"])
    assert abs(g["difference_percent"]) < 20  # measured -8.6 % (20 epochs, 8 channels)
    ph = props["phonon_max_frequency_THz"]
    # highest band frequency of fcc Cu in a 2x2x2 primitive supercell (too small for a
    # converged value, the same for both models): CHGNet 5.19 THz; the student measured
    # 7.07 THz (+36 %), reported, not asserted
    assert ph["teacher"] == pytest.approx(5.1909, rel=2e-3)
    assert ph["student"] > 0
    assert (distilled["res"].output_dir / "distill_report.json").is_file()


def test_distill_bad_input(tmp_path):
    with pytest.raises(ModelLoadError, match="teacher bundle not found"):
        load_distill_config({"teacher": str(tmp_path / "missing.stbundle")})
    with pytest.raises(ConfigError, match="unknown key"):
        load_distill_config({"teacher": "x", "smaple": {}})
    with pytest.raises(ConfigError, match="max_L"):
        load_distill_config({"teacher": "x", "student": {"max_L": 3}})
    out = subprocess.run([sys.executable, "-m", "ase_surftune", "distill",
                          str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert out.returncode != 0
