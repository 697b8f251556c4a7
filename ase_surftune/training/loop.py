"""The one training loop shared by every backend and strategy.

It only talks to :class:`~ase_surftune.models.backends.base.ModelAdapter`: structures are
featurized **once** (``adapter.featurize``) into :class:`Sample` objects holding the
backend graph and the targets, and the same graphs are reused every epoch.

Determinism and resume. The shuffle of epoch ``e`` comes from a generator seeded with
``(seed, e)``, so the batch sequence does not depend on history. A checkpoint
(model, optimiser, scheduler, EMA, RNG states, epoch, position inside the epoch, best
model so far, history) is written atomically at the end of every epoch and, with
``checkpoint_every_steps``, every N optimiser steps inside an epoch. Resuming a killed
run replays exactly the same steps, so it ends with bit-identical weights.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ase_surftune.core.errors import TrainingDivergedError
from ase_surftune.training.checkpoint import rng_states, save_checkpoint, set_rng_states

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.models.backends.base import ModelAdapter
    from ase_surftune.training.config import FinetuneConfig, LossConfig
    from ase_surftune.training.distributed import DistContext

__all__ = ["Sample", "TrainingInterrupted", "LoopResult", "train_loop", "evaluate",
           "predict_samples", "EMA", "METRIC_COLUMNS"]

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_energy_mae_per_atom",
                  "train_forces_mae", "valid_loss", "valid_energy_mae_per_atom",
                  "valid_energy_rmse_per_atom", "valid_forces_mae", "valid_forces_rmse",
                  "valid_stress_mae", "monitor_loss", "monitor_forces_mae", "best",
                  "epoch_time_s"]


class TrainingInterrupted(RuntimeError):
    """Raised by the ``stop_after_step`` debug hook (simulates a kill)."""


@dataclass
class Sample:
    """One featurized structure and its targets in the model's reference frame.

    Attributes:
        graph: the backend graph (built once by ``adapter.featurize``).
        energy: target total energy, eV (``E_ref − Σ δ`` after alignment).
        forces: (n, 3) eV/Å in the adapter's dtype.
        stress: (3, 3) eV/Å³ or None.
        force_mask: (n,) bool, atoms whose forces enter the loss and errors.
    """

    graph: Any
    energy: float
    forces: torch.Tensor
    n_atoms: int
    stress: torch.Tensor | None = None
    force_mask: torch.Tensor | None = None
    numbers: np.ndarray | None = None


@dataclass
class LoopResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_valid_loss: float
    history: list[dict[str, Any]]
    stopped_early: bool
    n_steps: int
    resumed_from: dict[str, int] | None = None


# --------------------------------------------------------------------------- EMA


class EMA:
    """Exponential moving average of the trainable parameters."""

    def __init__(self, params: Sequence[tuple[str, torch.nn.Parameter]], decay: float) -> None:
        self.decay = float(decay)
        self.params = list(params)
        self.shadow = {n: p.detach().clone() for n, p in self.params}

    @torch.no_grad()
    def update(self) -> None:
        for n, p in self.params:
            self.shadow[n].mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily put the averaged weights into the model."""
        backup = {n: p.detach().clone() for n, p in self.params}
        with torch.no_grad():
            for n, p in self.params:
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params:
                    p.copy_(backup[n])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


# --------------------------------------------------------------------------- loss


