"""Diagnosis (not a timed benchmark): why does an active-learning run's vacancy barrier
stay above EMT's after many labels?

Takes a finished run of ``bench_active_learning.py`` (EMT labeller), its last model and
all its labels, and fine-tunes that model once more with the run's own fine-tuning
settings (a) on the same labels plus EMT labels of the NEB's two key frames (the relaxed
vacancy and the saddle of EMT's own NEB), (b) on the same labels only (the control).
Prints every target as a ratio to EMT before and after each. If (a) and (b) move the
barrier alike, missing key frames are not the cause.

``--variants seeds`` redoes the run's *last* fine-tune (same start model and labels) with
``--n-seeds`` different seeds and prints each one's targets: how far the barrier moves by
training noise alone, with the data fixed. That spread is a floor under any "labels to
within 3 %" statistic, whatever the selection.

``--variants loss`` redoes the run's last fine-tune (same start, labels and seed) as it
was, with a 10× energy weight, and with twice the epochs: is the barrier's floor set by
how hard the loss pulls on energies (a 3 % barrier error is ~2 meV/atom in the 15-atom
vacancy cell) or by too short a fine-tune?

``--variants decompose`` splits the last model's barrier error into its parts: the
relaxed vacancy I and the saddle S of each calculator's own NEB (I: the vacancy-cell frame
of lowest energy; S: the band's last climbing image), each evaluated with EMT and the
model. barrier_model − barrier_EMT = [E_EMT(S_m) − E_EMT(I_m) − barrier_EMT] (the model's
stationary points are elsewhere) + [err(S_m) − err(I_m)] (its energy error there, err =
E_model − E_EMT). Single points only.

With ``--extra JSON`` (FinetuneConfig keys, e.g. ``'{"loss": {"energy_per": "structure",
"energy_weight": 6.25, "forces_weight": 10.0}}'``) and ``--tag NAME`` (folder suffix):
``last_extra`` redoes the last fine-tune with those settings; ``key_frames_extra`` is (a)
with them; ``minimum_copies`` adds to (a) four EMT-labelled perturbed copies of the relaxed
vacancy (rattled 0.05/0.1 Å, strained ±2 %); ``cold_start`` is that from the foundation
model; ``vacancy_only`` trains the last model on the vacancy-cell labels among those alone
(is the floor a conflict with the other cells?). ``--decompose-each`` splits every new
model's barrier error as ``decompose`` does. The evening table in RESULTS.md: key frames
with ``--extra '{"loss": {"energy_weight": 1000.0, "forces_weight": 10.0}}'``, ``'{"epochs":
90}'``, ``'{"scheduler": {"name": "cosine"}}'``, ``'{"optimizer": {"lr": 1e-4}}'``.

The early-stopping comparison recorded in RESULTS.md (the same last fine-tune stopped at
epoch 38 with patience 10: 1.088 × EMT; run every epoch: 1.028) was measured with this
script's ``--variants early_stop`` at commit 8f6be9e. Since 0c3f260 the training loop
ignores ``patience`` when there is no validation set, so that variant is gone; check out
8f6be9e to rerun it.

    PYTHONPATH=. python benchmarks/diag_al_barrier.py RUN_DIR [--out DIR] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ase_surftune.active.config import load_active_config
from ase_surftune.active.explore import measure_and_record
from ase_surftune.active.state import calc_for, read_labels
from ase_surftune.training import finetune


def emt_labelled(atoms, source: str):
    """A copy of ``atoms`` carrying EMT's energy and forces, tagged like a loop label."""
    g = atoms.copy()
    g.calc = EMT()
    e, forces = g.get_potential_energy(), g.get_forces()
    g.calc = SinglePointCalculator(g, energy=e, forces=forces)
    g.info = {"config_type": source.split(":")[0], "al_source": source}
    return g


def key_frames(frames: list) -> list:
    """EMT-labelled relaxed vacancy (lowest EMT energy) and saddle (last NEB frame)."""
    cu = [f for f in frames if f.info["al_source"].startswith("bulk_Cu15")]
    energies = []
    for f in cu:
        g = f.copy()
        g.calc = EMT()
        energies.append(g.get_potential_energy())
    return [emt_labelled(f, f"bulk_Cu15:{name}") for name, f in
            (("relaxed_vacancy", cu[int(np.argmin(energies))]), ("saddle", cu[-1]))]


