"""Training-loop callbacks: everything the loop does besides training.

The loop (:func:`~ase_surftune.training.loop.train_loop`) only steps the optimiser and
validates; checkpoints, the metrics files, the loss plot, the progress bar and the
``stop_after_step`` debug hook are :class:`Callback` objects called at fixed points:

* ``on_train_start(ctx)`` once, after a resumed state is restored;
* ``on_epoch_start(ctx)`` before the first batch of an epoch (also a resumed one);
* ``on_step_end(ctx)`` after each optimiser step (``ctx.state`` already advanced);
* ``on_epoch_end(ctx, row)`` after validation, the scheduler step and early-stopping
  bookkeeping (``row`` is the epoch's metrics row, already in ``ctx.state["history"]``);
* ``on_train_end(ctx)`` after the last epoch (not when training raised);
* ``on_exit(ctx)`` always, also after an exception (release resources).

The default callbacks run in this order: progress, checkpoint, metrics file, plot,
stop-after-step — so a debug stop happens right after the checkpoint of its step, as a
kill would.
"""

from __future__ import annotations

import csv
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase_surftune.core.metrics import ErrorAccumulator
from ase_surftune.training.checkpoint import rng_states, save_checkpoint
from ase_surftune.training.ema import ema_state

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable, Sequence

    import torch

    from ase_surftune.models.backends.base import ModelAdapter
    from ase_surftune.training.config import FinetuneConfig
    from ase_surftune.training.distributed import DistContext

__all__ = ["LoopContext", "Callback", "CallbackList", "CheckpointCallback",
           "MetricsFileCallback", "PlotCallback", "ProgressCallback", "StopAfterStep",
           "TrainingInterrupted", "default_callbacks", "write_metrics", "plot_history",
           "METRIC_COLUMNS", "CHECKPOINT_NAME"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
METRIC_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_energy_mae_per_atom",
                  "train_forces_mae", "valid_loss", "valid_energy_mae_per_atom",
                  "valid_energy_rmse_per_atom", "valid_forces_mae", "valid_forces_rmse",
                  "valid_stress_mae", "monitor_loss", "monitor_forces_mae", "best",
                  "epoch_time_s"]


class TrainingInterrupted(RuntimeError):
    """Raised by the ``stop_after_step`` debug hook (simulates a kill)."""


@dataclass
class LoopContext:
    """What the loop and its callbacks share.

    ``state`` is the resumable loop state (stored as ``checkpoint["loop"]``): ``epoch``
    (epochs completed), ``step_in_epoch``, ``global_step``, ``best_loss``, ``best_epoch``,
    ``best_state``, ``bad_epochs``, ``history``, ``acc`` (the epoch's error sums so far),
    ``done``, ``stopped_early``.
    """

    adapter: ModelAdapter
    head: str
    cfg: FinetuneConfig
    output_dir: Path
    params: list[torch.nn.Parameter]
    train: Sequence[Any]
    valid: Sequence[Any]
    monitor: Sequence[Any] | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any
    n_batches: int
    #: epochs this run trains (``cfg.planned_epochs(n_batches)``: ``min_steps`` may raise it)
    n_epochs: int
    compute_stress: bool
    extra_loss: Callable[..., Any] | None = None
    dist: DistContext | None = None
    state: dict[str, Any] = field(default_factory=dict)
    acc: ErrorAccumulator = field(default_factory=ErrorAccumulator)
    order: list[int] = field(default_factory=list)
    last_loss: float = float("nan")

    @property
    def main_rank(self) -> bool:
        return self.dist is None or self.dist.is_main


class Callback:
    """Base class: every hook does nothing; override the ones you need."""

    def on_train_start(self, ctx: LoopContext) -> None: ...

    def on_epoch_start(self, ctx: LoopContext) -> None: ...

    def on_step_end(self, ctx: LoopContext) -> None: ...

    def on_epoch_end(self, ctx: LoopContext, row: dict[str, Any]) -> None: ...

    def on_train_end(self, ctx: LoopContext) -> None: ...

    def on_exit(self, ctx: LoopContext) -> None: ...


