"""Throughput vs batch size, and where the time goes (graph building, forward, I/O).

    .venv/bin/python benchmarks/bench_scaling.py [--oc20 ../shared/data/oc20-debug]

Measured side by side in one run on this machine:
1. structures/s of ``predict`` for batch sizes 1, 4, 16, 64 and ``"auto"`` (CHGNet and a
   MACE-MP-small-sized model), on 40-atom Cu/Au slabs;
2. the share of graph building (``featurize``) in a batched predict;
3. if OC20 trajectories are given, frames/s of reading them with ase.io.

The figures feed docs/scaling.md.
"""

from __future__ import annotations

import argparse
import glob
import time

import numpy as np
import torch
from ase.build import fcc111

torch.set_num_threads(2)


def structures(n: int) -> list:
    out = []
    for i in range(n):
        a = fcc111("Cu", (4, 2, 5), vacuum=8.0)
        rng = np.random.default_rng(i)
        a.symbols[rng.choice(len(a), 6, replace=False)] = "Au"
        a.rattle(0.04, seed=i)
        out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--oc20", default=None, help="folder with OC20 .traj files (optional)")
    args = ap.parse_args()

    from ase_surftune.models.backends.chgnet import CHGNetAdapter
    from ase_surftune.models.backends.mace import MACEAdapter, import_mace

    import_mace()  # before e3nn; keeps torch's safe load default
    from ase_surftune.models.backends.mace_builders import build_mace

    structs = structures(args.n)
    adapters = {
        "CHGNet": CHGNetAdapter.load(),
        "MACE (small-size)": MACEAdapter(build_mace(["Cu", "Au"], channels=128, max_L=0,
                                                    r_max=6.0, correlation=3, max_ell=3,
                                                    dtype=torch.float32)),
    }
    print(f"{args.n} structures of {len(structs[0])} atoms, torch threads = "
          f"{torch.get_num_threads()}")
    for name, ad in adapters.items():
        ad.predict(structs[:2])
        base = None
        for bs in (1, 4, 16, 64, "auto"):
            t = time.perf_counter()
            ad.predict(structs, batch_size=bs)
            dt = time.perf_counter() - t
            base = base or dt
            print(f"{name:18s} batch {str(bs):>4s}: {args.n / dt:7.2f} structures/s "
                  f"(time ratio vs batch 1: {dt / base:5.2f})", flush=True)
        t = time.perf_counter()
        graphs = [ad.featurize(a) for a in structs]
        t_feat = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(0, len(graphs), 16):
            ad.forward(graphs[i:i + 16])
        t_fwd = time.perf_counter() - t
        print(f"{name:18s} graph building {t_feat:6.2f} s vs forward+forces {t_fwd:6.2f} s "
              f"-> graph share {t_feat / (t_feat + t_fwd):5.1%}", flush=True)

    if args.oc20:
        from ase.io import read

        files = sorted(glob.glob(f"{args.oc20}/*.traj"))
        t = time.perf_counter()
        n = sum(len(read(f, ":")) for f in files)
        dt = time.perf_counter() - t
        print(f"ase.io read of {len(files)} OC20 trajectories: {n} frames in {dt:.2f} s "
              f"-> {n / dt:.0f} frames/s")


if __name__ == "__main__":
    main()
