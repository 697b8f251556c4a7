"""Atomic training checkpoints and RNG-state capture.

A checkpoint is a ``torch.save`` dict written to a temporary file in the same folder,
flushed, fsynced and renamed over the old one (``os.replace`` is atomic on POSIX), so a
kill at any moment leaves either the previous or the new checkpoint, never a torn file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_surftune._io import atomic_torch_save
from ase_surftune.errors import ConfigError

__all__ = ["save_checkpoint", "load_checkpoint", "rng_states", "set_rng_states",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "ase_surftune-checkpoint-1"


def rng_states() -> dict[str, Any]:
    """The torch, NumPy and Python global RNG states."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``path``."""
    return atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ConfigError: the file is not a readable ase_surftune checkpoint.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"cannot resume: checkpoint {str(path)!r} is unreadable "
                          f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"cannot resume: {str(path)!r} is not an ase_surftune checkpoint")
    return state