def _criterion(kind: str, delta: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "huber":
        return lambda a, b: torch.nn.functional.huber_loss(a, b, delta=delta)
    return lambda a, b: torch.nn.functional.mse_loss(a, b)


def _targets(samples: Sequence[Sample], dtype: torch.dtype, device: torch.device
             ) -> dict[str, torch.Tensor]:
    t = {
        "energy": torch.tensor([s.energy for s in samples], dtype=dtype, device=device),
        "n_atoms": torch.tensor([s.n_atoms for s in samples], dtype=dtype, device=device),
        "forces": torch.cat([s.forces for s in samples]).to(device=device, dtype=dtype),
    }
    if any(s.force_mask is not None for s in samples):
        t["force_mask"] = torch.cat([
            s.force_mask if s.force_mask is not None
            else torch.ones(s.n_atoms, dtype=torch.bool) for s in samples]).to(device)
    if any(s.stress is not None for s in samples):
        t["stress_mask"] = torch.tensor([s.stress is not None for s in samples], device=device)
        t["stress"] = torch.stack([
            s.stress if s.stress is not None else torch.zeros(3, 3, dtype=dtype)
            for s in samples]).to(device=device, dtype=dtype)
    return t


class _Acc:
    """Running sums of absolute and squared errors (for MAE/RMSE over many batches)."""

    def __init__(self) -> None:
        self.d: dict[str, float] = {}

    def add(self, key: str, err: torch.Tensor) -> None:
        if err.numel() == 0:
            return
        e = err.detach().double()
        self.d[key + "_abs"] = self.d.get(key + "_abs", 0.0) + float(e.abs().sum())
        self.d[key + "_sq"] = self.d.get(key + "_sq", 0.0) + float((e * e).sum())
        self.d[key + "_n"] = self.d.get(key + "_n", 0.0) + float(e.numel())

    def add_scalar(self, key: str, value: float, n: float = 1.0) -> None:
        self.d[key + "_sum"] = self.d.get(key + "_sum", 0.0) + float(value) * n
        self.d[key + "_cnt"] = self.d.get(key + "_cnt", 0.0) + n

    def mae(self, key: str) -> float | None:
        n = self.d.get(key + "_n", 0.0)
        return self.d[key + "_abs"] / n if n else None

    def rmse(self, key: str) -> float | None:
        n = self.d.get(key + "_n", 0.0)
        return math.sqrt(self.d[key + "_sq"] / n) if n else None

    def mean(self, key: str) -> float | None:
        n = self.d.get(key + "_cnt", 0.0)
        return self.d[key + "_sum"] / n if n else None


def compute_loss(out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor],
                 loss_cfg: LossConfig, acc: _Acc | None = None) -> torch.Tensor:
    """Weighted loss: energy per atom (eV/atom), force components (eV/Å), stress (eV/Å³)."""
    crit = _criterion(loss_cfg.kind, loss_cfg.huber_delta)
    e_pa = out["energy"] / tgt["n_atoms"]
    e_pa_t = tgt["energy"] / tgt["n_atoms"]
    f, f_t = out["forces"], tgt["forces"]
    if "force_mask" in tgt:
        f, f_t = f[tgt["force_mask"]], f_t[tgt["force_mask"]]
    loss = e_pa.new_zeros(())
    if loss_cfg.energy_weight > 0:
        loss = loss + loss_cfg.energy_weight * crit(e_pa, e_pa_t)
    if loss_cfg.forces_weight > 0 and f.numel():
        loss = loss + loss_cfg.forces_weight * crit(f, f_t)
    has_stress = loss_cfg.stress_weight > 0 and "stress" in tgt and "stress" in out
    if has_stress:
        m = tgt["stress_mask"]
        if bool(m.any()):
            loss = loss + loss_cfg.stress_weight * crit(out["stress"][m], tgt["stress"][m])
    if acc is not None:
        acc.add("energy", e_pa - e_pa_t)
        acc.add("forces", f - f_t)
        if has_stress:
            acc.add("stress", out["stress"][tgt["stress_mask"]] - tgt["stress"][tgt["stress_mask"]])
        acc.add_scalar("loss", float(loss.detach()), len(tgt["energy"]))
    return loss


def _eval_batches(adapter: ModelAdapter, samples: Sequence[Sample],
                  batch_size: int | str) -> list[list[int]]:
    """Batches for evaluation: a fixed size, or ``"auto"`` by the adapter's atom budget.

    ``"auto"`` matters on CPU: one CHGNet batch of 8 × 32-atom slabs took 1.2–2.2 s where
    the same slabs in batches of 4 took 0.7–0.8 s (measured), and validation runs once
    per epoch, so the larger batch never amortised.
    """
    return adapter.plan_batches_by_size(
        [s.n_atoms for s in samples], batch_size if batch_size == "auto" else int(batch_size))


