"""Atomic training checkpoints and RNG-state capture.

A checkpoint is a ``torch.save`` dict written to a temporary file in the same folder,
flushed, fsynced and renamed over the old one (``os.replace`` is atomic on POSIX), so a
kill at any moment leaves either the previous or the new checkpoint, never a torn file.

Checkpoints hold only tensors, Python scalars, strings and containers (the NumPy RNG
state is stored as a tensor), so they are read with ``torch.load(weights_only=True)``:
a planted or tampered ``checkpoint.pt`` cannot run code, it fails with a clear error.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_surftune.core.errors import ConfigError
from ase_surftune.core.io import atomic_torch_save

__all__ = ["save_checkpoint", "load_checkpoint", "rng_states", "set_rng_states",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "ase_surftune-checkpoint-1"


def rng_states() -> dict[str, Any]:
    """The torch, NumPy and Python global RNG states, as tensors and plain Python data
    (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": str(name), "keys": torch.from_numpy(np.array(keys, copy=True)),
                      "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "python": random.getstate()}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured."""
    torch.set_rng_state(states["torch"])
    npst = states["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy(), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _plain(obj: Any) -> Any:
    """NumPy scalars -> Python scalars, recursively (tensors and containers kept)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, _plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``path``."""
    return atomic_torch_save(_plain({"format": CHECKPOINT_FORMAT, **state}), path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ConfigError: the file is not a readable ase_surftune checkpoint.
    """
    import pickle

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"cannot resume: checkpoint {str(path)!r} holds Python objects other than "
            f"tensors and plain data, so it was not written by this version of "
            f"ase_surftune (or was tampered with); it was not unpickled, because that "
            f"could run arbitrary code. Start without --resume, or remove the file "
            f"({first[:200]})") from exc
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"cannot resume: checkpoint {str(path)!r} is unreadable "
                          f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"cannot resume: {str(path)!r} is not an ase_surftune checkpoint")
    return state
