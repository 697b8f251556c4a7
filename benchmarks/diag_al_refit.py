"""Diagnosis (not a timed benchmark): how well does one active-learning fine-tune fit the
energies of its labels, and does a setting change that?

Redoes iteration ``--iteration`` of a ``bench_active_learning.py`` run (EMT labeller)
exactly as the loop did (same start model, labels and seed), with the stationary points'
energy weight ``--stationary-weight`` (``stationary_energy_weight``) and the FinetuneConfig
keys of ``--finetune`` (JSON, merged one level deep into the run's own settings), then
prints:

* every target as a ratio to EMT, the run's own model's and the new one's;
* the new model's energy residual on each label (model − EMT, meV per structure, after
  removing the median per-atom offset: the per-element shift a fit may move freely),
  grouped by ``al_source``;
* the training energy MAE (meV/atom) and force MAE (meV/Å) of the last epoch.

The table "How well a fine-tune fits its labels" in RESULTS.md came from
``--iteration 4`` of uncertainty seed 0 of the ``--energy-per sqrt_atoms`` run, with
``--finetune '{"loss": {"energy_per": "atom", "energy_weight": 100.0}}'`` plus the
variants' keys (``"optimizer": {"lr": 2e-3}``, ``"batch_size": 1``, ``"epochs": 135,
"scheduler": {"name": "cosine"}``, ``"loss": {"forces_weight": 0.0}``).

    PYTHONPATH=. python benchmarks/diag_al_refit.py RUN_DIR --iteration 4 \\
        [--stationary-weight 10] [--finetune JSON] [--out DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from ase_surftune.active.config import _merge, load_active_config
from ase_surftune.active.explore import measure_and_record
from ase_surftune.active.state import calc_for, read_labels
from ase_surftune.active.steps import weight_stationary
from ase_surftune.training import finetune


def residuals(model: str, labels: list) -> dict[str, list[float]]:
    """Per ``al_source``: model − label energy (meV per structure), median per-atom
    offset removed."""
    calc = calc_for(model, "cpu")
    rows = []
    for a in labels:
        b = a.copy()
        b.calc = calc
        rows.append((a.info.get("al_source", "?"), len(a),
                     b.get_potential_energy() - a.get_potential_energy()))
    offset = statistics.median(d / n for _, n, d in rows)
    out: dict[str, list[float]] = defaultdict(list)
    for source, n, d in rows:
        out[source].append(1000 * (d - n * offset))
    return dict(sorted(out.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a bench_active_learning.py run folder")
    ap.add_argument("--iteration", type=int, default=None, help="default: the last")
    ap.add_argument("--stationary-weight", type=float, default=1.0)
    ap.add_argument("--finetune", default="{}", help="FinetuneConfig keys (JSON)")
    ap.add_argument("--out", type=Path, default=Path("diag_al_refit"))
    ap.add_argument("--cold-start", action="store_true",
                    help="start from the run's foundation model, not the previous iteration's")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    st = json.loads((args.run / "state.json").read_text())
    i = args.iteration or len(st["iterations"])
    conf = dict(st["config"])
    conf["finetune"] = _merge(conf["finetune"], json.loads(args.finetune))  # one level deep
    cfg = load_active_config(conf | {"output_dir": str(args.out / "cfg"), "holdout_file": None})
    labels = [a for j in range(1, i + 1)
              for a in read_labels(args.run / f"iter_{j:02d}" / "labels.xyz")]
    start = (str(args.run / st["iterations"][i - 2]["model"])
             if i > 1 and cfg.warm_start and not args.cold_start else cfg.model)
    ref = st["reference"]["properties"]["values"]

    def ratios(model: str) -> dict[str, float]:
        v = measure_and_record(calc_for(model, "cpu"), cfg, "refit")[0]["values"]
        return {t: round(v[t] / ref[t], 4) for t in cfg.targets}

    t0 = time.perf_counter()
    res = finetune(cfg.finetune_config(args.out / "model", model=start, seed=cfg.seed * 1000 + i),
                   train=weight_stationary(labels, args.stationary_weight))
    epochs = json.loads((args.out / "model" / "metrics.json").read_text()).get("epochs")
    last = epochs[-1] if epochs else {"train_energy_mae_per_atom": float("nan"),
                                      "train_forces_mae": float("nan")}
    was = st["iterations"][i - 1]["properties"]["values"]
    print(json.dumps({"iteration": i, "n_labels": len(labels), "start": start,
                      "stationary_weight": args.stationary_weight,
                      "finetune": json.loads(args.finetune),
                      "run_ratios": {t: round(was[t] / ref[t], 4) for t in cfg.targets},
                      "ratios": ratios(str(res.bundle_path)),
                      "train_energy_mae_meV_per_atom": round(
                          1000 * last["train_energy_mae_per_atom"], 2),
                      "train_forces_mae_meV_per_A": round(1000 * last["train_forces_mae"], 1),
                      "seconds": round(time.perf_counter() - t0)}))
    for source, r in residuals(str(res.bundle_path), labels).items():
        print(f"  {source:32s} " + " ".join(f"{x:+.0f}" for x in r))


if __name__ == "__main__":
    main()
