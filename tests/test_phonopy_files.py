"""Phonopy data the way phonopy users hold them (issue 14): phonopy_disp.yaml + FORCE_SETS
or phonopy_params.yaml written by phonopy itself from EMT forces, read from another
folder; BORN on both sides or neither; one mesh; symmetrised force constants; the
supercell-size warning; the reference/model overlay figure."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from ase_surftune.cli import main
from ase_surftune.core.errors import DataError
from ase_surftune.properties import (
    SupercellSizeWarning,
    check_supercell_size,
    frequency_softening_ratio,
    load_phonopy,
    phonons,
)
from ase_surftune.properties.phonons import _new_phonopy, compute_forces

# the small test supercells are knowingly narrower than 2 × EMT's cutoff
pytestmark = pytest.mark.filterwarnings(
    "ignore::ase_surftune.properties.phonons.SupercellSizeWarning")

#: made-up Born charges (e) and dielectric constant for B2 CuAu: only there to test that
#: the LO–TO correction reaches both sides; EMT knows nothing about charges
Z_B2 = (2.0, -2.0)
EPS_B2 = 4.0


class _Wrapped(Calculator):
    """EMT with forces scaled by ``scale`` plus a constant ``drift`` (eV/Å) on every atom
    (forces that do not sum to zero, as from a direct-force model or noisy DFT)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, scale: float = 1.0, drift: float = 0.0):
        super().__init__()
        self.scale, self.drift = scale, drift

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = EMT()
        self.results = {"energy": self.scale * a.get_potential_energy(),
                        "forces": self.scale * a.get_forces() + self.drift}


def _write_phonopy_set(folder, atoms, n, born=None):
    """phonopy_disp.yaml (no forces), FORCE_SETS and phonopy_params.yaml written by
    phonopy itself, with EMT forces; optional BORN file (phonopy's writer)."""
    from phonopy.file_IO import write_BORN, write_FORCE_SETS

    folder.mkdir(parents=True, exist_ok=True)
    ph = _new_phonopy(atoms, np.eye(3, dtype=int) * n, "auto", 1e-5)
    ph.generate_displacements(distance=0.01)
    ph.save(str(folder / "phonopy_disp.yaml"), settings={"force_sets": False,
                                                        "force_constants": False})
    ph.forces = compute_forces(ph, EMT())
    write_FORCE_SETS(ph.dataset, filename=str(folder / "FORCE_SETS"))
    ph.save(str(folder / "phonopy_params.yaml"), settings={"force_constants": False})
    if born is not None:
        zs = np.array([z * np.eye(3) for z in born[0]])
        write_BORN(ph.primitive, zs, born[1] * np.eye(3), filename=str(folder / "BORN"))
    return folder


