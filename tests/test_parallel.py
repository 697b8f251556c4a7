"""Executor-driven sweeps: ordered results, per-task failures, process pools, dask."""

from __future__ import annotations

import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_surftune.parallel import InlineExecutor, map_tasks, raise_failures


def emt_energy_per_atom(symbol: str, a: float) -> float:
    """A picklable task: EMT energy per atom (eV) of an fcc crystal with lattice a (Å)."""
    atoms = bulk(symbol, "fcc", a=a)
    atoms.calc = EMT()
    return atoms.get_potential_energy() / len(atoms)


TASKS = [("Cu", 3.61), ("Au", 4.08), ("Xx", 4.0), ("Al", 4.05)]


def _expected():
    return [emt_energy_per_atom(s, a) if s != "Xx" else None for s, a in TASKS]


def _check(results):
    exp = _expected()
    assert [r.index for r in results] == [0, 1, 2, 3]
    for r, e in zip(results, exp):
        if e is None:
            assert not r.ok and "Xx" in r.error
        else:
            assert r.ok and r.value == pytest.approx(e, abs=1e-12)
    with pytest.raises(RuntimeError, match=r"1 of 4 tasks failed"):
        raise_failures(results)


def test_inline_default_keeps_order_and_reports_failures():
    _check(map_tasks(emt_energy_per_atom, TASKS, progress=False))
    _check(map_tasks(emt_energy_per_atom, TASKS, InlineExecutor(), progress=False))


def test_local_process_pool():
    _check(map_tasks(emt_energy_per_atom, TASKS, "process:2", progress=False))


def test_dask_local_cluster_on_loopback():
    pytest.importorskip("dask.distributed")
    _check(map_tasks(emt_energy_per_atom, TASKS, "dask:2", progress=False))


def test_unknown_executor_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown executor 'threads'"):
        map_tasks(emt_energy_per_atom, TASKS, "threads")
