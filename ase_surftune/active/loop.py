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

This module claims the folder and runs iterations until a stop reason; the steps live
in :mod:`~ase_surftune.active.steps`, the run folder's state in
:mod:`~ase_surftune.active.state`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase_surftune.active.config import ActiveConfig, load_active_config
from ase_surftune.active.state import (
    LOCK_FILE,
    STATE_FILE,
    STATE_VERSION,
    ActiveLearningInterrupted,
    Run,
    calc_for,
    write_frames,
)
from ase_surftune.active.steps import STEPS, holdout, iterate
from ase_surftune.core.errors import ConfigError, OutputExistsError

__all__ = ["STEPS", "STATE_VERSION", "ActiveLearningInterrupted", "ActiveResult",
           "active_learn"]

log = logging.getLogger(__name__)


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
                          f"settings ({_differ(state, cfg)}; only budget, "
                          f"max_iterations and output options may change); use its "
                          f"state.json config or another output_dir")
    if state.get("status") != "running":  # budget/max_iterations may have been raised
        state["status"] = "running"
    return state


def _differ(state: dict[str, Any], cfg: ActiveConfig) -> str:
    keys = cfg.changed_settings(state.get("config") or {})
    return f"differ: {', '.join(keys)}" if keys else "the fingerprint differs"


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
        run = Run(cfg, out, state, stop_after)
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


def _loop(run: Run) -> None:
    cfg, st = run.cfg, run.state
    from ase_surftune.active.explore import measure_and_record

    if "baseline" not in st:
        t0 = time.perf_counter()
        props, frames = measure_and_record(calc_for(cfg.model, cfg.device), cfg, "iteration 0")
        write_frames(run.path("iter_00/frames.xyz"), frames)
        st["baseline"] = {"properties": props, "frames": "iter_00/frames.xyz",
                          "time_s": round(time.perf_counter() - t0, 2)}
        holdout(run, 0, st["baseline"])
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
        iterate(run, i)
    while st["status"] == "running":
        if _stop_reason(run):
            run.save()
            break
        i = len(st["iterations"]) + 1
        st["iterations"].append({"iteration": i, "done": []})
        iterate(run, i)


def _iteration_finished(it: dict[str, Any]) -> bool:
    return "measure" in it["done"] or it.get("skipped", False)


def _stop_reason(run: Run) -> str | None:
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
