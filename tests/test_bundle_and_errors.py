"""Bundles round-trip exactly; bad input gives clear errors; plugin and CLI basics."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from _models import chgnet_adapter, tiny_mace
from ase import Atoms
from ase.build import fcc111, molecule

from ase_surftune import SurfTuneCalculator, load_model
from ase_surftune.cli import main
from ase_surftune.core.errors import (
    BundleError,
    HeadError,
    InvalidStructureError,
    ModelLoadError,
    UnsupportedElementError,
)
from ase_surftune.models.bundle import Bundle
from ase_surftune.models.correction import LinearCorrection


def _atoms(seed=0):
    a = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    a.symbols[0] = "Au"
    a.rattle(0.05, seed=seed)
    return a


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["mace", "chgnet"])
def test_bundle_round_trip_is_exact(backend, tmp_path):
    ad = tiny_mace(heads=("pt_head", "surface")) if backend == "mace" else chgnet_adapter()
    if backend == "chgnet":
        ad.add_head("surface")
    b = Bundle(ad, reference_energies={"surface": {"Cu": 0.25, "Au": -0.5}},
               corrections={"surface": LinearCorrection(1.2, {"Cu": 0.1}, {"n_structures": 1})},
               default_head="surface", head_info={"surface": {"trained_on": "slabs.xyz"}},
               train_config={"strategy": "full", "lr": 1e-3}, metrics={"valid_f_mae": 0.05},
               provenance={"data_hash": "abc"})
    path = b.save(tmp_path / "m.stbundle")
    assert not list(tmp_path.glob("*.tmp"))
    b2 = Bundle.load(path)
    assert b2.heads == b.heads and b2.default_head == "surface"
    assert b2.reference_energies == b.reference_energies
    assert b2.corrections["surface"].to_dict() == b.corrections["surface"].to_dict()
    assert b2.head_info == b.head_info and b2.train_config == b.train_config
    assert b2.metrics == b.metrics and b2.provenance["data_hash"] == "abc"
    assert "torch" in b2.provenance["package_versions"]
    sd1, sd2 = b.adapter.model.state_dict(), b2.adapter.model.state_dict()
    assert sd1.keys() == sd2.keys()
    assert all(np.array_equal(sd1[k].cpu().numpy(), sd2[k].cpu().numpy()) for k in sd1)
    atoms = [_atoms(s) for s in range(2)]
    for head in b.heads:
        p1, p2 = b.predict(atoms, head), b2.predict(atoms, head)
        np.testing.assert_array_equal(p1.energy, p2.energy)
    # the calculator loads the file path directly and picks the default head
    c = SurfTuneCalculator(str(path))
    assert c.head == "surface"
    atoms[0].calc = c
    assert atoms[0].get_potential_energy() == pytest.approx(b.predict(atoms[:1]).energy[0])


@pytest.mark.slow
def test_corrupt_and_truncated_bundles(tmp_path):
    path = Bundle(tiny_mace()).save(tmp_path / "m.stbundle")
    raw = path.read_bytes()
    (tmp_path / "trunc.stbundle").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BundleError, match="trunc.stbundle"):
        Bundle.load(tmp_path / "trunc.stbundle")
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF  # inside the weights member
    (tmp_path / "flip.stbundle").write_bytes(bytes(flipped))
    with pytest.raises(BundleError):
        Bundle.load(tmp_path / "flip.stbundle")
    (tmp_path / "junk.stbundle").write_text("not a bundle")
    with pytest.raises(BundleError, match="junk.stbundle"):
        load_model(str(tmp_path / "junk.stbundle"))
    with pytest.raises(BundleError, match="not found"):
        Bundle.load(tmp_path / "missing.stbundle")


def test_unknown_model_name():
    with pytest.raises(ModelLoadError, match=r"'9.9'.*bundled versions"):
        load_model("chgnet-9.9")
    with pytest.raises(ModelLoadError, match="'no-such-model'.*Known names"):
        SurfTuneCalculator("no-such-model")


def test_named_mace_model_fails_fast_offline():
    t0 = time.perf_counter()
    try:
        load_model("mace-mp-0-medium")
    except ModelLoadError as exc:
        assert "mace:/path/to/file.model" in str(exc)
    else:  # pragma: no cover - only with internet access and a cached model
        pytest.skip("MACE-MP weights are reachable here")
    assert time.perf_counter() - t0 < 60  # generous: it must not wait on a network timeout


@pytest.mark.slow
def test_unsupported_element():
    c = SurfTuneCalculator(Bundle(tiny_mace()))
    a = fcc111("Ni", (2, 2, 3), vacuum=6.0)
    a.calc = c
    with pytest.raises(UnsupportedElementError, match=r"\['Ni'\]"):
        a.get_potential_energy()


@pytest.mark.slow
def test_nan_positions():
    c = SurfTuneCalculator(Bundle(tiny_mace()))
    a = _atoms()
    a.positions[3, 1] = np.nan
    a.calc = c
    with pytest.raises(InvalidStructureError, match=r"indices \[3\]"):
        a.get_forces()


@pytest.mark.slow
def test_no_cell_for_chgnet():
    c = SurfTuneCalculator(Bundle(chgnet_adapter()))
    mol = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]])
    mol.calc = c
    with pytest.raises(InvalidStructureError, match="3D periodic cell"):
        mol.get_potential_energy()
    # MACE needs no cell: a molecule works
    m = molecule("CO")
    m.calc = SurfTuneCalculator(Bundle(tiny_mace(elements=("C", "O"))))
    assert np.isfinite(m.get_potential_energy())


@pytest.mark.slow
def test_unknown_head():
    with pytest.raises(HeadError, match=r"'bulk'.*valid heads: \['Default'\]"):
        SurfTuneCalculator(Bundle(tiny_mace()), head="bulk")


@pytest.mark.slow
def test_plugin_entry_point_and_calculator_class():
    code = (
        "from ase._4.plugins import plugins\n"
        "names = [p.name for p in plugins.calculators]\n"
        "assert 'surftune' in names, names\n"
        "cls = [p for p in plugins.calculators if p.name == 'surftune'][0].implementation\n"
        "from ase.calculators.calculator import get_calculator_class\n"
        "assert get_calculator_class('surftune') is cls\n"
        "print(cls.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SurfTuneCalculator"


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "ase_surftune.cli", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for cmd in ("single-point", "heads", "models"):
        assert cmd in out.stdout


@pytest.mark.slow
def test_cli_single_point_and_heads(tmp_path, capsys):
    from ase.io import write

    mace_path = tmp_path / "tiny.model"
    import torch

    torch.save(tiny_mace(heads=("pt_head", "surface")).model, mace_path)
    xyz = tmp_path / "slab.xyz"
    write(xyz, _atoms())
    # a .model file is a pickle: refused without --trust-pickle, one clear line
    assert main(["single-point", str(xyz), "--model", f"mace:{mace_path}"]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert main(["single-point", str(xyz), "--model", f"mace:{mace_path}",
                 "--head", "surface", "--stress", "--trust-pickle", "-o", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "slab_tiny_surface_single_point.json").read_text())
    assert res["head"] == "surface" and res["structures"][0]["n_atoms"] == 12
    calc = SurfTuneCalculator(f"mace:{mace_path}", head="surface", trust=True)
    a = _atoms()
    a.calc = calc
    assert res["structures"][0]["energy_eV"] == pytest.approx(a.get_potential_energy())
    assert main(["heads", f"mace:{mace_path}", "--trust-pickle"]) == 0
    assert "surface" in capsys.readouterr().out
    assert main(["single-point", str(xyz), "--reference", "emt", "-o", str(tmp_path)]) == 0
    assert main(["single-point", str(tmp_path / "nope.xyz")]) == 2
    assert main(["single-point", str(xyz), "--model", "bogus"]) == 2
