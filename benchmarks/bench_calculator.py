"""Calculator overhead and batched-predict speed-up, measured side by side in one run.

    .venv/bin/python benchmarks/bench_calculator.py [--repeats 20]

1. ``SurfTuneCalculator`` vs the bare backend calculators on the same weights:
   CHGNet 0.3.0 vs ``CHGNetCalculator(task="ef")``, and a MACE model of MACE-MP-0
   "small" size (128x0e, 2 interactions; MACE-MP weights cannot be downloaded here,
   so it is built locally with random weights — the cost per call is the same)
   vs ``MACECalculator`` loading the same file. Target ratio ≤ 1.02.
2. ``calc.predict`` over 64 structures vs a loop of 64 single calls. Target ≤ 0.33.

Structures: 45-atom (3x3x5) and 96-atom (4x4x6) Cu(111) slabs, rattled so that every
call recomputes. Each timing is the median of interleaved repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ase.build import fcc111

torch.set_num_threads(2)


def slabs(size, n, seed=0):
    base = fcc111("Cu", size, vacuum=8.0)
    out = []
    for i in range(n):
        a = base.copy()
        a.rattle(0.03, seed=seed + i)
        out.append(a)
    return out


def time_calls(calc, structures):
    t = time.perf_counter()
    for a in structures:
        a.calc = calc
        a.get_forces()
        a.calc = None
    return (time.perf_counter() - t) / len(structures)


def paired(calc_a, calc_b, structures, repeats):
    """Median per-call time of two calculators, interleaved to share machine noise."""
    ta, tb = [], []
    time_calls(calc_a, structures[:2]), time_calls(calc_b, structures[:2])  # warm-up
    for _ in range(repeats):
        ta.append(time_calls(calc_a, structures))
        tb.append(time_calls(calc_b, structures))
    return statistics.median(ta), statistics.median(tb)


def _print_row(row) -> None:
    case, a, b, r, tgt = row
    flag = "ok" if r <= tgt else "MISS"
    print(f"{case:55s} ours {a:9.4f} s  baseline {b:9.4f} s  ratio {r:6.3f} "
          f"(target <= {tgt}) {flag}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=5, help="structures per timing")
    ap.add_argument("--n-predict", type=int, default=64, help="structures for predict")
    ap.add_argument("--skip-overhead", action="store_true", help="only the predict part")
    ap.add_argument("--predict-sizes", default="45,96", help="slab sizes for predict")
    args = ap.parse_args()

    from ase_surftune.models.backends.mace import import_mace

    import_mace()  # before e3nn; keeps torch's safe load default
    from chgnet.model.dynamics import CHGNetCalculator
    from mace.calculators import MACECalculator

    from ase_surftune import SurfTuneCalculator
    from ase_surftune.models.backends.chgnet import CHGNetAdapter
    from ase_surftune.models.backends.mace_builders import build_mace
    from ase_surftune.models.bundle import Bundle

    rows = []
    chg = CHGNetAdapter.load()
    ours_chg = SurfTuneCalculator(Bundle(chg))
    bare_chg = CHGNetCalculator(model=chg.chgnet, task="ef")

    tmp = Path(tempfile.mkdtemp())
    mace_file = tmp / "mace_small_like.model"
    torch.save(build_mace(["Cu"], channels=128, max_L=0, r_max=6.0, correlation=3,
                          max_ell=3, num_bessel=10, dtype=torch.float32), mace_file)
    ours_mace = SurfTuneCalculator(f"mace:{mace_file}", trust=True)  # our own fresh file
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # mace's calculator unpickles it
    bare_mace = MACECalculator(model_paths=str(mace_file), device="cpu", default_dtype="float32")

    sizes = [((3, 3, 5), "45-atom"), ((4, 4, 6), "96-atom")]
    for size, label in ([] if args.skip_overhead else sizes):
        structs = slabs(size, args.calls)
        for name, ours, bare in [("CHGNet", ours_chg, bare_chg),
                                 ("MACE (small-size)", ours_mace, bare_mace)]:
            if name == "CHGNet":  # fresh: CHGNetCalculator fails on a new atom count
                bare = CHGNetCalculator(model=chg.chgnet, task="ef")
            t_ours, t_bare = paired(ours, bare, structs, args.repeats)
            rows.append((f"{name} {label} slab, per call", t_ours, t_bare, t_ours / t_bare, 1.02))
            _print_row(rows[-1])

    wanted = {s.strip() for s in args.predict_sizes.split(",")}
    for size, label in [(sz, lb) for sz, lb in sizes if lb.split("-")[0] in wanted]:
        structs = slabs(size, args.n_predict, seed=100)
        for name, calc in [("CHGNet", ours_chg), ("MACE (small-size)", ours_mace)]:
            # warm-up of every batch shape timed below: the first passes at a new batch
            # size are several times slower (allocator growth), and the loop's size-1
            # passes were already warm from the overhead section
            for bs in (1, 16, "auto"):
                calc.predict(structs[:16], batch_size=bs)
            loop: list[float] = []
            batched: dict[object, list[float]] = {16: [], "auto": []}
            for _ in range(max(1, args.repeats // 4)):
                t = time.perf_counter()
                for a in structs:
                    calc.predict([a], batch_size=1)
                loop.append(time.perf_counter() - t)
                for bs, times in batched.items():
                    t = time.perf_counter()
                    calc.predict(structs, batch_size=bs)
                    times.append(time.perf_counter() - t)
            tl = statistics.median(loop)
            for bs, times in batched.items():
                tb = statistics.median(times)
                rows.append((f"{name} predict {len(structs)}x {label} (batch {bs}) vs loop",
                             tb, tl, tb / tl, 0.33))
                _print_row(rows[-1])

    print("\nsummary")
    for row in rows:
        _print_row(row)


if __name__ == "__main__":
    main()
