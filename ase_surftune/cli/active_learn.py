"""``surftune active-learn CONFIG.yaml``: the fewest labels to converged target properties."""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import add_command, add_setting_options, defer, given

#: ActiveConfig fields a flag overrides (help, types, defaults from the model)
OVERRIDES = ("output_dir", "budget", "batch_size", "tolerance", "selection", "stationary_first",
             "stationary_energy_weight", "seed")

HELP = ("active learning: label the most informative structures until the "
        "target properties converge")
DESCRIPTION = """\
Explore with the model through the target properties' workflows, pick the structures a
bootstrap committee is least sure about (or random ones), label them with the reference,
fine-tune, re-measure; stop when every target changes by less than the tolerance or at
the label budget. A rerun resumes after the last finished step. Settings live in the
YAML config (examples/active_learn_cu.yaml); options override it."""


def _settings_options(p: argparse.ArgumentParser) -> None:
    from ase_surftune.active.config import ActiveConfig

    add_setting_options(p, ActiveConfig, OVERRIDES)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "active-learn", HELP, DESCRIPTION, trust=False)
    defer(p, _settings_options)  # imported when the command runs or prints its help
    p.add_argument("--overwrite", action="store_true",
                   help="move a previous run in output_dir aside and start afresh")
    p.add_argument("--check", action="store_true", help="only validate the config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.active import active_learn, load_active_config
    from ase_surftune.active.report import format_row

    overrides = given(args, OVERRIDES)
    if args.overwrite:
        overrides.update(overwrite=True, resume=False)
    cfg = load_active_config(args.config, **overrides)
    if args.check:
        print(f"config OK: targets {cfg.targets}, labeller {cfg.labeller}, model {cfg.model}, "
              f"budget {cfg.budget}, batch {cfg.batch_size}, selection {cfg.selection}")
        return 0
    res = active_learn(cfg)
    for row in res.rows:
        print(format_row(row, cfg.targets))
    print(f"status: {res.status} after {res.n_labels} label(s); final model: {res.model}")
    print(f"report: {res.output_dir / 'report.json'} (also report.csv, selected.csv, "
          f"progress.png, calibration.png)")
    return 0
