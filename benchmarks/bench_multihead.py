"""Multi-head vs single-head epoch time on the same data (issue 4).

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="mace", choices=["mace", "chgnet"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

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
