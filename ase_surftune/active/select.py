"""Batch selection: uncertainty + diversity, or random, deterministic for a seed.

``uncertainty``: keep the ``pool_factor × n`` candidates with the largest committee
uncertainty score (:meth:`~ase_surftune.active.committee.Uncertainty.score`), then pick
``n`` of them by farthest-point sampling in descriptor space
(:func:`~ase_surftune.training.replay.structure_descriptor`: composition, volume per atom,
pair-distance histogram), starting from the most uncertain one and counting the distance
to structures labelled earlier, so a batch is not ``n`` near-copies of one configuration.
Without a committee (the first batch: nothing is labelled yet) the pool is every candidate
and the first pick is the one farthest from the labelled set (or the seeded random one).

``random``: ``n`` candidates drawn uniformly with the seed.

``stratified``: random selection's mix, uncertainty's choice. The ``n`` candidates a
``random`` draw with the same seed would pick fix the strata: each draw's stratum is its
workflow and kind (``bulk_Cu15`` × workflow frame, MD frame, rattled or strained copy;
:func:`candidate_stratum`), and it is replaced by the most uncertain candidate of that
stratum not yet chosen. Pure uncertainty ranking favours the perturbed copies, whose
committee spread is largest, over the workflow frames that define the targets (Cu/EMT, 5
seeds: 111 of 148 active labels were rattled or strained copies and 14 workflow frames;
random: 64 and 53 of 156; benchmarks/RESULTS.md). Without a committee it is the random draw.

``stationary_first`` (a config switch for the ``uncertainty`` and ``stratified`` modes):
before the mode picks, the batch takes the stationary points of the target workflows
(``…:stationary``, ``…:min_stationary``: the relaxed slabs and bulk cell, an NEB's
climbing image and relaxed end point; :func:`~ase_surftune.active.explore.anchors`) that
no label is within :data:`~ase_surftune.active.explore.MIN_ANCHOR_SEPARATION` of
(:func:`uncovered_stationary`). A target is an energy difference
between exactly these structures.

Each pick gets a one-line reason for the report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from ase import Atoms

__all__ = ["candidate_stratum", "descriptors", "select_batch", "uncovered_stationary"]

MODES = ("uncertainty", "random", "stratified")


def descriptors(configs: Sequence[Atoms], elements: Sequence[str]) -> np.ndarray:
    """Per-structure descriptors (rows) for farthest-point sampling."""
    from ase_surftune.training.replay import structure_descriptor

    return np.stack([structure_descriptor(a, elements) for a in configs])


def candidate_stratum(atoms: Atoms) -> str:
    """Workflow and kind of a candidate: ``"bulk_Cu15:rattle"`` for
    ``al_source = "bulk_Cu15:rattle0.1"`` (the kind without its parameter)."""
    tag, _, kind = atoms.info.get("al_source", "").partition(":")
    return f"{tag}:{re.sub(r'[-+0-9.]+K?$', '', kind)}"


def uncovered_stationary(candidates: Sequence[Atoms], labelled: Sequence[Atoms]) -> list[int]:
    """Indices of the stationary-point candidates (``al_source`` ending in ``:stationary``
    or ``:min_stationary``) with no labelled structure within
    :data:`~ase_surftune.active.explore.MIN_ANCHOR_SEPARATION` (Å, atoms and cell vectors),
    in candidate order. Structures are compared, not workflow tags (runs started before
    2026-12-01 night tagged a slab by its area, which moved with the lattice constant)."""
    from ase_surftune.active.explore import MIN_ANCHOR_SEPARATION, frame_distance, is_stationary

    out = []
    for i, a in enumerate(candidates):
        if not is_stationary(a):
            continue
        if not any(frame_distance(a, b, cutoff=MIN_ANCHOR_SEPARATION) <= MIN_ANCHOR_SEPARATION
                   for b in labelled):
            out.append(i)
    return out


def _stratified(candidates: Sequence[Atoms], draws: list[int], score: np.ndarray
                ) -> tuple[list[int], list[str]]:
    """Replace each random draw by the most uncertain unchosen candidate of its stratum."""
    strata = [candidate_stratum(a) for a in candidates]
    order = np.argsort(-score, kind="stable")
    chosen: list[int] = []
    reasons: list[str] = []
    for d in draws:
        members = [int(i) for i in order if strata[i] == strata[d]]  # most uncertain first
        j = next(i for i in members if i not in chosen)
        chosen.append(j)
        reasons.append(f"stratum {strata[d]} (random draw); most uncertain left there: "
                       f"score {score[j]:.3f}, rank {members.index(j) + 1} of {len(members)} "
                       f"in the stratum")
    return chosen, reasons


def select_batch(candidates: Sequence[Atoms], n: int, mode: str, seed: int, *,
                 uncertainty: np.ndarray | None = None, labelled: Sequence[Atoms] = (),
                 pool_factor: float = 3.0, stationary_first: bool = False
                 ) -> tuple[list[int], list[str]]:
    """Indices of ``n`` candidates to label and, for each, why it was chosen; with
    ``stationary_first``, :func:`uncovered_stationary` candidates head the batch and the
    mode picks the rest (counting them as labelled)."""
    from ase_surftune.active.explore import MIN_ANCHOR_SEPARATION

    first = uncovered_stationary(candidates, labelled)[:max(n, 0)] if stationary_first else []
    if not first:
        return _select_by_mode(candidates, n, mode, seed, uncertainty, labelled, pool_factor)
    rest = [j for j in range(len(candidates)) if j not in first]
    sub, why = _select_by_mode([candidates[j] for j in rest], n - len(first), mode, seed,
                               None if uncertainty is None else np.asarray(uncertainty)[rest],
                               list(labelled) + [candidates[j] for j in first], pool_factor)
    reason = f"stationary point of a target workflow, no label within {MIN_ANCHOR_SEPARATION} Å"
    return first + [rest[j] for j in sub], [reason] * len(first) + why


def _select_by_mode(candidates: Sequence[Atoms], n: int, mode: str, seed: int,
                    uncertainty: np.ndarray | None, labelled: Sequence[Atoms],
                    pool_factor: float) -> tuple[list[int], list[str]]:
    m = len(candidates)
    n = min(n, m)
    rng = np.random.default_rng(seed)
    if n <= 0:
        return [], []
    if mode not in MODES:
        raise ValueError(f"unknown selection mode {mode!r}; known: {list(MODES)}")
    if mode == "random" or (mode == "stratified" and uncertainty is None):
        idx = sorted(rng.choice(m, size=n, replace=False).tolist())
        return idx, ["random draw"] * n
    if mode == "stratified":
        return _stratified(candidates, sorted(rng.choice(m, size=n, replace=False).tolist()),
                           np.asarray(uncertainty, dtype=float))
    elements = sorted({s for a in list(candidates) + list(labelled)
                       for s in a.get_chemical_symbols()})
    x = descriptors(candidates, elements)
    if uncertainty is not None:
        order = np.argsort(-np.asarray(uncertainty), kind="stable")
        pool = order[:max(n, round(pool_factor * n))]
    else:
        pool = np.arange(m)
    xp = x[pool]
    if len(labelled):
        xl = descriptors(labelled, elements)
        dist = np.min(np.linalg.norm(xp[:, None, :] - xl[None, :, :], axis=2), axis=1)
    else:
        dist = np.full(len(pool), np.inf)
    chosen: list[int] = []
    reasons: list[str] = []
    for k in range(n):
        if k == 0 and uncertainty is not None:
            j = 0  # the most uncertain candidate
        elif np.all(np.isinf(dist)):
            j = int(rng.integers(len(pool)))
        else:
            d = np.where(np.isin(np.arange(len(pool)), chosen), -np.inf, dist)
            j = int(np.argmax(d))
        chosen.append(j)
        parts = []
        if uncertainty is not None:
            u = float(np.asarray(uncertainty)[pool[j]])
            rank = int(np.where(order == pool[j])[0][0]) + 1
            parts.append(f"uncertainty score {u:.3f} (rank {rank} of {m})")
        if np.isfinite(dist[j]):
            parts.append(f"descriptor distance {dist[j]:.3f} to the labelled/chosen set")
        else:
            parts.append("first pick" + (" (seeded)" if uncertainty is None else ""))
        reasons.append("; ".join(parts))
        dist = np.minimum(dist, np.linalg.norm(xp - xp[j], axis=1))
    idx = [int(pool[j]) for j in chosen]
    return idx, reasons
