"""The output folder of a fine-tuning run: lock it, refuse or move aside an old run,
and decide between a new run and a resume (checked against the checkpoint)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase_surftune.core.errors import ConfigError, OutputExistsError
from ase_surftune.core.io import atomic_write_json, clean_orphan_temps, exclusive_lock, move_aside
from ase_surftune.training.callbacks import CHECKPOINT_NAME
from ase_surftune.training.checkpoint import load_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.training.config import FinetuneConfig

__all__ = ["BUNDLE_NAME", "CHECKPOINT_NAME", "RUN_FILE", "LOCK_FILE", "RUN_FILES",
           "claim_output_dir", "read_run_file"]

log = logging.getLogger(__name__)

BUNDLE_NAME = "model.stbundle"
#: run id and fingerprint of the run a folder holds (a checkpoint of another run is refused)
RUN_FILE = "run.json"
#: the lock file of an output folder (fcntl.flock; holds the owner's PID)
LOCK_FILE = ".surftune.lock"
#: files whose presence means a folder holds a run
RUN_FILES = (BUNDLE_NAME, CHECKPOINT_NAME, "metrics.json", "metrics.csv", "config.yaml",
             RUN_FILE)


def read_run_file(out_dir: Path) -> dict[str, Any]:
    """The folder's ``run.json`` as a dict; ``{}`` when missing or unreadable."""
    try:
        return dict(json.loads((out_dir / RUN_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def _check_resumable(cfg: FinetuneConfig, out_dir: Path, ck: dict[str, Any]) -> str:
    """The run id of a checkpoint that may be resumed under ``cfg``; ConfigError if not."""
    ckpt_path = out_dir / CHECKPOINT_NAME
    if ck.get("fingerprint") != cfg.fingerprint():
        raise ConfigError(
            f"cannot resume from {str(ckpt_path)!r}: it was written with a different "
            f"configuration (only epochs — extended, and not with the cosine scheduler — "
            f"patience, progress, plot, output_dir and checkpoint_every_steps may change); "
            f"use the run's config.yaml, or start a new run with --overwrite")
    run_id = read_run_file(out_dir).get("run_id")
    if run_id and ck.get("run_id") and ck["run_id"] != run_id:
        raise ConfigError(
            f"cannot resume from {str(ckpt_path)!r}: the checkpoint belongs to run "
            f"{ck['run_id']}, but {RUN_FILE} names run {run_id}; the folder mixes two "
            f"runs, start a new run with --overwrite")
    done = int(ck.get("loop", {}).get("epoch", 0))
    if cfg.epochs < done and cfg.min_steps is None:  # min_steps: the loop knows the epochs
        raise ConfigError(f"cannot resume with epochs {cfg.epochs}: the checkpoint has "
                          f"already run {done} epochs (epochs may be extended, not cut)")
    return str(ck.get("run_id") or run_id or uuid.uuid4().hex)


def claim_output_dir(cfg: FinetuneConfig, out_dir: Path, stack: contextlib.ExitStack
                     ) -> tuple[str, dict[str, Any] | None]:
    """Lock ``out_dir`` for this run and decide new run vs resume; returns (run id, checkpoint).

    A folder that holds a run (any of :data:`RUN_FILES`) is refused to a new run unless
    ``overwrite`` (the old run is moved aside to ``NAME.old-<time>``); ``resume="auto"``
    continues a checkpoint if there is one and otherwise does the same as ``overwrite``.
    ``resume=True`` without a checkpoint is an error, as is a checkpoint of another run
    (run id in ``run.json``) or of another configuration (fingerprint; see
    :meth:`FinetuneConfig.fingerprint` for what may change).
    """

    def lock() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(exclusive_lock(out_dir / LOCK_FILE,
                                           f"output folder {str(out_dir)!r}"))
        clean_orphan_temps(out_dir)

    ckpt_path = out_dir / CHECKPOINT_NAME
    if cfg.resume is True and not out_dir.is_dir():
        raise ConfigError(f"cannot resume: output folder {str(out_dir)!r} does not exist; "
                          f"run without --resume (resume: false) to start a new run")
    lock()
    held = [n for n in RUN_FILES if (out_dir / n).exists()]
    if cfg.resume is True and not ckpt_path.is_file():
        what = f"it holds {held} but no checkpoint" if held else "it holds no run"
        raise ConfigError(f"cannot resume: no {CHECKPOINT_NAME} in {str(out_dir)!r} ({what}); "
                          f"run without --resume (resume: false) to start a new run")
    if cfg.resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        return _check_resumable(cfg, out_dir, ck), ck
    if held:
        if not (cfg.overwrite or cfg.resume == "auto"):
            raise OutputExistsError(
                f"output folder {str(out_dir)!r} already holds a run ({', '.join(held)}); "
                f"pass --resume (resume: true) to continue it, --overwrite (overwrite: true) "
                f"to move it aside to {out_dir.name}.old-<time>, or choose another output_dir")
        old = move_aside(out_dir)
        log.warning("moved the previous run in %s aside to %s", out_dir, old)
        lock()  # the old folder's lock stays held until the end: nobody can slip in
    run_id = uuid.uuid4().hex
    atomic_write_json(out_dir / RUN_FILE, {"run_id": run_id, "fingerprint": cfg.fingerprint(),
                                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return run_id, None
