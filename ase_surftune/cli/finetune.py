"""``surftune finetune config.yaml``: fine-tune a model as described by a YAML config."""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import add_command, add_setting_options, defer, given

#: FinetuneConfig keys a flag overrides: type, default and help come from the config model
OVERRIDES = ("model", "strategy", "head", "epochs", "min_steps", "batch_size", "seed",
             "device", "output_dir", "max_force", "max_force_mode", "overwrite", "progress")

HELP = "fine-tune CHGNet/MACE (full, frozen, scratch, linear)"
DESCRIPTION = """\
Fine-tune a universal potential on labelled structures. All settings live in the YAML
config (see examples/finetune_*.yaml); the options below override it."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "finetune", HELP, DESCRIPTION)
    defer(p, _config_options)  # imported when the command runs or prints its help
    p.add_argument("--resume", action="store_true",
                   help="continue the run in output_dir from its checkpoint (an error if "
                        "there is none)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel (DDP) training; launch under torchrun: "
                        "torchrun --standalone --nproc_per_node=N -m ase_surftune finetune "
                        "CONFIG.yaml --distributed")
    p.add_argument("--check", action="store_true",
                   help="only validate the config and exit")
    p.set_defaults(func=run)


def _config_options(p: argparse.ArgumentParser) -> None:
    from ase_surftune.training.config import FinetuneConfig

    add_setting_options(p, FinetuneConfig, OVERRIDES)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.training import finetune, load_config

    overrides = given(args, OVERRIDES)
    if args.resume:
        overrides["resume"] = True
    cfg = load_config(args.config, **overrides)
    if args.check:
        print(f"config OK: strategy {cfg.strategy}, model {cfg.model} ({cfg.backend})")
        return 0
    res = finetune(cfg, distributed=args.distributed)
    if args.distributed:
        import torch.distributed as tdist

        rank = tdist.get_rank() if tdist.is_initialized() else 0
        from ase_surftune.training.distributed import shutdown_distributed

        shutdown_distributed()
        if rank != 0:
            return 0
    m = res.metrics
    print(f"strategy {m['strategy']} on {m['base_model']} (head {m['head']}): "
          f"{m['parameters']['trainable']} trainable / {m['parameters']['frozen']} frozen "
          f"parameters")
    if m.get("reference_energies"):
        shifts = ", ".join(f"{k} {v:+.4f}" for k, v in m["reference_energies"].items())
        print(f"reference-energy shifts (eV/atom): {shifts}")
    if (m.get("reference_energies_fit") or {}).get("reason"):
        print(f"WARNING: reference-energy alignment: {m['reference_energies_fit']['reason']}")
    for split in ("valid", "test"):
        if split in m["finetuned"]:
            z, f = m["zero_shot"][split], m["finetuned"][split]
            print(f"{split}: forces MAE {z['forces_mae']:.4f} -> {f['forces_mae']:.4f} eV/Å, "
                  f"energy MAE {1000 * z['energy_mae_per_atom']:.2f} -> "
                  f"{1000 * f['energy_mae_per_atom']:.2f} meV/atom (zero-shot -> fine-tuned)")
    shown: set[str] = set()  # warnings the correction's summary already printed
    if m.get("linear_correction") or m.get("env_correction"):
        from ase_surftune.models.correction_kinds import correction_from_dict

        corr = correction_from_dict(m.get("linear_correction") or m["env_correction"])
        print(corr.summary())
        shown = set((getattr(corr, "info", None) or {}).get("warnings", []))
    for fr in (m.get("max_force") or {}).get("frames", []):
        print(f"max_force: {m['max_force']['mode']} {fr['set']} frame {fr['source']} "
              f"(max |F_ref| {fr['max_force']:.2f} eV/Å)")
    for w in m.get("warnings", []):
        if w not in shown:
            print(f"WARNING: {w}")
    if m.get("forgetting") and cfg.forgetting.properties and cfg.forgetting.eos:
        from ase_surftune.evaluation.forgetting import report_run

        report_run(res)  # property level: a, B, γ of low-index facets, E_vac per head
    if m.get("forgetting"):
        print(f"forgetting: {m['forgetting']['summary']}")
    print(f"best model: {res.bundle_path}")
    print(f"metrics: {res.output_dir / 'metrics.csv'}")
    return 0
