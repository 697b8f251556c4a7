"""``surftune md``: molecular dynamics with stability guards."""

from __future__ import annotations

import argparse


def options() -> list:
    """The command's workflow options, generated from its settings model (imported
    on first use so that ``surftune --help`` stays fast)."""
    from ase_surftune.cli._options import option_specs
    from ase_surftune.properties.settings import MDSettings

    return option_specs(MDSettings) + [
        ("trajectory", str, "trajectory path, .traj or .extxyz (default "
                            "<prefix>_md.extxyz in the -o folder)"),
        ("restart_from", str, "continue from the last frame of this trajectory"),
    ]


def register(subparsers: argparse._SubParsersAction) -> None:
    from ase_surftune.cli._properties import register_command

    register_command(subparsers, "md", "molecular dynamics with stability guards", options, run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.cli._common import write_json
    from ase_surftune.cli._properties import command_inputs
    from ase_surftune.properties import run_md

    opts, atoms, out, calc = command_inputs(args, options(), "md")
    opts.setdefault("trajectory", str(out.path("md", ".extxyz")))
    opts.setdefault("logfile", str(out.path("md", ".csv")))
    res = run_md(atoms, calc, plot=out.path("md", ".png"), **opts)
    path = write_json(res.to_dict(), out.json("md"))
    if res.completed:
        print(f"MD done: {res.steps_done} steps, <T> = {res.mean_temperature:.1f} K; {path}")
        return 0
    print(f"MD STOPPED after {res.steps_done} steps: {res.stop_reason}; {path}")
    return 1