def minimum_copies(frames: list, seed: int = 0) -> list:
    """EMT-labelled perturbed copies of EMT's relaxed vacancy (rattled by 0.05 and 0.1 Å,
    strained by ±2 %): what exploration offers around the NEB's last frame (the saddle),
    offered around its other stationary point."""
    from ase_surftune.active.explore import _strained

    rng = np.random.default_rng(seed)
    vac = key_frames(frames)[0]
    out = []
    for name in ("rattle0.05", "rattle0.1", "strain-0.02", "strain+0.02"):
        g = vac.copy()
        if name.startswith("rattle"):
            g.positions += rng.normal(scale=float(name[6:]), size=g.positions.shape)
        else:
            g = _strained(g, float(name[6:]))
        out.append(emt_labelled(g, f"bulk_Cu15:minimum_{name}"))
    return out


def stationary_points(frames: list, calc) -> tuple:
    """(relaxed vacancy, saddle) of one NEB workflow's recorded frames: the vacancy-cell
    frame of lowest energy under ``calc``, and the last frame (the climbing image)."""
    cu = [f for f in frames if f.info["al_source"].startswith("bulk_Cu15")]
    energies = []
    for f in cu:
        g = f.copy()
        g.calc = calc
        energies.append(g.get_potential_energy())
    return cu[int(np.argmin(energies))], cu[-1]


def decompose(model: str, cfg, emt_frames: list) -> None:
    """Print the barrier error of ``model`` split as in the module docstring."""
    model_calc = calc_for(model, "cpu")
    _, frames = measure_and_record(model_calc, cfg, "model")
    pts = {"I_emt": stationary_points(emt_frames, EMT())[0],
           "S_emt": stationary_points(emt_frames, EMT())[1]}
    pts["I_model"], pts["S_model"] = stationary_points(frames, model_calc)

    def energy(a, calc) -> float:
        g = a.copy()
        g.calc = calc
        return float(g.get_potential_energy())

    e = {k: (energy(a, EMT()), energy(a, model_calc)) for k, a in pts.items()}
    b_emt = e["S_emt"][0] - e["I_emt"][0]
    b_model = e["S_model"][1] - e["I_model"][1]
    err = {k: v[1] - v[0] for k, v in e.items()}
    geom = e["S_model"][0] - e["I_model"][0] - b_emt
    print(f"barrier EMT {b_emt:.4f} eV, model {b_model:.4f} eV "
          f"({b_model / b_emt:.3f} x); difference {b_model - b_emt:+.4f} eV =")
    print(f"  {geom:+.4f} eV  the model's stationary points under EMT "
          f"(E_EMT(S_m) - E_EMT(I_m) - barrier_EMT)")
    print(f"  {err['S_model'] - err['I_model']:+.4f} eV  the model's energy error at "
          f"its saddle minus at its minimum")
    print("  energy error E_model - E_EMT relative to that at EMT's minimum (eV): "
          + ", ".join(f"{k} {err[k] - err['I_emt']:+.4f}" for k in pts))
    for k in ("I", "S"):  # where the model's stationary point sits relative to EMT's
        a, b = pts[f"{k}_model"], pts[f"{k}_emt"]
        dr = a.positions - b.positions
        dr -= b.cell.cartesian_positions(np.round(b.cell.scaled_positions(dr)))  # mic
        per_atom = np.linalg.norm(dr, axis=1)
        j = int(np.argmax(per_atom))
        print(f"  {'minimum' if k == 'I' else 'saddle'}: |R_model - R_EMT| "
              f"{np.linalg.norm(dr):.3f} Å, largest on atom {j} ({per_atom[j]:.3f} Å), "
              f"cell lengths model/EMT {a.cell.lengths()[0] / b.cell.lengths()[0]:.4f}")


