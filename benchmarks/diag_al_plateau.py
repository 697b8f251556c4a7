"""Diagnosis (issue 17): can full fine-tuning of CHGNet on generous EMT data bring the
active-learning targets (γ(111), γ(100), vacancy barrier) within 1–3 % of EMT?

Builds (once, cached in $AL_DIAG_ROOT, default ../al_diag next to the repository) every
candidate the loop's exploration produces from EMT's and zero-shot CHGNet's property
workflows, labels them with EMT, fine-tunes on n of them with the given recipe and prints
the target ratios to EMT. Used for the plateau figures in benchmarks/RESULTS.md::

    PYTHONPATH=. python benchmarks/diag_al_plateau.py NAME ENERGY_W FORCES_W EPOCHS LR [N] [JSON]
    PYTHONPATH=. python benchmarks/diag_al_plateau.py H 100 10 45 5e-4 68
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ase.calculators.emt import EMT
from bench_active_learning import config, holdout_set

from ase_surftune.active import load_active_config
from ase_surftune.active.explore import explore, measure_and_record
from ase_surftune.active.state import calc_for, read_labels
from ase_surftune.data import label
from ase_surftune.training.api import finetune

root = Path(os.environ.get("AL_DIAG_ROOT", Path(__file__).resolve().parents[2] / "al_diag"))
hold = root / "holdout.xyz"
if not hold.is_file():
    holdout_set(hold)
cfg = load_active_config(config(root / "run", 0, "uncertainty", 24, 4, 0.03, hold))
data = root / "train.xyz"
ref_f = root / "ref.json"
if not data.is_file():
    t0 = time.time()
    ref, frames = measure_and_record(EMT(), cfg, "emt")
    json.dump(ref, open(ref_f, "w"))
    zs, zframes = measure_and_record(calc_for("chgnet", "cpu"), cfg, "chgnet")
    json.dump(zs, open(root / "zs.json", "w"))
    c1 = explore(frames, EMT(), cfg.explore, 1)
    c2 = explore(zframes, EMT(), cfg.explore, 2)
    allc = c1 + c2
    for a in allc:
        a.info["config_type"] = a.info["al_source"].split(":")[0]
    print("candidates", len(c1), len(c2), time.time() - t0, flush=True)
    label(allc, EMT(), data, progress=False)
ref = json.load(open(ref_f))["values"]
zs = json.load(open(root / "zs.json"))["values"]
T = ["gamma_111", "gamma_100", "barrier_vacancy"]
print("EMT", {t: ref[t] for t in T}, "zero-shot", {t: round(zs[t] / ref[t], 4) for t in T})
train = read_labels(data)
print("n train", len(train), sorted({a.info.get("config_type") for a in train}))
name = sys.argv[1]
ew, fw, ep, lr = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
n = int(sys.argv[6]) if len(sys.argv) > 6 else len(train)
import numpy as np

rng = np.random.default_rng(0)
sub = [train[i] for i in sorted(rng.choice(len(train), size=min(n, len(train)), replace=False))]
t0 = time.time()
res = finetune(cfg.finetune_config(root / name, model="chgnet", seed=0, epochs=ep,
                                   loss={"energy_weight": ew, "forces_weight": fw},
                                   optimizer={"lr": lr}, **json.loads(sys.argv[7] if len(sys.argv) > 7 else "{}")), train=sub)
t1 = time.time()
props, _ = measure_and_record(calc_for(str(res.bundle_path), "cpu"), cfg, name)
v = props["values"]
print(json.dumps({"recipe": name, "ew": ew, "fw": fw, "epochs": ep, "lr": lr, "n": len(sub),
                  "ratio": {t: round(v[t] / ref[t], 4) for t in T},
                  "ft_s": round(t1 - t0), "meas_s": round(time.time() - t1)}), flush=True)
