"""The one training loop shared by every backend and strategy.

It only talks to :class:`~ase_surftune.models.backends.base.ModelAdapter` and trains:
structures come featurized once as :class:`~ase_surftune.training.losses.Sample` objects,
and everything else (checkpoints, metrics files, the loss plot, the progress bar, the
debug stop) is a callback (:mod:`ase_surftune.training.callbacks`).

Determinism and resume. The shuffle of epoch ``e`` comes from a generator seeded with
``(seed, e)``, so the batch sequence does not depend on history. A checkpoint (model,
optimiser, scheduler, EMA, RNG states, epoch, position inside the epoch, best model so
far, history) is written atomically at the end of every epoch and, with
``checkpoint_every_steps``, every N optimiser steps inside an epoch. Resuming a killed
run replays exactly the same steps, so it ends with bit-identical weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ase_surftune.core.errors import TrainingDivergedError
from ase_surftune.core.metrics import ErrorAccumulator
from ase_surftune.training.callbacks import (
    METRIC_COLUMNS,
    Callback,
    CallbackList,
    LoopContext,
    TrainingInterrupted,
    default_callbacks,
    plot_history,
    write_metrics,
)
from ase_surftune.training.checkpoint import set_rng_states
from ase_surftune.training.ema import load_ema_state, make_ema
from ase_surftune.training.losses import (
    Sample,
    _targets,  # noqa: F401  (old import path of multihead and the benchmarks)
    batch_targets,
    compute_loss,
    evaluate,
    predict_samples,
)

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.models.backends.base import ModelAdapter
    from ase_surftune.training.config import FinetuneConfig
    from ase_surftune.training.distributed import DistContext

__all__ = ["Sample", "TrainingInterrupted", "LoopResult", "train_loop", "evaluate",
           "predict_samples", "compute_loss", "METRIC_COLUMNS", "write_metrics",
           "plot_history", "Callback"]

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    #: held-out loss of the kept epoch; None without validation/monitor samples
    best_valid_loss: float | None
    history: list[dict[str, Any]]
    stopped_early: bool
    n_steps: int
    resumed_from: dict[str, int] | None = None
    #: how the kept epoch was chosen (:func:`selection_rule`)
    selected_by: str = "best validation loss"


def _make_optimizer(params: list[torch.nn.Parameter], cfg: FinetuneConfig
                    ) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)


def _make_scheduler(opt: torch.optim.Optimizer, cfg: FinetuneConfig, n_epochs: int) -> Any:
    s = cfg.scheduler
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=s.factor, patience=s.patience, min_lr=s.min_lr)
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs,
                                                          eta_min=s.min_lr)
    return None


def _epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=gen).tolist()


def _new_context(adapter: ModelAdapter, head: str,
                 params: Sequence[tuple[str, torch.nn.Parameter]], train: Sequence[Sample],
                 valid: Sequence[Sample], cfg: FinetuneConfig, output_dir: Path,
                 **kw: Any) -> LoopContext:
    """Seed the RNGs, build optimiser, scheduler and EMA: the state of step 0."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    plist = [p for _, p in params]
    optimizer = _make_optimizer(plist, cfg)
    n_batches = math.ceil(len(train) / cfg.batch_size)
    n_epochs = cfg.planned_epochs(n_batches)
    if n_epochs > cfg.epochs:
        log.info("min_steps %d at %d step(s) per epoch: %d epochs instead of %d",
                 cfg.min_steps, n_batches, n_epochs, cfg.epochs)
    return LoopContext(
        adapter=adapter, head=head, cfg=cfg, output_dir=output_dir, params=plist,
        train=train, valid=valid, optimizer=optimizer,
        scheduler=_make_scheduler(optimizer, cfg, n_epochs),
        ema=make_ema(params, cfg.ema_decay), n_batches=n_batches, n_epochs=n_epochs,
        compute_stress=cfg.loss.stress_weight > 0 and any(s.stress is not None for s in train),
        state={"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_loss": math.inf,
               "best_epoch": -1, "best_state": None, "bad_epochs": 0, "history": [],
               "acc": {}, "done": False, "stopped_early": False}, **kw)


def _restore(ctx: LoopContext, ck: dict[str, Any]) -> dict[str, int]:
    """Load a checkpoint's model, optimiser, scheduler, EMA, RNG and loop states."""
    ctx.adapter.model.load_state_dict(ck["model"])
    ctx.optimizer.load_state_dict(ck["optimizer"])
    if ctx.scheduler is not None and ck.get("scheduler") is not None:
        ctx.scheduler.load_state_dict(ck["scheduler"])
    if ctx.ema is not None and ck.get("ema") is not None:
        load_ema_state(ctx.ema, ck["ema"])
    set_rng_states(ck["rng"])
    st = ctx.state
    st.update(ck["loop"])
    log.info("resuming from %s: epoch %d, step %d of the epoch", ctx.output_dir,
             st["epoch"], st["step_in_epoch"])
    return {"epoch": st["epoch"], "step_in_epoch": st["step_in_epoch"],
            "global_step": st["global_step"]}