class CallbackList(Callback):
    """Calls each hook of each callback, in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def _each(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_train_start(self, ctx: LoopContext) -> None:
        self._each("on_train_start", ctx)

    def on_epoch_start(self, ctx: LoopContext) -> None:
        self._each("on_epoch_start", ctx)

    def on_step_end(self, ctx: LoopContext) -> None:
        self._each("on_step_end", ctx)

    def on_epoch_end(self, ctx: LoopContext, row: dict[str, Any]) -> None:
        self._each("on_epoch_end", ctx, row)

    def on_train_end(self, ctx: LoopContext) -> None:
        self._each("on_train_end", ctx)

    def on_exit(self, ctx: LoopContext) -> None:
        self._each("on_exit", ctx)


class CheckpointCallback(Callback):
    """Atomic ``checkpoint.pt`` at the end of every epoch and, with ``every_steps``,
    every N optimiser steps inside an epoch (rank 0 only).

    The checkpoint holds the model, optimiser, scheduler and EMA states, the RNG states,
    the loop state, the config fingerprint and ``extra`` (run id, dataset hash,
    reference energies); it is read with ``weights_only=True``.
    """

    def __init__(self, path: Path, every_steps: int | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.path, self.every_steps, self.extra = Path(path), every_steps, dict(extra or {})

    def save(self, ctx: LoopContext) -> None:
        if not ctx.main_rank:
            return
        save_checkpoint(self.path, {
            "model": ctx.adapter.model.state_dict(), "optimizer": ctx.optimizer.state_dict(),
            "scheduler": ctx.scheduler.state_dict() if ctx.scheduler is not None else None,
            "ema": ema_state(ctx.ema) if ctx.ema is not None else None,
            "rng": rng_states(), "loop": dict(ctx.state), "fingerprint": ctx.cfg.fingerprint(),
            **self.extra})

    def on_step_end(self, ctx: LoopContext) -> None:
        st = ctx.state
        if (self.every_steps and st["global_step"] % self.every_steps == 0
                and st["step_in_epoch"] < ctx.n_batches):
            self.save(ctx)

    def on_epoch_end(self, ctx: LoopContext, row: dict[str, Any]) -> None:
        self.save(ctx)


class MetricsFileCallback(Callback):
    """``metrics.csv`` and ``metrics.json`` rewritten after every epoch (rank 0)."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)

    def on_epoch_end(self, ctx: LoopContext, row: dict[str, Any]) -> None:
        if ctx.main_rank:
            write_metrics(ctx.state["history"], self.output_dir)


class PlotCallback(Callback):
    """``loss_curve.png`` once training ends (rank 0)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_end(self, ctx: LoopContext) -> None:
        if ctx.main_rank and ctx.state["history"]:
            plot_history(ctx.state["history"], self.path)


class ProgressCallback(Callback):
    """A tqdm bar per epoch on stderr (rank 0; ``progress: false`` turns it off)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def on_epoch_start(self, ctx: LoopContext) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=ctx.n_batches, initial=ctx.state["step_in_epoch"],
                        disable=not self.enabled or not ctx.main_rank,
                        desc=f"epoch {ctx.state['epoch'] + 1}/{ctx.n_epochs}",
                        unit="batch", leave=True, file=sys.stderr, dynamic_ncols=True)

    def on_step_end(self, ctx: LoopContext) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{ctx.last_loss:.4g}",
                             F_mae=f"{ctx.acc.mae('forces') or 0:.4f}")

    def on_epoch_end(self, ctx: LoopContext, row: dict[str, Any]) -> None:
        if ctx.valid:
            self.bar.set_postfix(loss=f"{row['train_loss']:.4g}",
                                 val=f"{row['monitor_loss'] or row['valid_loss']:.4g}",
                                 val_F_mae=f"{row['valid_forces_mae'] or 0:.4f}")
        else:  # no validation set: the last epoch is kept (loop.selection_rule)
            self.bar.set_postfix(loss=f"{row['train_loss']:.4g}", no_valid="keeps last epoch")
        self.on_exit(ctx)

    def on_exit(self, ctx: LoopContext) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StopAfterStep(Callback):
    """Debug hook: raise :class:`TrainingInterrupted` once ``global_step >= step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, ctx: LoopContext) -> None:
        if ctx.state["global_step"] >= self.step:
            raise TrainingInterrupted(f"stopped after step {ctx.state['global_step']} "
                                      f"(debug hook)")


def default_callbacks(cfg: FinetuneConfig, output_dir: Path,
                      checkpoint_extra: dict[str, Any] | None = None,
                      stop_after_step: int | None = None) -> list[Callback]:
    """Progress bar, checkpoints, metrics files, the loss plot (``cfg.plot``) and the
    optional debug stop, in the order the loop needs them."""
    out: list[Callback] = [ProgressCallback(cfg.progress),
                           CheckpointCallback(Path(output_dir) / CHECKPOINT_NAME,
                                              cfg.checkpoint_every_steps, checkpoint_extra),
                           MetricsFileCallback(output_dir)]
    if cfg.plot:
        out.append(PlotCallback(Path(output_dir) / "loss_curve.png"))
    if stop_after_step is not None:
        out.append(StopAfterStep(stop_after_step))
    return out


# --------------------------------------------------------------------------- files


def write_metrics(history: list[dict[str, Any]], output_dir: Path,
                  extra: dict[str, Any] | None = None) -> None:
    """``metrics.csv`` (one row per epoch) and ``metrics.json`` (rows + summary), atomically."""
    from ase_surftune.core.io import atomic_write_json, atomic_writer

    with atomic_writer(Path(output_dir) / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_COLUMNS})
    atomic_write_json(Path(output_dir) / "metrics.json", {"epochs": history, **(extra or {})})


def plot_history(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Train/validation loss and validation force MAE (eV/Å) per epoch (``loss_curve.png``)."""
    if not history:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    ep = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    has_valid = any(r.get("valid_loss") is not None for r in history)
    ax1.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
    if has_valid:  # without a validation set there is no second curve (not a train copy)
        ax1.plot(ep, [r["valid_loss"] for r in history], "s-", label="valid")
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend(title=None if has_valid else "no validation set")
    which = "valid" if has_valid else "train"
    ax2.plot(ep, [r[f"{which}_forces_mae"] for r in history], "s-", color="C1")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"{which} force MAE (eV/Å)")
    fig.tight_layout()
    from ase_surftune.core.io import atomic_writer

    with atomic_writer(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path
