"""The observers of :func:`~ase_surftune.properties.md.run_md`: the stability guards
(non-finite values, max force, min distance, NVE drift, atoms escaping a slab) and the
recorder that logs T, energies and pressure and writes the trajectory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units

from ase_surftune.core.errors import SurfTuneError
from ase_surftune.core.threads import single_threaded_numpy
from ase_surftune.properties._base import vacuum_size


class _GuardTripped(SurfTuneError):
    """Internal: raised by an observer to stop the dynamics."""

    def __init__(self, guard: str, reason: str):
        super().__init__(reason)
        self.guard = guard
        self.reason = reason


def _is_slab(atoms: Atoms) -> bool:
    return (not atoms.pbc[2]) or vacuum_size(atoms, axis=2) > 5.0


def _open_writer(path: Path | None, append: bool):
    if path is None:
        return None, None
    if path.suffix == ".traj":
        from ase.io import Trajectory

        traj = Trajectory(str(path), "a" if append else "w")
        return (lambda a: traj.write(a)), traj.close
    from ase.io import write

    if not append and path.exists():
        path.unlink()

    def w(a: Atoms) -> None:
        write(str(path), a, format="extxyz", append=True)

    return w, (lambda: None)


@single_threaded_numpy
class _Guards:
    """The stability guards of :func:`run_md`: finite positions/energy and ``max_force``
    every step; ``min_distance``, the NVE energy drift and slab ``escape`` on full checks."""

    def __init__(self, work: Atoms, ensemble: str, max_force: float | None,
                 min_distance: float | None, max_energy_drift: float | None,
                 escape_distance: float | None) -> None:
        self.work, self.ensemble, self.n = work, ensemble, len(work)
        self.max_force, self.min_distance = max_force, min_distance
        self.max_energy_drift, self.escape_distance = max_energy_drift, escape_distance
        self.slab = _is_slab(work)
        z0 = work.get_positions()[:, 2]
        self.zlo, self.zhi = float(z0.min()), float(z0.max())
        self.etot0: float | None = None

    def __call__(self, s: int, full: bool) -> None:
        work = self.work
        pos = work.get_positions()
        epot = work.get_potential_energy()
        if not (np.all(np.isfinite(pos)) and math.isfinite(epot)):
            raise _GuardTripped("non_finite", f"non-finite positions or energy at step {s}")
        if self.max_force is not None:
            fm = float(np.sqrt((work.get_forces() ** 2).sum(axis=1)).max())
            if fm > self.max_force:
                raise _GuardTripped("max_force", f"max force {fm:.3g} eV/Å > "
                                                 f"{self.max_force} eV/Å at step {s}")
        if full:
            self._distance(s)
            self._drift(s, epot)
            self._escape(s, pos)

    def _distance(self, s: int) -> None:
        if self.min_distance is None or self.n < 2:
            return
        from ase.neighborlist import neighbor_list

        i, j, d = neighbor_list("ijd", self.work, self.min_distance)
        if len(d):
            k = int(np.argmin(d))
            raise _GuardTripped("min_distance", f"atoms {i[k]} and {j[k]} are {d[k]:.3f} Å "
                                                f"apart (< {self.min_distance} Å) at step {s}")

    def _drift(self, s: int, epot: float) -> None:
        if self.ensemble != "nve" or self.max_energy_drift is None:
            return
        et = epot + self.work.get_kinetic_energy()
        if self.etot0 is None:
            self.etot0 = et
        drift = abs(et - self.etot0) / self.n
        if drift > self.max_energy_drift:
            raise _GuardTripped("energy_drift", f"NVE energy drift {drift:.3g} eV/atom > "
                                                f"{self.max_energy_drift} eV/atom at step {s}")

    def _escape(self, s: int, pos: np.ndarray) -> None:
        if not self.slab or self.escape_distance is None:
            return
        z, esc = pos[:, 2], self.escape_distance
        out = np.where((z > self.zhi + esc) | (z < self.zlo - esc))[0]
        if len(out):
            raise _GuardTripped("escape", f"atom {int(out[0])} left the slab region "
                                          f"[{self.zlo:.2f}, {self.zhi:.2f}] Å by more than "
                                          f"{esc} Å at step {s}")


class _Recorder:
    """The MD log (in memory and as CSV) and the trajectory frames of :func:`run_md`."""

    def __init__(self, work: Atoms, timestep: float, logfile: str | Path | None,
                 trajectory: str | Path | None, restarted: bool) -> None:
        self.work, self.timestep = work, timestep
        self.has_stress = all(work.pbc)
        self.log: dict[str, list[Any]] = {k: [] for k in (
            "step", "time_fs", "temperature", "epot", "ekin", "etot", "pressure")}
        self.logfile = logfile
        self.logfh = None
        if logfile is not None:
            lp = Path(logfile)
            lp.parent.mkdir(parents=True, exist_ok=True)
            self.logfh = lp.open("a" if restarted and lp.exists() else "w")
            if self.logfh.tell() == 0:
                self.logfh.write("step,time_fs,T_K,E_pot_eV,E_kin_eV,E_tot_eV,P_GPa\n")
        self.tpath = Path(trajectory) if trajectory is not None else None
        if self.tpath is not None:
            self.tpath.parent.mkdir(parents=True, exist_ok=True)
        self.write_frame, self.close_traj = _open_writer(
            self.tpath, append=restarted and self.tpath is not None and self.tpath.exists())

    def record(self, s: int) -> None:
        work = self.work
        epot = float(work.get_potential_energy())
        ekin = float(work.get_kinetic_energy())
        press = None
        if self.has_stress:
            try:
                press = float(-np.trace(work.get_stress(voigt=False)) / 3 / units.GPa)
            except Exception:
                press = None
        vals = (s, s * self.timestep, float(work.get_temperature()), epot, ekin, epot + ekin,
                press)
        for k, v in zip(self.log, vals):
            self.log[k].append(v)
        if self.logfh is not None:
            self.logfh.write(",".join("" if v is None else f"{v:.8g}" for v in vals) + "\n")
            self.logfh.flush()

    def save_frame(self, s: int, reason: str | None = None) -> None:
        if self.write_frame is None:
            return
        frame = self.work.copy()
        frame.info["md_step"] = s
        frame.info["time_fs"] = s * self.timestep
        if reason:
            frame.info["stop_reason"] = reason
        frame.set_momenta(self.work.get_momenta(), apply_constraint=False)
        self.write_frame(frame)

    def close(self) -> None:
        if self.logfh is not None:
            self.logfh.close()
        if self.close_traj is not None:
            self.close_traj()
