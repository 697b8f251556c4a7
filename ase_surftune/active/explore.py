"""Exploration: candidates from the property workflows that compute the targets.

:func:`measure_and_record` measures the targets with the current model (the same
:func:`~ase_surftune.evaluation.compare.measure_properties` code as the reference) through
a :class:`RecordingCalculator`, which keeps every structure the workflows evaluate: bulk
relaxation, slab relaxations, NEB end points and band. :func:`explore` turns those records
into candidates: evenly spaced frames of each workflow, plus short MD, rattled and strained
copies of each workflow's stationary points (:func:`anchors`). Every candidate carries
``info["al_source"]`` (where it came from), shown in the report.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ase_surftune.active.config import ActiveConfig, ExploreSettings

__all__ = ["RecordingCalculator", "anchors", "explore", "frame_distance", "is_stationary",
           "measure_and_record", "plane_lattice", "workflow_tag"]

#: a workflow's lowest-energy frame is a second anchor when some atom sits farther than
#: this from the last frame (Å); closer, it is the same stationary point
MIN_ANCHOR_SEPARATION = 0.1
#: the ``al_source`` kinds of the anchors themselves (``{tag}:stationary`` ...)
STATIONARY_KINDS = ("stationary", "min_stationary")


def is_stationary(atoms: Atoms) -> bool:
    """Whether a candidate or label is a workflow's stationary point (its ``al_source``
    kind is one of :data:`STATIONARY_KINDS`)."""
    return atoms.info.get("al_source", "").partition(":")[2] in STATIONARY_KINDS


log = logging.getLogger(__name__)


def plane_lattice(a: np.ndarray, b: np.ndarray) -> str:
    """The shape of the 2-D lattice spanned by in-plane cell vectors ``a`` and ``b`` (Å),
    whatever the cell's size or choice of vectors: ``hex``, ``square``, ``rect1.41``
    (|b|/|a| of the reduced cell) or ``oblique1.20_75`` (and the angle, degrees)."""
    u, v = np.asarray(a, float), np.asarray(b, float)
    while True:  # Lagrange-Gauss reduction: |u| <= |v|, |u·v| <= |u|²/2
        if u @ u > v @ v:
            u, v = v, u
        m = round(float(u @ v) / float(u @ u))
        if m == 0:
            break
        v = v - m * u
    ratio = float(np.linalg.norm(v) / np.linalg.norm(u))
    cos = float(abs(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v)))
    if abs(cos) < 1e-3:
        return "square" if abs(ratio - 1) < 1e-3 else f"rect{ratio:.2f}"
    if abs(ratio - 1) < 1e-3 and abs(cos - 0.5) < 1e-3:
        return "hex"
    return f"oblique{ratio:.2f}_{np.degrees(np.arccos(cos)):.0f}"


def workflow_tag(atoms: Atoms) -> str:
    """A workflow name for a structure: ``slab_Cu4_hex``, ``bulk_Cu4``, ``bulk_Cu15``...

    Slabs (vacuum along c) are surface-energy frames, small bulk cells lattice frames and
    bulk cells with a vacancy NEB frames; the formula tells them apart. Slabs also carry
    the shape of their in-plane lattice (:func:`plane_lattice`: fcc(111) ``hex``, (100)
    ``square``, (110) ``rect1.41``): the (111) and (100) slabs of one metal can have the
    same formula, and one tag for both made the second slab's frames stand for the first
    (on Cu/EMT the (111) slab then got 2 of 53 candidates and no MD, rattled or strained
    copies, which held γ(111) at 0.93 × EMT). The shape does not move with the lattice
    constant; the cell's area (Å², the tag before 2026-12-01 night) did, and split one
    slab into two tags as the model's lattice constant changed between iterations.
    """
    from ase_surftune.data import is_slab

    formula = atoms.get_chemical_formula(mode="hill")
    if not is_slab(atoms):
        return f"bulk_{formula}"
    c = atoms.cell.array
    return f"slab_{formula}_{plane_lattice(c[0], c[1])}"


class RecordingCalculator(Calculator):
    """Delegates to ``inner`` and keeps a copy of every structure it evaluates
    (``frames``, with ``info["al_source"]`` = :func:`workflow_tag`, the call number and,
    when computed, ``info["al_energy"]``: the inner calculator's energy, eV)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012 (ASE API)

    def __init__(self, inner: Calculator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner
        self.frames: list[Atoms] = []

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.inner.calculate(self.atoms, properties, system_changes)
        self.results = dict(self.inner.results)
        frame = self.atoms.copy()
        frame.calc = None
        frame.constraints = []
        frame.info = {"al_source": workflow_tag(frame), "al_call": len(self.frames)}
        if "energy" in self.results:
            frame.info["al_energy"] = float(self.results["energy"])
        self.frames.append(frame)


def measure_and_record(calc: Calculator, cfg: ActiveConfig, label: str
                       ) -> tuple[dict[str, Any], list[Atoms]]:
    """Measure the targets with ``calc``; returns (MeasuredProperties as dict, frames)."""
    from ase_surftune.evaluation.compare import measure_properties

    rec = RecordingCalculator(calc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        props = measure_properties((label, rec), cfg.compare_config(), label=label)
    return props.to_dict(), rec.frames


def _evenly(frames: Sequence[Atoms], n: int) -> list[Atoms]:
    if n <= 0 or not frames:
        return []
    if len(frames) <= n:
        return list(frames)
    idx = np.unique(np.round(np.linspace(0, len(frames) - 1, n)).astype(int))
    return [frames[i] for i in idx]


def _tagged(atoms: Atoms, source: str) -> Atoms:
    a = atoms.copy()
    a.calc = None
    a.info = {"al_source": source, "config_type": source.split(":")[0]}
    return a


def _strained(atoms: Atoms, eps: float) -> Atoms:
    from ase_surftune.data import is_slab

    a = atoms.copy()
    cell = a.cell.array.copy()
    if is_slab(a):
        cell[:2] *= 1 + eps  # in-plane only: the vacuum stays
    else:
        cell *= 1 + eps
    a.set_cell(cell, scale_atoms=True)
    return a


def _perturbed(anchor: Atoms, prefix: str, calc: Calculator, settings: ExploreSettings,
               rng: np.random.Generator) -> list[Atoms]:
    """MD at each temperature from ``anchor`` (``calc``, seeded from ``rng``), then its
    rattled and strained copies; sources ``{prefix}md600K``, ``{prefix}rattle0.1``..."""
    from ase_surftune.properties.md import run_md

    out: list[Atoms] = []
    if settings.md_steps > 0:
        for temp in settings.md_temperatures:
            a = anchor.copy()
            a.calc = None
            traj: list[Atoms] = []
            md_seed = int(rng.integers(2**31))
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "md.extxyz"
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        res = run_md(a, calc, "nvt_langevin", steps=settings.md_steps,
                                     timestep=settings.md_timestep, temperature=temp,
                                     friction=0.02, seed=md_seed, progress=False,
                                     loginterval=settings.md_interval, trajectory=path,
                                     traj_interval=settings.md_interval, copy=True)
                    if not res.completed:
                        log.warning("explore: MD of %s at %g K stopped early: %s", prefix[:-1],
                                    temp, res.stop_reason)
                except Exception as exc:  # noqa: BLE001 - an unstable model is a finding
                    log.warning("explore: MD of %s at %g K failed: %s", prefix[:-1], temp, exc)
                if path.is_file():
                    traj = list(ase.io.read(path, ":"))[1:]  # frame 0 is ``anchor`` itself
            out += [_tagged(x, f"{prefix}md{temp:g}K") for x in traj]
    for s in settings.rattle:
        a = anchor.copy()
        a.positions += rng.normal(scale=s, size=a.positions.shape)
        out.append(_tagged(a, f"{prefix}rattle{s:g}"))
    for eps in settings.strain:
        out.append(_tagged(_strained(anchor, eps), f"{prefix}strain{eps:+g}"))
    return out


def frame_distance(a: Atoms, b: Atoms, cutoff: float = float("inf")) -> float:
    """How far apart two frames of one workflow are (Å), whatever the atom order and origin:
    over the rigid translations that put ``b``'s first atom on an atom of ``a`` of the same
    element, the smallest of (the largest distance from an atom of either frame to the
    nearest atom of the same element in the other, minimum image in ``a``'s cell, on
    fractional positions), plus the largest change of a cell vector; infinite for
    different atom counts or compositions, or (a shortcut) when the cell change alone
    exceeds ``cutoff``. (The surface workflow evaluates the relaxed bulk cell with its
    atoms reordered and its origin moved: an atom-by-atom comparison called that another
    structure.)"""
    from ase.geometry import get_distances

    if len(a) != len(b) or sorted(a.numbers) != sorted(b.numbers):
        return float("inf")
    dcell = float(np.linalg.norm(b.cell.array - a.cell.array, axis=1).max())
    if len(a) == 0 or dcell > cutoff:
        return dcell if len(a) == 0 else float("inf")
    pos_b = a.cell.cartesian_positions(b.get_scaled_positions(wrap=False))
    other = a.numbers[:, None] != b.numbers[None, :]
    best = float("inf")
    for j in np.flatnonzero(a.numbers == b.numbers[0]):
        _, d = get_distances(a.positions, pos_b - pos_b[0] + a.positions[j], cell=a.cell,
                             pbc=a.pbc)
        d[other] = np.inf
        best = min(best, float(max(d.min(axis=0).max(), d.min(axis=1).max())))
        if best < 1e-8:  # an exact match: no translation does better
            break
    return best + dcell


def anchors(frames: Sequence[Atoms]) -> list[tuple[str, Atoms]]:
    """The stationary points of one workflow's recorded frames, which exploration perturbs:
    ``("", last frame)`` (a relaxed slab or bulk cell, an NEB's climbing image) and, when
    the frames carry energies and the lowest-energy one is another structure (farther than
    :data:`MIN_ANCHOR_SEPARATION`), ``("min_", that frame)``: an NEB's relaxed end point.

    A barrier is the energy difference between two stationary points; perturbing only the
    last one (the saddle) left the relaxed vacancy unsampled. On Cu/EMT the fine-tuned
    model then put it 50–60 meV too low (+4–7 % barrier) while fitting every labelled
    frame of the same cell near the saddle to ±10 meV (benchmarks/RESULTS.md).
    """
    last = frames[-1]
    out = [("", last)]
    energies = [f.info.get("al_energy") for f in frames]
    if all(e is not None for e in energies):
        low = frames[int(np.argmin(energies))]
        if frame_distance(low, last) > MIN_ANCHOR_SEPARATION:
            out.append(("min_", low))
    return out


def explore(frames: Sequence[Atoms], calc: Calculator, settings: ExploreSettings,
            seed: int) -> list[Atoms]:
    """Candidates from the recorded workflow ``frames`` (in recording order).

    Per workflow (:func:`workflow_tag`): its :func:`anchors` (``{tag}:stationary``, the
    last frame, and ``{tag}:min_stationary``, the lowest-energy frame when that is another
    stationary point), ``frames_per_workflow`` evenly spaced frames (``{tag}:workflow``),
    then from each anchor MD at each temperature (``calc`` = the current model, seeded),
    rattled and strained copies (``{tag}:md600K``, ``{tag}:min_rattle0.1``...).
    Duplicates (same structure hash) are dropped, the first kept; more than
    ``max_candidates`` are thinned evenly. Deterministic for a seed.
    """
    from ase_surftune.data import structure_hash

    groups: dict[str, list[Atoms]] = {}
    for f in frames:
        groups.setdefault(f.info.get("al_source", workflow_tag(f)), []).append(f)
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    for tag, fr in groups.items():
        points = anchors(fr)
        out += [_tagged(anchor, f"{tag}:{prefix}stationary")  # STATIONARY_KINDS
                for prefix, anchor in points]
        out += [_tagged(a, f"{tag}:workflow") for a in _evenly(fr, settings.frames_per_workflow)]
        for prefix, anchor in points:
            out += _perturbed(anchor, f"{tag}:{prefix}", calc, settings, rng)
    seen: set[str] = set()
    uniq = []
    for a in out:
        h = structure_hash(a)
        if h not in seen:
            seen.add(h)
            uniq.append(a)
    return _evenly(uniq, settings.max_candidates)
