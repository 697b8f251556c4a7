"""Issue 14 (part A): inputs and outputs of every property command.

Everything a command writes lands under ``-o`` (a read-only input folder and the working
folder stay untouched), names carry the model/head label, ``--index`` picks the frame
(a multi-frame file without it gets a note), ``spec@head`` works in every command, and
``relax --reference TRAJ`` compares with a reference relaxation trajectory.
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write

from ase_surftune.cli import main
from ase_surftune.cli._properties import model_label

#: one short run per property command on a 4-atom Cu cell (EMT)
COMMANDS = {
    "relax": ["--steps", "5"],
    "single-point": [],
    "surface": ["--miller", "100", "--min-slab-size", "3", "--min-layers", "2",
                "--min-vacuum-size", "6", "--no-relax-bulk", "--no-relax-slabs", "--wulff"],
    "neb": ["--vacancy", "--supercell", "1", "--n-images", "1", "--steps", "2",
            "--no-relax-endpoints", "--no-relax-bulk", "--no-climb"],
    "md": ["--steps", "4", "--loginterval", "2", "--traj-interval", "2", "--no-progress"],
    "phonons": ["--supercell", "1", "--mesh", "2", "--no-bands", "--no-dos"],
}


@pytest.fixture
def readonly_input(tmp_path):
    """A read-only folder holding a 2-frame file: frame 0 ideal fcc Cu, frame 1 rattled."""
    folder = tmp_path / "data"
    folder.mkdir()
    a = bulk("Cu", "fcc", a=3.6, cubic=True)
    b = a.copy()
    b.rattle(0.05, seed=3)
    path = folder / "cu.extxyz"
    write(str(path), [a, b])
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    yield path
    folder.chmod(stat.S_IRWXU)


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_everything_under_output_folder(command, readonly_input, tmp_path, monkeypatch,
                                        capsys):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _tree(readonly_input.parent)
    out = tmp_path / "out" / "nested"
    rc = main([command, str(readonly_input), "-m", "emt", "-o", str(out), "--index", "0",
               *COMMANDS[command]])
    assert rc in (0, 1), capsys.readouterr().err  # 1: a short run did not converge
    assert _tree(readonly_input.parent) == before
    assert _tree(work) == []
    files = _tree(out)
    assert files and all(f.startswith("cu_emt_") for f in files), files
    expected = {"relax": ["relax.json", "relaxed.extxyz"],
                "single-point": ["single_point.json"],
                "surface": ["surface.json", "wulff.png", "slab_1_0_0_t0.extxyz"],
                "neb": ["neb.json", "neb.png", "neb_images.extxyz"],
                "md": ["md.json", "md.csv", "md.extxyz", "md.png"],
                "phonons": ["phonons.json", "phonopy_params.yaml"]}[command]
    assert sorted(files) == sorted(f"cu_emt_{e}" for e in expected)
    if command == "neb":
        band = read(str(out / "cu_emt_neb_images.extxyz"), ":")
        assert len(band) == 3 and all(len(a) == 3 for a in band)  # 4-atom cell, 1 vacancy
    if command == "surface":
        data = json.loads((out / "cu_emt_surface.json").read_text())
        assert data["slabs"] == [str(out / "cu_emt_slab_1_0_0_t0.extxyz")]
        slab = read(data["slabs"][0])
        assert slab.info["facet"] == "(100)" and len(slab) == data["entries"][0]["result"]["n_atoms"]


def test_index_and_multi_frame_note(readonly_input, tmp_path, capsys):
    frames = read(str(readonly_input), ":")
    energies = []
    for f in frames:
        f.calc = EMT()
        energies.append(f.get_potential_energy())
    out = tmp_path / "o"
    assert main(["relax", str(readonly_input), "-m", "emt", "-o", str(out), "--steps", "0"]) in (0, 1)
    err = capsys.readouterr().err
    assert "has 2 frames; using the last (index -1, frame 1)" in err and "--index" in err
    data = json.loads((out / "cu_emt_relax.json").read_text())
    assert data["energy_initial"] == pytest.approx(energies[1])
    assert main(["relax", str(readonly_input), "-m", "emt", "-o", str(out), "--steps", "0",
                 "--index", "0"]) == 0
    assert "note:" not in capsys.readouterr().err
    data = json.loads((out / "cu_emt_relax.json").read_text())
    assert data["energy_initial"] == pytest.approx(energies[0])
    # a bad index is one line, exit 2
    assert main(["relax", str(readonly_input), "-m", "emt", "-o", str(out), "--index", "7"]) == 2
    assert "no frame" in capsys.readouterr().err
    assert main(["relax", str(readonly_input), "-m", "emt", "-o", str(out), "--index", ":"]) == 2
    assert "selects 2 frames" in capsys.readouterr().err


def test_output_json_path_and_file_as_folder(readonly_input, tmp_path, capsys):
    target = tmp_path / "res" / "mine.json"
    assert main(["single-point", str(readonly_input), "-m", "emt", "-o", str(target)]) == 0
    assert target.is_file()
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    assert main(["single-point", str(readonly_input), "-m", "emt", "-o", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err and blocker.read_text() == "keep me"


def test_model_labels():
    assert model_label("chgnet") == "chgnet"
    assert model_label("emt") == "emt"
    assert model_label("mace:/runs/a/tiny.stbundle@surf") == "tiny_surf"
    assert model_label("runs/cu/model.stbundle", head="surface") == "cu_surface"
    assert model_label("m3gnet:/models/M3GNet-MP-2021.2.8-PES") == "M3GNet-MP-2021.2.8-PES"


# ------------------------------------------------------------------------ spec@head


@pytest.fixture(scope="module")
def two_head_bundle(tmp_path_factory):
    """A tiny MACE bundle with heads Default and surf (different readouts)."""
    import torch

    from ase_surftune.models.backends.mace import MACEAdapter
    from ase_surftune.models.backends.mace_builders import build_mace
    from ase_surftune.models.bundle import Bundle

    torch.set_num_threads(1)
    model = build_mace(["Cu", "Au"], channels=8, max_L=0, num_interactions=1, r_max=4.0,
                       heads=["Default", "surf"], atomic_energies={"Cu": -3.0, "Au": -3.2},
                       scale=0.5, seed=1)
    path = tmp_path_factory.mktemp("models") / "twohead.stbundle"
    return str(Bundle(MACEAdapter(model, name="twohead")).save(path))


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_spec_at_head_accepted_by_every_command(command, two_head_bundle, readonly_input,
                                                tmp_path, capsys):
    out = tmp_path / "o"
    args = [command, str(readonly_input), "--index", "0", "-o", str(out), *COMMANDS[command]]
    rc = main([*args, "-m", f"{two_head_bundle}@surf"])
    err = capsys.readouterr().err
    assert rc in (0, 1), err
    json_name = {"single-point": "single_point"}.get(command, command)
    assert (out / f"cu_twohead_surf_{json_name}.json").is_file()
    # a head the bundle lacks is refused in one line: the head reaches the model
    assert main([*args, "-m", f"{two_head_bundle}@nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_head_energies_differ_and_match_the_api(two_head_bundle, readonly_input, tmp_path):
    from ase_surftune.models.calculator import SurfTuneCalculator

    atoms = read(str(readonly_input), 0)
    e = {}
    for head in ("Default", "surf"):
        assert main(["single-point", str(readonly_input), "--index", "0", "-o",
                     str(tmp_path), "-m", f"{two_head_bundle}@{head}"]) == 0
        data = json.loads((tmp_path / f"cu_twohead_{head}_single_point.json").read_text())
        assert data["head"] == head
        a = atoms.copy()
        a.calc = SurfTuneCalculator(two_head_bundle, head=head)
        assert data["structures"][0]["energy_eV"] == pytest.approx(a.get_potential_energy(),
                                                                   abs=1e-8)
        e[head] = data["structures"][0]["energy_eV"]
    assert e["Default"] != e["surf"]
    # --head and spec@head naming two heads is an error, the same head is fine
    assert main(["single-point", str(readonly_input), "--index", "0", "-o", str(tmp_path),
                 "-m", f"{two_head_bundle}@surf", "--head", "Default"]) == 2
    assert main(["single-point", str(readonly_input), "--index", "0", "-o", str(tmp_path),
                 "-m", f"{two_head_bundle}@surf", "--head", "surf"]) == 0


# ------------------------------------------------------- relax --reference TRAJ


def test_relax_reference_trajectory_cli(tmp_path, capsys):
    from ase.build import add_adsorbate, fcc100
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    from ase_surftune.properties import relax

    start = fcc100("Cu", size=(2, 2, 3), vacuum=6.0)
    add_adsorbate(start, "Au", 1.9, "hollow")
    t = start.get_tags()
    start.set_tags(np.where(t == 0, 2, np.where(t == 1, 1, 0)))
    start.set_constraint(FixAtoms(indices=[a.index for a in start if a.tag == 0]))
    start.positions[-1] += [0.3, 0.2, 0.4]
    frames = [start, relax(start, EMT(), fmax=0.01).atoms]
    for a in frames:
        a.calc = EMT()
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy(), forces=a.get_forces())
    traj = tmp_path / "dft.extxyz"
    write(str(traj), frames)
    out = tmp_path / "o"
    rc = main(["relax", "--reference", str(traj), "-m", "emt", "-o", str(out), "--fmax", "0.01"])
    printed = capsys.readouterr().out
    assert rc == 0 and "ΔE_relax" in printed and "adsorbate" in printed
    data = json.loads((out / "dft_emt_relax.json").read_text())
    de_ref = frames[1].get_potential_energy() - frames[0].get_potential_energy()
    assert data["delta_e_reference"] == pytest.approx(de_ref)
    assert abs(data["delta_e_error"]) < 2e-3 and data["rmsd_free"] < 0.02
    assert data["n_free"] == 5 and data["n_adsorbate"] == 1  # FixAtoms survived extxyz
    assert (out / "dft_emt_relaxed.extxyz").is_file()
    # --reference still takes a reference calculator name; a missing file is one line
    assert main(["relax", "--reference", str(tmp_path / "nope.traj"), "-o", str(out)]) == 2
    assert "neither a reference calculator" in capsys.readouterr().err
    assert os.listdir(tmp_path / "o")
