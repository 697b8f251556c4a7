"""``surftune learning-curve config.yaml``: test error vs number of training structures."""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import add_trust_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "learning-curve", help="test force MAE and softening scale vs N, per strategy",
        description="Fine-tune with N = 1, 2, 5, 10, ... training structures for each "
                    "strategy (fixed test set, seeds) and plot test force MAE and softening "
                    "scale against N. Resumable: rerunning continues where it stopped. See "
                    "examples/learning_curve_chgnet.yaml.")
    p.add_argument("config", help="YAML config")
    p.add_argument("-o", "--output-dir", default=None, help="override output_dir")
    p.add_argument("--n-train", default=None, help="override n_train, e.g. 1,2,5,10")
    p.add_argument("--strategies", default=None, help="override strategies, e.g. linear,full")
    p.add_argument("--restart", action="store_true",
                   help="start over instead of resuming (old results kept as .old)")
    p.add_argument("--executor", default=None,
                   help="process[:N] or dask[:N] to run the work in parallel (default: in "
                        "process); see ase_surftune.core.parallel")
    p.add_argument("--max-runs", type=int, default=None,
                   help="stop after this many new fine-tuning runs")
    p.add_argument("--max-force", type=float, default=None, metavar="EV_PER_A",
                   help="override max_force: drop pool/valid/test frames whose largest "
                        "reference atomic force exceeds this (eV/Å); each one is named")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_trust_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.core.errors import ConfigError
    from ase_surftune.evaluation.learning_curve import learning_curve

    overrides: dict = {"output_dir": args.output_dir, "max_force": args.max_force}
    try:
        if args.n_train:
            overrides["n_train"] = [int(x) for x in args.n_train.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--n-train must be comma-separated integers, got "
                          f"{args.n_train!r}") from None
    if args.strategies:
        overrides["strategies"] = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.no_progress:
        overrides["progress"] = False
    res = learning_curve(args.config, resume=not args.restart, max_runs=args.max_runs,
                         executor=args.executor,
                         **overrides)
    print(res.to_markdown())
    state = "complete" if res.complete else "PARTIAL (rerun to continue)"
    print(f"\n{state}; results: {res.output_dir}/learning_curve.json, learning_curve.csv, "
          f"learning_curve.png")
    return 0
