"""The eight steps of one active-learning iteration, each a named function.

:func:`iterate` runs the unfinished steps of iteration *i* in :data:`STEPS` order and
saves the state after each (so a killed run resumes after its last finished step). A
step reads what earlier steps stored in the iteration record (``it``) and the files they
wrote, never variables of another step, which is what makes resuming exact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_surftune.active.state import Run, calc_for, read_frames, read_labels, write_frames

__all__ = ["STEPS", "iterate", "holdout", "convergence", "weight_stationary"]

STEPS = ("explore", "uncertainty", "select", "label", "calibrate", "finetune", "committee",
         "measure")


class Iteration:
    """Iteration ``i`` (1-based) of ``run``: its record, folder, seed and inputs."""

    def __init__(self, run: Run, i: int) -> None:
        self.run, self.i, self.cfg = run, i, run.cfg
        self.it: dict[str, Any] = run.state["iterations"][i - 1]
        self.dir = run.iter_dir(i)
        self.seed = run.cfg.seed * 1000 + i
        self.prev_model = run.model_of(i - 1)

    def done(self, step: str) -> None:
        self.it["done"].append(step)
        self.run.save(f"{self.i}:{step}")

    @cached_property
    def candidates(self) -> list[Atoms]:
        """The explored candidates as written (read after the explore step)."""
        return read_frames(self.run.path(self.it["candidates"]))


def _explore(x: Iteration) -> None:
    from ase_surftune.active.explore import explore

    st = x.run.state
    prev_frames = read_frames(x.run.path(st["baseline"]["frames"] if x.i == 1
                                         else st["iterations"][x.i - 2]["frames"]))
    t0 = time.perf_counter()
    cands = explore(prev_frames, calc_for(x.prev_model, x.cfg.device), x.cfg.explore, x.seed)
    write_frames(x.run.path(f"{x.dir}/candidates.xyz"), cands)
    x.it.update(candidates=f"{x.dir}/candidates.xyz", n_candidates=len(cands),
                explore_time_s=round(time.perf_counter() - t0, 2))


def _uncertainty(x: Iteration) -> None:
    committee = x.run.committee_of(x.i - 1)
    if committee:
        from ase_surftune.active.committee import predict_uncertainty

        x.it["uncertainty"] = predict_uncertainty(committee, x.candidates,
                                                  x.cfg.device).to_dict()
    else:
        x.it["uncertainty"] = None


def _select(x: Iteration) -> None:
    from ase_surftune.active.committee import Uncertainty
    from ase_surftune.active.select import select_batch

    cfg, it, cands = x.cfg, x.it, x.candidates
    n = min(cfg.batch_size, cfg.budget - x.run.state["n_labels"])
    unc = Uncertainty.from_dict(it["uncertainty"]).score() if it["uncertainty"] else None
    idx, why = select_batch(cands, n, cfg.selection, x.seed, uncertainty=unc,
                            labelled=x.run.labels_until(x.i - 1), pool_factor=cfg.pool_factor,
                            stationary_first=cfg.stationary_first)
    it.update(selected=idx, reasons=why,
              sources=[cands[j].info.get("al_source", "") for j in idx])


def _label(x: Iteration) -> None:
    from ase_surftune.data import label

    it, st = x.it, x.run.state
    batch = [x.candidates[j].copy() for j in it["selected"]]
    for a, src in zip(batch, it["sources"]):
        a.info = {"config_type": src.split(":")[0], "al_source": src, "al_iteration": x.i}
    t0 = time.perf_counter()
    label(batch, x.cfg.labeller_calculator(), x.run.path(f"{x.dir}/labels.xyz"),
          progress=x.cfg.progress)
    it.update(labels=f"{x.dir}/labels.xyz", n_labelled=len(batch),
              label_time_s=round(time.perf_counter() - t0, 2))
    st["n_labels"] = int(st["n_labels"]) + len(batch)


def _calibrate(x: Iteration) -> None:
    """The current model's true errors on the new labels vs the spread its committee
    predicted for them before labelling; then the scale k refitted on every batch so far
    (:mod:`~ase_surftune.active.calibration`: the new batch is scored with the k of the
    earlier batches, never with one fitted on itself)."""
    from ase_surftune.active.calibration import calibration, model_errors, pooled_scale

    it = x.it
    new_labels = read_labels(x.run.path(it["labels"]))
    err = model_errors(x.prev_model, new_labels, x.cfg.device)
    it["batch_force_mae_before"] = err["force_mae"]
    it["batch_force_error"] = err["forces"].tolist()
    it["batch_energy_error"] = err["energy"].tolist()
    before = x.run.uncertainty_scale(x.i - 1)
    if it["uncertainty"]:
        sel = it["selected"]
        u = np.asarray(it["uncertainty"]["forces"])[sel]
        ue = np.asarray(it["uncertainty"]["energy"])[sel]
        it["batch_uncertainty"] = u.tolist()
        it["batch_energy_uncertainty"] = ue.tolist()
        it["calibration_batch"] = calibration(u, err["forces"], before["forces"])
        it["calibration_batch_energy"] = calibration(ue, err["energy"], before["energy"])
    else:
        it["calibration_batch"] = it["calibration_batch_energy"] = None
    it["uncertainty_scale"] = pooled_scale(x.run.state["iterations"][:x.i])


def _finetune(x: Iteration) -> None:
    from ase_surftune.training.api import finetune

    cfg, i = x.cfg, x.i
    train = weight_stationary(x.run.labels_until(i), cfg.stationary_energy_weight)
    start = x.prev_model if cfg.warm_start else cfg.model
    t0 = time.perf_counter()
    res = finetune(cfg.finetune_config(x.run.path(f"{x.dir}/model"), model=start, seed=x.seed,
                                       **_multihead_warm_start(x.run, i, start)),
                   train=train)
    x.it.update(model=str(res.bundle_path.relative_to(x.run.out)), n_train=len(train),
                warm_start_from=start if i == 1 or not cfg.warm_start
                else f"iteration {i - 1}", finetune_time_s=round(time.perf_counter() - t0, 2))


def weight_stationary(labels: list[Atoms], weight: float) -> list[Atoms]:
    """``labels`` with the stationary points' energy weight
    (``info["config_energy_weight"]``) set to ``weight`` (none set when it is 1)."""
    from ase_surftune.active.explore import is_stationary
    from ase_surftune.data import ENERGY_WEIGHT_KEY

    if weight != 1.0:
        for a in labels:
            if is_stationary(a):
                a.info[ENERGY_WEIGHT_KEY] = weight
    return labels


def _committee(x: Iteration) -> None:
    cfg = x.cfg
    if cfg.selection == "random" and not cfg.committee.in_random_mode:
        x.it["committee"] = None
        return
    from ase_surftune.active.committee import train_committee

    t0 = time.perf_counter()
    paths = train_committee(x.run.model_of(x.i), x.run.labels_until(x.i), cfg,
                            x.run.path(f"{x.dir}/committee"), x.seed)
    x.it.update(committee=[str(p.relative_to(x.run.out)) for p in paths],
                committee_time_s=round(time.perf_counter() - t0, 2))


def _measure(x: Iteration) -> None:
    from ase_surftune.active.explore import measure_and_record

    t0 = time.perf_counter()
    props, frames = measure_and_record(calc_for(x.run.model_of(x.i), x.cfg.device), x.cfg,
                                       f"iteration {x.i}")
    write_frames(x.run.path(f"{x.dir}/frames.xyz"), frames)
    x.it.update(properties=props, frames=f"{x.dir}/frames.xyz",
                measure_time_s=round(time.perf_counter() - t0, 2))
    holdout(x.run, x.i, x.it)
    convergence(x.run, x.i)


_STEP_FUNCS: dict[str, Callable[[Iteration], None]] = {
    "explore": _explore, "uncertainty": _uncertainty, "select": _select, "label": _label,
    "calibrate": _calibrate, "finetune": _finetune, "committee": _committee,
    "measure": _measure}
assert tuple(_STEP_FUNCS) == STEPS


def iterate(run: Run, i: int) -> None:
    """Run the unfinished steps of iteration ``i`` (1-based), saving after each."""
    x = Iteration(run, i)
    for name, step in _STEP_FUNCS.items():
        if name not in x.it["done"]:
            step(x)
            x.done(name)
        if name == "explore" and not x.candidates:
            x.it.update(stop="no_candidates", skipped=True)
            run.save()
            return


def _multihead_warm_start(run: Run, i: int, start: str) -> dict[str, Any]:
    """Multi-head strategy from a previous iteration's bundle: train a new head per
    iteration (``NAME_iNN``) started from the previous one, replaying the foundation
    head (the starting model's); a head name cannot be trained twice."""
    cfg = run.cfg
    if cfg.finetune.get("strategy") != "multihead" or start == cfg.model:
        return {}
    from ase_surftune.models.backends import load_model

    opts = dict(cfg.finetune.get("strategy_options") or {})
    name = opts.get("new_head", "surface")
    foundation = opts.get("foundation_head") or load_model(
        cfg.model, device=cfg.device).adapter.default_head
    prev = load_model(start, device=cfg.device).resolve_head(None)
    return {"strategy_options": {**opts, "new_head": f"{name}_i{i:02d}", "from_head": prev,
                                 "foundation_head": foundation}}


def holdout(run: Run, i: int, record: dict[str, Any]) -> None:
    """Errors of model i on the held-out set and its committee's calibration there, raw
    and scaled by the k of iteration i (fitted on the batches, never on this set)."""
    cfg = run.cfg
    if cfg.holdout_file is None:
        return
    from ase_surftune.active.calibration import calibration, model_errors
    from ase_surftune.active.committee import predict_uncertainty

    hold = read_labels(Path(cfg.holdout_file))
    err = model_errors(run.model_of(i), hold, cfg.device)
    record["holdout"] = {"n": len(hold), "force_mae": err["force_mae"],
                         "force_error": err["forces"].tolist(),
                         "energy_error": err["energy"].tolist()}
    committee = record.get("committee")
    if committee:
        k = run.uncertainty_scale(i)
        u = predict_uncertainty([run.path(p) for p in committee], hold, cfg.device)
        record["holdout"].update(
            uncertainty=u.forces.tolist(), energy_uncertainty=u.energy.tolist(),
            calibration=calibration(u.forces, err["forces"], k["forces"]),
            calibration_energy=calibration(u.energy, err["energy"], k["energy"]))


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return abs(a - b) / abs(b)


def _window_range(run: Run, i: int, n: int) -> dict[str, float | None]:
    """Per target, (max − min) / |mean| of the last ``n`` measurements up to iteration i
    (None: fewer than n, or a missing value)."""
    if i + 1 < n:
        return {t: None for t in run.cfg.targets}
    vals = [run.properties_of(j)["values"] for j in range(i - n + 1, i + 1)]
    out: dict[str, float | None] = {}
    for t in run.cfg.targets:
        xs = [v.get(t) for v in vals]
        if any(x is None or not math.isfinite(x) for x in xs) or not np.mean(xs):
            out[t] = None
        else:
            out[t] = float((max(xs) - min(xs)) / abs(np.mean(xs)))
    return out


def convergence(run: Run, i: int) -> None:
    """Changes of every target against iteration i − 1; sets ``stop`` when done."""
    cfg, st = run.cfg, run.state
    it = st["iterations"][i - 1]
    now = it["properties"]["values"]
    before = run.properties_of(i - 1)["values"]
    changes = {t: _rel(now.get(t), before.get(t)) for t in cfg.targets}
    it["changes"] = changes
    ok = all(c is not None and c < cfg.tolerance for c in changes.values())
    streak = (st["iterations"][i - 2].get("converged_streak", 0) if i > 1 else 0)
    it["converged_streak"] = streak + 1 if ok else 0
    converged = it["converged_streak"] >= cfg.patience
    if cfg.stop_rule == "window":
        it["window_range"] = _window_range(run, i, cfg.patience + 1)
        converged = all(r is not None and r < cfg.tolerance
                        for r in it["window_range"].values())
    if "reference" in st:
        ref = st["reference"]["properties"]["values"]
        it["reference_error"] = {t: _rel(now.get(t), ref.get(t)) for t in cfg.targets}
        it["within_reference"] = all(e is not None and e < cfg.tolerance
                                     for e in it["reference_error"].values())
    if cfg.stop_on_reference:  # benchmark: only the oracle stops the loop (or the budget)
        if it.get("within_reference"):
            it["stop"] = "reference"
    elif converged:
        it["stop"] = "converged"