def _diverged(ctx: LoopContext, what: str, value: float, where: str) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"non-finite {what} ({value}) {where}; no model saved from it. Lower optimizer.lr "
        f"(now {ctx.optimizer.param_groups[0]['lr']:g}), set clip_grad, or check the labels")


def _train_step(ctx: LoopContext, b: int) -> None:
    """One optimiser step on batch ``b`` of the epoch's order (this rank's share)."""
    st, cfg, bs = ctx.state, ctx.cfg, ctx.cfg.batch_size
    chunk = [ctx.train[ctx.order[i]] for i in range(b * bs, min((b + 1) * bs, len(ctx.train)))]
    weight = 1.0
    if ctx.dist is not None:  # this rank's share of the global batch
        chunk, weight = ctx.dist.shard(chunk)
    out = ctx.adapter.forward([s.graph for s in chunk], ctx.head,
                              compute_stress=ctx.compute_stress, training=True)
    tgt = batch_targets(chunk, ctx.adapter.dtype, ctx.adapter.device)
    loss = compute_loss(out, tgt, cfg.loss, ctx.acc if weight > 0 else None)
    if weight != 1.0:
        loss = loss * weight
    if ctx.extra_loss is not None:
        if hasattr(ctx.extra_loss, "step"):  # stateful hooks (replay) get the step
            ctx.extra_loss.step = st["global_step"]
        extra = ctx.extra_loss(ctx.adapter, chunk, out)
        if extra is not None:
            loss = loss + extra
    bad = not bool(torch.isfinite(loss.detach()))
    if ctx.dist is not None:  # every rank stops together (no rank left in an all-reduce)
        bad = ctx.dist.any_rank(bad, loss.device)
    if bad:
        raise _diverged(ctx, "training loss", f"{'this rank: ' if ctx.dist else ''}"
                        f"{float(loss.detach())}", f"at epoch {st['epoch'] + 1}, step {b + 1} "
                        f"of {ctx.n_batches} (global step {st['global_step'] + 1})")
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(ctx.params, cfg.clip_grad)
    ctx.optimizer.step()
    if ctx.ema is not None:
        ctx.ema.update()
    st["global_step"] += 1
    st["step_in_epoch"] = b + 1
    st["acc"] = dict(ctx.acc.sums)
    ctx.last_loss = float(loss.detach())


def _validate(ctx: LoopContext) -> tuple[dict[str, Any], dict[str, Any], float]:
    """(validation metrics, monitor metrics, the loss that selects the best epoch)."""
    cfg, st, vbs = ctx.cfg, ctx.state, ctx.cfg.valid_batch_size or "auto"
    vm = (evaluate(ctx.adapter, ctx.head, ctx.valid, vbs, cfg.loss) if ctx.valid
          else {"loss": ctx.acc.mean("loss")})
    vloss = float(vm["loss"])
    if not math.isfinite(vloss):
        raise _diverged(ctx, f"{'validation' if ctx.valid else 'training'} loss", vloss,
                        f"after epoch {st['epoch'] + 1} (global step {st['global_step']}): "
                        f"the weights diverged")
    mm: dict[str, Any] = {}
    if ctx.monitor:
        mm = evaluate(ctx.adapter, ctx.head, ctx.monitor, vbs, cfg.loss)
        vloss = float(mm["loss"])
    return vm, mm, vloss


def _has_holdout(ctx: LoopContext) -> bool:
    """Whether validation or monitor samples exist to select the best epoch with."""
    return bool(ctx.valid) or bool(ctx.monitor)


def selection_rule(has_valid: bool, has_monitor: bool) -> str:
    """How the loop picks the weights it returns, in words (for metrics and logs).

    With validation (or monitor) samples, the epoch of lowest held-out loss is kept and
    ``patience`` stops the run. Without them, the last epoch is kept and the run is never
    stopped early: the only loss left is the epoch's mean *training* loss, measured on
    weights that change during the epoch. Selecting or stopping on it follows its noise
    (Cu/EMT active learning: a fine-tune stopped at epoch 38 that restored epoch 28 left
    the vacancy barrier 1.088 × EMT; the same run to 45 epochs gave 1.028 ×;
    benchmarks/RESULTS.md).
    """
    if has_monitor:
        return "best monitor loss"
    return "best validation loss" if has_valid else "last epoch (no validation set)"


