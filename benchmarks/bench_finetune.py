"""Fine-tuning engine benchmarks (issue 3).

    python benchmarks/bench_finetune.py chgnet-speed   # our loop vs chgnet's Trainer
    python benchmarks/bench_finetune.py mace-speed     # our loop vs mace_run_train
    python benchmarks/bench_finetune.py oc20 --data ../shared/data/oc20-debug

Speed: both contenders train the same model on the same EMT-labelled slabs with the same
batch size, validating and checkpointing every epoch. Each contender runs in its own
subprocess (so peak RSS is its own). The epoch time is the median time between the ends
of consecutive epochs after the first (our loop: after its metrics are written; chgnet's
Trainer: after its checkpoint; mace_run_train: the time stamps of its "Epoch N" log
lines), so start-up, data preparation and final evaluation are left out on both sides.
Medians over --repeats rounds, alternating which contender goes first.

CHGNet: chgnet ≥ 0.4's Trainer does not rebuild graphs every epoch (its StructureData
caches each converted graph with functools.cache), so both loops run the same CHGNet
forward and force double-backward on the same cached graphs; the worker measures the
Trainer's graph-building time (all of it in the first epoch) to show it.

OC20: zero-shot CHGNet vs the linear, frozen and full strategies on real RPBE DFT
trajectories: train on frames of some trajectories, report force MAE (free atoms,
eV/Å) on frames of *held-out* trajectories. The data are only read from --data.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def make_slabs(n: int, seed: int = 0, size=(2, 2, 4)):
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import make_emt_slabs

    return make_emt_slabs(n, seed=seed, size=size)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- workers


def mark_our_epochs() -> list[float]:
    """Record the time each epoch of our loop ends (after its checkpoint and metrics)."""
    import ase_surftune.training.callbacks as loop  # MetricsFileCallback calls it per epoch

    marks: list[float] = []
    write_metrics = loop.write_metrics

    def marked(*args, **kwargs):
        out = write_metrics(*args, **kwargs)
        marks.append(time.perf_counter())
        return out

    loop.write_metrics = marked
    return marks


def worker_chgnet_ours(args) -> dict:
    from ase_surftune.training import finetune

    marks = mark_our_epochs()
    slabs = make_slabs(args.n_train + args.n_valid)
    t0 = time.perf_counter()
    res = finetune({"model": "chgnet", "strategy": "full", "epochs": args.epochs,
                    "batch_size": args.batch_size, "output_dir": args.out, "progress": False,
                    "plot": False, "scheduler": {"name": "cosine"}, "patience": None,
                    "clip_grad": None, "loss": {"forces_weight": 1.0}},
                   train=slabs[:args.n_train], valid=slabs[args.n_train:])
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
            "epoch_times": [r["epoch_time_s"] for r in res.history], "epoch_marks": marks}


def worker_chgnet_trainer(args) -> dict:
    import contextlib
    import io

    from chgnet.data.dataset import StructureData, collate_graphs
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer
    from pymatgen.io.ase import AseAtomsAdaptor
    from torch.utils.data import DataLoader

    # time spent building graphs: the most that caching graphs across epochs could save
    # (it all falls in the first epoch: StructureData.__getitem__ is functools.cache'd)
    graph_s = [0.0]
    get_item = StructureData.__getitem__

    def timed_get_item(self, idx):
        t = time.perf_counter()
        try:
            return get_item(self, idx)
        finally:
            graph_s[0] += time.perf_counter() - t

    StructureData.__getitem__ = timed_get_item
    marks: list[float] = []  # end of each epoch (after its checkpoint)
    save_checkpoint = Trainer.save_checkpoint

    def marked_save(self, *a, **kw):
        out = save_checkpoint(self, *a, **kw)
        marks.append(time.perf_counter())
        return out

    Trainer.save_checkpoint = marked_save
    slabs = make_slabs(args.n_train + args.n_valid)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        model = CHGNet.load(model_name="0.3.0", verbose=False)
    structs = [AseAtomsAdaptor.get_structure(a) for a in slabs]
    data = StructureData(structures=structs,
                         energies=[a.get_potential_energy() / len(a) for a in slabs],
                         forces=[a.get_forces() for a in slabs],
                         graph_converter=model.graph_converter, shuffle=False)
    idx = list(range(len(slabs)))
    from torch.utils.data import Subset

    train_loader = DataLoader(Subset(data, idx[:args.n_train]), batch_size=args.batch_size,
                              collate_fn=collate_graphs, shuffle=True)
    val_loader = DataLoader(Subset(data, idx[args.n_train:]), batch_size=args.batch_size,
                            collate_fn=collate_graphs)
    trainer = Trainer(model=model, targets="ef", optimizer="Adam", scheduler="CosLR",
                      criterion="MSE", epochs=args.epochs, learning_rate=1e-3,
                      use_device="cpu", print_freq=10_000, energy_loss_ratio=1,
                      force_loss_ratio=1)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train(train_loader, val_loader, save_dir=args.out)
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
            "graph_build_s": graph_s[0], "epoch_marks": marks}


MACE_ARCH = {"channels": 16, "max_L": 0, "num_interactions": 2, "correlation": 2,
             "max_ell": 2, "num_bessel": 8, "r_max": 4.5}


def worker_mace_ours(args) -> dict:
    import torch

    from ase_surftune.models.backends.mace import MACEAdapter, import_mace
    from ase_surftune.models.bundle import Bundle

    import_mace()  # before e3nn; keeps torch's safe load default

    from ase_surftune.models.backends.mace_builders import build_mace
    from ase_surftune.training import finetune

    marks = mark_our_epochs()
    slabs = make_slabs(args.n_train + args.n_valid)
    t0 = time.perf_counter()
    model = build_mace(["Cu", "Au"], atomic_energies={"Cu": -3.0, "Au": -3.2},
                       dtype=torch.float64, **MACE_ARCH)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Bundle(MACEAdapter(model)).save(Path(args.out) / "bench.stbundle")
    n_params = sum(p.numel() for p in model.parameters())
    res = finetune({"model": f"mace:{Path(args.out) / 'bench.stbundle'}", "strategy": "full",
                    "epochs": args.epochs, "batch_size": args.batch_size,
                    "output_dir": args.out, "progress": False, "plot": False,
                    "patience": None, "scheduler": {"name": "plateau"},
                    "optimizer": {"lr": 1e-2}, "align_energies": False,
                    "loss": {"forces_weight": 100.0}},
                   train=slabs[:args.n_train], valid=slabs[args.n_train:])
    return {"wall_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
            "epoch_times": [r["epoch_time_s"] for r in res.history], "n_params": n_params,
            "epoch_marks": marks}


def worker_mace_run_train(args) -> dict:
    from ase.io import write

    slabs = make_slabs(args.n_train + args.n_valid)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for a in slabs:
        a.info["REF_energy"] = a.get_potential_energy()
        a.arrays["REF_forces"] = a.get_forces()
        a.calc = None
    write(out / "train.xyz", slabs[:args.n_train])
    write(out / "valid.xyz", slabs[args.n_train:])
    a = MACE_ARCH
    cmd = [str(Path(PY).parent / "mace_run_train"), "--name", "bench", "--seed", "0",
           "--work_dir", str(out), "--train_file", str(out / "train.xyz"),
           "--valid_file", str(out / "valid.xyz"), "--E0s", "{29: -3.0, 79: -3.2}",
           # the same architecture as build_mace (ScaleShiftMACE, residual interaction
           # blocks throughout); mace's "MACE" model would use a cheaper first block
           "--model", "ScaleShiftMACE",
           "--interaction_first", "RealAgnosticResidualInteractionBlock",
           "--interaction", "RealAgnosticResidualInteractionBlock",
           "--hidden_irreps", f"{a['channels']}x0e",
           "--MLP_irreps", "16x0e", "--r_max", str(a["r_max"]),
           "--num_interactions", str(a["num_interactions"]),
           "--correlation", str(a["correlation"]), "--max_ell", str(a["max_ell"]),
           "--num_radial_basis", str(a["num_bessel"]), "--batch_size", str(args.batch_size),
           "--valid_batch_size", str(max(args.batch_size, 8)),
           "--max_num_epochs", str(args.epochs), "--device", "cpu",
           "--default_dtype", "float64", "--energy_key", "REF_energy",
           "--forces_key", "REF_forces", "--forces_weight", "100", "--energy_weight", "1",
           "--lr", "0.01", "--eval_interval", "1", "--patience", "1000",
           "--avg_num_neighbors", "12", "--error_table", "PerAtomRMSE", "--num_workers", "0"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    ru = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    wall = time.perf_counter() - t0
    import torch

    from ase_surftune.models.backends.mace import import_mace

    import_mace()  # before e3nn; keeps torch's safe load default
    # end of each epoch from the log's timestamps ("... INFO: Epoch N: ...")
    import datetime
    import re

    marks = []
    for log in sorted((out / "logs").glob("*.log")):
        if log.name.endswith("_debug.log"):
            continue
        for line in log.read_text().splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) INFO: Epoch \d+:", line)
            if m:
                marks.append(datetime.datetime.strptime(
                    m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp())
    models = sorted(out.glob("*.model"))
    n_params = sum(p.numel() for p in torch.load(models[0], weights_only=False).parameters()) \
        if models else None
    return {"wall_s": wall, "peak_rss_mb": ru, "n_params": n_params, "epoch_marks": marks}


WORKERS = {"chgnet-ours": worker_chgnet_ours, "chgnet-trainer": worker_chgnet_trainer,
           "mace-ours": worker_mace_ours, "mace-run-train": worker_mace_run_train}


def run_worker(name: str, epochs: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [PY, __file__, "_worker", name, "--epochs", str(epochs), "--out", tmp,
               "--n-train", str(args.n_train), "--n-valid", str(args.n_valid),
               "--batch-size", str(args.batch_size)]
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def speed(args, ours: str, theirs: str) -> dict:
    """Epoch time of both contenders, median over ``--repeats`` rounds.

    The epoch time of a round is the median time between the ends of consecutive epochs
    (train + validation + checkpoint) in a 1+K-epoch run, i.e. of epochs 2..1+K. (The
    earlier estimate, (T(1+K) − T1)/K from two runs' wall times, was swamped for
    mace_run_train by its ~11 s start-up, which varies by more than K epochs take.)

    Each round runs 1+K epochs of both, alternating which goes first, so that a
    busier stretch of the machine does not always land on one side (on the shared 2-core
    box, one contender's epoch time moves by ±15 % between runs).
    """
    import statistics

    k = args.extra_epochs
    runs: dict[str, list[dict]] = {ours: [], theirs: []}
    for r in range(args.repeats):
        for name in ((ours, theirs) if r % 2 == 0 else (theirs, ours)):
            rk = run_worker(name, 1 + k, args)
            marks = rk.get("epoch_marks") or []
            cycles = [b - a for a, b in zip(marks, marks[1:])]
            if len(cycles) != k:
                raise RuntimeError(f"{name}: expected {k + 1} epoch marks, got {len(marks)}")
            row = {"epoch_s": statistics.median(cycles), "epoch_cycles_s": cycles,
                   "peak_rss_mb": rk["peak_rss_mb"]}
            if "graph_build_s" in rk:
                # all of it in the first epoch: chgnet ≥ 0.4's StructureData caches each
                # converted graph with functools.cache, as we do
                row["graph_build_s_all_epochs"] = rk["graph_build_s"]
            if "epoch_times" in rk:
                row["loop_epoch_times_s"] = rk["epoch_times"]
            if rk.get("n_params") is not None:
                row["n_params"] = rk["n_params"]
            runs[name].append(row)
            print(name, f"round {r + 1}", json.dumps(row), flush=True)
    res: dict = {}
    for name, rows in runs.items():
        res[name] = {"epoch_s": statistics.median(x["epoch_s"] for x in rows),
                     "epoch_s_rounds": [x["epoch_s"] for x in rows],
                     "peak_rss_mb": max(x["peak_rss_mb"] for x in rows)}
        for key in ("graph_build_s_all_epochs", "n_params"):
            if key in rows[-1]:
                res[name][key] = rows[-1][key]
    res["ratio_ours_over_theirs"] = res[ours]["epoch_s"] / res[theirs]["epoch_s"]
    res["ratio_rounds"] = [a["epoch_s"] / b["epoch_s"] for a, b in zip(runs[ours], runs[theirs])]
    res["setup"] = {"n_train": args.n_train, "n_valid": args.n_valid,
                    "batch_size": args.batch_size, "extra_epochs": k, "repeats": args.repeats,
                    "threads": __import__("torch").get_num_threads()}
    print(json.dumps(res, indent=2))
    return res


# --------------------------------------------------------------------------- OC20


def oc20(args) -> dict:
    import glob

    import ase.io
    import numpy as np

    from ase_surftune.training import finetune

    files = sorted(glob.glob(os.path.join(args.data, "*.traj")))
    if not files:
        raise SystemExit(f"no .traj files in {args.data}")
    trajs = []
    for f in files:
        frames = ase.io.read(f, ":")
        if len(frames[0]) <= args.max_atoms:
            idx = np.linspace(0, len(frames) - 1, args.frames_per_traj).round().astype(int)
            trajs.append((Path(f).name, [frames[i] for i in sorted(set(idx))]))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(trajs))
    n_test = max(1, int(round(args.test_fraction * len(trajs))))
    test_trajs = [trajs[i] for i in order[:n_test]]
    train_trajs = [trajs[i] for i in order[n_test:]]
    train = [a for _, fr in train_trajs for a in fr]
    test = [a for _, fr in test_trajs for a in fr]
    print(f"{len(trajs)} trajectories with <= {args.max_atoms} atoms: "
          f"{len(train_trajs)} train ({len(train)} frames), {len(test_trajs)} held out "
          f"({len(test)} frames)", flush=True)
    rows = {}
    common = {"model": "chgnet", "batch_size": 4, "progress": False, "plot": False,
              "exclude_fixed_atoms": True, "valid_fraction": 0.15, "seed": 0,
              "epochs": args.epochs, "optimizer": {"lr": 5e-4}, "scheduler": {"name": "none"},
              "patience": None}
    for strat, extra in [("linear", {}), ("frozen", {"freeze": {"k": 3}}), ("full", {})]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = finetune({**common, "strategy": strat, "output_dir": tmp, **extra},
                           train=train, test=test)
            m = res.metrics
            rows.setdefault("zero-shot", {
                "test_forces_mae": m["zero_shot"]["test"]["forces_mae"],
                "test_energy_mae_per_atom": m["zero_shot"]["test"]["energy_mae_per_atom"]})
            rows[strat] = {"test_forces_mae": m["finetuned"]["test"]["forces_mae"],
                           "test_energy_mae_per_atom":
                               m["finetuned"]["test"]["energy_mae_per_atom"],
                           "trainable_params": m["parameters"]["trainable"],
                           "wall_s": round(time.perf_counter() - t0, 1)}
            if strat == "linear":
                rows[strat]["scale_a"] = m["linear_correction"]["scale"]
            print(strat, json.dumps(rows[strat]), flush=True)
    out = {"rows": rows, "n_train_frames": len(train), "n_test_frames": len(test),
           "held_out": [n for n, _ in test_trajs], "epochs": args.epochs,
           "reference_energies_example": m["reference_energies"]}
    print(json.dumps(out, indent=2))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["chgnet-speed", "mace-speed", "oc20", "_worker"])
    p.add_argument("worker", nargs="?")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--extra-epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds for the speed comparisons (medians; the order alternates)")
    p.add_argument("--out", default=None)
    p.add_argument("--n-train", type=int, default=24)
    p.add_argument("--n-valid", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                            / "oc20-debug"))
    p.add_argument("--max-atoms", type=int, default=80)
    p.add_argument("--frames-per-traj", type=int, default=4)
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    if args.what == "_worker":
        print(json.dumps(WORKERS[args.worker](args)))
        return 0
    if args.what == "chgnet-speed":
        res = speed(args, "chgnet-ours", "chgnet-trainer")
    elif args.what == "mace-speed":
        res = speed(args, "mace-ours", "mace-run-train")
    else:
        res = oc20(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
