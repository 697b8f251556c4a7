"""Stage 1 of ``finetune``: read, check, split and filter the labelled structures."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.data import (
    dataset_hash,
    is_slab,
    read_labelled,
    split,
    split_by_trajectory,
    validate_config,
)
from ase_surftune.training.callbacks import CHECKPOINT_NAME
from ase_surftune.training.scoring import labels

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.training.config import FinetuneConfig

__all__ = ["RunData", "load_data", "validate_in_memory"]

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """The run's structures after splitting and filtering, and what was done to them.

    Attributes:
        train, valid, test: labelled structures (valid/test may be empty).
        train_hash: :func:`~ase_surftune.data.dataset_hash` of ``train``.
        split_info: how the validation set was made (JSON-able).
        max_force_report: frames dropped/flagged by ``max_force`` (None without it).
        monitor_idx: validation frames that select the best epoch (None: all).
        monitor_desc: one line saying which frames those are.
    """

    train: list[Atoms]
    valid: list[Atoms]
    test: list[Atoms]
    train_hash: str
    split_info: dict[str, Any] = field(default_factory=dict)
    max_force_report: dict[str, Any] | None = None
    monitor_idx: list[int] | None = None
    monitor_desc: str = "whole validation set"

    @property
    def all(self) -> list[Atoms]:
        return self.train + self.valid + self.test

    @property
    def elements(self) -> list[str]:
        """Chemical symbols of the training set, sorted."""
        return sorted({s for a in self.train for s in a.get_chemical_symbols()})


def validate_in_memory(*parts: Sequence[Atoms] | None) -> None:
    """The checks ``read_labelled`` does for files, on in-memory train/valid/test."""
    for name, part in zip(("train", "valid", "test"), parts):
        for i, atoms in enumerate(part or []):
            if not isinstance(atoms, Atoms):
                raise DataError(f"{name}[{i}]: expected an ase.Atoms, got {type(atoms).__name__}")
            validate_config(atoms, where=f"{name}[{i}] ({atoms.get_chemical_formula()})")


def _read(cfg: FinetuneConfig, paths: Any) -> list[Atoms]:
    return read_labelled([str(p) for p in (paths if isinstance(paths, list) else [paths])],
                         energy_key=cfg.energy_key, forces_key=cfg.forces_key,
                         stress_key=cfg.stress_key, group_key=cfg.group_key)


def _split_valid(cfg: FinetuneConfig, configs: list[Atoms]
                 ) -> tuple[list[Atoms], list[Atoms], dict[str, Any]]:
    """Split ``valid_fraction`` off the training data (by trajectory unless told not to)."""
    if cfg.valid_split == "random":
        parts = split(configs, (1 - cfg.valid_fraction, cfg.valid_fraction, 0.0),
                      seed=cfg.seed)
        info: dict[str, Any] = {"mode": "frames", "reason": "valid_split: random"}
    else:
        parts, info = split_by_trajectory(configs, cfg.valid_fraction, seed=cfg.seed,
                                          split_key=cfg.split_key)
        if info["mode"] == "frames":
            log.warning("validation split by frames, not trajectories (%s): frames of one "
                        "relaxation may sit in both training and validation, so validation "
                        "errors are optimistic", info["reason"])
        else:
            log.info("validation: %d of %d %s groups held out whole", len(info["valid_groups"])
                     or 1, info["n_groups"], info["key"])
    return parts.train, parts.valid, info


def _filter_max_force(cfg: FinetuneConfig, sets: dict[str, list[Atoms]]
                      ) -> tuple[dict[str, list[Atoms]], dict[str, Any] | None]:
    """Drop (or flag) frames whose largest reference atomic force exceeds ``max_force``
    (eV/Å); every such frame is logged and listed (JSON-able) for the metrics."""
    if cfg.max_force is None:
        return sets, None
    report: dict[str, Any] = {"threshold": cfg.max_force, "mode": cfg.max_force_mode,
                              "frames": []}
    out = {}
    for name, frames in sets.items():
        keep = []
        for i, a in enumerate(frames):
            f = labels(a)[1]
            fmax = float(np.max(np.linalg.norm(f, axis=1))) if len(f) else 0.0
            if fmax > cfg.max_force:
                src = str(a.info.get("source", f"{name}[{i}]"))
                report["frames"].append({"set": name, "source": src, "max_force": fmax})
                log.warning("max_force: %s %s frame %s: max |F_ref| %.2f eV/Å > %g",
                            "dropped" if cfg.max_force_mode == "drop" else "flagged",
                            name, src, fmax, cfg.max_force)
                if cfg.max_force_mode == "drop":
                    continue
            keep.append(a)
        out[name] = keep
    return out, report


def _monitor_indices(cfg: FinetuneConfig, train: Sequence[Atoms], valid: Sequence[Atoms]
                     ) -> tuple[list[int] | None, str]:
    """Validation frames that select the best epoch, and a one-line description.

    Returns ``(None, why)`` when the whole validation set is watched.
    """
    if not valid or cfg.monitor_group is None:
        return None, "whole validation set"
    if cfg.monitor_group != "auto":
        idx = [i for i, a in enumerate(valid)
               if fnmatch.fnmatchcase(str(a.info.get("config_type", "")), cfg.monitor_group)]
        if not idx:
            raise ConfigError(f"monitor_group: {cfg.monitor_group!r} matches no validation "
                              f"frame; config_types are "
                              f"{sorted({str(a.info.get('config_type')) for a in valid})}")
        return idx, f"validation frames with config_type {cfg.monitor_group!r} ({len(idx)})"
    idx = [i for i, a in enumerate(valid) if is_slab(a)]
    if idx:
        return idx, f"slab (surface) validation frames ({len(idx)} of {len(valid)})"
    if any(is_slab(a) for a in train):
        log.warning("the training data contain slabs but the validation set has none: early "
                    "stopping watches non-surface frames and surface accuracy is unmonitored "
                    "(give a valid_file with slabs, or monitor_group)")
    else:
        log.warning("no slab (surface) frame in the data: early stopping watches the whole "
                    "validation set and surface accuracy is unmonitored")
    return None, "whole validation set (no slab frame in it)"


def load_data(cfg: FinetuneConfig, train: Sequence[Atoms] | None,
              valid: Sequence[Atoms] | None, test: Sequence[Atoms] | None,
              checkpoint: dict[str, Any] | None, out_dir: Path) -> RunData:
    """Read the files (or take the in-memory structures), split off validation data,
    apply ``max_force`` and check a resumed run's training data are unchanged."""
    split_info: dict[str, Any] | None = None
    train_atoms = list(train) if train is not None else _read(cfg, cfg.train_file)
    if valid is not None:
        valid_atoms = list(valid)
    elif cfg.valid_file is not None:
        valid_atoms = _read(cfg, cfg.valid_file)
    elif cfg.valid_fraction > 0:
        train_atoms, valid_atoms, split_info = _split_valid(cfg, train_atoms)
    else:
        valid_atoms = []
    test_atoms = list(test) if test is not None else (
        _read(cfg, cfg.test_file) if cfg.test_file is not None else [])
    sets, report = _filter_max_force(cfg, {"train": train_atoms, "valid": valid_atoms,
                                           "test": test_atoms})
    if not sets["train"]:
        raise DataError("no training structures"
                        + (f" left after max_force {cfg.max_force} eV/Å" if cfg.max_force
                           else ""))
    train_hash = dataset_hash(sets["train"])
    if checkpoint is not None and checkpoint.get("train_hash") not in (None, train_hash):
        raise ConfigError(f"cannot resume from {str(out_dir / CHECKPOINT_NAME)!r}: it was "
                          f"trained on other data (dataset hash differs); give the same "
                          f"training structures, or start a new run with --overwrite")
    monitor_idx, monitor_desc = _monitor_indices(cfg, sets["train"], sets["valid"])
    return RunData(train=sets["train"], valid=sets["valid"], test=sets["test"],
                   train_hash=train_hash,
                   split_info=split_info or {"mode": "given" if sets["valid"] else "none"},
                   max_force_report=report, monitor_idx=monitor_idx,
                   monitor_desc=monitor_desc)