def _end_epoch(ctx: LoopContext, t0: float) -> dict[str, Any]:
    """Validate (with the EMA weights if any), keep the best, step the schedule."""
    st, acc = ctx.state, ctx.acc
    with ctx.ema.average_parameters() if ctx.ema is not None else contextlib.nullcontext():
        vm, mm, vloss = _validate(ctx)
        # no held-out samples: the last epoch is kept (see selection_rule)
        improved = vloss < st["best_loss"] or not _has_holdout(ctx)
        if improved:
            st["best_loss"], st["best_epoch"], st["bad_epochs"] = vloss, st["epoch"] + 1, 0
            st["best_state"] = {k: v.detach().clone()
                                for k, v in ctx.adapter.model.state_dict().items()}
        else:
            st["bad_epochs"] += 1
    lr = ctx.optimizer.param_groups[0]["lr"]
    if isinstance(ctx.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        ctx.scheduler.step(vloss)
    elif ctx.scheduler is not None:
        ctx.scheduler.step()
    row = {"epoch": st["epoch"] + 1, "step": st["global_step"], "lr": lr,
           "train_loss": acc.mean("loss"), "train_energy_mae_per_atom": acc.mae("energy"),
           "train_forces_mae": acc.mae("forces"),
           "valid_loss": float(vm["loss"]) if ctx.valid else None,
           **{f"valid_{k}": vm.get(k) for k in ("energy_mae_per_atom", "energy_rmse_per_atom",
                                                 "forces_mae", "forces_rmse", "stress_mae")},
           "monitor_loss": mm.get("loss"), "monitor_forces_mae": mm.get("forces_mae"),
           "best": improved, "epoch_time_s": round(time.perf_counter() - t0, 4)}
    st["history"] = [*st["history"], row]
    st["epoch"] += 1
    st["step_in_epoch"] = 0
    st["acc"] = {}
    patience = ctx.cfg.patience if _has_holdout(ctx) else None
    if patience is not None and st["bad_epochs"] >= patience:
        st["done"] = st["stopped_early"] = True
        log.info("early stopping after epoch %d (no improvement for %d epochs)",
                 st["epoch"], patience)
    return row


def train_loop(adapter: ModelAdapter, head: str,
               params: Sequence[tuple[str, torch.nn.Parameter]],
               train: Sequence[Sample], valid: Sequence[Sample], cfg: FinetuneConfig,
               output_dir: str | Path, *, resume_from: dict[str, Any] | None = None,
               extra_loss: Callable[..., torch.Tensor | None] | None = None,
               checkpoint_extra: dict[str, Any] | None = None,
               stop_after_step: int | None = None, dist: DistContext | None = None,
               monitor: Sequence[Sample] | None = None,
               callbacks: Sequence[Callback] | None = None) -> LoopResult:
    """Train ``params`` of ``adapter`` on cached samples; see the module docstring.

    Args:
        adapter: model trained in place (its weights end as the *last* step's; the best
            weights are returned in :attr:`LoopResult.best_state`).
        head: head to train. params: (name, parameter) pairs handed to the optimiser.
        train, valid: featurized samples; with no validation (or monitor) samples the
            last epoch is kept and ``cfg.patience`` is ignored (:func:`selection_rule`).
        cfg: the run configuration. output_dir: where checkpoint and metrics files go.
        resume_from: a checkpoint dict (``load_checkpoint``) to continue from.
        extra_loss: ``f(adapter, samples, outputs) -> tensor | None`` added to the loss.
        checkpoint_extra: extra plain data stored in every checkpoint.
        stop_after_step: debug hook: raise :class:`TrainingInterrupted` right after this
            global step (and its checkpoint; simulates a kill).
        dist: data-parallel context: each global batch is split across ranks (the adapter
            wrapped with ``adapter.wrap_ddp()``); only rank 0 writes files.
        monitor: validation samples (e.g. the slab frames) whose loss selects the best
            model, drives early stopping and the plateau schedule.
        callbacks: extra :class:`Callback` objects, run after the default ones.
    """
    output_dir = Path(output_dir)
    ctx = _new_context(adapter, head, params, train, valid, cfg, output_dir,
                       monitor=monitor, extra_loss=extra_loss, dist=dist)
    resumed_from = _restore(ctx, resume_from) if resume_from is not None else None
    run = CallbackList([*default_callbacks(cfg, output_dir, checkpoint_extra,
                                           stop_after_step), *(callbacks or [])])
    st = ctx.state
    if not _has_holdout(ctx) and cfg.patience is not None:
        (log.warning if "patience" in cfg.model_fields_set else log.info)(
            "no validation set: early stopping (patience %d) is off and the last epoch's "
            "weights are kept", cfg.patience)
    try:
        run.on_train_start(ctx)
        while not st["done"] and st["epoch"] < ctx.n_epochs:
            t0 = time.perf_counter()
            ctx.order = _epoch_order(cfg.seed, st["epoch"], len(train))
            ctx.acc = ErrorAccumulator(st["acc"])
            run.on_epoch_start(ctx)
            adapter.model.train()
            for b in range(st["step_in_epoch"], ctx.n_batches):
                _train_step(ctx, b)
                run.on_step_end(ctx)
            if dist is not None:  # training errors over the whole global batch sequence
                ctx.acc = ErrorAccumulator(dist.all_reduce_sum(ctx.acc.sums))
            run.on_epoch_end(ctx, _end_epoch(ctx, t0))
        run.on_train_end(ctx)
    finally:
        run.on_exit(ctx)
    if st["best_state"] is None:  # zero epochs run (resume of a finished run)
        st["best_state"] = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
    return LoopResult(best_state=st["best_state"], best_epoch=st["best_epoch"],
                      best_valid_loss=st["best_loss"] if _has_holdout(ctx) else None,
                      history=st["history"], stopped_early=st["stopped_early"],
                      n_steps=st["global_step"], resumed_from=resumed_from,
                      selected_by=selection_rule(bool(ctx.valid), bool(ctx.monitor)))
