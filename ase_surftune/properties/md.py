"""Molecular dynamics driver with stability guards, for any ASE calculator."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import BaseCalculator

from ase_surftune.core.errors import ConfigError
from ase_surftune.properties import _base as base
from ase_surftune.properties._base import PropertyResult
from ase_surftune.properties.md_observers import _Guards, _GuardTripped, _Recorder
from ase_surftune.properties.settings import MD

logger = logging.getLogger(__name__)

#: Ensemble names accepted by :func:`run_md` (aliases in :data:`ALIASES`).
ENSEMBLES = ("nve", "nvt_langevin", "nvt_bussi", "nvt_nose_hoover", "npt_isotropic", "npt_mtk")
ALIASES = {"verlet": "nve", "velocity_verlet": "nve", "langevin": "nvt_langevin",
           "bussi": "nvt_bussi", "nose_hoover": "nvt_nose_hoover", "nhc": "nvt_nose_hoover",
           "nvt": "nvt_langevin", "npt": "npt_isotropic", "mtk": "npt_mtk"}


def parse_ensemble(name: Any) -> str:
    """Canonical ensemble name or :class:`ConfigError`."""
    key = str(name).lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in ENSEMBLES:
        raise ConfigError(f"Unknown ensemble {name!r}; choose from {ENSEMBLES} "
                          f"(aliases {sorted(ALIASES)})")
    return key


@dataclass
class MDResult(PropertyResult):
    """Outcome of :func:`run_md`.

    The log holds step, time (fs), temperature (K), potential / kinetic / total
    energy (eV) and pressure (GPa, None without stress). ``completed`` is False when
    a guard stopped the run; ``stop_reason`` then says why. ``energy_drift`` is
    max |E_tot − E_tot(0)| per atom (eV/atom) over the logged frames.
    """

    ensemble: str
    steps_requested: int
    steps_done: int
    timestep: float
    completed: bool
    stop_reason: str | None
    guard: str | None
    mean_temperature: float
    std_temperature: float
    energy_drift: float
    log: dict[str, list[Any]]
    trajectory: str | None = None
    logfile: str | None = None
    plot: str | None = None
    force_calls: int | None = None
    atoms: Atoms | None = field(default=None, metadata={"json": False})


#: ensembles whose target temperature ASE 3.29 lets a caller change during a run
#: (Langevin.set_temperature; Bussi's public ``temp``/``target_kinetic_energy``). The
#: Nose-Hoover chain and MTK classes have no public setter, so they cannot ramp.
RAMP_ENSEMBLES = ("nvt_langevin", "nvt_bussi")


def _set_target_temperature(dyn: Any, temperature_K: float) -> None:
    """Change the thermostat target (K) of an ASE 3.29 Langevin or Bussi object in place,
    through their public API only."""
    if hasattr(dyn, "set_temperature"):  # Langevin
        dyn.set_temperature(temperature_K=temperature_K)
        return
    kT = units.kB * temperature_K  # Bussi: the attributes its step() reads
    dyn.temp = kT
    dyn.target_kinetic_energy = 0.5 * kT * dyn.ndof


def _make_dynamics(ensemble: str, atoms: Atoms, dt: float, temperature: float,
                   friction: float, taut: float, pressure: float, taup: float,
                   rng: np.random.Generator):
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt)
    if ensemble == "nvt_langevin":
        from ase.md.langevin import Langevin

        return Langevin(atoms, timestep=dt, temperature_K=temperature,
                        friction=friction / units.fs, rng=rng, fixcm=False)
    if ensemble == "nvt_bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, timestep=dt, temperature_K=temperature, taut=taut * units.fs,
                     rng=rng)
    from ase.md import nose_hoover_chain as nhc

    try:
        if ensemble == "nvt_nose_hoover":
            return nhc.NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temperature,
                                          tdamp=taut * units.fs)
        cls = nhc.IsotropicMTKNPT if ensemble == "npt_isotropic" else nhc.MTKNPT
        return cls(atoms, timestep=dt, temperature_K=temperature,
                   pressure_au=pressure * units.GPa, tdamp=taut * units.fs,
                   pdamp=taup * units.fs)
    except NotImplementedError as exc:
        raise ConfigError(f"ensemble {ensemble!r} cannot run this system: {exc}") from None


def run_md(atoms: Atoms | None, calc: BaseCalculator, ensemble: str = MD.ensemble, *,
           steps: int = MD.steps, timestep: float = MD.timestep,
           temperature: float = MD.temperature,
           temperature_end: float | None = MD.temperature_end, friction: float = MD.friction,
           taut: float = MD.taut, pressure: float = MD.pressure, taup: float = MD.taup,
           seed: int | None = MD.seed, init_velocities: bool = True,
           loginterval: int = MD.loginterval,
           logfile: str | Path | None = None, trajectory: str | Path | None = None,
           traj_interval: int = MD.traj_interval, progress: bool = MD.progress,
           restart_from: str | Path | None = None,
           max_force: float | None = MD.max_force,
           min_distance: float | None = MD.min_distance,
           max_energy_drift: float | None = MD.max_energy_drift,
           escape_distance: float | None = MD.escape_distance,
           guard_interval: int = MD.guard_interval,
           plot: str | Path | None = None, copy: bool = True) -> MDResult:
    """Run molecular dynamics with ASE's integrators and stop safely on instabilities.

    Args:
        atoms: start structure (constraints such as ``FixAtoms`` on slab bottoms are
            honoured); may be None when ``restart_from`` is given.
        calc: any ASE calculator.
        ensemble: ``nve`` (Velocity Verlet), ``nvt_langevin``, ``nvt_bussi``,
            ``nvt_nose_hoover`` (chain), ``npt_isotropic`` (MTK isotropic) or
            ``npt_mtk`` (full-cell MTK).
        steps: number of MD steps; timestep in fs.
        temperature: target (and Maxwell–Boltzmann start) temperature in K;
            ``temperature_end`` (K) ramps the target linearly over the run
            (nvt_langevin and nvt_bussi: see :data:`RAMP_ENSEMBLES`).
        friction: Langevin friction in 1/fs. taut: thermostat time constant (fs).
        pressure: GPa (NPT). taup: barostat time constant (fs).
        seed: RNG seed for the start velocities and stochastic thermostats.
        init_velocities: draw Maxwell–Boltzmann velocities (ignored on restart).
        loginterval: log T, E_pot, E_kin, P every n steps (to ``logfile`` if given).
        trajectory: ``.traj`` or ``.extxyz``/``.xyz`` path, a frame every
            ``traj_interval`` steps (positions and momenta).
        progress: tqdm progress bar.
        restart_from: trajectory to continue from: its last frame's positions, cell
            and velocities; the step counter continues from its ``md_step``.
        max_force: stop if any atomic force exceeds this (eV/Å).
        min_distance: stop if two atoms come closer than this (Å).
        max_energy_drift: NVE only; stop if |E_tot − E_tot(0)|/N exceeds this (eV/atom).
        escape_distance: slabs only; stop if an atom leaves the initial slab region by
            more than this (Å) along z.
        guard_interval: check distance, drift and escape every n steps (forces and
            finiteness are checked every step).
        plot: PNG path for T and energies vs time.

    Why this is over 80 lines: it is a public API function whose docstring
    documents every keyword argument with its unit; the code is 65 lines.
    """
    ensemble = parse_ensemble(ensemble)
    steps = base.check_int("steps", steps)
    timestep = base.check_positive("timestep", timestep)
    temperature = base.check_positive("temperature", temperature, allow_zero=True)
    _check_md_args(ensemble, temperature, temperature_end, friction, taut, taup,
                   loginterval, traj_interval, guard_interval, max_force, min_distance,
                   max_energy_drift, escape_distance)
    work, step0, restarted = _start_structure(atoms, restart_from, copy)
    if ensemble.startswith("npt"):
        base.check_atoms(work, need_cell=True)
    base.attach_calc(work, calc)
    rng = np.random.default_rng(seed)
    if not restarted and init_velocities and temperature > 0:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

        MaxwellBoltzmannDistribution(work, temperature_K=temperature, rng=rng,
                                     force_temp=True)
        if not work.constraints:
            Stationary(work)
    dyn = _make_dynamics(ensemble, work, timestep * units.fs, temperature, friction, taut,
                         pressure, taup, rng)
    guards = _Guards(work, ensemble, max_force, min_distance, max_energy_drift,
                     escape_distance)
    rec = _Recorder(work, timestep, logfile, trajectory, restarted)

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, desc=f"MD {ensemble}", disable=not progress, leave=False)
    tick = max(1, steps // 200)

    def per_step() -> None:
        k = dyn.nsteps
        if temperature_end is not None and steps > 0:
            _set_target_temperature(dyn, temperature + (temperature_end - temperature)
                                    * min(k, steps) / steps)
        guards(step0 + k, full=k % guard_interval == 0)
        if k % loginterval == 0:
            rec.record(step0 + k)
        if k % traj_interval == 0 and (k > 0 or not restarted):
            rec.save_frame(step0 + k)
        if k % tick == 0 and k > 0:
            bar.update(tick)

    dyn.attach(per_step, interval=1)
    stop_reason = guard = None
    try:
        dyn.run(steps)  # ASE calls the observer at step 0 too
    except _GuardTripped as exc:
        stop_reason, guard = exc.reason, exc.guard
        logger.warning("MD stopped: %s", exc.reason)
        try:
            rec.save_frame(step0 + dyn.nsteps, exc.reason)
        except Exception:  # pragma: no cover - a frame that cannot be written
            pass
    finally:
        bar.close()
        rec.close()
    res = _summarise(rec, ensemble, steps, int(dyn.nsteps), timestep, stop_reason, guard,
                     work)
    if plot is not None and rec.log["step"]:
        from ase_surftune.properties._plot import plot_md

        log = rec.log
        res.plot = plot_md(plot, log["time_fs"], log["temperature"], log["epot"], log["etot"])
    return res


def _check_md_args(ensemble: str, temperature: float, temperature_end: float | None,
                   friction: float, taut: float, taup: float, loginterval: int,
                   traj_interval: int, guard_interval: int, *guard_limits: float | None
                   ) -> None:
    """Refuse bad :func:`run_md` arguments with a one-line :class:`ConfigError`."""
    if temperature_end is not None:
        base.check_positive("temperature_end", temperature_end, allow_zero=True)
        if ensemble not in RAMP_ENSEMBLES:
            raise ConfigError(f"temperature_end (a ramp) needs one of {RAMP_ENSEMBLES}; "
                              f"ASE's {ensemble} has no public way to change its target "
                              f"temperature during a run")
    if ensemble != "nve" and temperature == 0 and not temperature_end:
        raise ConfigError(f"temperature must be positive for {ensemble}, got {temperature}")
    base.check_positive("friction", friction)
    base.check_positive("taut", taut)
    base.check_positive("taup", taup)
    base.check_int("loginterval", loginterval, minimum=1)
    base.check_int("traj_interval", traj_interval, minimum=1)
    base.check_int("guard_interval", guard_interval, minimum=1)
    names = ("max_force", "min_distance", "max_energy_drift", "escape_distance")
    for name, val in zip(names, guard_limits):
        if val is not None:
            base.check_positive(name, val)


def _start_structure(atoms: Atoms | None, restart_from: str | Path | None,
                     copy: bool) -> tuple[Atoms, int, bool]:
    """``(structure, first step, restarted)``: ``atoms`` (copied unless ``copy`` is
    False), or the last frame of ``restart_from`` (positions, cell, momenta, step)."""
    if restart_from is None:
        if atoms is None:
            raise ConfigError("atoms is None and no restart_from was given")
        base.check_atoms(atoms)
        return (atoms.copy() if copy else atoms), 0, False
    from ase.io import read

    rpath = Path(restart_from)
    if not rpath.is_file():
        raise FileNotFoundError(f"restart file not found: {str(rpath)!r}")
    frame = read(str(rpath), index=-1)
    if atoms is None:
        work = frame
    else:
        base.check_atoms(atoms)
        if frame.get_chemical_symbols() != atoms.get_chemical_symbols():
            raise ConfigError(f"restart frame {frame.get_chemical_formula()} does not match "
                              f"atoms {atoms.get_chemical_formula()}")
        work = atoms.copy()
        work.set_cell(frame.get_cell())
        work.set_positions(frame.get_positions(), apply_constraint=False)
        work.set_momenta(frame.get_momenta())
    return work, int(frame.info.get("md_step", 0)), True


def _summarise(rec: _Recorder, ensemble: str, steps: int, steps_done: int, timestep: float,
               stop_reason: str | None, guard: str | None, work: Atoms) -> MDResult:
    """The :class:`MDResult`: mean/std T over the second half of the log, the largest
    total-energy change per atom (eV/atom)."""
    log, n = rec.log, len(work)
    temps = np.array(log["temperature"], dtype=float)
    half = temps[len(temps) // 2:] if len(temps) > 1 else temps
    et = np.array(log["etot"], dtype=float)
    drift = float(np.max(np.abs(et - et[0])) / n) if len(et) else 0.0
    return MDResult(ensemble=ensemble, steps_requested=steps, steps_done=steps_done,
                    timestep=timestep, completed=stop_reason is None, stop_reason=stop_reason,
                    guard=guard, mean_temperature=float(half.mean()) if len(half) else math.nan,
                    std_temperature=float(half.std()) if len(half) else math.nan,
                    energy_drift=drift, log=log,
                    trajectory=str(rec.tpath) if rec.tpath is not None else None,
                    logfile=str(rec.logfile) if rec.logfile is not None else None, atoms=work)
