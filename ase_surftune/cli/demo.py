"""``surftune demo``: zero-shot CHGNet vs a reference, fine-tuning, before/after tables."""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import add_command

HELP = ("the main job: softening of CHGNet vs EMT (or GPAW), fine-tuning, "
        "before/after property table")
DESCRIPTION = """\
Label Cu slab/defect structures with the reference, measure zero-shot CHGNet (softening
scale, surface energies, vacancy barrier, phonons), apply linear, frozen and multi-head
fine-tuning and print the before/after table. Runs in minutes on 2 CPU cores with EMT."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "demo", HELP, DESCRIPTION, config=None)
    p.add_argument("--quick", action="store_true", help="reduced run (about a minute)")
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--reference", default="emt", choices=("emt", "gpaw"),
                   help="reference calculator (gpaw: real PBE, needs the [dft] extra)")
    p.add_argument("-m", "--model", default="chgnet", help="base model (default chgnet)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: fastest for the demo's small cells on "
                        "shared cores; 0 = torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.demo import run_demo

    run_demo(args.output, reference=args.reference, quick=args.quick, model=args.model,
             progress=not args.no_progress, num_threads=args.threads or None)
    return 0
