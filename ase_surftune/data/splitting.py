"""Train/validation/test splits: random, stratified, by held-out group, by trajectory."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from ase import Atoms

from ase_surftune.core.errors import DataError
from ase_surftune.data.io import source_file
from ase_surftune.data.labels import DEFAULT_GROUP


class Split(NamedTuple):
    """Train/validation/test lists of configurations."""

    train: list[Atoms]
    valid: list[Atoms]
    test: list[Atoms]


def split(configs: Sequence[Atoms], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
          seed: int = 0, stratify: str | None = None) -> Split:
    """Random train/valid/test split by fraction, reproducible for a given ``seed``.

    Fractions must be non-negative and sum to 1. Validation and test sizes are
    ``round(fraction * n)``; training gets the rest. Order inside each part follows the
    input order.

    Args:
        stratify: an ``atoms.info`` key (e.g. ``"config_type"``): split each group by the
            fractions on its own, so that every kind of structure is represented in each
            part as far as its size allows (a small data set split at random can put all
            slabs in training and all defects in the test set).
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise DataError(f"split fractions must be 3 non-negative numbers summing to 1, "
                        f"got {tuple(fractions)}")
    configs = list(configs)
    n = len(configs)
    if n == 0:
        raise DataError("cannot split an empty list of configurations")
    rng = np.random.default_rng(seed)
    if stratify is None:
        groups = [np.arange(n)]
    else:
        by_key: dict[str, list[int]] = {}
        for i, a in enumerate(configs):
            by_key.setdefault(_group(a, stratify), []).append(i)
        groups = [np.asarray(v) for v in by_key.values()]
    train_idx, valid_idx, test_idx = [], [], []
    for members in groups:
        perm = members[rng.permutation(len(members))]
        n_valid = int(round(fr[1] * len(members)))
        n_test = min(int(round(fr[2] * len(members))), len(members) - n_valid)
        valid_idx += perm[:n_valid].tolist()
        test_idx += perm[n_valid:n_valid + n_test].tolist()
        train_idx += perm[n_valid + n_test:].tolist()
    if fr[0] > 0 and len(train_idx) == 0:
        raise DataError(f"split of {n} configuration(s) with fractions {tuple(fractions)} "
                        f"leaves the training set empty")
    return Split([configs[i] for i in sorted(train_idx)], [configs[i] for i in sorted(valid_idx)],
                 [configs[i] for i in sorted(test_idx)])


def element_counts(configs: Iterable[Atoms]) -> dict[str, int]:
    """``{symbol: number of atoms}`` over ``configs`` (JSON-able; symbols sorted by Z)."""
    from ase.data import atomic_numbers

    counts: dict[str, int] = {}
    for atoms in configs:
        for s in atoms.get_chemical_symbols():
            counts[s] = counts.get(s, 0) + 1
    return {s: counts[s] for s in sorted(counts, key=lambda x: atomic_numbers[x])}


def _group(atoms: Atoms, group_key: str) -> str:
    return str(atoms.info.get(group_key, DEFAULT_GROUP))


def split_by_group(configs: Sequence[Atoms], holdout: Sequence[str] = ("Surfaces/*",),
                   valid_fraction: float = 0.1, seed: int = 0,
                   group_key: str = "config_type") -> Split:
    """Hold out whole groups as the test set; split the rest randomly into train/valid.

    Args:
        holdout: :mod:`fnmatch` patterns on the group (e.g. ``"Surfaces/*"``); a config
            whose ``info[group_key]`` matches any pattern goes to ``test``.
        valid_fraction: fraction of the remaining configs used for validation.

    Raises:
        DataError: a pattern matches no group (a typo would silently hold out nothing),
            or nothing is left to train on.
    """
    configs = list(configs)
    if isinstance(holdout, str):
        holdout = [holdout]
    groups = sorted({_group(a, group_key) for a in configs})
    for pat in holdout:
        if not any(fnmatch.fnmatchcase(g, pat) for g in groups):
            raise DataError(f"holdout pattern {pat!r} matches no group; groups are {groups}")
    is_test = [any(fnmatch.fnmatchcase(_group(a, group_key), p) for p in holdout)
               for a in configs]
    test = [a for a, t in zip(configs, is_test) if t]
    rest = [a for a, t in zip(configs, is_test) if not t]
    if not rest:
        raise DataError(f"holdout {list(holdout)} matches every configuration; "
                        f"nothing left to train on")
    parts = split(rest, (1.0 - valid_fraction, valid_fraction, 0.0), seed=seed)
    return Split(parts.train, parts.valid, test)


