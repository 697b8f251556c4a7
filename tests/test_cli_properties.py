"""One test per property CLI command (EMT reference, tiny structures) plus config errors."""

from __future__ import annotations

import json

import pytest
from ase.build import bulk
from ase.io import write

from ase_surftune.cli import main


@pytest.fixture
def cu(tmp_path):
    p = tmp_path / "cu.extxyz"
    write(str(p), bulk("Cu", "fcc", a=3.6, cubic=True))
    return p


def _json(path):
    return json.loads(path.read_text())


def test_cli_relax(cu, tmp_path):
    cfg = tmp_path / "relax.yaml"
    cfg.write_text("fmax: 0.01\noptimizer: BFGS\nrelax_cell: false\n")
    assert main(["relax", str(cu), "--reference", "emt", "-c", str(cfg), "--relax-cell",
                 "-o", str(tmp_path)]) == 0
    data = _json(tmp_path / "cu_emt_relax.json")
    assert data["converged"] and data["relax_cell"] is True  # flag overrides YAML
    assert data["fmax"] == 0.01 and data["optimizer"] == "BFGS"
    assert data["energy"] < data["energy_initial"]
    assert (tmp_path / "cu_emt_relaxed.extxyz").is_file()


def test_cli_surface(cu, tmp_path):
    rc = main(["surface", str(cu), "--reference", "emt", "--miller", "1,1,1",
               "--min-slab-size", "6", "--min-vacuum-size", "8", "--wulff", "-o", str(tmp_path)])
    assert rc == 0
    data = _json(tmp_path / "cu_emt_surface.json")
    assert data["gamma"]["1,1,1"] == pytest.approx(1.04172, rel=1e-4)  # EMT Cu(111), J/m²
    assert data["entries"][0]["result"]["gamma_unrelaxed_ev_a2"] == pytest.approx(0.065041,
                                                                                   rel=1e-4)
    assert data["wulff"]["plot"] and (tmp_path / "cu_emt_wulff.png").is_file()


@pytest.mark.slow
def test_cli_neb_vacancy(tmp_path):
    p = tmp_path / "cu.extxyz"
    write(str(p), bulk("Cu", "fcc", a=3.59))
    cfg = tmp_path / "neb.yaml"
    cfg.write_text("vacancy: true\nsupercell: [[-2, 2, 2], [2, -2, 2], [2, 2, -2]]\n"
                   "n_images: 3\n")
    assert main(["neb", str(p), "--reference", "emt", "-c", str(cfg), "-o", str(tmp_path)]) == 0
    data = _json(tmp_path / "cu_emt_neb.json")
    assert data["converged"] and data["info"]["n_atoms"] == 31
    assert data["barrier_forward"] == pytest.approx(0.790377, abs=2e-4)  # EMT Cu, eV
    assert (tmp_path / "cu_emt_neb.png").is_file()


@pytest.mark.slow
def test_cli_phonons(tmp_path):
    p = tmp_path / "cu.extxyz"
    write(str(p), bulk("Cu", "fcc", a=3.59))
    assert main(["phonons", str(p), "--reference", "emt", "--supercell", "2", "--mesh", "6",
                 "--band-npoints", "11", "-o", str(tmp_path)]) == 0
    data = _json(tmp_path / "cu_emt_phonons.json")
    assert data["has_imaginary"] is False and data["n_displacements"] == 1
    ref = tmp_path / "cu_emt_phonopy_params.yaml"
    assert ref.is_file() and (tmp_path / "cu_emt_phonons.png").is_file()
    assert main(["phonons", str(p), "--reference", "emt", "--supercell", "2", "--mesh", "6",
                 "--band-npoints", "11", "--reference-forces", str(ref), "-o", str(tmp_path)]) == 0
    assert _json(tmp_path / "cu_emt_phonons.json")["softening"]["ratio"] == pytest.approx(1.0)
    (tmp_path / "cu_emt_phonons.png").unlink()
    assert main(["phonons", str(p), "--reference", "emt", "--supercell", "2", "--mesh", "6",
                 "--no-bands", "--no-dos", "-o", str(tmp_path)]) == 0
    data = _json(tmp_path / "cu_emt_phonons.json")
    assert data["band_frequencies"] == [] and data["dos"] == []
    assert data["thermal"]["heat_capacity"][-1] > 20  # J/(K mol), near 3R at 1000 K
    assert not (tmp_path / "cu_emt_phonons.png").exists()  # nothing to draw


def test_cli_md(cu, tmp_path):
    cfg = tmp_path / "md.yaml"
    cfg.write_text("ensemble: nvt_langevin\nsteps: 30\ntimestep: 2.0\ntemperature: 300\n"
                   "loginterval: 5\ntraj_interval: 10\nprogress: false\n")
    assert main(["md", str(cu), "--reference", "emt", "-c", str(cfg), "--steps", "20",
                 "-o", str(tmp_path)]) == 0
    data = _json(tmp_path / "cu_emt_md.json")
    assert data["completed"] and data["steps_done"] == 20
    assert data["log"]["step"] == [0, 5, 10, 15, 20]
    assert (tmp_path / "cu_emt_md.extxyz").is_file() and (tmp_path / "cu_emt_md.csv").is_file()


@pytest.mark.parametrize("argv,match", [
    (["surface", "{cu}", "--miller", "1,1"], "Miller"),
    (["surface", "{cu}", "--miller", "1.5,1,0"], "Miller"),
    (["phonons", "{cu}", "--supercell", "2", "2"], "supercell"),
    (["md", "{cu}", "--ensemble", "nvt_andersen"], "ensemble"),
    (["md", "{cu}", "--temperature", "-5"], "temperature"),
    (["md", "{cu}", "--timestep", "-1"], "timestep"),
    (["relax", "{missing}"], "not found"),
])
def test_cli_bad_input(cu, tmp_path, capsys, argv, match):
    argv = [a.format(cu=cu, missing=tmp_path / "nope.xyz") for a in argv]
    assert main(argv + ["--reference", "emt"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and match in err


def test_cli_unknown_yaml_key(cu, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("fmax: 0.05\nfmaxx: 0.01\n")
    assert main(["relax", str(cu), "--reference", "emt", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "fmaxx" in err and "unknown key" in err


def test_cli_neb_endpoints_must_match(tmp_path, capsys):
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    b = a.copy()
    b[0].symbol = "Au"
    write(str(tmp_path / "a.xyz"), a)
    write(str(tmp_path / "b.xyz"), b)
    assert main(["neb", str(tmp_path / "a.xyz"), str(tmp_path / "b.xyz"),
                 "--reference", "emt"]) == 2
    assert "composition" in capsys.readouterr().err
