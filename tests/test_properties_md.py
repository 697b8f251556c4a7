"""MD driver with EMT: NVE conservation, NVT temperature, guards, restart, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import read

from ase_surftune.core.errors import ConfigError
from ase_surftune.properties import run_md


@pytest.mark.slow
def test_nve_energy_conservation_1000_steps(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    res = run_md(atoms, EMT(), "nve", steps=1000, timestep=2.0, temperature=300,
                 loginterval=20, logfile=tmp_path / "nve.csv", progress=False)
    assert res.completed and res.steps_done == 1000
    assert res.energy_drift < 5e-4  # eV/atom over 2 ps
    et = np.array(res.log["etot"])
    assert np.ptp(et) / len(atoms) < 5e-4
    assert np.ptp(res.log["epot"]) > 1e-3  # atoms actually moved
    lines = (tmp_path / "nve.csv").read_text().splitlines()
    assert lines[0].startswith("step,time_fs,T_K") and len(lines) == 1 + 1000 // 20 + 1


@pytest.mark.slow
def test_nvt_langevin_mean_temperature():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 2))  # 72 atoms
    res = run_md(atoms, EMT(), "nvt_langevin", steps=300, timestep=4.0, temperature=500,
                 friction=0.05, loginterval=5, seed=1, progress=False)
    assert res.completed
    assert res.mean_temperature == pytest.approx(500, rel=0.12)


@pytest.mark.slow
@pytest.mark.parametrize("ens", ["nvt_bussi", "nvt_nose_hoover", "npt_isotropic", "npt_mtk"])
def test_other_ensembles_run(ens):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    res = run_md(atoms, EMT(), ens, steps=40, timestep=2.0, temperature=300, taut=20,
                 taup=200, progress=False)
    assert res.completed and res.ensemble == ens and res.steps_done == 40
    assert all(p is not None for p in res.log["pressure"])


@pytest.mark.slow
def test_temperature_ramp():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    res = run_md(atoms, EMT(), "nvt_bussi", steps=200, timestep=2.0, temperature=100,
                 temperature_end=900, taut=10, loginterval=10, seed=3, progress=False)
    t = np.array(res.log["temperature"])
    assert t[-5:].mean() > t[:5].mean() + 300


def test_guard_stops_exploding_system(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.positions[1] = atoms.positions[0] + [0.9, 0.0, 0.0]  # overlapping pair
    traj = tmp_path / "boom.extxyz"
    res = run_md(atoms, EMT(), "nve", steps=200, timestep=5.0, trajectory=traj,
                 traj_interval=1, progress=False)
    assert not res.completed and res.guard == "max_force"
    assert "max force" in res.stop_reason and "eV/Å" in res.stop_reason
    frames = read(str(traj), ":")
    assert frames and frames[-1].info["stop_reason"] == res.stop_reason


def test_guard_energy_drift_and_min_distance():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    res = run_md(atoms, EMT(), "nve", steps=100, timestep=25.0, temperature=3000,
                 max_force=None, max_energy_drift=0.02, guard_interval=1, progress=False)
    assert not res.completed and res.guard in ("energy_drift", "min_distance")
    res2 = run_md(bulk("Cu", "fcc", a=3.61, cubic=True), EMT(), "nve", steps=5,
                  min_distance=3.0, progress=False, guard_interval=1)
    assert res2.guard == "min_distance" and "Å apart" in res2.stop_reason


def test_escape_guard_and_fixed_atoms():
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=8.0)
    slab.set_constraint(FixAtoms(mask=[a.tag == 3 for a in slab]))  # bottom layer
    fixed = slab.constraints[0].index
    slab.positions[-1, 2] += 2.0
    # kick the top atom out of the slab
    mom = np.zeros((len(slab), 3))
    slab.set_momenta(mom)
    res_ok = run_md(slab, EMT(), "nvt_langevin", steps=40, timestep=2.0, temperature=300,
                    progress=False)
    assert res_ok.completed
    assert np.allclose(res_ok.atoms.positions[fixed], slab.positions[fixed])
    kicked = slab.copy()
    v = np.zeros((len(slab), 3))
    v[-1, 2] = 0.5  # Å/fs upward
    from ase import units

    kicked.set_velocities(v * units.fs**-1 * 1.0)
    res = run_md(kicked, EMT(), "nve", steps=200, timestep=2.0, init_velocities=False,
                 escape_distance=3.0, guard_interval=1, progress=False)
    assert res.guard == "escape" and "left the slab" in res.stop_reason


def test_restart_continues_from_last_frame(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    traj = tmp_path / "md.traj"
    first = run_md(atoms, EMT(), "nve", steps=50, timestep=2.0, temperature=300,
                   trajectory=traj, traj_interval=10, progress=False)
    last = read(str(traj), -1)
    assert last.info["md_step"] == 50
    second = run_md(atoms, EMT(), "nve", steps=20, timestep=2.0, restart_from=traj,
                    trajectory=traj, traj_interval=10, progress=False)
    assert second.log["step"][0] == 50
    # velocities carried over: same temperature and total energy at the joint
    assert second.log["temperature"][0] == pytest.approx(first.log["temperature"][-1], rel=1e-6)
    assert second.log["etot"][0] == pytest.approx(first.log["etot"][-1], abs=1e-6)
    assert len(read(str(traj), ":")) == 6 + 2
    json.dumps(second.to_dict())


@pytest.mark.parametrize("kw,match", [
    ({"ensemble": "nvt_andersen"}, "ensemble"),
    ({"temperature": -10}, "temperature"),
    ({"timestep": -1.0}, "timestep"),
    ({"timestep": 0}, "timestep"),
    ({"steps": -5}, "steps"),
    ({"temperature_end": -1}, "temperature_end"),
])
def test_md_bad_input(kw, match):
    with pytest.raises(ConfigError, match=match):
        run_md(bulk("Cu"), EMT(), **{"ensemble": "nve", **kw}, progress=False)
