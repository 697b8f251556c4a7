"""Executor-driven sweeps: ordered results, per-task failures, process pools, dask."""

from __future__ import annotations

import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_surftune.core.parallel import InlineExecutor, map_tasks, raise_failures


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


@pytest.mark.slow
def test_local_process_pool():
    _check(map_tasks(emt_energy_per_atom, TASKS, "process:2", progress=False))


def test_dask_local_cluster_on_loopback():
    pytest.importorskip("dask.distributed")
    _check(map_tasks(emt_energy_per_atom, TASKS, "dask:2", progress=False))


def test_unknown_executor_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown executor 'threads'"):
        map_tasks(emt_energy_per_atom, TASKS, "threads")


# --- the sweep functions take the same executors --------------------------------------


@pytest.mark.slow
def test_label_through_a_process_pool_writes_as_it_goes_and_resumes(tmp_path):
    from ase.build import fcc111
    from ase.io import read

    from ase_surftune.data import get_labels, label

    structs = []
    for i in range(5):
        a = fcc111("Cu", (2, 2, 2), vacuum=5.0)
        a.rattle(0.05, seed=i)
        structs.append(a)
    out = tmp_path / "labelled.extxyz"
    par = label(structs[:3], "emt", out, executor="process:2", progress=False)
    assert len(read(out, ":")) == 3
    full = label(structs, "emt", out, executor="process:2", progress=False)  # resumes
    serial = label(structs, EMT(), tmp_path / "serial.extxyz", progress=False)
    assert [f.info["label_index"] for f in read(out, ":")] == [0, 1, 2, 3, 4]
    for a, b in zip(full, serial):
        assert get_labels(a)[0] == pytest.approx(get_labels(b)[0], abs=1e-10)
    assert get_labels(par[0])[0] == pytest.approx(get_labels(serial[0])[0], abs=1e-10)


@pytest.mark.slow
def test_evaluate_and_compare_with_executor_report_failures_in_place(tmp_path):
    from ase.build import fcc111

    from ase_surftune.data import label
    from ase_surftune.evaluation import compare, evaluate, evaluate_files

    structs = []
    for i in range(3):
        a = fcc111("Cu", (2, 2, 2), vacuum=5.0)
        a.rattle(0.1, seed=i)
        structs.append(a)
    data = label(structs, EMT(), tmp_path / "d.extxyz", progress=False)
    rep = evaluate(["emt", "emt"], data, executor="process:2", progress=False, stress=False)
    assert [m.overall.softening_scale for m in rep.models] == pytest.approx([1.0, 1.0])
    files = evaluate_files(["emt"], [tmp_path / "d.extxyz", tmp_path / "missing.xyz"],
                           executor="process:2", progress=False, stress=False)
    assert files[0].ok and not files[1].ok and "missing.xyz" in files[1].error
    cmp = compare("emt", ["emt", "no-such-model"], {"element": "Cu",
                  "properties": ["lattice"]}, executor="process:2", progress=False)
    assert cmp.ratio("lattice_a", "emt") == pytest.approx(1.0, abs=1e-9)
    failed = [m for m in cmp.models if "error" in m.details]
    assert [m.calculator for m in failed] == ["no-such-model"]
    assert "no-such-model" in failed[0].details["error"]


@pytest.mark.slow
def test_learning_curve_points_through_a_process_pool(tiny_mace_file, tmp_path):
    from conftest import make_emt_slabs

    from ase_surftune.evaluation.learning_curve import learning_curve

    data = make_emt_slabs(6, seed=5, size=(2, 2, 2))
    cfg = {"model": f"mace:{tiny_mace_file}", "strategies": ["linear", "full"],
           "n_train": [1, 2], "seeds": [0], "output_dir": str(tmp_path / "lc"),
           "progress": False, "finetune": {"epochs": 1, "batch_size": 2, "dtype": "float64",
                                           "forgetting": {"enabled": False}}}
    res = learning_curve(cfg, train=data[:4], test=data[4:], executor="process:2")
    keys = sorted((r["strategy"], r["n_train"]) for r in res.rows if r["strategy"] != "zero-shot")
    assert keys == [("full", 1), ("full", 2), ("linear", 1), ("linear", 2)]
    assert res.complete


def test_cli_label_resumes_and_reports(tmp_path, capsys):
    from ase.build import fcc111
    from ase.io import read, write

    from ase_surftune.cli import main

    frames = []
    for i in range(3):
        a = fcc111("Cu", (2, 2, 2), vacuum=5.0)
        a.rattle(0.05, seed=i)
        frames.append(a)
    write(tmp_path / "in.extxyz", frames)
    out = tmp_path / "out.extxyz"
    assert main(["label", str(tmp_path / "in.extxyz"), "-o", str(out), "--no-progress"]) == 0
    assert "labelled 3 of 3" in capsys.readouterr().out
    e = [f.get_potential_energy() for f in read(out, ":")]
    frames[1].calc = EMT()
    assert e[1] == pytest.approx(frames[1].get_potential_energy(), abs=1e-8)
    assert main(["label", str(tmp_path / "nope.xyz"), "-o", str(out)]) == 2
