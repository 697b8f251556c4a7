"""``surftune md``: molecular dynamics with stability guards."""

from __future__ import annotations

import argparse

OPTIONS = [
    ("ensemble", str, "nve, nvt_langevin, nvt_bussi, nvt_nose_hoover, npt_isotropic, npt_mtk"),
    ("steps", int, "MD steps (default 1000)"),
    ("timestep", float, "fs (default 1.0)"),
    ("temperature", float, "K (default 300)"),
    ("temperature_end", float, "K; ramp the target linearly to this"),
    ("friction", float, "Langevin friction, 1/fs (default 0.01)"),
    ("taut", float, "thermostat time constant, fs (default 100)"),
    ("pressure", float, "GPa (NPT, default 0)"),
    ("taup", float, "barostat time constant, fs (default 1000)"),
    ("seed", int, "random seed (default 42)"),
    ("loginterval", int, "log every n steps (default 10)"),
    ("traj_interval", int, "trajectory frame every m steps (default 100)"),
    ("trajectory", str, "trajectory path, .traj or .extxyz (default "
                        "<prefix>_md.extxyz in the -o folder)"),
    ("restart_from", str, "continue from the last frame of this trajectory"),
    ("max_force", float, "guard: eV/Å (default 50)"),
    ("min_distance", float, "guard: Å (default 0.5)"),
    ("max_energy_drift", float, "guard (NVE): eV/atom (default 0.05)"),
    ("escape_distance", float, "guard (slabs): Å (default 5)"),
    ("guard_interval", int, "check distance/drift/escape every n steps (default 10)"),
    ("progress", "bool", "progress bar (default on)"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    from ase_surftune.cli._properties import register_command

    register_command(subparsers, "md", "molecular dynamics with stability guards", OPTIONS, run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.cli._common import load_yaml, write_json
    from ase_surftune.cli._properties import (
        make_calculator,
        merge_options,
        outputs,
        read_structure,
    )
    from ase_surftune.properties import run_md

    opts = merge_options(args, load_yaml(args.config), [o[0] for o in OPTIONS], "md")
    atoms = read_structure(args.structure, args.index)
    out = outputs(args, args.structure)
    opts.setdefault("trajectory", str(out.path("md", ".extxyz")))
    opts.setdefault("logfile", str(out.path("md", ".csv")))
    calc = make_calculator(args)
    res = run_md(atoms, calc, plot=out.path("md", ".png"), **opts)
    path = write_json(res.to_dict(), out.json("md"))
    if res.completed:
        print(f"MD done: {res.steps_done} steps, <T> = {res.mean_temperature:.1f} K; {path}")
        return 0
    print(f"MD STOPPED after {res.steps_done} steps: {res.stop_reason}; {path}")
    return 1
