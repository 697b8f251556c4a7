"""M3GNet: calculator overhead vs matgl's ``PESCalculator`` and batched predict, one run.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_m3gnet.py [--repeats 5] [--threads 1]

Weights: the real M3GNet-MP-2021.2.8-PES from ``../shared/models/`` (or ``--model``).

1. ``SurfTuneCalculator("m3gnet:FOLDER")`` vs ``PESCalculator(stress_unit="eV/A3")``
   on the same weights, per ``get_forces`` call and per energy+forces+stress call.
   Slabs get ``pbc=True`` here so that both sides build the same graph (with ASE's
   default ``pbc=(T, T, F)`` matgl would compute a molecule, a different and wrong
   answer). Target ratio ≤ 1.0.
2. ``calc.predict`` over N slabs (batch "auto" and a fixed batch) vs a loop of N single
   calculator calls.

Each timing is the median of interleaved repeats on rattled Cu(111) slabs (every call
recomputes).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import fcc111

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "models" / \
    "M3GNet-MP-2021.2.8-PES"


def slabs(size, n, seed=0, pbc=True):
    base = fcc111("Cu", size, a=3.6, vacuum=8.0)
    base.pbc = pbc
    out = []
    for i in range(n):
        a = base.copy()
        a.rattle(0.03, seed=seed + i)
        out.append(a)
    return out


def time_calls(calc, structures, stress=False):
    t = time.perf_counter()
    for a in structures:
        a.calc = calc
        a.get_forces()
        if stress:
            a.get_stress()
        a.calc = None
    return (time.perf_counter() - t) / len(structures)


def paired(ours, base, structures, repeats, stress=False):
    time_calls(ours, structures[:1], stress)  # warm-up
    time_calls(base, structures[:1], stress)
    a, b = [], []
    for _ in range(repeats):
        a.append(time_calls(ours, structures, stress))
        b.append(time_calls(base, structures, stress))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT), help="matgl M3GNet folder")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=4, help="structures per timed loop")
    ap.add_argument("--predict-n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import matgl
    from matgl.ext.ase import PESCalculator

    from ase_surftune.models.calculator import SurfTuneCalculator

    ours = SurfTuneCalculator(f"m3gnet:{args.model}")
    base = PESCalculator(matgl.load_model(args.model), stress_unit="eV/A3")
    load = os.getloadavg()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, matgl {matgl.__version__}, "
          f"{args.threads} thread(s), load average {load[0]:.2f}")
    print("| case | ours (s) | PESCalculator (s) | ratio | target |")
    print("|---|---:|---:|---:|---|")
    for size in [(3, 3, 4), (4, 4, 6)]:
        structs = slabs(size, args.calls)
        # correctness guard: same numbers on the same graph
        a, b = structs[0].copy(), structs[0].copy()
        a.calc, b.calc = ours, base
        assert abs(a.get_potential_energy() - b.get_potential_energy()) < 1e-4
        for stress in (False, True):
            t_o, t_b = paired(ours, base, structs, args.repeats, stress)
            what = "E+F+S" if stress else "forces"
            r = t_o / t_b
            print(f"| {len(structs[0])}-atom slab, {what}, per call | {t_o:.4f} | {t_b:.4f} | "
                  f"{r:.2f} | ≤ 1.0 {'✓' if r <= 1.0 else '✗'} |")

    n = args.predict_n
    structs = slabs((3, 3, 4), n, seed=100, pbc=(True, True, False))
    ours.predict(structs[:2], batch_size=2)  # warm-up
    print(f"\n| predict {n} × {len(structs[0])}-atom slabs (pbc T,T,F) | time (s) | "
          f"structures/s | ratio vs loop |")
    print("|---|---:|---:|---:|")
    rows = {}
    for label, bs in [("loop of single calculator calls", None), ("batch 'auto'", "auto"),
                      ("batch 8", 8), ("batch 1", 1)]:
        ts = []
        for _ in range(max(2, args.repeats // 2)):
            t = time.perf_counter()
            if bs is None:
                time_calls(ours, structs)
            else:
                ours.predict(structs, batch_size=bs)
            ts.append(time.perf_counter() - t)
        rows[label] = statistics.median(ts)
    loop = rows["loop of single calculator calls"]
    for label, t in rows.items():
        print(f"| {label} | {t:.2f} | {n / t:.2f} | {t / loop:.2f} |")
    p = ours.predict(structs[:3], batch_size="auto")
    single = [ours.predict([s]).energy[0] for s in structs[:3]]
    print(f"\nbatched vs single energies: max |dE| = {np.max(np.abs(p.energy - single)):.2e} eV")


if __name__ == "__main__":
    main()
