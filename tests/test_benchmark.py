"""Reference sets and benchmark sweeps on EMT.

The reference tables are written here from EMT values computed through the public
property API with the benchmark's settings, so EMT against them must give ratio 1
(to rounding), and a PES scaled by 0.7 must give 0.7 for γ, barriers, E_vac and B and 1
for a. Also: every reader layout, units, facet notations, property-command JSON as
references, resume after a kill without recomputing, nothing written outside -o, and
``compare -r table.csv``.
"""

from __future__ import annotations

import csv
import importlib
import json
import math

import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from test_evaluate import ScaledEMT

# the module (ase_surftune.evaluation.benchmark is also the name of the function)
bm = importlib.import_module("ase_surftune.evaluation.benchmark")

from ase_surftune.core.errors import ConfigError
from ase_surftune.evaluation.benchmark import benchmark, load_benchmark_config
from ase_surftune.evaluation.reference_sets import load_reference_set, parse_facet, split_system
from ase_surftune.properties import relax, surface_energies, vacancy_migration
from ase_surftune.properties.bulk import conventional_lattice, equation_of_state, vacancy_formation

FAST = {"surface": {"min_slab_size": 5.0, "min_vacuum_size": 6.0},
        "neb": {"n_images": 1, "supercell": [2, 2, 2]},
        "vacancy": {"supercell": [2, 2, 2]}}