def evaluate(adapter: ModelAdapter, head: str, samples: Sequence[Sample],
             batch_size: int | str, loss_cfg: LossConfig) -> dict[str, float | None]:
    """Loss and errors of ``adapter`` on ``samples`` (targets in the model frame).

    Returns ``loss``, ``energy_mae_per_atom``/``energy_rmse_per_atom`` (eV/atom),
    ``forces_mae``/``forces_rmse`` (eV/Å), ``stress_mae`` (eV/Å³, if computed).
    """
    acc = _Acc()
    compute_stress = loss_cfg.stress_weight > 0 and any(s.stress is not None for s in samples)
    adapter.model.eval()
    for idx in _eval_batches(adapter, samples, batch_size):
        chunk = [samples[i] for i in idx]
        out = adapter.forward([s.graph for s in chunk], head, compute_stress=compute_stress)
        tgt = _targets(chunk, out["energy"].dtype, out["energy"].device)
        compute_loss(out, tgt, loss_cfg, acc)
    return {"loss": acc.mean("loss"), "energy_mae_per_atom": acc.mae("energy"),
            "energy_rmse_per_atom": acc.rmse("energy"), "forces_mae": acc.mae("forces"),
            "forces_rmse": acc.rmse("forces"), "stress_mae": acc.mae("stress")}


def predict_samples(adapter: ModelAdapter, head: str, samples: Sequence[Sample],
                    batch_size: int | str = "auto") -> tuple[np.ndarray, list[np.ndarray]]:
    """Raw model energies (eV, total) and forces (eV/Å) on cached graphs."""
    adapter.model.eval()
    energies, forces = [], []
    for idx in _eval_batches(adapter, samples, batch_size):
        chunk = [samples[i] for i in idx]
        out = adapter.forward([s.graph for s in chunk], head)
        energies.append(out["energy"].detach().cpu().double().numpy())
        f = out["forces"].detach().cpu().double().numpy()
        forces.extend(np.split(f, np.cumsum([s.n_atoms for s in chunk])[:-1]))
    return np.concatenate(energies), forces


# --------------------------------------------------------------------------- optimiser


def _make_optimizer(params: list[torch.nn.Parameter], cfg: FinetuneConfig
                    ) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)


def _make_scheduler(opt: torch.optim.Optimizer, cfg: FinetuneConfig) -> Any:
    s = cfg.scheduler
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=s.factor, patience=s.patience, min_lr=s.min_lr)
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs,
                                                          eta_min=s.min_lr)
    return None


def _epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=gen).tolist()


# --------------------------------------------------------------------------- metrics files


def write_metrics(history: list[dict[str, Any]], output_dir: Path,
                  extra: dict[str, Any] | None = None) -> None:
    """``metrics.csv`` (one row per epoch) and ``metrics.json`` (rows + summary), atomically."""
    from ase_surftune.core.io import atomic_write_json, atomic_writer

    with atomic_writer(output_dir / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in METRIC_COLUMNS})
    atomic_write_json(output_dir / "metrics.json", {"epochs": history, **(extra or {})})