#: info keys that name the relaxation/trajectory a frame belongs to (first found wins)
TRAJECTORY_KEYS = ("trajectory", "traj_id", "system_id", "sid")


def trajectory_group(atoms: Atoms, split_key: str | None = None) -> str | None:
    """The relaxation/trajectory a frame belongs to, or None when nothing says so.

    ``info[split_key]`` when a key is given (e.g. ``"config_type"`` when each
    config_type is one relaxation); else the first of :data:`TRAJECTORY_KEYS` present;
    else the source file of frames read by :func:`read_labelled` (``info["source"] =
    "file@k"``: one file, one trajectory, as OC20 ships them).
    """
    if split_key is not None:
        v = atoms.info.get(split_key)
        return None if v is None else str(v)
    for k in TRAJECTORY_KEYS:
        if k in atoms.info:
            return str(atoms.info[k])
    return source_file(atoms)


def is_slab(atoms: Atoms, min_vacuum: float = 4.0) -> bool:
    """True when the structure has a vacuum gap (≥ ``min_vacuum`` Å, or no periodicity)
    along exactly one cell direction: a slab, i.e. a surface model."""
    if atoms.cell.rank < 3 or len(atoms) == 0:
        return False
    cell = atoms.cell.array
    vol = abs(np.linalg.det(cell))
    frac = atoms.get_scaled_positions(wrap=True)
    gaps = 0
    for i in range(3):
        if not atoms.pbc[i]:
            gaps += 1
            continue
        height = vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
        x = np.sort(frac[:, i])
        gap = max(np.max(np.diff(x)) if len(x) > 1 else 0.0, 1.0 - x[-1] + x[0])
        gaps += gap * height >= min_vacuum
    return gaps == 1


def split_by_trajectory(configs: Sequence[Atoms], valid_fraction: float, seed: int = 0,
                        split_key: str | None = None, prefer_slabs: bool = True
                        ) -> tuple[Split, dict[str, Any]]:
    """Train/valid split that never puts frames of one trajectory on both sides.

    Whole groups (:func:`trajectory_group`) go to validation, in a seeded random order,
    until about ``valid_fraction`` of the frames are there (at least one group, never all).
    With ``prefer_slabs`` and at least two groups holding slabs, one of them is put in
    validation first, so early stopping can watch surfaces. Frames without a group
    each form their own group; when *no* frame has one, or there is a single group,
    the split falls back to frames (and the returned info says so).

    Returns:
        the split and ``{"mode": "trajectory" | "frames", "key": ..., "n_groups": ...,
        "valid_groups": [...], "reason": ...}``.
    """
    configs = list(configs)
    groups: dict[str, list[int]] = {}
    n_named = 0
    for i, a in enumerate(configs):
        g = trajectory_group(a, split_key)
        n_named += g is not None
        groups.setdefault(g if g is not None else f"#frame{i}", []).append(i)
    key = split_key or "trajectory/source file"
    if n_named == 0 or len(groups) < 2:
        why = ("no frame names its trajectory (set split_key, or info['trajectory'])"
               if n_named == 0 else f"all frames belong to one {key}")
        parts = split(configs, (1 - valid_fraction, valid_fraction, 0.0), seed=seed)
        return parts, {"mode": "frames", "key": key, "n_groups": len(groups),
                       "valid_groups": [], "reason": why}
    rng = np.random.default_rng(seed)
    names = list(groups)
    order = [names[i] for i in rng.permutation(len(names))]
    if prefer_slabs:
        slabby = [g for g in order if any(is_slab(configs[i]) for i in groups[g])]
        if len(slabby) >= 2:
            order.remove(slabby[0])
            order.insert(0, slabby[0])
    target = valid_fraction * len(configs)
    valid_groups: list[str] = []
    n_valid = 0
    for g in order:
        if len(valid_groups) == len(names) - 1:  # something always trains
            break
        if n_valid + len(groups[g]) <= max(1.5 * target, 1.0):
            valid_groups.append(g)
            n_valid += len(groups[g])
        if n_valid >= target:
            break
    if not valid_groups:  # every group is larger than the wanted validation share
        valid_groups = [min(order, key=lambda g: len(groups[g]))]
    is_valid = np.zeros(len(configs), dtype=bool)
    for g in valid_groups:
        is_valid[groups[g]] = True
    parts = Split([a for a, v in zip(configs, is_valid) if not v],
                  [a for a, v in zip(configs, is_valid) if v], [])
    return parts, {"mode": "trajectory", "key": key, "n_groups": len(groups),
                   "valid_groups": [g for g in valid_groups if not g.startswith("#frame")],
                   "reason": None}
