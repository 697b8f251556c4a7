"""Exploration: candidates from the property workflows that compute the targets.

:func:`measure_and_record` measures the targets with the current model (the same
:func:`~ase_surftune.evaluation.compare.measure_properties` code as the reference) through
a :class:`RecordingCalculator`, which keeps every structure the workflows evaluate: bulk
relaxation, slab relaxations, NEB end points and band. :func:`explore` turns those records
into candidates: evenly spaced frames of each workflow, plus short MD, rattled and strained
copies of each workflow's final structure. Every candidate carries
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

__all__ = ["RecordingCalculator", "explore", "measure_and_record", "workflow_tag"]

log = logging.getLogger(__name__)


def workflow_tag(atoms: Atoms) -> str:
    """A workflow name for a structure: ``slab_Cu4_A5.6``, ``bulk_Cu4``, ``bulk_Cu15``...

    Slabs (vacuum along c) are surface-energy frames, small bulk cells lattice frames and
    bulk cells with a vacancy NEB frames; the formula tells them apart. Slabs also carry
    their in-plane cell area (Å², fixed during a slab relaxation): the (111) and (100)
    slabs of one metal can have the same formula, and one tag for both made the second
    slab's frames stand for the first (on Cu/EMT the (111) slab then got 2 of 53
    candidates and no MD, rattled or strained copies, which held γ(111) at 0.93 × EMT).
    """
    from ase_surftune.data import is_slab

    formula = atoms.get_chemical_formula(mode="hill")
    if not is_slab(atoms):
        return f"bulk_{formula}"
    c = atoms.cell.array
    return f"slab_{formula}_A{np.linalg.norm(np.cross(c[0], c[1])):.1f}"


class RecordingCalculator(Calculator):
    """Delegates to ``inner`` and keeps a copy of every structure it evaluates
    (``frames``, with ``info["al_source"]`` = :func:`workflow_tag` and the call number)."""

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


def explore(frames: Sequence[Atoms], calc: Calculator, settings: ExploreSettings,
            seed: int) -> list[Atoms]:
    """Candidates from the recorded workflow ``frames`` (in recording order).

    Per workflow (:func:`workflow_tag`): ``frames_per_workflow`` evenly spaced frames, then
    from its last frame MD at each temperature (``calc`` = the current model, seeded),
    rattled and strained copies. Duplicates (same structure hash) are dropped; more than
    ``max_candidates`` are thinned evenly. Deterministic for a seed.
    """
    from ase_surftune.data import structure_hash
    from ase_surftune.properties.md import run_md

    groups: dict[str, list[Atoms]] = {}
    for f in frames:
        groups.setdefault(f.info.get("al_source", workflow_tag(f)), []).append(f)
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    for g, (tag, fr) in enumerate(groups.items()):
        out += [_tagged(a, f"{tag}:workflow") for a in _evenly(fr, settings.frames_per_workflow)]
        last = fr[-1]
        if settings.md_steps > 0:
            for k, temp in enumerate(settings.md_temperatures):
                a = last.copy()
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
                            log.warning("explore: MD of %s at %g K stopped early: %s", tag,
                                        temp, res.stop_reason)
                    except Exception as exc:  # noqa: BLE001 - an unstable model is a finding
                        log.warning("explore: MD of %s at %g K failed: %s", tag, temp, exc)
                    if path.is_file():
                        traj = list(ase.io.read(path, ":"))[1:]  # frame 0 is ``last`` itself
                out += [_tagged(x, f"{tag}:md{temp:g}K") for x in traj]
        for s in settings.rattle:
            a = last.copy()
            a.positions += rng.normal(scale=s, size=a.positions.shape)
            out.append(_tagged(a, f"{tag}:rattle{s:g}"))
        for eps in settings.strain:
            out.append(_tagged(_strained(last, eps), f"{tag}:strain{eps:+g}"))
    seen: set[str] = set()
    uniq = []
    for a in out:
        h = structure_hash(a)
        if h not in seen:
            seen.add(h)
            uniq.append(a)
    return _evenly(uniq, settings.max_candidates)