def _decoys(folder):
    """Files phonopy.load would pick up from the current folder on its own."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "FORCE_SETS").write_text("garbage\n")
    (folder / "FORCE_CONSTANTS").write_text("garbage\n")
    (folder / "BORN").write_text("14.4\n9 9 9 9 9 9 9 9 9\n9 9 9 9 9 9 9 9 9\n")
    return folder


@pytest.fixture(scope="module")
def cu_set(tmp_path_factory):
    return _write_phonopy_set(tmp_path_factory.mktemp("cu") / "data",
                              bulk("Cu", "fcc", a=3.59), 3)


def _b2_cuau():
    return Atoms("CuAu", cell=np.eye(3) * 3.03, scaled_positions=[[0, 0, 0], [.5, .5, .5]],
                 pbc=True)


@pytest.fixture(scope="module")
def b2_set(tmp_path_factory):
    return _write_phonopy_set(tmp_path_factory.mktemp("b2") / "data", _b2_cuau(), 2,
                              born=(Z_B2, EPS_B2))


@pytest.mark.slow
def test_disp_yaml_and_force_sets_from_another_folder(cu_set, tmp_path, monkeypatch):
    monkeypatch.chdir(_decoys(tmp_path / "cwd"))  # BORN, broken FORCE_SETS/FORCE_CONSTANTS
    r = frequency_softening_ratio(None, EMT(), cu_set / "phonopy_disp.yaml",
                                  force_sets=cu_set / "FORCE_SETS", mesh=6)
    assert r.ratio == pytest.approx(1.0, abs=1e-6)  # FORCE_SETS keeps ~10 digits
    assert r.nac is False and r.nac_source is None  # the cwd BORN was not read
    assert r.force_sets == str(cu_set / "FORCE_SETS") and r.mesh == [6, 6, 6]
    assert r.n_displacements == 1 and r.supercell == (3 * np.eye(3)).tolist()
    r2 = frequency_softening_ratio(None, EMT(), cu_set / "phonopy_params.yaml", mesh=6)
    assert r2.ratio == pytest.approx(1.0, abs=1e-12) and r2.nac is False
    ph, info = load_phonopy(cu_set / "phonopy_params.yaml")
    assert info == {"source": str(cu_set / "phonopy_params.yaml"), "force_sets": None,
                    "nac": False, "nac_source": None}
    assert ph.force_constants is None  # produced later, the same way for both sides
    assert Path.cwd() == tmp_path / "cwd"  # phonopy ran elsewhere and we are back


def test_disp_yaml_without_forces_is_one_clear_error(cu_set, tmp_path, monkeypatch):
    monkeypatch.chdir(_decoys(tmp_path))
    msg = ("phonopy_disp.yaml has no forces: pass --reference-forces FORCE_SETS "
           r"\(force_sets=\) or use phonopy_params.yaml")
    with pytest.raises(DataError, match=msg):
        frequency_softening_ratio(None, EMT(), cu_set / "phonopy_disp.yaml")
    with pytest.raises(FileNotFoundError, match="FORCE_SETS not found"):
        load_phonopy(cu_set / "phonopy_disp.yaml", force_sets=tmp_path / "nope")
    bad = tmp_path / "FORCE_SETS_short"
    bad.write_text("\n".join((cu_set / "FORCE_SETS").read_text().splitlines()[:8]) + "\n")
    with pytest.raises(DataError, match="cannot load phonopy data"):
        load_phonopy(cu_set / "phonopy_disp.yaml", force_sets=bad)


@pytest.mark.slow
def test_born_on_both_sides_or_neither(b2_set, tmp_path, monkeypatch):
    monkeypatch.chdir(_decoys(tmp_path))
    disp, fs, born = b2_set / "phonopy_disp.yaml", b2_set / "FORCE_SETS", b2_set / "BORN"
    both = frequency_softening_ratio(None, EMT(), disp, force_sets=fs, born=born, mesh=6)
    assert both.nac is True and both.nac_source == str(born)
    assert both.ratio == pytest.approx(1.0, abs=1e-6)
    assert both.model_phonon.nac_params is not None
    none = frequency_softening_ratio(None, EMT(), disp, force_sets=fs, born=born, nac=False,
                                     mesh=6)
    assert none.nac is False and none.nac_source is None
    assert none.ratio == pytest.approx(1.0, abs=1e-6)
    # the correction matters on this mesh: one-sided NAC (the old bug) is far from 1
    ref_nac, ref_plain = both.reference_phonon, none.reference_phonon
    ref_nac.run_mesh([6, 6, 6], is_gamma_center=True)
    ref_plain.run_mesh([6, 6, 6], is_gamma_center=True)
    f_nac, f_plain = ref_nac.mesh.frequencies, ref_plain.mesh.frequencies
    assert np.abs(f_nac - f_plain).max() > 0.3  # THz
    # ω ∝ √k: forces × 0.81 give exactly 0.9 without NAC; the NAC term is not scaled
    soft_plain = frequency_softening_ratio(None, _Wrapped(0.81), disp, force_sets=fs, mesh=6)
    soft_nac = frequency_softening_ratio(None, _Wrapped(0.81), disp, force_sets=fs, born=born,
                                         mesh=6)
    assert soft_plain.ratio == pytest.approx(0.9, abs=1e-6)
    assert abs(soft_nac.ratio - 0.9) > 1e-3 and soft_nac.nac


def test_nac_params_inside_phonopy_params_yaml_apply_to_both(b2_set, tmp_path):
    ph, _ = load_phonopy(b2_set / "phonopy_disp.yaml", force_sets=b2_set / "FORCE_SETS",
                         born=b2_set / "BORN")
    ph.save(str(tmp_path / "phonopy_params.yaml"), settings={"force_constants": False})
    r = frequency_softening_ratio(None, EMT(), tmp_path / "phonopy_params.yaml", mesh=4)
    assert r.nac and r.nac_source == str(tmp_path / "phonopy_params.yaml")
    assert r.ratio == pytest.approx(1.0, abs=1e-6)  # forces came through FORCE_SETS
    off = frequency_softening_ratio(None, EMT(), tmp_path / "phonopy_params.yaml", mesh=4,
                                    nac=False)
    assert not off.nac and off.reference_phonon.nac_params is None


@pytest.mark.filterwarnings("ignore:The acoustic frequencies at Gamma")
def test_symmetrisation_removes_fake_acoustic_modes_at_gamma():
    """Forces with a net drift (1e-4 eV/Å per atom) break the acoustic sum rule: the raw
    force constants give acoustic modes far from 0 at Γ; phonopy's drift removal and
    symmetrisation bring them back to 0."""
    cu = bulk("Cu", "fcc", a=3.59)
    kw = {"supercell": 3, "mesh": 4, "bands": False, "dos": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupercellSizeWarning)
        raw = phonons(cu, _Wrapped(drift=1e-4), symmetrize_fc=False, **kw)
        sym = phonons(cu, _Wrapped(drift=1e-4), **kw)

    def gamma(res):
        res.phonon.run_qpoints([[0, 0, 0]])
        return np.abs(res.phonon.qpoints.frequencies[0][:3])

    assert gamma(raw).min() > 0.5  # THz: fake (imaginary) acoustic modes
    assert raw.has_imaginary and raw.min_frequency < -0.5
    assert gamma(sym).max() < 1e-3
    assert raw.symmetrize_fc is False and sym.symmetrize_fc is True
    assert sym.fc_drift == pytest.approx(raw.fc_drift) and raw.fc_drift > 1e-3  # eV/Å²


def test_supercell_size_warning_names_a_large_enough_supercell():
    cubic = bulk("Cu", "fcc", a=3.61, cubic=True).cell
    ok = check_supercell_size(cubic, 3, cutoff=5.38)
    assert ok["ok"] and ok["width"] == pytest.approx(10.83) and ok["message"] is None
    with pytest.warns(SupercellSizeWarning, match=r"supercell 3 3 3 would be wide enough"):
        small = check_supercell_size(cubic, 2, cutoff=5.38)
    assert not small["ok"] and small["required"] == pytest.approx(10.76)
    # no cutoff known: the documented 10 Å minimum; an explicit width overrides both
    assert check_supercell_size(cubic, 3, warn=False)["required"] == 10.0
    assert check_supercell_size(cubic, 2, min_width=7.0, warn=False)["ok"]
    # a sheared supercell is as wide as its face distance, not its vector lengths
    prim = bulk("Cu", "fcc", a=3.61).cell  # 2.55 Å vectors, (111) spacing a/√3
    assert check_supercell_size(prim, 1, warn=False)["width"] == pytest.approx(3.61 / 3**.5)
    with pytest.warns(SupercellSizeWarning, match="2 x cutoff 5.38"):
        res = phonons(bulk("Cu", "fcc", a=3.59), EMT(), supercell=2, mesh=2, bands=False,
                      dos=False)
    assert res.supercell_warning and res.supercell_width == pytest.approx(2 * 3.59 / 3**.5)


def test_overlay_figure_labels_and_units(cu_set):
    from ase_surftune.properties import phonons_from_phonopy
    from ase_surftune.properties._plot import phonon_figure

    r = frequency_softening_ratio(None, _Wrapped(0.81), cu_set / "phonopy_params.yaml",
                                  mesh=4)
    ref = phonons_from_phonopy(r.reference_phonon, mesh=4, band_npoints=5)
    mod = phonons_from_phonopy(r.model_phonon, mesh=4, band_npoints=5, label="soft@head")
    fig = phonon_figure([("DFT reference", ref), ("soft@head", mod)])
    bands, dos = fig.axes
    assert bands.get_ylabel() == "frequency (THz)" and dos.get_xlabel() == "DOS (states/THz)"
    assert [t.get_text() for t in bands.get_legend().get_texts()] == ["DFT reference",
                                                                      "soft@head"]
    assert bands.get_title() == "Cu: DFT reference vs soft@head"
    colours = {str(line.get_color()) for line in bands.lines if line.get_linewidth() > 1}
    assert len({str(line.get_color()) for line in bands.lines}) >= 3 and colours
    top_ref = max(max(max(f) for f in seg) for seg in ref.band_frequencies)
    top_mod = max(max(max(f) for f in seg) for seg in mod.band_frequencies)
    assert top_mod == pytest.approx(0.9 * top_ref, rel=1e-6)  # the softer model is drawn


def _json(p):
    return json.loads(p.read_text())


@pytest.mark.slow
def test_cli_reads_phonopy_files_from_anywhere(cu_set, b2_set, tmp_path, monkeypatch,
                                               capsys):
    monkeypatch.chdir(_decoys(tmp_path / "cwd"))
    out = tmp_path / "out" / "cu.json"
    args = ["phonons", str(cu_set / "phonopy_disp.yaml"), "--reference", "emt", "--mesh", "6",
            "--band-npoints", "5", "-o", str(out)]
    assert main(args + ["--reference-forces", str(cu_set / "FORCE_SETS")]) == 0
    data = _json(out)
    assert data["softening"]["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert data["mesh"] == data["softening"]["mesh"] == [6, 6, 6]  # one mesh
    assert data["supercell"] == (3 * np.eye(3)).tolist()  # read from the yaml
    assert data["nac"] is False and data["softening"]["nac"] is False
    assert data["reference_phonons"]["band_frequencies"]
    png = Path(data["plot"])  # wherever the output layout puts it
    assert png.name.endswith("phonons.png") and png.is_file() and png.stat().st_size > 1000
    printed = capsys.readouterr()
    assert "frequency softening ratio = 1.0000 (mesh 6x6x6, NAC off)" in printed.out
    # 3x3x3 primitive Cu is 6.2 Å wide, EMT's cutoff 5.4 Å: one line on stderr, and the JSON
    assert "warning: phonon supercell [[3, 0, 0], [0, 3, 0], [0, 0, 3]] is 6.22 Å wide" \
        in printed.err and "supercell 6 6 6 would be wide enough" in printed.err
    assert data["supercell_warning"] in printed.err and data["supercell_width"] > 6
    # phonopy_params.yaml carries its forces: no --reference-forces needed
    assert main(["phonons", str(cu_set / "phonopy_params.yaml"), "--reference", "emt",
                 "--mesh", "4", "--no-bands", "--no-dos", "-o", str(out)]) == 0
    assert _json(out)["softening"]["ratio"] == pytest.approx(1.0, abs=1e-12)
    # BORN on both sides, recorded; --no-nac on neither
    b2 = ["phonons", str(b2_set / "phonopy_disp.yaml"), "--reference", "emt", "--mesh", "4",
          "--no-bands", "--no-dos", "--reference-forces", str(b2_set / "FORCE_SETS"),
          "-o", str(out)]
    assert main(b2 + ["--born", str(b2_set / "BORN")]) == 0
    data = _json(out)
    assert data["nac"] is True and data["softening"]["nac_source"] == str(b2_set / "BORN")
    assert data["softening"]["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert main(b2 + ["--born", str(b2_set / "BORN"), "--no-nac"]) == 0
    assert _json(out)["nac"] is False
    # a structure file with a bare FORCE_SETS (cell and supercell from the command line)
    from ase.io import write

    write(str(tmp_path / "cu.extxyz"), bulk("Cu", "fcc", a=3.59))
    assert main(["phonons", str(tmp_path / "cu.extxyz"), "--reference", "emt", "--mesh", "4",
                 "--supercell", "3", "--no-bands", "--no-dos", "-o", str(out),
                 "--reference-forces", str(cu_set / "FORCE_SETS")]) == 0
    assert _json(out)["softening"]["ratio"] == pytest.approx(1.0, abs=1e-6)
    write(str(tmp_path / "au.extxyz"), bulk("Au", "fcc", a=4.08))
    assert main(["phonons", str(tmp_path / "au.extxyz"), "--reference", "emt", "-o", str(out),
                 "--reference-forces", str(cu_set / "phonopy_params.yaml")]) == 2
    assert "is not the cell of the reference" in capsys.readouterr().err


@pytest.mark.parametrize("extra,match", [
    ([], "phonopy_disp.yaml has no forces: pass --reference-forces FORCE_SETS"),
    (["--displacement", "0.02", "--reference-forces", "{fs}"], "--displacement does not apply"),
    (["--supercell", "2", "--reference-forces", "{fs}"], "differs from the supercell"),
    (["--born", "{missing}", "--reference-forces", "{fs}"], "BORN not found"),
])
def test_cli_phonopy_errors_are_one_line(cu_set, tmp_path, capsys, extra, match):
    extra = [e.format(fs=cu_set / "FORCE_SETS", missing=tmp_path / "BORN") for e in extra]
    assert main(["phonons", str(cu_set / "phonopy_disp.yaml"), "--reference", "emt",
                 "-o", str(tmp_path / "x.json")] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_model_phonons_with_born_and_fc_solvers(b2_set, cu_set):
    from ase_surftune.core.errors import ConfigError

    res = phonons(_b2_cuau(), EMT(), supercell=2, mesh=4, bands=False, dos=False,
                  born=b2_set / "BORN")
    assert res.nac and res.nac_source == str(b2_set / "BORN")
    assert res.phonon.nac_params["born"][0][0][0] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="nac=True but neither a BORN"):
        load_phonopy(cu_set / "phonopy_params.yaml", nac=True)
    with pytest.raises(ConfigError, match="fc_calculator must be one of"):
        frequency_softening_ratio(None, EMT(), cu_set / "phonopy_params.yaml",
                                  fc_calculator="magic")
    # phonopy's symfc solver (imposes the sum rules in its fit) on both sides: still 1
    sym = frequency_softening_ratio(None, EMT(), cu_set / "phonopy_params.yaml", mesh=4,
                                    fc_calculator="symfc")
    assert sym.ratio == pytest.approx(1.0, abs=1e-9) and sym.fc_calculator == "symfc"


@pytest.mark.slow
def test_type2_dataset_needs_a_fitting_solver(cu_set):
    """A dataset where every atom is displaced (type II) cannot go through the
    finite-difference solver: a clear error, and symfc handles it."""
    ph, _ = load_phonopy(cu_set / "phonopy_params.yaml")
    ph.generate_displacements(distance=0.02, number_of_snapshots=3, random_seed=0)
    ph.forces = compute_forces(ph, EMT())
    assert "displacements" in ph.dataset
    with pytest.raises(DataError, match="type-II"):
        frequency_softening_ratio(None, EMT(), ph, mesh=4)
    r = frequency_softening_ratio(None, EMT(), ph, mesh=4, fc_calculator="symfc")
    assert r.ratio == pytest.approx(1.0, abs=1e-9) and r.n_displacements == 3
