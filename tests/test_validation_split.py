"""Validation that tracks the target (issue 12): trajectory-wise splits, early stopping
that watches the slab frames, and a warning when surfaces are not monitored."""

from __future__ import annotations

import logging

import mace  # noqa: F401  (before e3nn)
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from conftest import make_emt_slabs, save_tiny_mace

from ase_surftune.core.errors import ConfigError
from ase_surftune.data import is_slab, read_labelled, split_by_trajectory, trajectory_group
from ase_surftune.training import finetune


def _emt(atoms: Atoms, **info) -> Atoms:
    a = atoms.copy()
    a.calc = EMT()
    a.calc = SinglePointCalculator(a, energy=a.get_potential_energy(), forces=a.get_forces())
    a.info.update(info)
    return a


def _relaxation(kind: str, traj: str, n: int, seed: int) -> list[Atoms]:
    """``n`` frames of one fake relaxation (rattle shrinking frame by frame)."""
    base = (fcc111("Cu", (2, 2, 3), a=3.6, vacuum=5.0, periodic=True) if kind == "slab"
            else bulk("Cu", "fcc", a=3.6, cubic=True))
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=base.positions.shape)
    out = []
    for k in range(n):
        a = base.copy()
        a.positions += 0.1 * noise / (k + 1)
        out.append(_emt(a, trajectory=traj, config_type=kind))
    return out


def test_is_slab():
    assert is_slab(fcc111("Cu", (2, 2, 3), a=3.6, vacuum=5.0, periodic=True))
    assert is_slab(fcc111("Cu", (2, 2, 3), a=3.6, vacuum=5.0))  # pbc False along c
    assert not is_slab(bulk("Cu", "fcc", a=3.6).repeat(2))
    mol = Atoms("CO", positions=[[5, 5, 5], [5, 5, 6.1]], cell=[10, 10, 10], pbc=True)
    assert not is_slab(mol)  # vacuum in every direction: not a surface model


def test_frames_of_one_relaxation_never_on_both_sides():
    data = [a for i in range(6) for a in _relaxation("slab" if i % 2 else "bulk",
                                                      f"run{i}", 5, seed=i)]
    for seed in range(5):
        parts, info = split_by_trajectory(data, 0.2, seed=seed)
        assert info["mode"] == "trajectory" and info["n_groups"] == 6
        tr = {a.info["trajectory"] for a in parts.train}
        va = {a.info["trajectory"] for a in parts.valid}
        assert va and tr and not (tr & va)
        assert len(parts.train) + len(parts.valid) == len(data)
        # two trajectories hold slabs: one of them is validated (surfaces monitored)
        assert any(a.info["config_type"] == "slab" for a in parts.valid)
        assert set(info["valid_groups"]) == va
    # reproducible
    p1, _ = split_by_trajectory(data, 0.2, seed=3)
    p2, _ = split_by_trajectory(data, 0.2, seed=3)
    assert [a.info["trajectory"] for a in p1.valid] == [a.info["trajectory"] for a in p2.valid]


def test_split_groups_by_source_file_and_falls_back_honestly(tmp_path):
    files = []
    for i in range(4):
        f = tmp_path / f"traj{i}.extxyz"
        frames = _relaxation("bulk", "x", 3, seed=i)
        for a in frames:
            del a.info["trajectory"]
        write(f, frames)
        files.append(str(f))
    data = read_labelled(files)
    assert trajectory_group(data[0]) == files[0]
    parts, info = split_by_trajectory(data, 0.25, seed=0)
    assert info["mode"] == "trajectory" and info["n_groups"] == 4
    assert len({trajectory_group(a) for a in parts.valid}) == 1 and len(parts.valid) == 3
    # one file: nothing names separate trajectories -> frames, and the reason is given
    one = read_labelled(files[0])
    parts, info = split_by_trajectory(one, 0.34, seed=0)
    assert info["mode"] == "frames" and "one trajectory/source file" in info["reason"]
    inmem = _relaxation("bulk", "x", 4, seed=0)
    for a in inmem:
        del a.info["trajectory"]
    parts, info = split_by_trajectory(inmem, 0.25, seed=0)
    assert info["mode"] == "frames" and "split_key" in info["reason"]
    # an explicit key: config_type as the trajectory name
    parts, info = split_by_trajectory(make_emt_slabs(6), 0.5, split_key="config_type")
    assert {a.info["config_type"] for a in parts.valid} in ({"Cu"}, {"Au"})


