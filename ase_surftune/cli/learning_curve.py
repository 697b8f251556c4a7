"""``surftune learning-curve config.yaml``: test error vs number of training structures."""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import (
    add_command,
    add_executor_arg,
    add_setting_options,
    defer,
    given,
)

#: LearningCurveConfig fields a flag overrides (help, types, defaults from the model)
OVERRIDES = ("output_dir", "n_train", "strategies", "max_force", "progress")

HELP = "test force MAE and softening scale vs N, per strategy"
DESCRIPTION = """\
Fine-tune with N = 1, 2, 5, 10, ... training structures for each strategy (fixed test
set, seeds) and plot test force MAE and softening scale against N. Resumable: rerunning
continues where it stopped. See examples/learning_curve_chgnet.yaml; the options below
override the config.YAML config"""


def _settings_options(p: argparse.ArgumentParser) -> None:
    from ase_surftune.evaluation.learning_curve_config import LearningCurveConfig

    add_setting_options(p, LearningCurveConfig, OVERRIDES, short={"output_dir": "-o"},
                        as_text=("n_train", "strategies"))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "learning-curve", HELP, DESCRIPTION, config="YAML config")
    defer(p, _settings_options)  # imported when the command runs or prints its help
    p.add_argument("--restart", action="store_true",
                   help="start over instead of resuming (old results kept as .old)")
    add_executor_arg(p)
    p.add_argument("--max-runs", type=int, default=None,
                   help="stop after this many new fine-tuning runs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.evaluation.learning_curve import learning_curve

    res = learning_curve(args.config, resume=not args.restart, max_runs=args.max_runs,
                         executor=args.executor, **given(args, OVERRIDES))
    print(res.to_markdown())
    state = "complete" if res.complete else "PARTIAL (rerun to continue)"
    print(f"\n{state}; results: {res.output_dir}/learning_curve.json, learning_curve.csv, "
          f"learning_curve.png")
    return 0
