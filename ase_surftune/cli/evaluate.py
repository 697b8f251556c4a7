"""``surftune evaluate``: energy/force/stress errors and softening scales of models on data."""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import add_setting_options, add_sweep_args, defer, given

#: EvaluationSettings fields, one option each (help, types, defaults from the model)
SETTINGS = ("align", "energy_key", "forces_key", "stress_key", "max_force", "max_force_mode",
            "group_key", "high_force_quantile", "exclude_fixed_atoms", "stress")


def _settings_options(p: argparse.ArgumentParser) -> None:
    from ase_surftune.evaluation.errors import EvaluationSettings

    add_setting_options(p, EvaluationSettings, SETTINGS)


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
                        "reference such as emt (default: chgnet)")
    p.add_argument("--align-on", default=None, metavar="FILE", nargs="+",
                   help="fit per-element energy shifts on these labelled frames (not the "
                        "scored ones) and apply them to the scored frames")
    defer(p, _settings_options)  # imported when the command runs or prints its help
    p.add_argument("--flag-only", dest="max_force_mode", action="store_const", const="flag",
                   help="short for --max-force-mode flag: keep frames above --max-force "
                        "but name them")
    p.add_argument("--no-plots", action="store_true", help="no parity plots")
    add_sweep_args(p, "evaluate_out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.evaluation import evaluate

    report = evaluate(args.model or ["chgnet"], args.data, align_on=args.align_on,
                      executor=args.executor, device=args.device,
                      progress=not args.no_progress, **given(args, SETTINGS))
    paths = report.write(args.output, plots=not args.no_plots)
    print(report.to_markdown())
    print(f"\nresults: {paths['json']}, {paths['csv']}, {paths['markdown']}")
    return 0
