"""Multi-head fine-tuning benchmarks: epoch time (issue 4) and forgetting (issue 12).

``--forgetting``: does the foundation head keep its physics while the new head learns?
Bundled CHGNet gets a new head ``surf`` on EMT×1.3-labelled rattled Cu(111) 2×2×3 slabs
(6 train, 2 validate; 4 epochs, batch 2, Adam, no schedule unless ``--scheduler``),
with pseudo-label replay.
For each learning rate and replay setting it prints the foundation head's change in a,
B (EOS over ±6 % volume), γ(111) and γ(110) (unrelaxed 1×1×6 slabs at the head's own a)
against the original model, and the new head's validation force MAE before → after::

    .venv/bin/python benchmarks/bench_multihead.py --forgetting --seed 0 1 2 \
        --lr 3e-4 1e-3 --stress-weight 0 1000 3000 --eos-points 0 5 [--new-weight 0.3 1]

Timing mode (default):

Both runs use the same loop, data, batch size and seed; the multi-head run adds one
replay batch (same batch size, pseudo-labelled bulk cells) per optimiser step. The
expected overhead is the cost of that replay batch: we time it separately
(forward + backward of one replay batch on the foundation head) and compare.

    .venv/bin/python benchmarks/bench_multihead.py [--backend mace|chgnet] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")


def forgetting(args: argparse.Namespace) -> None:
    """Foundation-head property drift per (lr, replay setting); one row each."""
    import itertools
    import json

    from conftest import make_emt_slabs
    from test_multihead import emt_label

    from ase_surftune.evaluation.forgetting import element_properties
    from ase_surftune.models.backends import load_model
    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.training import finetune
    from ase_surftune.training.forgetting import ForgettingOptions

    opts = ForgettingOptions(facets=["111", "110"], vacancy=False)
    p0 = element_properties(SurfTuneCalculator(load_model("chgnet")), "Cu", opts)
    print("original CHGNet Cu: " + ", ".join(f"{k} {v:.4g}" for k, v in p0.items()))
    slabs = emt_label(make_emt_slabs(8, symbols=("Cu",), seed=3), scale=1.3)
    keys = ("a", "B_GPa", "gamma_111", "gamma_110")
    print("| seed | lr | stress w | EOS pts | new w | pl-new | " + " | ".join(keys)
          + " | new head valid F MAE (eV/Å) | epoch |")
    rows = []
    for seed, lr, sw, eos, nw, pln in itertools.product(args.seed, args.lr, args.stress_weight,
                                                       args.eos_points, args.new_weight,
                                                       args.pseudolabel_new):
        so = {"new_head": "surf", "replay_energy_weight": 100.0, "replay_stress_weight": sw,
              "replay_new_weight": nw,
              "replay": {"n": 6, "batch_size": 12, "eos_points": eos,
                         "pseudolabel_new": bool(pln)}}
        res = finetune({"model": "chgnet", "strategy": "multihead", "epochs": args.epochs,
                        "batch_size": 2, "optimizer": {"lr": lr}, "seed": seed,
                        "scheduler": {"name": args.scheduler},
                        "patience": None, "strategy_options": so,
                        "forgetting": {"enabled": False}, "progress": False, "plot": False,
                        "output_dir": tempfile.mkdtemp()}, train=slabs[:6], valid=slabs[6:])
        p = element_properties(SurfTuneCalculator(res.load_bundle(), head="foundation"),
                               "Cu", opts)
        ch = {k: 100 * (p[k] / p0[k] - 1) for k in keys}
        m = res.metrics
        f0, f1 = m["zero_shot"]["valid"]["forces_mae"], m["finetuned"]["valid"]["forces_mae"]
        rows.append({"seed": seed, "lr": lr, "stress_weight": sw, "eos_points": eos, "new_weight": nw,
                     "pseudolabel_new": bool(pln), "change_percent": ch,
                     "valid_forces_mae": [f0, f1],
                     "epoch_s": float(np.median([r["epoch_time_s"] for r in res.history]))})
        print(f"| {seed} | {lr:g} | {sw:g} | {eos} | {nw:g} | {'on' if pln else 'off'} | "
              + " | ".join(f"{ch[k]:+.1f} %" for k in keys) + f" | {f0:.3f} → {f1:.3f} | {rows[-1]['epoch_s']:.1f} s |",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--forgetting", action="store_true",
                    help="foundation-head property drift instead of epoch time")
    ap.add_argument("--seed", type=int, nargs="+", default=[0],
                    help="training seeds (replay selection, batches, shuffling)")
    ap.add_argument("--lr", type=float, nargs="+", default=[3e-4, 1e-3])
    ap.add_argument("--stress-weight", type=float, nargs="+", default=[0.0, 3000.0],
                    help="replay_stress_weight values (per (eV/Å³)²)")
    ap.add_argument("--eos-points", type=int, nargs="+", default=[0])
    ap.add_argument("--new-weight", type=float, nargs="+", default=[1.0])
    ap.add_argument("--pseudolabel-new", type=int, nargs="+", default=[1])
    ap.add_argument("--scheduler", default="none", choices=["none", "cosine"])
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--backend", default="mace", choices=["mace", "chgnet"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.forgetting:
        if args.epochs == 3 and "--epochs" not in sys.argv:
            args.epochs = 4
        return forgetting(args)

    from conftest import make_emt_slabs

    from ase_surftune.models.backends.mace_builders import build_mace
    from ase_surftune.training import finetune
    from ase_surftune.training.config import LossConfig
    from ase_surftune.training.loop import _targets, compute_loss

    tmp = Path(tempfile.mkdtemp())
    if args.backend == "mace":
        from ase_surftune.models.backends.mace import MACEAdapter
        from ase_surftune.models.bundle import Bundle

        model_path = Bundle(MACEAdapter(build_mace(["Cu", "Au"], channels=32, max_L=1,
                                                   r_max=5.0))).save(tmp / "small.stbundle")
        spec = f"mace:{model_path}"
    else:
        spec = "chgnet"
    slabs = make_emt_slabs(args.n_train + 4, size=(2, 2, 3))
    common = {"model": spec, "epochs": args.epochs, "batch_size": args.batch_size,
              "patience": None, "progress": False, "plot": False,
              "scheduler": {"name": "none"}, "forgetting": {"enabled": False}}
    rows = {}
    for strat, opts in (("full", {}),
                        ("multihead", {"new_head": "surf",
                                       "replay": {"n": 32, "selection": "random"}})):
        t0 = time.perf_counter()
        res = finetune({**common, "strategy": strat, "strategy_options": opts,
                        "output_dir": str(tmp / strat)},
                       train=slabs[:args.n_train], valid=slabs[args.n_train:])
        ep = [r["epoch_time_s"] for r in res.history]
        rows[strat] = {"epoch_s": float(np.median(ep)), "total_s": time.perf_counter() - t0,
                       "steps_per_epoch": res.history[0]["step"]}
    # cost of the replay batches alone (forward + backward, foundation head)
    from ase_surftune.models.backends import load_model
    from ase_surftune.training.api import featurize_samples
    from ase_surftune.training.replay import ReplayOptions, build_replay

    ad = load_model(spec).adapter
    reps = build_replay(ad, ["Cu", "Au"], ReplayOptions(n=32, selection="random"))
    samples = featurize_samples(ad, reps)
    steps = rows["full"]["steps_per_epoch"]
    times = []
    for k in range(steps):
        chunk = [samples[(k * args.batch_size + i) % len(samples)] for i in range(args.batch_size)]
        t0 = time.perf_counter()
        out = ad.forward([s.graph for s in chunk], ad.heads[0], training=True)
        loss = compute_loss(out, _targets(chunk, ad.dtype, ad.device), LossConfig())
        loss.backward()
        times.append(time.perf_counter() - t0)
    replay_epoch = float(np.sum(times))
    over = rows["multihead"]["epoch_s"] - rows["full"]["epoch_s"]
    print(f"backend {args.backend}, {args.n_train} slabs (12 atoms), batch {args.batch_size}, "
          f"{steps} steps/epoch, {args.threads} thread(s)")
    print(f"single-head (full) epoch: {rows['full']['epoch_s']:.3f} s")
    print(f"multi-head epoch:         {rows['multihead']['epoch_s']:.3f} s "
          f"(overhead {over:+.3f} s, {100 * over / rows['full']['epoch_s']:+.0f} %)")
    print(f"replay batches alone:     {replay_epoch:.3f} s per epoch "
          f"(overhead / replay cost = {over / replay_epoch:.2f})")


if __name__ == "__main__":
    main()
