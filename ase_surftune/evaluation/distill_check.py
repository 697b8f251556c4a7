"""Distillation checks: is the student as good as the teacher where it matters, and faster?

* :func:`property_check`: unrelaxed surface energy (J/m²) of the first slab seed and the
  highest phonon band frequency (THz) of the bulk, student vs teacher;
* :func:`time_force_calls`: median seconds per energy+forces call (the speed-up figure).

They sit in the evaluation layer because they call properties (above training).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from ase_surftune.models.calculator import SurfTuneCalculator
from ase_surftune.properties._base import vacuum_size

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.training.distill import PropertyCheckOptions

__all__ = ["is_bulk", "property_check", "time_force_calls"]


def is_bulk(a: Atoms) -> bool:
    """Periodic in 3D with no vacuum gap (< 2 Å) along c: a bulk, not a slab."""
    return bool(a.pbc.all()) and vacuum_size(a) < 2.0


def time_force_calls(bundle: Bundle, atoms: Atoms, n: int, head: str | None = None) -> float:
    """Median seconds per energy+forces call (positions perturbed so nothing is cached)."""
    a = atoms.copy()
    a.calc = SurfTuneCalculator(bundle, head=head)
    a.get_forces()  # warm-up
    times = []
    rng = np.random.default_rng(0)
    for _ in range(n):
        a.positions += rng.normal(scale=1e-3, size=a.positions.shape)
        t0 = time.perf_counter()
        a.get_forces()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _with_difference(res: dict[str, Any]) -> dict[str, Any]:
    res["difference_percent"] = 100 * (res["student"] - res["teacher"]) / abs(res["teacher"])
    return res


def _surface_energy(models: dict[str, tuple[Bundle, str | None]], slab: Atoms,
                    bulk: Atoms) -> dict[str, Any]:
    from ase_surftune.properties.surface import slab_surface_energy

    res: dict[str, Any] = {}
    for name, (b, h) in models.items():
        calc = SurfTuneCalculator(b, head=h)
        bb = bulk.copy()
        bb.calc = calc
        e_b = bb.get_potential_energy() / len(bb)
        r = slab_surface_energy(slab.copy(), calc, e_b, relax_slab=False)
        res[name] = float(r.gamma_unrelaxed)
    return _with_difference(res)


def _max_phonon(models: dict[str, tuple[Bundle, str | None]], prim: Atoms) -> dict[str, Any]:
    from ase_surftune.properties.phonons import phonons

    res: dict[str, Any] = {}
    for name, (b, h) in models.items():
        ph = phonons(prim, SurfTuneCalculator(b, head=h), supercell=(2, 2, 2),
                     mesh=(4, 4, 4), band_npoints=5)
        res[name] = float(max(max(max(q) for q in seg) for seg in ph.band_frequencies))
    res = _with_difference(res)
    res["what"] = f"highest band frequency (THz) of {prim.get_chemical_formula()}"
    return res


def property_check(teacher: Bundle, student: Bundle, seeds: Sequence[Atoms],
                   head: str | None, checks: PropertyCheckOptions) -> dict[str, Any]:
    """Student vs teacher on physical properties.

    Returns ``{"surface_energy_J_m2": {...}, "phonon_max_frequency_THz": {...}}`` (each
    with ``teacher``, ``student``, ``difference_percent``); a check is absent when it is
    switched off in ``checks`` or, for the surface energy, when no seed is a slab. The bulk
    is the first bulk seed, else the ground-state bulk of the seeds' majority element.
    """
    from ase_surftune.training.replay import ground_state_bulk

    out: dict[str, Any] = {}
    slabs = [a for a in seeds if not is_bulk(a)]
    bulks = [a for a in seeds if is_bulk(a)]
    if bulks:
        bulk = bulks[0].copy()
    else:
        syms = seeds[0].get_chemical_symbols()
        bulk = ground_state_bulk(max(set(syms), key=syms.count))
    models = {"teacher": (teacher, head), "student": (student, None)}
    if checks.surface and slabs:
        out["surface_energy_J_m2"] = _surface_energy(models, slabs[0], bulk)
    if checks.phonon:
        symbols = bulk.get_chemical_symbols()
        prim = ground_state_bulk(symbols[0]) if len(set(symbols)) == 1 else bulk
        out["phonon_max_frequency_THz"] = _max_phonon(models, prim)
    return out