def planned_runs(args: argparse.Namespace, cfg, n_it: int, labels: list, frames: list
                 ) -> list[tuple]:
    """(folder, start model, training set, seed, FinetuneConfig overrides) per variant,
    for a run of ``n_it`` iterations: from its last model, or (``seeds``, ``loss``,
    ``last_extra``) its last fine-tune again from that fine-tune's start."""
    model = str(args.run / f"iter_{n_it:02d}" / "model" / "model.stbundle")
    prev = str(args.run / f"iter_{n_it - 1:02d}" / "model" / "model.stbundle")
    extra = json.loads(args.extra)
    loss = dict(cfg.finetune.get("loss", {}))
    epochs = int(cfg.finetune.get("epochs", 45))
    seed = cfg.seed * 1000 + n_it  # the loop's seed of the last iteration
    key = labels + key_frames(frames)
    key_and_copies = key + minimum_copies(frames)
    runs: list[tuple] = []
    v = set(args.variants)
    if "key_frames" in v:
        runs += [("plus_key_frames", model, key, 99, {}),
                 ("same_labels_again", model, labels, 99, {})]
    if "seeds" in v:
        runs += [(f"last_iteration_seed{seed + k}", prev, labels, seed + k, {})
                 for k in range(args.n_seeds)]
    if "loss" in v:  # a heavier energy term, or twice the epochs
        runs += [("last_iteration_same", prev, labels, seed, {}),
                 ("last_iteration_energy_weight_x10", prev, labels, seed,
                  {"loss": loss | {"energy_weight": 10 * loss.get("energy_weight", 1.0)}}),
                 (f"last_iteration_epochs_{2 * epochs}", prev, labels, seed,
                  {"epochs": 2 * epochs})]
    if "last_extra" in v:
        runs.append((f"last_iteration_{args.tag}", prev, labels, seed, extra))
    if "key_frames_extra" in v:
        runs.append((f"plus_key_frames_{args.tag}", model, key, 99, extra))
    if "minimum_copies" in v:
        runs.append((f"plus_key_frames_and_minimum_copies_{args.tag}", model, key_and_copies,
                     99, extra))
    if "cold_start" in v:
        runs.append(("cold_start_plus_key_frames_and_minimum_copies", cfg.model,
                     key_and_copies, 99, extra))
    if "vacancy_only" in v:
        runs.append(("vacancy_cell_only", model, [a for a in key_and_copies if a.info[
            "al_source"].startswith("bulk_Cu15")], 99, extra))
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished bench_active_learning.py run folder")
    ap.add_argument("--out", type=Path, default=Path("diag_al_barrier"))
    ap.add_argument("--variants", nargs="+", default=["key_frames"],
                    choices=["key_frames", "seeds", "decompose", "loss", "last_extra",
                             "key_frames_extra", "minimum_copies", "cold_start",
                             "vacancy_only"])
    ap.add_argument("--n-seeds", type=int, default=3, help="fine-tunes of --variants seeds")
    ap.add_argument("--decompose-each", action="store_true",
                    help="after each fine-tune, split its barrier error as --variants decompose")
    ap.add_argument("--extra", default="{}",
                    help="FinetuneConfig keys (JSON) of last_extra, key_frames_extra, "
                    "minimum_copies, cold_start and vacancy_only")
    ap.add_argument("--tag", default="extra", help="folder suffix of the --extra variants")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    st = json.loads((args.run / "state.json").read_text())
    cfg = load_active_config(st["config"] | {"output_dir": str(args.out / "cfg"),
                                             "holdout_file": None})
    n_it = len(st["iterations"])
    labels = [a for i in range(1, n_it + 1)
              for a in read_labels(args.run / f"iter_{i:02d}" / "labels.xyz")]
    ref, frames = measure_and_record(EMT(), cfg, "emt")
    ref = ref["values"]

    def ratios(model: str, label: str) -> dict[str, float]:
        v = measure_and_record(calc_for(model, "cpu"), cfg, label)[0]["values"]
        return {k: round(x / ref[k], 3) for k, x in v.items()}

    model = str(args.run / f"iter_{n_it:02d}" / "model" / "model.stbundle")
    print(f"{len(labels)} labels; last model / EMT: {ratios(model, 'last')}")
    if "decompose" in args.variants:
        decompose(model, cfg, frames)
    runs = planned_runs(args, cfg, n_it, labels, frames)
    for tag, start, train, seed, extra in runs:
        t0 = time.perf_counter()
        res = finetune(cfg.finetune_config(args.out / tag, model=start, seed=seed, **extra),
                       train=train)
        summary = json.loads((args.out / tag / "metrics.json").read_text())["summary"]
        print(f"{tag} ({time.perf_counter() - t0:.0f} s, {summary['epochs_run']} epochs, "
              f"best {summary['best_epoch']}): {ratios(str(res.bundle_path), tag)}")
        if args.decompose_each:
            decompose(str(res.bundle_path), cfg, frames)


if __name__ == "__main__":
    main()
