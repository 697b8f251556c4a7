"""``surftune label``: label structures with a reference calculator (or a model)."""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import add_trust_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="label structures with EMT/GPAW/a model, writing as it "
                       "goes; an interrupted run resumes")
    p.add_argument("structures", nargs="+", help="structure files (any ase.io format)")
    p.add_argument("-r", "--reference", default="emt",
                   help="calculator spec: emt, gpaw or a model spec (default emt)")
    p.add_argument("-o", "--output", required=True, help="extxyz file to write")
    p.add_argument("--index", default=":", help="frames to read from each file (default :)")
    p.add_argument("--restart", action="store_true",
                   help="start afresh instead of resuming; the old file is kept as "
                        "OUTPUT.old-<time>")
    p.add_argument("--skip-failures", action="store_true",
                   help="skip structures whose calculation fails (reported) instead of stopping")
    p.add_argument("--executor", default=None,
                   help="process[:N] or dask[:N] to label in parallel (default: in process)")
    p.add_argument("--no-progress", action="store_true")
    add_trust_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.data import DataReport, label, read_structures

    configs = []
    for f in args.structures:
        configs.extend(read_structures(f, index=args.index))
    report = DataReport()
    done = label(configs, args.reference, args.output, resume=not args.restart,
                 progress=not args.no_progress,
                 on_error="skip" if args.skip_failures else "raise", report=report,
                 executor=args.executor)
    print(f"labelled {len(done)} of {len(configs)} structures with {args.reference} "
          f"-> {args.output}")
    for s in report.skipped:
        print(f"  skipped {s.source}: {s.reason}")
    return 0
