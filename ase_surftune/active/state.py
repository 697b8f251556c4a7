"""The state of one active-learning run folder: ``state.json``, frames and labels.

:class:`Run` is what every step of :mod:`~ase_surftune.active.steps` reads and writes;
:func:`~ase_surftune.active.loop.active_learn` creates it after claiming the folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ase import Atoms

from ase_surftune.active.config import ActiveConfig
from ase_surftune.core.errors import SurfTuneError

__all__ = ["STATE_FILE", "LOCK_FILE", "STATE_VERSION", "ActiveLearningInterrupted", "Run",
           "write_frames", "read_frames", "read_labels", "calc_for"]

STATE_FILE = "state.json"
LOCK_FILE = ".surftune.lock"
STATE_VERSION = 1


class ActiveLearningInterrupted(SurfTuneError, RuntimeError):
    """Raised by the ``stop_after`` debug hook (a simulated kill after a step)."""


def write_frames(path: Path, frames: Sequence[Atoms]) -> list[Atoms]:
    """Write ``frames`` atomically and return them as read back (exact file values)."""
    import ase.io

    from ase_surftune.core.io import atomic_writer

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path, "w") as fh:
        ase.io.write(fh, list(frames), format="extxyz")
    return read_frames(path)


def read_frames(path: Path) -> list[Atoms]:
    import ase.io

    if not path.is_file() or path.stat().st_size == 0:
        return []
    frames = list(ase.io.read(path, ":", format="extxyz"))
    for f in frames:  # candidates and workflow frames carry no labels
        f.calc = None
    return frames


def read_labels(path: Path) -> list[Atoms]:
    from ase_surftune.data import read_labelled

    return read_labelled(str(path)) if path.is_file() and path.stat().st_size else []


class Run:
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
                out += read_labels(self.path(it["labels"]))
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

    def uncertainty_scale(self, i: int) -> dict[str, Any]:
        """The calibration scale k (forces, energy) of committee i: fitted on the batches
        of iterations 1..i (``{"forces": None, "energy": None}`` before any)."""
        its = self.state["iterations"][:i]
        for it in reversed(its):
            if it.get("uncertainty_scale"):
                return it["uncertainty_scale"]
        return {"forces": None, "energy": None, "n": 0, "iterations": []}

    def properties_of(self, i: int) -> dict[str, Any]:
        return (self.state["baseline"] if i == 0
                else self.state["iterations"][i - 1])["properties"]


def calc_for(model: str, device: str):
    """A :class:`~ase_surftune.models.calculator.SurfTuneCalculator` for a model spec."""
    from ase_surftune.models.calculator import SurfTuneCalculator

    return SurfTuneCalculator(model, device=device)