def plot_history(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Train/validation loss and validation force MAE per epoch (``loss_curve.png``)."""
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


# --------------------------------------------------------------------------- the loop


def train_loop(adapter: ModelAdapter, head: str,
               params: Sequence[tuple[str, torch.nn.Parameter]],
               train: Sequence[Sample], valid: Sequence[Sample], cfg: FinetuneConfig,
               output_dir: str | Path, *, resume_from: dict[str, Any] | None = None,
               extra_loss: Callable[..., torch.Tensor | None] | None = None,
               checkpoint_extra: dict[str, Any] | None = None,
               stop_after_step: int | None = None,
               dist: DistContext | None = None,
               monitor: Sequence[Sample] | None = None) -> LoopResult:
    """Train ``params`` of ``adapter`` on cached samples; see the module docstring.

    Args:
        adapter: model to train in place (its weights end as the *last* step's; the
            best weights are returned in :attr:`LoopResult.best_state`).
        head: head to train.
        params: (name, parameter) pairs handed to the optimiser; others are untouched.
        train, valid: featurized samples; with no validation samples the epoch's mean
            training loss selects the best model and drives early stopping.
        cfg: the run configuration (loss, optimiser, schedule, epochs, seed...).
        output_dir: where ``checkpoint.pt``, ``metrics.csv`` and ``metrics.json`` go.
        resume_from: a checkpoint dict (see :func:`load_checkpoint`) to continue from.
        extra_loss: ``f(adapter, samples, outputs) -> tensor | None`` added to the loss
            (hook for strategies such as distillation).
        checkpoint_extra: extra picklable data stored in every checkpoint.
        stop_after_step: debug hook: raise :class:`TrainingInterrupted` right after this
            global step (simulates a kill, used to test resume).
        dist: data-parallel context (see :mod:`ase_surftune.training.distributed`): each
            global batch is split across ranks, gradients are averaged by DDP (the adapter
            must be wrapped with ``adapter.wrap_ddp()``), training metrics are summed over
            ranks and only rank 0 writes checkpoints and metrics.
        monitor: validation samples (e.g. the slab frames) whose loss, instead of the
            whole validation set's, selects the best model and drives early stopping
            and the plateau schedule; the whole set is still evaluated and logged.
    """
    output_dir = Path(output_dir)
    ckpt_path = output_dir / "checkpoint.pt"
    model = adapter.model
    plist = [p for _, p in params]
    device, dtype = adapter.device, adapter.dtype
    bs = cfg.batch_size
    vbs: int | str = cfg.valid_batch_size or "auto"
    compute_stress = cfg.loss.stress_weight > 0 and any(s.stress is not None for s in train)
    n_batches = math.ceil(len(train) / bs)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    optimizer = _make_optimizer(plist, cfg)
    scheduler = _make_scheduler(optimizer, cfg)
    ema = EMA(params, cfg.ema_decay) if cfg.ema_decay else None
    st: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0,
                          "best_loss": math.inf, "best_epoch": -1, "best_state": None,
                          "bad_epochs": 0, "history": [], "acc": {}, "done": False,
                          "stopped_early": False}
    resumed_from = None
    if resume_from is not None:
        ck = resume_from
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("scheduler") is not None:
            scheduler.load_state_dict(ck["scheduler"])
        if ema is not None and ck.get("ema") is not None:
            ema.load_state_dict(ck["ema"])
        set_rng_states(ck["rng"])
        st.update(ck["loop"])
        resumed_from = {"epoch": st["epoch"], "step_in_epoch": st["step_in_epoch"],
                        "global_step": st["global_step"]}
        log.info("resuming from %s: epoch %d, step %d of the epoch", ckpt_path,
                 st["epoch"], st["step_in_epoch"])

    main_rank = dist is None or dist.is_main

    def checkpoint() -> None:
        if not main_rank:
            return
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "rng": rng_states(), "loop": dict(st), "fingerprint": cfg.fingerprint(),
            **(checkpoint_extra or {})})

    from tqdm.auto import tqdm

    patience = cfg.patience
    while not st["done"] and st["epoch"] < cfg.epochs:
        epoch = st["epoch"]
        t0 = time.perf_counter()
        order = _epoch_order(cfg.seed, epoch, len(train))
        acc = _Acc()
        acc.d = dict(st["acc"])
        bar = tqdm(total=n_batches, initial=st["step_in_epoch"],
                   disable=not cfg.progress or not main_rank,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=True,
                   file=sys.stderr, dynamic_ncols=True)
        model.train()
        for b in range(st["step_in_epoch"], n_batches):
            chunk = [train[order[i]] for i in range(b * bs, min((b + 1) * bs, len(train)))]
            weight = 1.0
            if dist is not None:  # this rank's share of the global batch
                chunk, weight = dist.shard(chunk)
            out = adapter.forward([s.graph for s in chunk], head, compute_stress=compute_stress,
                                  training=True)
            tgt = _targets(chunk, dtype, device)
            loss = compute_loss(out, tgt, cfg.loss, acc if weight > 0 else None)
            if weight != 1.0:
                loss = loss * weight
            if extra_loss is not None:
                if hasattr(extra_loss, "step"):  # stateful hooks (replay) get the step
                    extra_loss.step = st["global_step"]
                extra = extra_loss(adapter, chunk, out)
                if extra is not None:
                    loss = loss + extra
            bad = not bool(torch.isfinite(loss.detach()))
            if dist is not None:  # every rank stops together (no rank left in an all-reduce)
                bad = dist.any_rank(bad, loss.device)
            if bad:
                bar.close()
                raise TrainingDivergedError(
                    f"non-finite training loss ({'this rank: ' if dist else ''}"
                    f"{float(loss.detach())}) at epoch {epoch + 1}, "
                    f"step {b + 1} of {n_batches} (global step {st['global_step'] + 1}); no "
                    f"model saved from it. Lower optimizer.lr (now "
                    f"{optimizer.param_groups[0]['lr']:g}), set clip_grad, or check the labels")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(plist, cfg.clip_grad)
            optimizer.step()
            if ema is not None:
                ema.update()
            st["global_step"] += 1
            st["step_in_epoch"] = b + 1
            st["acc"] = dict(acc.d)
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4g}",
                            F_mae=f"{acc.mae('forces') or 0:.4f}")
            if (cfg.checkpoint_every_steps and st["global_step"] % cfg.checkpoint_every_steps == 0
                    and st["step_in_epoch"] < n_batches):
                checkpoint()
            if stop_after_step is not None and st["global_step"] >= stop_after_step:
                bar.close()
                raise TrainingInterrupted(f"stopped after step {st['global_step']} (debug hook)")

        if dist is not None:  # training errors over the whole global batch sequence
            acc.d = dist.all_reduce_sum(acc.d)
        # ---- end of epoch: validate (with EMA weights if any)
        ctx = ema.swapped_in() if ema is not None else contextlib.nullcontext()
        with ctx:
            if valid:
                vm = evaluate(adapter, head, valid, vbs, cfg.loss)
            else:
                vm = {"loss": acc.mean("loss")}
            vloss = float(vm["loss"])
            if not math.isfinite(vloss):
                bar.close()
                raise TrainingDivergedError(
                    f"non-finite {'validation' if valid else 'training'} loss ({vloss}) after "
                    f"epoch {epoch + 1} (global step {st['global_step']}); the weights diverged. "
                    f"Lower optimizer.lr (now {optimizer.param_groups[0]['lr']:g}) or set "
                    f"clip_grad")
            mm: dict[str, Any] = {}
            if monitor:
                mm = evaluate(adapter, head, monitor, vbs, cfg.loss)
                vloss = float(mm["loss"])
            improved = vloss < st["best_loss"]
            if improved:
                st["best_loss"], st["best_epoch"] = vloss, epoch + 1
                st["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                st["bad_epochs"] = 0
            else:
                st["bad_epochs"] += 1
        lr = optimizer.param_groups[0]["lr"]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(vloss)
        elif scheduler is not None:
            scheduler.step()
        row = {"epoch": epoch + 1, "step": st["global_step"], "lr": lr,
               "train_loss": acc.mean("loss"), "train_energy_mae_per_atom": acc.mae("energy"),
               "train_forces_mae": acc.mae("forces"),
               "valid_loss": float(vm["loss"]) if valid else None,
               "valid_energy_mae_per_atom": vm.get("energy_mae_per_atom"),
               "valid_energy_rmse_per_atom": vm.get("energy_rmse_per_atom"),
               "valid_forces_mae": vm.get("forces_mae"),
               "valid_forces_rmse": vm.get("forces_rmse"),
               "valid_stress_mae": vm.get("stress_mae"), "monitor_loss": mm.get("loss"),
               "monitor_forces_mae": mm.get("forces_mae"), "best": improved,
               "epoch_time_s": round(time.perf_counter() - t0, 4)}
        st["history"] = [*st["history"], row]
        if valid:
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", val=f"{vloss:.4g}",
                            val_F_mae=f"{vm.get('forces_mae') or 0:.4f}")
        else:  # no validation set: the epoch's training loss selects the best model
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", no_valid="best by train loss")
        bar.close()
        st["epoch"] += 1
        st["step_in_epoch"] = 0
        st["acc"] = {}
        if patience is not None and st["bad_epochs"] >= patience:
            st["done"] = st["stopped_early"] = True
            log.info("early stopping after epoch %d (no improvement for %d epochs)",
                     epoch + 1, patience)
        checkpoint()
        if main_rank:
            write_metrics(st["history"], output_dir)

    if st["best_state"] is None:  # zero epochs run (resume of a finished run, epochs=0)
        st["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return LoopResult(best_state=st["best_state"], best_epoch=st["best_epoch"],
                      best_valid_loss=st["best_loss"], history=st["history"],
                      stopped_early=st["stopped_early"], n_steps=st["global_step"],
                      resumed_from=resumed_from)
