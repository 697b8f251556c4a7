"""``surftune evaluate``: energy/force/stress errors and softening scales of models on data."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="errors and softening scale of models on labelled data",
        description="Energy per atom, force and stress MAE/RMSE and the softening scale "
                    "s = ΣF_ref·F_model/ΣF_ref² (overall, per config_type group, high-force "
                    "subset) of one or more models after energy-reference alignment. "
                    "Writes evaluation.json/.csv/.md and parity plots; prints the table.")
    p.add_argument("data", nargs="+", help="labelled structure file(s) (extxyz, traj, ...)")
    p.add_argument("-m", "--model", action="append", default=None, metavar="SPEC",
                   help="model spec, repeatable: chgnet, mace:/x.model, m3gnet:/folder, "
                        "run/model.stbundle, run/model.stbundle@HEAD (one head), or a "
                        "reference such as emt "
                        "(default: chgnet)")
    p.add_argument("--align", choices=("fit", "none"), default="fit",
                   help="fit per-element energy shifts on the data first (default) or "
                        "compare raw energies")
    p.add_argument("--group-key", default="config_type", help="atoms.info key of the group")
    p.add_argument("--high-force-quantile", type=float, default=0.9,
                   help="quantile of |F_ref| defining the high-force subset (default 0.9)")
    p.add_argument("--exclude-fixed-atoms", action="store_true",
                   help="leave FixAtoms atoms out of force statistics")
    p.add_argument("--no-stress", action="store_true", help="do not compare stresses")
    p.add_argument("--no-plots", action="store_true", help="no parity plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--executor", default=None,
                   help="process[:N] or dask[:N] to run the work in parallel (default: in "
                        "process); see ase_surftune.parallel")
    p.add_argument("-o", "--output", default="evaluate_out",
                   help="output folder (default: evaluate_out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.evaluation import evaluate

    report = evaluate(args.model or ["chgnet"], args.data, align=args.align,
                      executor=args.executor,
                      group_key=args.group_key, high_force_quantile=args.high_force_quantile,
                      exclude_fixed_atoms=args.exclude_fixed_atoms, stress=not args.no_stress,
                      device=args.device, progress=not args.no_progress)
    paths = report.write(args.output, plots=not args.no_plots)
    print(report.to_markdown())
    print(f"\nresults: {paths['json']}, {paths['csv']}, {paths['markdown']}")
    return 0
