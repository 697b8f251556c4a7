"""``surftune evaluate``: energy/force/stress errors and softening scales of models on data."""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import add_trust_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="errors and softening scale of models on labelled data",
        description="Energy per atom (absolute, relative within each composition, "
                    "formation-like slab − bulk), force and stress MAE/RMSE and the "
                    "softening scale s = ΣF_ref·F_model/ΣF_ref² (all components, a "
                    "0.05–10 eV/Å band of |F_ref|, per-frame median, high-force subset; "
                    "'n/a' without enough force signal) overall and per config_type group "
                    "(else per source file). Energy references never come from the scored "
                    "frames unless --align self is asked for. Writes evaluation.json/.csv/.md "
                    "and parity plots; prints the table.")
    p.add_argument("data", nargs="+", help="labelled structure file(s) (extxyz, traj, ...)")
    p.add_argument("-m", "--model", action="append", default=None, metavar="SPEC",
                   help="model spec, repeatable: chgnet, mace:/x.model, m3gnet:/folder, "
                        "run/model.stbundle, run/model.stbundle@HEAD (one head), or a "
                        "reference such as emt "
                        "(default: chgnet)")
    p.add_argument("--align", choices=("stored", "none", "self"), default="stored",
                   help="energy reference: 'stored' (default) the model's own calibration "
                        "(a bundle's shifts fitted on its training data); 'none' raw "
                        "energies; 'self' fit shifts on the scored frames (opt-in, labelled "
                        "SELF-ALIGNED: not an independent energy error)")
    p.add_argument("--align-on", default=None, metavar="FILE", nargs="+",
                   help="fit per-element energy shifts on these labelled frames (not the "
                        "scored ones) and apply them to the scored frames")
    p.add_argument("--energy-key", default=None,
                   help="atoms.info key of the reference energy (eV)")
    p.add_argument("--forces-key", default=None,
                   help="atoms.arrays key of the reference forces (eV/Å)")
    p.add_argument("--stress-key", default=None,
                   help="atoms.info key of the reference stress (eV/Å³)")
    p.add_argument("--max-force", type=float, default=None, metavar="EV_PER_A",
                   help="drop (or with --flag-only, flag) frames whose largest reference "
                        "atomic force exceeds this (eV/Å); every such frame is named")
    p.add_argument("--flag-only", action="store_true",
                   help="with --max-force: keep the frames but name them")
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
                        "process); see ase_surftune.core.parallel")
    p.add_argument("-o", "--output", default="evaluate_out",
                   help="output folder (default: evaluate_out)")
    add_trust_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.evaluation import evaluate

    report = evaluate(args.model or ["chgnet"], args.data, align=args.align,
                      align_on=args.align_on, energy_key=args.energy_key,
                      forces_key=args.forces_key, stress_key=args.stress_key,
                      max_force=args.max_force,
                      max_force_mode="flag" if args.flag_only else "drop",
                      executor=args.executor,
                      group_key=args.group_key, high_force_quantile=args.high_force_quantile,
                      exclude_fixed_atoms=args.exclude_fixed_atoms, stress=not args.no_stress,
                      device=args.device, progress=not args.no_progress)
    paths = report.write(args.output, plots=not args.no_plots)
    print(report.to_markdown())
    print(f"\nresults: {paths['json']}, {paths['csv']}, {paths['markdown']}")
    return 0
