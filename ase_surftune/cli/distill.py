"""``surftune distill config.yaml``: distil a fine-tuned bundle into a small, fast MACE."""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import add_command, add_setting_options, defer, given

#: DistillConfig keys a flag overrides: type, default and help come from the config model
OVERRIDES = ("teacher", "head", "seed", "output_dir", "progress")

HELP = "train a small fast MACE student on a fine-tuned teacher's labels"
DESCRIPTION = """\
Sample configurations with the teacher (MD, rattled, strained), label them with it and
train a small MACE student bundle. Settings live in the YAML config (see
examples/distill_*.yaml)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "distill", HELP, DESCRIPTION)
    p.add_argument("--check", action="store_true", help="only validate the config and exit")
    defer(p, _config_options)  # imported when the command runs or prints its help
    p.set_defaults(func=run)


def _config_options(p: argparse.ArgumentParser) -> None:
    from ase_surftune.training.distill import DistillConfig

    add_setting_options(p, DistillConfig, OVERRIDES)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.evaluation.distill import distill, load_distill_config

    cfg = load_distill_config(args.config, **given(args, OVERRIDES))
    if args.check:
        print(f"config OK: teacher {cfg.teacher}, {len(cfg.seeds)} seed file(s)")
        return 0
    res = distill(cfg)
    r = res.report
    e = r["student_vs_teacher"] or {}
    print(f"student vs teacher (held-out): forces MAE {e.get('forces_mae', float('nan')):.4f} "
          f"eV/Å, energy MAE {1000 * e.get('energy_mae_per_atom', float('nan')):.2f} meV/atom")
    sp = r["speedup"]
    print(f"speed-up per force call: {sp['speedup']:.1f}x ({1000 * sp['teacher_s_per_call']:.1f}"
          f" -> {1000 * sp['student_s_per_call']:.1f} ms, {sp['structure']})")
    for k, v in r["properties"].items():
        print(f"{k}: teacher {v['teacher']:.4g}, student {v['student']:.4g} "
              f"({v['difference_percent']:+.1f} %)")
    print(f"student bundle: {res.bundle_path}")
    return 0
