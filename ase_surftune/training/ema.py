"""Exponential moving average of the trainable weights, via ``torch_ema``.

``torch_ema.ExponentialMovingAverage`` (installed with mace-torch) does the averaging
and the swap-in for validation. Its decay warm-up is off (``use_num_updates=False``), so
``ema_decay`` means what it says from the first step: shadow ← shadow − (1 − d)(shadow − p).

Checkpoints keep the named layout they always had, ``{"decay": d, "shadow": {parameter
name: tensor}}`` (plain tensors, read with ``weights_only=True``; the tensors go to disk
and come back bit for bit), so checkpoints written before the switch still resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch_ema import ExponentialMovingAverage

__all__ = ["NamedEMA", "make_ema", "ema_state", "load_ema_state"]


class NamedEMA(ExponentialMovingAverage):
    """A ``torch_ema`` average that remembers its parameters' names (for checkpoints)."""

    def __init__(self, params: Sequence[tuple[str, torch.nn.Parameter]], decay: float) -> None:
        super().__init__([p for _, p in params], decay=float(decay), use_num_updates=False)
        self.names = [n for n, _ in params]


def make_ema(params: Sequence[tuple[str, torch.nn.Parameter]], decay: float | None
             ) -> NamedEMA | None:
    """An EMA of ``params`` (name, parameter) with ``decay`` in (0, 1); None without one."""
    return NamedEMA(params, decay) if decay else None


def ema_state(ema: NamedEMA) -> dict[str, Any]:
    """``{"decay", "shadow": {name: tensor}}``: the checkpoint layout (tensors copied)."""
    return {"decay": float(ema.decay),
            "shadow": {n: t.detach().clone() for n, t in zip(ema.names, ema.shadow_params)}}


def load_ema_state(ema: NamedEMA, state: dict[str, Any]) -> None:
    """Restore what :func:`ema_state` wrote (in place; names must match)."""
    shadow = state["shadow"]
    with torch.no_grad():
        for n, t in zip(ema.names, ema.shadow_params):
            t.copy_(shadow[n])
