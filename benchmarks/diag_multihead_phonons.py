"""Diagnosis (not a timed benchmark): does the multi-head replay of pseudo-labelled
training structures (``replay.pseudolabel_new``) give the demo's new head imaginary
phonon modes, and does turning it off recover the phonons?

Trains the demo's multi-head run (same data split, settings and seed) with
``pseudolabel_new: false`` and compares its phonons (2×2×2 cell, 8³ mesh; THz) with EMT's
and with the demo's own multi-head model, through the same ``compare`` code.

    PYTHONPATH=. python benchmarks/diag_multihead_phonons.py DEMO_OUT

``DEMO_OUT``: the folder of a full ``surftune demo`` run (its EMT labels are reused; its
``finetune/multihead`` bundle is the control).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from ase.calculators.emt import EMT

from ase_surftune.demo import PROPERTY_SETTINGS, _label_data
from ase_surftune.evaluation import compare
from ase_surftune.evaluation._spec import make_calculator
from ase_surftune.training import finetune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo_out", type=Path, help="folder of a full `surftune demo` run")
    ap.add_argument("--out", type=Path, default=Path("diag_multihead_phonons"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    train, test = _label_data(args.demo_out, "emt", EMT(), False, False, False)
    cfg = {"model": "chgnet", "strategy": "multihead", "epochs": 10, "batch_size": 4,
           "valid_fraction": 0.0, "progress": False, "plot": False, "seed": 0,
           "optimizer": {"lr": 2e-3}, "scheduler": {"name": "none"},
           "forgetting": {"enabled": False},
           "strategy_options": {"new_head": "surface",
                                "replay": {"n": 8, "pseudolabel_new": False}},
           "output_dir": str(args.out / "mh_no_pseudolabel"), "resume": "auto"}
    t0 = time.perf_counter()
    res = finetune(cfg, train=train, valid=[], test=test)
    print(f"trained without pseudo-label replay in {time.perf_counter() - t0:.0f} s")
    models = {"mh_no_pseudolabel": f"{res.bundle_path}@{res.metrics.get('head', 'surface')}",
              "mh_demo": f"{args.demo_out / 'finetune' / 'multihead' / 'model.stbundle'}"
                         "@surface"}
    settings = copy.deepcopy(PROPERTY_SETTINGS["full"])
    settings["properties"] = ["phonons"]
    cmp = compare(("emt", EMT()), [(n, make_calculator(s)) for n, s in models.items()],
                  settings, progress=False, output_dir=args.out / "compare")
    print(cmp.to_markdown())


if __name__ == "__main__":
    main()
