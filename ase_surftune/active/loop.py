"""``active_learn(config)``: the fewest labels to converged target properties.

One iteration *i* (the model of iteration *i − 1* is the "current" model; iteration 0 is
the starting model, measured once):

1. ``explore``   candidates from the current model's property workflows (+ MD, rattle,
                 strain; :mod:`~ase_surftune.active.explore`);
2. ``uncertainty`` the current committee's spread on every candidate (none at i = 1);
3. ``select``    a batch (:mod:`~ase_surftune.active.select`), cut to the budget left;
4. ``label``     with the labeller through the resumable :func:`~ase_surftune.data.label`;
5. ``calibrate`` the current model's true force error on the new labels vs the
                 uncertainty predicted for them before labelling;
6. ``finetune``  on every label so far, warm-started from the current model;
7. ``committee`` bootstrap readout heads on the new model (uncertainty mode);
8. ``measure``   the targets with the new model (its workflows' frames are the next
                 candidates), held-out errors, the stop test.

After every step the state (``state.json``) is written atomically; a rerun of the same
config continues after the last finished step (the output folder is locked meanwhile).
Fine-tuning steps resume from their own checkpoints, labelling from its label file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_surftune.active.config import ActiveConfig, load_active_config
from ase_surftune.core.errors import ConfigError, OutputExistsError, SurfTuneError

__all__ = ["STEPS", "ActiveLearningInterrupted", "ActiveResult", "active_learn"]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
LOCK_FILE = ".surftune.lock"
STEPS = ("explore", "uncertainty", "select", "label", "calibrate", "finetune", "committee",
         "measure")
STATE_VERSION = 1


class ActiveLearningInterrupted(SurfTuneError, RuntimeError):
    """Raised by the ``stop_after`` debug hook (a simulated kill after a step)."""


@dataclass
class ActiveResult:
    """What :func:`active_learn` returns.

    Attributes:
        output_dir: the run folder (state.json, report.json/csv, plots, iter_NN/).
        status: ``converged``, ``budget``, ``max_iterations``, ``reference`` (benchmark
            stop) or ``no_candidates``.
        n_labels: labels used (structures labelled by the labeller).
        model: the final model bundle (the starting model's spec if nothing was trained).
        properties: the final model's target values.
        rows: one report row per iteration (iteration 0 = the starting model).
    """

    output_dir: Path
    status: str
    n_labels: int
    model: str
    properties: dict[str, float | None]
    rows: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- files


def _write_frames(path: Path, frames: Sequence[Atoms]) -> list[Atoms]:
    """Write ``frames`` atomically and return them as read back (exact file values)."""
    import ase.io

    from ase_surftune.core.io import atomic_writer

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path, "w") as fh:
        ase.io.write(fh, list(frames), format="extxyz")
    return _read_frames(path)


def _read_frames(path: Path) -> list[Atoms]:
    import ase.io

    if not path.is_file() or path.stat().st_size == 0:
        return []
    frames = list(ase.io.read(path, ":", format="extxyz"))
    for f in frames:  # candidates and workflow frames carry no labels
        f.calc = None
    return frames


def _read_labels(path: Path) -> list[Atoms]:
    from ase_surftune.data import read_labelled

    return read_labelled(str(path)) if path.is_file() and path.stat().st_size else []


class _Run:
    """The state of one run folder and the helpers every step needs."""

    def __init__(self, cfg: ActiveConfig, out: Path, state: dict[str, Any],
                 stop_after: str | None) -> None:
        self.cfg, self.out, self.state, self.stop_after = cfg, out, state, stop_after

    def save(self, step: str | None = None) -> None:
        from ase_surftune.core.io import atomic_write_json
        from ase_surftune.evaluation.tables import jsonable

        atomic_write_json(self.out / STATE_FILE, jsonable(self.state))
        if step is not None and self.stop_after == step:
            raise ActiveLearningInterrupted(f"stopped after step {step} (stop_after)")

    def path(self, rel: str) -> Path:
        return self.out / rel

    def iter_dir(self, i: int) -> str:
        return f"iter_{i:02d}"

    def labels_until(self, i: int) -> list[Atoms]:
        """Every label of iterations 1..i (in order)."""
        out: list[Atoms] = []
        for it in self.state["iterations"][:i]:
            if "label" in it["done"]:
                out += _read_labels(self.path(it["labels"]))
        return out

    def model_of(self, i: int) -> str:
        """The model after iteration i (0: the starting model)."""
        if i == 0:
            return self.cfg.model
        return str(self.path(self.state["iterations"][i - 1]["model"]))

    def committee_of(self, i: int) -> list[Path] | None:
        if i == 0:
            return None
        c = self.state["iterations"][i - 1].get("committee")
        return [self.path(p) for p in c] if c else None

    def properties_of(self, i: int) -> dict[str, Any]:
        return (self.state["baseline"] if i == 0
                else self.state["iterations"][i - 1])["properties"]


# --------------------------------------------------------------------------- claim


def _claim(cfg: ActiveConfig, out: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    import json

    from ase_surftune.core.io import clean_orphan_temps, exclusive_lock, move_aside

    out.mkdir(parents=True, exist_ok=True)
    stack.enter_context(exclusive_lock(out / LOCK_FILE, f"output folder {str(out)!r}"))
    clean_orphan_temps(out)
    sf = out / STATE_FILE
    fresh = {"version": STATE_VERSION, "fingerprint": cfg.fingerprint(),
             "config": cfg.model_dump(mode="json"), "iterations": [], "status": "running",
             "n_labels": 0}
    if not sf.is_file():
        if cfg.resume is True:
            raise ConfigError(f"cannot resume: no {STATE_FILE} in {str(out)!r}; run "
                              f"without resume to start a new run")
        if any(p.name != LOCK_FILE for p in out.iterdir()) and not cfg.overwrite:
            raise OutputExistsError(f"output folder {str(out)!r} is not empty and holds no "
                                    f"active-learning run; choose another output_dir or "
                                    f"pass overwrite: true")
        return fresh
    if cfg.overwrite:
        old = move_aside(out)
        log.warning("moved the previous run in %s aside to %s", out, old)
        out.mkdir(parents=True)
        stack.enter_context(exclusive_lock(out / LOCK_FILE, f"output folder {str(out)!r}"))
        return fresh
    if cfg.resume is False:
        raise OutputExistsError(f"output folder {str(out)!r} holds an active-learning run; "
                                f"resume it (resume: auto/true), move it aside "
                                f"(overwrite: true) or choose another output_dir")
    state = json.loads(sf.read_text())
    if state.get("fingerprint") != cfg.fingerprint():
        raise ConfigError(f"cannot resume the run in {str(out)!r}: it was started with other "
                          f"settings (only budget, max_iterations and output options may "
                          f"change); use its state.json config or another output_dir")
    if state.get("status") != "running":  # budget/max_iterations may have been raised
        state["status"] = "running"
    return state


# --------------------------------------------------------------------------- main


def active_learn(config: ActiveConfig | dict[str, Any] | str | Path, *,
                 stop_after: str | None = None, **overrides: Any) -> ActiveResult:
    """Run (or resume) the active-learning loop described by ``config``.

    Args:
        config: an :class:`ActiveConfig`, a dict or a YAML path.
        stop_after: debug hook ``"I:STEP"`` (e.g. ``"2:label"``, ``"0:measure"``): raise
            :class:`ActiveLearningInterrupted` right after that step is saved, as a kill
            would; rerunning the same config resumes.
        **overrides: config keys that override ``config``.

    Returns:
        :class:`ActiveResult`; the folder holds ``report.json``, ``report.csv``,
        ``selected.csv``, ``progress.png`` and ``calibration.png``.

    Raises:
        ConfigError: invalid config (all problems at once), before any work;
            OutputExistsError / LockedError for the output folder.
    """
    import torch

    cfg = load_active_config(config, **overrides)
    out = Path(cfg.output_dir)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    with contextlib.ExitStack() as stack:
        state = _claim(cfg, out, stack)
        run = _Run(cfg, out, state, stop_after)
        run.save()
        _loop(run)
        from ase_surftune.active.report import write_report

        rows = write_report(run.state, out, cfg)
        last = len(state["iterations"])
        while last > 0 and "finetune" not in state["iterations"][last - 1]["done"]:
            last -= 1
        props = run.properties_of(last)["values"] if last or "baseline" in state else {}
        return ActiveResult(output_dir=out, status=state["status"],
                            n_labels=int(state["n_labels"]), model=run.model_of(last),
                            properties={t: props.get(t) for t in cfg.targets}, rows=rows)


def _calc(model: str, device: str):
    from ase_surftune.models.calculator import SurfTuneCalculator

    return SurfTuneCalculator(model, device=device)


def _loop(run: _Run) -> None:
    cfg, st = run.cfg, run.state
    from ase_surftune.active.explore import measure_and_record

    if "baseline" not in st:
        t0 = time.perf_counter()
        props, frames = measure_and_record(_calc(cfg.model, cfg.device), cfg, "iteration 0")
        _write_frames(run.path("iter_00/frames.xyz"), frames)
        st["baseline"] = {"properties": props, "frames": "iter_00/frames.xyz",
                          "time_s": round(time.perf_counter() - t0, 2)}
        _holdout(run, 0, st["baseline"])
        run.save("0:measure")
    if cfg.reference_properties and "reference" not in st:
        from ase_surftune.evaluation.compare import measure_properties

        t0 = time.perf_counter()
        ref = measure_properties(("reference", cfg.labeller_calculator()),
                                 cfg.compare_config(), label=f"reference ({cfg.labeller})")
        st["reference"] = {"properties": ref.to_dict(),
                           "time_s": round(time.perf_counter() - t0, 2)}
        run.save("0:reference")
    i = len(st["iterations"])
    if i and not _iteration_finished(st["iterations"][-1]):
        _iterate(run, i)
    while st["status"] == "running":
        if _stop_reason(run):
            run.save()
            break
        i = len(st["iterations"]) + 1
        st["iterations"].append({"iteration": i, "done": []})
        _iterate(run, i)


def _iteration_finished(it: dict[str, Any]) -> bool:
    return "measure" in it["done"] or it.get("skipped", False)


def _stop_reason(run: _Run) -> str | None:
    """Set and return ``state["status"]`` if the loop must stop before a new iteration."""
    cfg, st = run.cfg, run.state
    its = st["iterations"]
    reason = None
    if its and its[-1].get("stop") and not (cfg.stop_on_reference
                                            and its[-1]["stop"] == "converged"):
        reason = its[-1]["stop"]
    elif st["n_labels"] >= cfg.budget:
        reason = "budget"
    elif len(its) >= cfg.max_iterations:
        reason = "max_iterations"
    if reason:
        st["status"] = reason
    return reason


def _iterate(run: _Run, i: int) -> None:
    """Run the unfinished steps of iteration ``i`` (1-based)."""
    cfg, st = run.cfg, run.state
    it = st["iterations"][i - 1]
    d = run.iter_dir(i)
    prev_model = run.model_of(i - 1)
    committee = run.committee_of(i - 1)
    seed = cfg.seed * 1000 + i

    def done(step: str) -> None:
        it["done"].append(step)
        run.save(f"{i}:{step}")

    if "explore" not in it["done"]:
        from ase_surftune.active.explore import explore

        prev_frames = _read_frames(run.path(st["baseline"]["frames"] if i == 1
                                            else st["iterations"][i - 2]["frames"]))
        t0 = time.perf_counter()
        cands = explore(prev_frames, _calc(prev_model, cfg.device), cfg.explore, seed)
        _write_frames(run.path(f"{d}/candidates.xyz"), cands)
        it.update(candidates=f"{d}/candidates.xyz", n_candidates=len(cands),
                  explore_time_s=round(time.perf_counter() - t0, 2))
        done("explore")
    cands = _read_frames(run.path(it["candidates"]))
    if not cands:
        it.update(stop="no_candidates", skipped=True)
        run.save()
        return
    if "uncertainty" not in it["done"]:
        if committee:
            from ase_surftune.active.committee import predict_uncertainty

            it["uncertainty"] = predict_uncertainty(committee, cands, cfg.device).to_dict()
        else:
            it["uncertainty"] = None
        done("uncertainty")
    if "select" not in it["done"]:
        from ase_surftune.active.select import select_batch

        n = min(cfg.batch_size, cfg.budget - st["n_labels"])
        from ase_surftune.active.committee import Uncertainty

        unc = Uncertainty.from_dict(it["uncertainty"]).score() if it["uncertainty"] else None
        idx, why = select_batch(cands, n, cfg.selection, seed, uncertainty=unc,
                                labelled=run.labels_until(i - 1), pool_factor=cfg.pool_factor)
        it.update(selected=idx, reasons=why,
                  sources=[cands[j].info.get("al_source", "") for j in idx])
        done("select")
    if "label" not in it["done"]:
        from ase_surftune.data import label

        batch = [cands[j].copy() for j in it["selected"]]
        for a, src in zip(batch, it["sources"]):
            a.info = {"config_type": src.split(":")[0], "al_source": src,
                      "al_iteration": i}
        t0 = time.perf_counter()
        label(batch, cfg.labeller_calculator(), run.path(f"{d}/labels.xyz"),
              progress=cfg.progress)
        it.update(labels=f"{d}/labels.xyz", n_labelled=len(batch),
                  label_time_s=round(time.perf_counter() - t0, 2))
        st["n_labels"] = int(st["n_labels"]) + len(batch)
        done("label")
    new_labels = _read_labels(run.path(it["labels"]))
    if "calibrate" not in it["done"]:
        from ase_surftune.active.committee import calibration, force_errors

        err, mae = force_errors(prev_model, new_labels, cfg.device)
        it["batch_force_mae_before"] = mae
        it["batch_force_error"] = err.tolist()
        if it["uncertainty"]:
            u = np.asarray(it["uncertainty"]["forces"])[it["selected"]]
            it["batch_uncertainty"] = u.tolist()
            it["calibration_batch"] = calibration(u, err)
        else:
            it["calibration_batch"] = None
        done("calibrate")
    if "finetune" not in it["done"]:
        from ase_surftune.training.api import finetune

        train = run.labels_until(i)
        start = prev_model if cfg.warm_start else cfg.model
        t0 = time.perf_counter()
        res = finetune(cfg.finetune_config(run.path(f"{d}/model"), model=start, seed=seed,
                                           **_multihead_warm_start(run, i, start)),
                       train=train)
        it.update(model=str(res.bundle_path.relative_to(run.out)), n_train=len(train),
                  warm_start_from=start if i == 1 or not cfg.warm_start
                  else f"iteration {i - 1}", finetune_time_s=round(time.perf_counter() - t0, 2))
        done("finetune")
    model = run.model_of(i)
    if "committee" not in it["done"]:
        if cfg.selection == "uncertainty" or cfg.committee.in_random_mode:
            from ase_surftune.active.committee import train_committee

            t0 = time.perf_counter()
            paths = train_committee(model, run.labels_until(i), cfg,
                                    run.path(f"{d}/committee"), seed)
            it.update(committee=[str(p.relative_to(run.out)) for p in paths],
                      committee_time_s=round(time.perf_counter() - t0, 2))
        else:
            it["committee"] = None
        done("committee")
    if "measure" not in it["done"]:
        from ase_surftune.active.explore import measure_and_record

        t0 = time.perf_counter()
        props, frames = measure_and_record(_calc(model, cfg.device), cfg, f"iteration {i}")
        _write_frames(run.path(f"{d}/frames.xyz"), frames)
        it.update(properties=props, frames=f"{d}/frames.xyz",
                  measure_time_s=round(time.perf_counter() - t0, 2))
        _holdout(run, i, it)
        _convergence(run, i)
        done("measure")


def _multihead_warm_start(run: _Run, i: int, start: str) -> dict[str, Any]:
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


def _holdout(run: _Run, i: int, record: dict[str, Any]) -> None:
    """Force errors of model i on the held-out set and the committee's calibration there."""
    cfg = run.cfg
    if cfg.holdout_file is None:
        return
    from ase_surftune.active.committee import calibration, force_errors, predict_uncertainty

    hold = _read_labels(Path(cfg.holdout_file))
    err, mae = force_errors(run.model_of(i), hold, cfg.device)
    record["holdout"] = {"n": len(hold), "force_mae": mae, "force_error": err.tolist()}
    committee = record.get("committee")
    if committee:
        u = predict_uncertainty([run.path(p) for p in committee], hold, cfg.device)
        record["holdout"].update(uncertainty=u.forces.tolist(),
                                 calibration=calibration(u.forces, err))


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return abs(a - b) / abs(b)


def _convergence(run: _Run, i: int) -> None:
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
    if "reference" in st:
        ref = st["reference"]["properties"]["values"]
        it["reference_error"] = {t: _rel(now.get(t), ref.get(t)) for t in cfg.targets}
        it["within_reference"] = all(e is not None and e < cfg.tolerance
                                     for e in it["reference_error"].values())
    if cfg.stop_on_reference:  # benchmark: only the oracle stops the loop (or the budget)
        if it.get("within_reference"):
            it["stop"] = "reference"
    elif it["converged_streak"] >= cfg.patience:
        it["stop"] = "converged"