@pytest.fixture(scope="module")
def mace_file(tmp_path_factory) -> str:
    path = save_tiny_mace(tmp_path_factory.mktemp("m") / "tiny.stbundle", seed=0)
    return str(path)


def _cfg(mace_file, out, **kw):
    cfg = {"model": f"mace:{mace_file}", "strategy": "full", "epochs": 3, "batch_size": 4,
           "output_dir": str(out), "progress": False, "plot": False,
           "optimizer": {"lr": 5e-3}, "scheduler": {"name": "none"}, "patience": None,
           "forgetting": {"enabled": False}, "valid_fraction": 0.3}
    cfg.update(kw)
    return cfg


@pytest.mark.slow
def test_early_stopping_watches_slab_frames(mace_file, tmp_path):
    data = [a for i in range(6) for a in _relaxation("slab" if i % 2 else "bulk",
                                                      f"run{i}", 3, seed=i)]
    res = finetune(_cfg(mace_file, tmp_path), train=data)
    m = res.metrics
    assert m["validation_split"]["mode"] == "trajectory"
    assert m["early_stopping_monitors"].startswith("slab (surface) validation frames")
    mon = [r["monitor_loss"] for r in res.history]
    assert all(x is not None for x in mon)
    # the best epoch is the one with the lowest slab loss, not the lowest overall loss
    assert m["best_epoch"] == int(np.argmin(mon)) + 1
    assert m["best_valid_loss"] == pytest.approx(min(mon))


def test_monitor_group_by_name_and_unmonitored_warning(mace_file, tmp_path, caplog):
    data = make_emt_slabs(6)  # config_type Cu / Au
    with pytest.raises(ConfigError, match="monitor_group: 'Ag' matches no validation frame"):
        finetune(_cfg(mace_file, tmp_path / "x", monitor_group="Ag", valid_split="random"),
                 train=data)
    cells = [bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 2)) for _ in range(4)]
    for i, a in enumerate(cells):
        a.positions += np.random.default_rng(i).normal(scale=0.05, size=a.positions.shape)
    bulk_only = [_emt(a, trajectory=f"t{i}") for i, a in enumerate(cells)]
    with caplog.at_level(logging.WARNING, logger="ase_surftune.training.api"):
        res = finetune(_cfg(mace_file, tmp_path / "b", epochs=1, valid_fraction=0.25),
                       train=bulk_only)
    assert "surface accuracy is unmonitored" in caplog.text
    assert res.metrics["early_stopping_monitors"].startswith("whole validation set")


def test_without_validation_set_the_last_epoch_is_kept_and_patience_ignored(
        mace_file, tmp_path, caplog):
    """No held-out samples: the only loss left is the epoch's mean training loss, measured
    on weights that move during the epoch. Selecting or stopping on it follows its noise
    (it cost an active-learning fine-tune's vacancy barrier 6 %), so the loop runs every
    epoch and keeps the last one, and says that an explicit ``patience`` is ignored."""
    data = make_emt_slabs(4)
    with caplog.at_level(logging.WARNING, logger="ase_surftune.training.loop"):
        res = finetune(_cfg(mace_file, tmp_path, epochs=4, patience=1, valid_fraction=0.0,
                            optimizer={"lr": 5e-2}), train=data)
    m = res.metrics
    assert "early stopping (patience 1) is off" in caplog.text
    assert m["epochs_run"] == 4 and not m["stopped_early"]
    assert m["best_epoch"] == 4 and m["best_valid_loss"] is None
    assert m["model_selection"] == "last epoch (no validation set)"
    assert all(r["best"] for r in res.history)
    # the bundle holds the last epoch's weights: those of the final checkpoint
    from ase_surftune.training.checkpoint import load_checkpoint

    last = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    kept = res.load_bundle().adapter.model.state_dict()
    assert kept.keys() == last.keys()
    assert all(torch.equal(last[k], v) for k, v in kept.items())