def emt_values(element: str) -> dict[str, float]:
    """EMT's a (Å), B (GPa), γ(111) (J/m²), E_vac and E_m (eV) through the public API,
    with the settings the benchmark uses (FAST over the defaults)."""
    cfg = load_benchmark_config(FAST)
    calc = EMT()
    r = relax(bulk(element, "fcc", cubic=True), calc, relax_cell=True, fmax=cfg.lattice.fmax,
              steps=cfg.lattice.steps, optimizer=cfg.lattice.optimizer)
    s, n, v = cfg.surface, cfg.neb, cfg.vacancy
    g = surface_energies(r.atoms, calc, ["111"], min_slab_size=s.min_slab_size,
                         min_vacuum_size=s.min_vacuum_size, relax_bulk=False,
                         relax_slabs=s.relax, fmax=s.fmax, steps=s.steps).gamma["1,1,1"]
    return {"a": conventional_lattice(r.atoms)[0],
            "B": equation_of_state(r.atoms, calc, npoints=cfg.eos.npoints,
                                   eps=cfg.eos.eps).bulk_modulus,
            "gamma111": g,
            "E_vac": vacancy_formation(r.atoms, calc, supercell=v.supercell, relax=v.relax,
                                       fmax=v.fmax, steps=v.steps).formation_energy,
            "E_m": vacancy_migration(r.atoms, calc, supercell=n.supercell, relax_bulk=False,
                                     n_images=n.n_images, fmax=n.fmax, steps=n.steps,
                                     climb=n.climb,
                                     relax_endpoints=n.relax_endpoints).barrier_forward}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A long CSV (mixed units), a wide γ table with Cu111 names and a cell column, a
    barrier table with one row per element, and a JSON set — all EMT-made."""
    d = tmp_path_factory.mktemp("refs")
    cu, ag = emt_values("Cu"), emt_values("Ag")
    long_csv = d / "emt_long.csv"
    with long_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["system", "property", "value", "units", "source", "cell"])
        w.writerow(["Cu111", "gamma", cu["gamma111"] / 0.016021766208, "meV/Å^2", "EMT", "fcc"])
        w.writerow(["Cu", "lattice_a", cu["a"] / 10, "nm", "EMT", "fcc"])
        w.writerow(["Cu", "bulk_modulus", cu["B"] * 10, "kbar", "EMT", "fcc"])
        w.writerow(["Cu", "barrier", cu["E_m"], "eV", "EMT", "fcc"])
        w.writerow(["Ag", "E_vac", ag["E_vac"] * 1000, "meV", "EMT", "fcc"])
    (long_csv.parent / "README").write_text("x")  # a data folder with other files
    # wide layouts
    gamma_csv = d / "gamma_wide.csv"
    gamma_csv.write_text("system,cell,gamma (J/m^2),source\n"
                         f"Cu111,fcc,{cu['gamma111']!r},EMT\nAg(111),fcc,{ag['gamma111']!r},EMT\n")
    barrier_csv = d / "barriers.csv"
    barrier_csv.write_text(f"element,E_m [eV]\nCu,{cu['E_m']!r}\nAg,{ag['E_m']!r}\n")
    js = d / "emt.json"
    js.write_text(json.dumps({"source": "EMT", "entries": [
        {"system": "Ag", "property": "a", "value": ag["a"], "units": "Å"},
        {"system": "Ag", "property": "gamma", "facet": "(111)", "value": ag["gamma111"]}]}))
    return {"long": long_csv, "gamma": gamma_csv, "barrier": barrier_csv, "json": js,
            "cu": cu, "ag": ag, "dir": d}


def test_facet_notations_parse_to_the_same_facet():
    for s in ("111", "(111)", "1,1,1", "1 1 1", "[111]"):
        assert parse_facet(s) == (1, 1, 1), s
    assert parse_facet("1-10") == parse_facet("(1-10)") == parse_facet("1,-1,0") == (1, -1, 0)
    assert parse_facet("-110") == (-1, 1, 0)
    assert parse_facet("0001") == (0, 0, 1)
    assert parse_facet("10-10") == (1, 0, 0) and parse_facet("11-20") == (1, 1, 0)
    with pytest.raises(ConfigError, match=r"needs i = -\(h\+k\)"):
        parse_facet("1011")
    assert split_system("Cu111") == ("Cu", "111")
    assert split_system("Ru(0001)") == ("Ru", "0001")
    assert split_system("Ti10-10") == ("Ti", "10-10")
    assert split_system("MgO") == ("MgO", None) and split_system("H2") == ("H2", None)


@pytest.mark.slow
def test_readers_layouts_and_units(tables):
    cu, ag = tables["cu"], tables["ag"]
    long = load_reference_set(tables["long"])
    by = {(e.system, e.key): e for e in long.entries}
    assert by[("Cu", "gamma_111")].value == pytest.approx(cu["gamma111"], rel=1e-12)
    assert by[("Cu", "gamma_111")].unit == "J/m²"
    assert by[("Cu", "lattice_a")].value == pytest.approx(cu["a"], rel=1e-12)
    assert by[("Cu", "bulk_modulus")].value == pytest.approx(cu["B"], rel=1e-12)
    assert by[("Cu", "barrier_vacancy")].value == pytest.approx(cu["E_m"], rel=1e-12)
    assert by[("Ag", "vacancy_formation")].value == pytest.approx(ag["E_vac"], rel=1e-12)
    assert by[("Cu", "gamma_111")].cell == "fcc" and by[("Cu", "gamma_111")].source == "EMT"
    wide = load_reference_set(tables["gamma"])
    assert [(e.system, e.key) for e in wide.entries] == [("Cu", "gamma_111"),
                                                         ("Ag", "gamma_111")]
    bar = load_reference_set(tables["barrier"])
    assert [(e.system, e.key, e.value) for e in bar.entries] == [
        ("Cu", "barrier_vacancy", cu["E_m"]), ("Ag", "barrier_vacancy", ag["E_m"])]
    per_facet = tables["dir"] / "gamma_facets.csv"
    per_facet.write_text("element,cell,gamma_111 (J/m2),γ(1-10),E_surf_100 [meV/A^2]\n"
                         "Cu,fcc,1.0,1.1,70.0\nAg,fcc,0.5,,\n")
    got = {(e.system, e.key): e.value for e in load_reference_set(per_facet).entries}
    assert got == {("Cu", "gamma_111"): 1.0, ("Cu", "gamma_1-10"): 1.1,
                   ("Cu", "gamma_100"): pytest.approx(70.0 * 0.016021766208),
                   ("Ag", "gamma_111"): 0.5}
    per_facet.unlink()
    js = load_reference_set(tables["json"])
    assert {e.key for e in js.entries} == {"lattice_a", "gamma_111"}
    assert all(e.source == "EMT" for e in js.entries)


@pytest.mark.parametrize("text, match", [
    ("system,property,value\nCu,elastic,1\n", "unknown property"),
    ("system,property,value,units\nCu,gamma,1,eV\n", "facet"),
    ("system,property,value,units\nCu111,gamma,1,eV\n", "not a unit of gamma"),
    ("system,property,value,units\nCu,a,1,furlong\n", "unknown unit"),
    ("system,property,value\nCu,a,abc\n", "not a number"),
    ("system,gamma_111 (furlong)\nCu,1\n", "unknown unit"),
    ("system,note\nCu,x\n", "no column named after a property"),
    ("system,property,value\nCu111,gamma,1\nCu,gamma 111,1\n", ""),
])
def test_reader_errors_are_one_line_config_errors(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    if not match:  # "gamma 111" is not a property name
        with pytest.raises(ConfigError):
            load_reference_set(p)
        return
    with pytest.raises(ConfigError, match=match):
        load_reference_set(p)


@pytest.fixture(scope="module")
def sweep(tables, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    rep = benchmark(tables["long"], ["emt", ("soft", ScaledEMT(0.7))], FAST, output_dir=out,
                    progress=False)
    return rep, out


@pytest.mark.slow
def test_emt_against_emt_table_gives_ratio_one(sweep):
    rep, out = sweep
    rows = [r for r in rep.rows if r["model"] == "emt"]
    assert {(r["system"], r["key"]) for r in rows} == {
        ("Cu", "gamma_111"), ("Cu", "lattice_a"), ("Cu", "bulk_modulus"),
        ("Cu", "barrier_vacancy"), ("Ag", "vacancy_formation")}
    for r in rows:
        assert r["error"] is None and r["converged"] is not False, r
        assert r["ratio"] == pytest.approx(1.0, abs=1e-6), r
    md = (out / "benchmark.md").read_text()
    assert "| emt | Cu | γ(111) | J/m² |" in md and "| 1.000 |" in md
    assert (out / "benchmark.png").stat().st_size > 5000
    d = json.loads((out / "benchmark.json").read_text())
    assert len(d["rows"]) == 10 and {s["property"] for s in d["summary"]} >= {"gamma"}
    with (out / "benchmark.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 10


@pytest.mark.slow
def test_scaled_pes_gives_the_scale(sweep):
    rep, _ = sweep
    soft = {r["key"]: r["ratio"] for r in rep.rows if r["model"] == "soft"}
    assert soft["lattice_a"] == pytest.approx(1.0, abs=1e-4)  # E·s keeps the minimum
    for key in ("gamma_111", "barrier_vacancy", "vacancy_formation", "bulk_modulus"):
        assert soft[key] == pytest.approx(0.7, rel=3e-3), key
    summ = {(s["model"], s["property"]): s for s in rep.summary()}
    assert summ[("soft", "gamma")]["median"] == pytest.approx(0.7, rel=3e-3)


@pytest.mark.slow
def test_resume_after_kill_does_not_recompute(tables, tmp_path, monkeypatch):
    calls: list[str] = []
    real = bm._run_task

    def killed_after_two(task, store):
        calls.append(task["name"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # the "kill": mid-sweep, with two tasks stored
        return real(task, store)

    out = tmp_path / "out"
    monkeypatch.setattr(bm, "_run_task", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        benchmark(tables["barrier"], "emt", FAST, output_dir=out, progress=False)
    stored = sorted(p.name for p in (out / "tasks").glob("*.json"))
    assert len(stored) == 2 and not list((out / "tasks").glob(".*.tmp"))
    # tasks: 2 bulk relaxations (Cu, Ag) + 2 barriers; the two bulks were stored
    calls.clear()

    def counting(task, store):
        calls.append(task["name"])
        return real(task, store)

    monkeypatch.setattr(bm, "_run_task", counting)
    rep = benchmark(tables["barrier"], "emt", FAST, output_dir=out, progress=False)
    assert len(calls) == 2 and not set(calls) & set(stored)
    assert (rep.computed, rep.reused) == (2, 2)
    cu = next(r for r in rep.rows if r["system"] == "Cu")
    assert cu["ratio"] == pytest.approx(1.0, abs=1e-6)
    calls.clear()
    rep = benchmark(tables["barrier"], "emt", FAST, output_dir=out, progress=False)
    assert calls == [] and rep.reused == 4  # all done: nothing recomputed
    # other settings: a different fingerprint, recomputed
    benchmark(tables["barrier"], "emt", FAST, output_dir=out, progress=False,
              **{"neb.fmax": 0.04})
    assert len(calls) == 2


def test_cli_writes_only_under_output(tables, tmp_path, monkeypatch, capsys):
    from ase_surftune.cli import main

    before = sorted(p.name for p in tables["dir"].iterdir())
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = work.parent / "fast.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(FAST))
    rc = main(["benchmark", str(tables["gamma"]), "-m", "emt", "-c", str(cfg), "-o", "res",
               "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "| emt | Ag | γ(111) | J/m² |" in text and "| 1.000 |" in text
    assert sorted(p.name for p in work.iterdir()) == ["res"]
    assert sorted(p.name for p in tables["dir"].iterdir()) == before
    assert {p.name for p in (work / "res").iterdir()} >= {
        "benchmark.csv", "benchmark.md", "benchmark.json", "benchmark.png", "tasks"}
    # a bad table: one line, exit 2
    bad = work.parent / "bad.csv"
    bad.write_text("system,property,value\nCu,elastic,1\n")
    assert main(["benchmark", str(bad), "-m", "emt", "-o", "res2"]) == 2
    assert "unknown property" in capsys.readouterr().err


@pytest.mark.slow
def test_property_command_json_is_a_reference(tables, tmp_path):
    from ase_surftune.cli._common import write_json
    from ase_surftune.properties import phonons

    cfg = load_benchmark_config(FAST)
    calc = EMT()
    r = relax(bulk("Cu", "fcc", cubic=True), calc, relax_cell=True, fmax=cfg.lattice.fmax,
              steps=cfg.lattice.steps, optimizer=cfg.lattice.optimizer)
    s = cfg.surface
    surf = surface_energies(r.atoms, calc, ["100"], min_slab_size=s.min_slab_size,
                            min_vacuum_size=s.min_vacuum_size, relax_bulk=False,
                            relax_slabs=s.relax, fmax=s.fmax, steps=s.steps)
    write_json(surf.to_dict(), tmp_path / "Cu_surface.json")
    ref = load_reference_set(tmp_path / "Cu_surface.json")
    assert [(e.system, e.key) for e in ref.entries] == [("Cu", "gamma_100")]
    # surftune neb's JSON does not name the element: the system is given
    neb = {"barrier_forward": tables["cu"]["E_m"], "info": {"system": "vacancy"}}
    write_json(neb, tmp_path / "neb.json")
    with pytest.raises(ConfigError, match="--system"):
        load_reference_set(tmp_path / "neb.json")
    assert load_reference_set(tmp_path / "neb.json", system="Cu").entries[0].key == \
        "barrier_vacancy"
    # surftune phonons' JSON: its phonopy_params.yaml (written by phonopy) is the reference
    prim = bulk("Cu", "fcc", a=conventional_lattice(r.atoms)[0])
    ph = phonons(prim, calc, supercell=2, mesh=4, bands=False, dos=False,
                 phonopy_params=tmp_path / "phonopy_params.yaml")
    d = ph.to_dict()
    d["phonopy_params"] = "phonopy_params.yaml"  # relative: found next to the JSON
    write_json(d, tmp_path / "Cu_phonons.json")
    out = tmp_path / "out"
    rep = benchmark(tmp_path / "Cu_surface.json", "emt", FAST, output_dir=out, progress=False)
    assert rep.rows[0]["ratio"] == pytest.approx(1.0, abs=1e-6)
    rep = benchmark(tmp_path / "Cu_phonons.json", ["emt", ("soft", ScaledEMT(0.7))], FAST,
                    output_dir=tmp_path / "out_ph", progress=False)
    ratios = {r["model"]: r["ratio"] for r in rep.rows}
    assert ratios["emt"] == pytest.approx(1.0, abs=1e-6)
    assert ratios["soft"] == pytest.approx(math.sqrt(0.7), rel=1e-3)
    assert rep.rows[0]["value"] is None and "n/a" in rep.to_markdown()


def test_compare_takes_a_reference_table(tables, tmp_path, capsys):
    from ase_surftune.cli import main

    rc = main(["compare", "-r", str(tables["long"]), "-m", "emt", "--properties", "lattice",
               "-o", str(tmp_path / "cmp"), "--no-progress"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "corrupt" not in text.err
    d = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    row = next(r for r in d["table"] if r["property"] == "lattice_a")
    assert row["ratio"] == pytest.approx(1.0, abs=1e-6)
    # γ and B of the table have no model value: no empty slot in the figure
    from ase_surftune.evaluation.compare import ComparisonReport, MeasuredProperties
    from ase_surftune.evaluation.plots import comparison_keys

    rep = ComparisonReport("ref", MeasuredProperties.from_dict(d["reference"]),
                           [MeasuredProperties.from_dict(m) for m in d["models"]])
    assert comparison_keys(rep) == ["lattice_a"]
    # compare's own outputs are reference sets too (system from its config)
    ents = load_reference_set(tmp_path / "cmp" / "comparison.json").entries
    assert {(e.system, e.key) for e in ents} >= {("Cu", "lattice_a"), ("Cu", "gamma_111")}
    # a table without the configured element: one line before anything is measured
    assert main(["compare", "-r", str(tables["long"]), "-m", "emt", "--element", "Pt",
                 "-o", str(tmp_path / "cmp2")]) == 2
    assert "no values for 'Pt'" in capsys.readouterr().err


def test_ratio_axis_does_not_start_at_zero():
    from ase_surftune.evaluation.plots import ratio_limits

    lo, hi = ratio_limits([0.7, 0.95, None, float("nan")])
    assert 0.6 < lo < 0.7 and 1.0 < hi < 1.1


@pytest.mark.slow
def test_spec_at_head_is_a_benchmark_model(tiny_mace_file, tmp_path, capsys):
    from ase_surftune.cli import main

    table = tmp_path / "a.csv"
    table.write_text("system,property,value,units\nCu,a,3.6,Å\n")
    spec = f"{tiny_mace_file}@Default"
    rc = main(["benchmark", str(table), "-m", spec, "-m", f"{tiny_mace_file}@nohead",
               "-o", str(tmp_path / "o"), "--no-progress", "--no-plot"])
    out = capsys.readouterr().out
    rows = {r["model"]: r for r in json.loads((tmp_path / "o" / "benchmark.json"
                                               ).read_text())["rows"]}
    assert rows[spec]["error"] is None and rows[spec]["value"] > 0
    assert "nohead" in rows[f"{tiny_mace_file}@nohead"]["error"]
    assert rc == 1 and "1 row(s) failed" in out


def test_structure_file_rows_and_the_folder_lock(tables, tmp_path):
    import ase.io

    from ase_surftune.core.errors import LockedError
    from ase_surftune.core.io import exclusive_lock

    # a primitive fcc cell: a is read from the conventional cell, so it matches the table
    ase.io.write(tmp_path / "cu_prim.extxyz", bulk("Cu", "fcc", a=3.7))
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps([{"system": "Cu", "property": "a", "value": tables["cu"]["a"],
                                "structure": "cu_prim.extxyz"}]))
    rep = benchmark(ref, "emt", FAST, output_dir=tmp_path / "o", progress=False, plot=False)
    # fmax bounds stress x volume: the 1-atom cell stops ~4x further from σ = 0 than the
    # 4-atom cubic cell of the table, hence 1e-3 and not 1e-6
    assert rep.rows[0]["ratio"] == pytest.approx(1.0, abs=1e-3)
    assert abs(rep.rows[0]["value"] - 3.7) > 0.05  # relaxed, not the starting cell
    with exclusive_lock(tmp_path / "o" / ".surftune.lock", "held by a test"), \
            pytest.raises(LockedError):
        benchmark(ref, "emt", FAST, output_dir=tmp_path / "o", progress=False)


@pytest.mark.slow
def test_force_sets_row_written_by_phonopy(tables, tmp_path):
    """A FORCE_SETS reference (written by phonopy from EMT forces) with the unit cell
    built from the row's element, cell type and a: EMT gives 1, EMT×0.7 gives √0.7."""
    from phonopy.file_IO import write_FORCE_SETS

    from ase_surftune.properties import phonons

    a = tables["cu"]["a"]
    res = phonons(bulk("Cu", "fcc", a=a, cubic=True), EMT(), supercell=2, mesh=4,
                  bands=False, dos=False)
    write_FORCE_SETS(res.phonon.dataset, filename=str(tmp_path / "FORCE_SETS"))
    (tmp_path / "ph.csv").write_text(f"system,property,value,cell,a\n"
                                     f"Cu,phonons,FORCE_SETS,fcc,{a!r}\n")
    rep = benchmark(tmp_path / "ph.csv", ["emt", ("soft", ScaledEMT(0.7))], FAST,
                    output_dir=tmp_path / "o", progress=False, plot=False)
    ratios = {r["model"]: r["ratio"] for r in rep.rows}
    assert ratios["emt"] == pytest.approx(1.0, abs=1e-6)
    assert ratios["soft"] == pytest.approx(math.sqrt(0.7), rel=1e-3)
    # same file: nothing recomputed; edited file under the same name: recomputed
    again = benchmark(tmp_path / "ph.csv", ["emt"], FAST, output_dir=tmp_path / "o",
                      progress=False, plot=False)
    assert (again.computed, again.reused) == (0, 1)
    with (tmp_path / "FORCE_SETS").open("a") as fh:
        fh.write("\n")
    again = benchmark(tmp_path / "ph.csv", ["emt"], FAST, output_dir=tmp_path / "o",
                      progress=False, plot=False)
    assert (again.computed, again.reused) == (1, 0)


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume(tables, tmp_path, monkeypatch):
    """A real SIGKILL: the tasks stored before it are not recomputed, no torn file."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import time
        from ase.calculators.emt import EMT
        from ase_surftune.evaluation.benchmark import benchmark

        class SlowEMT(EMT):
            def calculate(self, *a, **k):
                time.sleep(0.02)
                super().calculate(*a, **k)

        benchmark({str(tables['gamma'])!r}, [("slow", SlowEMT())], {FAST!r},
                  output_dir={str(out)!r}, progress=False)
    """)
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 300
        while len(list((out / "tasks").glob("*.json"))) < 2 and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    stored = {p.name for p in (out / "tasks").glob("*.json")}
    assert 2 <= len(stored) < 4  # 2 bulk relaxations + 2 slabs in all
    for p in (out / "tasks").glob("*.json"):
        json.loads(p.read_text())  # every stored result is whole
    calls: list[str] = []
    real = bm._run_task
    monkeypatch.setattr(bm, "_run_task",
                        lambda task, store: calls.append(task["name"]) or real(task, store))
    rep = benchmark(tables["gamma"], [("slow", EMT())], FAST, output_dir=out, progress=False)
    assert len(calls) == 4 - len(stored) and not set(calls) & stored
    assert not list((out / "tasks").glob(".*.tmp"))
    assert all(r["ratio"] == pytest.approx(1.0, abs=1e-6) for r in rep.rows)
