"""Distillation split by layer (issue 15): sampling and checks in evaluation, the student's
config, strategy and training in training. Fast: a tiny random MACE as teacher, no
training."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch
from _models import tiny_mace
from ase.build import bulk, fcc111, molecule

from ase_surftune.core.errors import ConfigError
from ase_surftune.evaluation.distill import sample_configurations
from ase_surftune.evaluation.distill_check import is_bulk
from ase_surftune.models.bundle import Bundle
from ase_surftune.training.distill import SamplingOptions, load_distill_config


@pytest.fixture(scope="module")
def teacher():
    """A tiny random MACE bundle; torch on one thread while this module runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Bundle(adapter=tiny_mace())
    torch.set_num_threads(threads)


def _seeds():
    slab = fcc111("Cu", (2, 2, 3), a=3.6, vacuum=6.0, periodic=True)
    return [slab, bulk("Cu", "fcc", a=3.6, cubic=True)]


def test_old_import_path_reaches_the_workflow(monkeypatch):
    import ase_surftune.evaluation.distill as workflow
    import ase_surftune.training as training
    import ase_surftune.training.distill as student_side

    # the alias sets the old parent's attribute; keep ``training.distill`` as it was
    monkeypatch.setattr(training, "distill", student_side)
    monkeypatch.delitem(sys.modules, "ase_surftune.finetune.distill", raising=False)
    with pytest.warns(DeprecationWarning, match="evaluation.distill"):
        old = importlib.import_module("ase_surftune.finetune.distill")
    assert old is workflow
    assert old.distill is workflow.distill
    assert old.DistillStrategy is student_side.DistillStrategy  # one strategy class
    assert old.load_distill_config is student_side.load_distill_config
    # the longest matching entry of the alias table wins
    from ase_surftune import _compat

    assert _compat.new_name("ase_surftune.finetune.distill") == "ase_surftune.evaluation.distill"
    assert _compat.new_name("ase_surftune.finetune.api") == "ase_surftune.training.api"


def test_bulk_or_slab():
    slab, cu = _seeds()
    assert is_bulk(cu) and not is_bulk(slab)
    assert not is_bulk(molecule("H2O"))  # not periodic


@pytest.mark.slow
def test_sampling_strains_slabs_in_plane_only(teacher, tmp_path):
    opts = SamplingOptions(md_steps=0, n_rattled=2, n_strained=3, strain=0.03, rattle=0.05)
    seeds = _seeds()
    out = sample_configurations(teacher, seeds, opts, seed=4, workdir=tmp_path)
    assert len(out) == 2 * (2 + 3)
    kinds = [a.info["config_type"] for a in out]
    assert kinds == (["distill/rattled"] * 2 + ["distill/strained"] * 3) * 2
    slab_strained, bulk_strained = out[2:5], out[7:10]
    for a in slab_strained:  # c untouched: the vacuum keeps its size, γ stays meaningful
        np.testing.assert_allclose(a.cell[2], seeds[0].cell[2], atol=1e-12)
        np.testing.assert_allclose(a.cell[:2, 2], 0.0, atol=1e-12)
        assert not np.allclose(a.cell[:2], seeds[0].cell[:2])
    for a in bulk_strained:  # bulk: all three directions, |ε| <= 3 %
        ratio = np.linalg.norm(a.cell, axis=1) / np.linalg.norm(seeds[1].cell, axis=1)
        assert np.all(np.abs(ratio - 1) <= 0.03 * np.sqrt(3)) and np.ptp(ratio) > 0
    assert [len(a) for a in out] == [len(seeds[0])] * 5 + [len(seeds[1])] * 5
    assert all(a.calc is None for a in out)
    again = sample_configurations(teacher, seeds, opts, seed=4, workdir=tmp_path)
    other = sample_configurations(teacher, seeds, opts, seed=5, workdir=tmp_path)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(out, again))
    assert not np.allclose(out[0].positions, other[0].positions)


def test_sampling_md_frames_skip_the_start(teacher, tmp_path):
    opts = SamplingOptions(temperatures=[300.0], md_steps=4, md_interval=2, n_rattled=0,
                           n_strained=0, timestep=1.0)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    out = sample_configurations(teacher, [cu], opts, seed=0, workdir=tmp_path)
    # frames at steps 2 and 4 (step 0, the seed itself, is not a new sample)
    assert len(out) == 2 and all(a.info["config_type"] == "distill/md300K" for a in out)
    assert (tmp_path / "md_seed0_300K.traj").is_file()
    assert all(a.calc is None for a in out)
    assert not np.allclose(out[0].positions, cu.positions)


def test_config_errors_in_the_house_format():
    with pytest.raises(ConfigError) as exc:
        load_distill_config({"teacher": "x", "smaple": {}, "student": {"max_L": 3}})
    msg = str(exc.value)
    assert msg.startswith("Invalid distillation config (2 problems):")
    assert "  smaple: unknown key" in msg and "  student.max_L:" in msg


def test_strategy_options_errors_name_the_key():
    from ase_surftune.training.config import load_config

    with pytest.raises(ConfigError, match=r"strategy_options\.student\.channels"):
        load_config({"model": "chgnet", "strategy": "distill",
                     "strategy_options": {"student": {"channels": 0}}})
    with pytest.raises(ConfigError, match=r"strategy_options\.teacher: unknown key"):
        load_config({"model": "chgnet", "strategy": "distill",
                     "strategy_options": {"teacher": "x"}})
