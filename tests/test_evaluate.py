"""Error-level evaluation: softening scale of a model against itself and scaled PESs,
MAE/RMSE bookkeeping, per-group breakdown, spec@head parsing, outputs and the CLI."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ase_surftune.evaluation import evaluate, evaluate_model, parse_spec


class ScaledEMT(Calculator):
    """EMT with its whole PES multiplied by ``factor`` (E, F and σ)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, factor: float, **kw):
        super().__init__(**kw)
        self.factor = factor
        self.emt = EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = self.emt
        self.results = {"energy": self.factor * a.get_potential_energy(),
                        "free_energy": self.factor * a.get_potential_energy(),
                        "forces": self.factor * a.get_forces(),
                        "stress": self.factor * a.get_stress()}


@pytest.fixture(scope="module")
def data():
    from conftest import make_emt_slabs

    return make_emt_slabs(6, seed=3)


def _relabel(configs, calc):
    out = []
    for a in configs:
        b = a.copy()
        b.calc = calc
        e, f, s = b.get_potential_energy(), b.get_forces(), b.get_stress()
        b.calc = SinglePointCalculator(b, energy=e, forces=f, stress=s)
        out.append(b)
    return out


def test_self_softening_is_one_and_errors_zero(data):
    ev = evaluate_model(("emt", EMT()), data)
    o = ev.overall
    assert o.softening_scale == pytest.approx(1.0, abs=1e-12)
    assert o.softening_scale_high_force == pytest.approx(1.0, abs=1e-12)
    assert o.forces_mae == pytest.approx(0.0, abs=1e-12)
    assert o.energy_mae_per_atom == pytest.approx(0.0, abs=1e-9)
    assert o.stress_mae == pytest.approx(0.0, abs=1e-12) and o.n_stress == 6
    assert set(ev.groups) == {"Cu", "Au"}
    assert sum(g.n_structures for g in ev.groups.values()) == 6
    assert all(g.softening_scale == pytest.approx(1.0, abs=1e-12) for g in ev.groups.values())


def test_scaled_pes_gives_its_scale(data):
    # model = 0.7 x reference PES -> s = 0.7 overall, per group and on high forces
    ev = evaluate_model(("soft", ScaledEMT(0.7)), data)
    assert ev.overall.softening_scale == pytest.approx(0.7, abs=1e-9)
    assert ev.overall.softening_scale_high_force == pytest.approx(0.7, abs=1e-9)
    for g in ev.groups.values():
        assert g.softening_scale == pytest.approx(0.7, abs=1e-9)
    # force MAE = 0.3 * mean |F_ref|
    f_ref = np.concatenate([a.calc.results["forces"].ravel() for a in data])
    assert ev.overall.forces_mae == pytest.approx(0.3 * np.mean(np.abs(f_ref)), rel=1e-9)
    # data labelled as 0.7 x the model's PES: the model looks stiffer by 1/0.7
    soft_data = _relabel(data, ScaledEMT(0.7))
    ev2 = evaluate_model(("emt", EMT()), soft_data)
    assert ev2.overall.softening_scale == pytest.approx(1 / 0.7, abs=1e-9)


def test_chgnet_against_its_own_labels():
    """Batched SurfTuneCalculator path: self = 1, a 0.7 linear correction = 0.7."""
    from ase.build import fcc111

    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.models.correction import LinearCorrection

    rng = np.random.default_rng(0)
    configs = []
    for i in range(3):
        s = fcc111("Cu", (2, 2, 3), vacuum=5.0, periodic=True)
        s.positions += rng.normal(scale=0.1, size=s.positions.shape)
        s.info["config_type"] = f"slab{i % 2}"
        configs.append(s)
    calc = SurfTuneCalculator("chgnet")
    pred = calc.predict(configs)
    labelled = []
    for a, e, f in zip(configs, pred.energy, pred.forces):
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=e, forces=f)
        b.info.update(a.info)
        labelled.append(b)
    ev = evaluate_model("chgnet", labelled, align="none")
    assert ev.overall.softening_scale == pytest.approx(1.0, abs=1e-6)
    assert ev.overall.energy_mae_per_atom == pytest.approx(0.0, abs=1e-5)
    soft = SurfTuneCalculator("chgnet", correction=LinearCorrection(scale=0.7))
    ev7 = evaluate_model(("chgnet x0.7", soft), labelled, align="self")
    assert ev7.overall.softening_scale == pytest.approx(0.7, abs=1e-6)
    assert ev7.model == "chgnet x0.7"


def _offset(data):
    """Copies with reference energies moved by -5 eV/atom (Cu) and +2 eV/atom (Au)."""
    shifted = []
    for a in data:
        b = a.copy()
        e = a.calc.results["energy"] + (-5.0 if a.info["config_type"] == "Cu" else 2.0) * len(a)
        b.calc = SinglePointCalculator(b, energy=e, forces=a.calc.results["forces"])
        b.info.update(a.info)
        shifted.append(b)
    return shifted


def test_alignment_removes_constant_offsets(data):
    shifted = _offset(data)
    raw = evaluate_model(("emt", EMT()), shifted, align="none")
    # shifts fitted on other frames (the first four) and applied to the last two
    fit = evaluate_model(("emt", EMT()), shifted[4:], align_on=shifted[:4])
    assert raw.overall.energy_mae_per_atom == pytest.approx(3.5, rel=1e-9)
    assert fit.overall.energy_mae_per_atom == pytest.approx(0.0, abs=1e-6)
    assert fit.alignment["shifts"]["Cu"] == pytest.approx(-5.0, abs=1e-6)
    assert fit.alignment["shifts"]["Au"] == pytest.approx(2.0, abs=1e-6)
    assert fit.energy_reference == "align-on" and fit.alignment["n_overlap_with_scored"] == 0
    # relative-within-composition energies do not need any reference at all
    assert raw.overall.energy_rel_mae_per_atom == pytest.approx(0.0, abs=1e-9)
    assert raw.overall.n_energy_rel == 6
    # self-alignment is opt-in and labelled in the JSON and the table
    selfa = evaluate_model(("emt", EMT()), shifted, align="self")
    assert selfa.energy_reference == "SELF-ALIGNED"
    assert "SELF-ALIGNED" in json.dumps(selfa.to_dict())
    from ase_surftune.core.errors import ConfigError

    with pytest.raises(ConfigError, match="leak"):
        evaluate_model(("emt", EMT()), shifted, align="fit")
    over = evaluate_model(("emt", EMT()), shifted, align_on=shifted[:2])
    assert over.alignment["n_overlap_with_scored"] == 2 and "OVERLAPS" in over.energy_reference
    given = evaluate_model(("emt", EMT()), shifted, align={"Cu": -5.0, "Au": 2.0})
    assert given.overall.energy_mae_per_atom == pytest.approx(0.0, abs=1e-9)
    assert raw.overall.n_stress == 0 and raw.overall.stress_mae is None


def test_parse_spec(tmp_path):
    assert parse_spec("chgnet") == ("chgnet", None)
    assert parse_spec("run/model.stbundle@surface") == ("run/model.stbundle", "surface")
    assert parse_spec("chgnet@foundation") == ("chgnet", "foundation")
    odd = tmp_path / "a@b"
    odd.mkdir()
    assert parse_spec(str(odd)) == (str(odd), None)
    assert parse_spec("x@y/z.stbundle") == ("x@y/z.stbundle", None)


def test_report_outputs_and_table(data, tmp_path):
    rep = evaluate([("emt", EMT()), ("soft", ScaledEMT(0.8))], data, progress=False)
    md = rep.to_markdown()
    assert "| soft | all | stored | 6 |" in md and "0.8000" in md
    paths = rep.write(tmp_path)
    d = json.loads(paths["json"].read_text())
    assert [m["model"] for m in d["models"]] == ["emt", "soft"]
    assert d["models"][1]["overall"]["softening_scale"] == pytest.approx(0.8, abs=1e-9)
    csv_lines = paths["csv"].read_text().splitlines()
    assert len(csv_lines) == 1 + 2 * 3  # header + (all, Au, Cu) per model
    assert (tmp_path / "parity_soft.png").stat().st_size > 1000


def test_cli_evaluate(data, tmp_path, capsys):
    from ase_surftune.cli import main

    path = tmp_path / "data.xyz"
    ase.io.write(path, data, format="extxyz")
    rc = main(["evaluate", str(path), "-m", "emt", "-o", str(tmp_path / "out"),
               "--no-progress", "--no-plots"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "s (all)" in out and "| emt | all | stored | 6 |" in out
    d = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert d["models"][0]["overall"]["softening_scale"] == pytest.approx(1.0, abs=1e-6)  # extxyz rounding
    rc = main(["evaluate", str(path), "-m", "emt", "-o", str(tmp_path / "out2"),
               "--no-progress", "--no-plots", "--align-on", str(path), "--max-force",
               "0.5", "--flag-only"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "align-on (OVERLAPS scored)" in out and "flagged (kept) frame" in out
    assert main(["evaluate", str(path), "-m", "nonexistent-model", "-o",
                 str(tmp_path / "o2"), "--no-progress"]) == 2


def test_scored_energies_do_not_depend_on_the_scored_set(data):
    """Per-frame energies and errors never change when scored frames are added/removed."""
    shifted = _offset(data)
    model = ("soft", ScaledEMT(0.8))
    for kw in ({"align_on": shifted[:2]}, {"align": "stored"}):
        small = evaluate_model(model, shifted[2:4], **kw)
        big = evaluate_model(model, shifted[2:], **kw)
        np.testing.assert_array_equal(small.parity["energy_model"],
                                      big.parity["energy_model"][:2])
    # the opt-in self-aligned mode is exactly what this guards against
    small = evaluate_model(model, shifted[2:4], align="self")
    big = evaluate_model(model, shifted[2:], align="self")
    assert not np.allclose(small.parity["energy_model"], big.parity["energy_model"][:2])


def test_robust_softening_scale_and_max_force(data):
    """An outlier frame with huge forces: s (all) collapses, s (band) does not; a group
    with almost no force signal gets n/a; --max-force names the frame it drops."""
    from ase import Atoms

    frames = [a.copy() for a in data[:4]]
    for a, src in zip(frames, data[:4]):
        a.calc = SinglePointCalculator(a, energy=src.calc.results["energy"],
                                       forces=src.calc.results["forces"])
        a.info.update(src.info, source=f"set.xyz@{len(frames)}")

    class Model(Calculator):
        """0.7 x EMT, except that forces above 10 eV/Å come out tiny (an outlier)."""

        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            w = self.atoms.copy()
            w.calc = EMT()
            f = 0.7 * w.get_forces()
            f[np.abs(f) > 7.0] = 0.0
            self.results = {"energy": w.get_potential_energy(), "forces": f}

    hot = data[0].copy()
    hot.positions[0] = hot.positions[1] + [0.0, 0.0, 1.3]  # two atoms far too close
    hot.calc = EMT()
    hot.calc = SinglePointCalculator(hot, energy=hot.get_potential_energy(),
                                     forces=hot.get_forces())
    hot.info["config_type"] = "Cu"
    hot.info["source"] = "set.xyz@9"
    dimer = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]], cell=[10, 10, 10], pbc=True)
    dimer.calc = SinglePointCalculator(dimer, energy=0.0, forces=[[0, 0, 0.01], [0, 0, -0.01]])
    dimer.info["config_type"] = "dimer"
    ev = evaluate_model(("m", Model()), frames + [hot, dimer], align="none")
    cu = ev.groups["Cu"]
    assert cu.n_force_excluded_high > 0
    assert cu.softening_scale < 0.6                       # collapsed by the outlier
    assert cu.softening_scale_band == pytest.approx(0.7, abs=1e-9)
    assert cu.softening_scale_frame_median == pytest.approx(0.7, abs=1e-9)
    assert ev.groups["dimer"].softening_scale is None
    assert ev.groups["dimer"].softening_note == "n/a (too little force signal)"
    rep_md = evaluate([("m", Model())], frames + [hot, dimer], align="none",
                      progress=False).to_markdown()
    assert "n/a (too little force signal)" in rep_md
    dropped = evaluate_model(("m", Model()), frames + [hot, dimer], align="none",
                             max_force=10.0)
    assert [d["source"] for d in dropped.dropped_frames] == ["set.xyz@9"]
    assert dropped.groups["Cu"].softening_scale == pytest.approx(0.7, abs=1e-9)
    assert any("set.xyz@9" in n for n in dropped.notes())
    flagged = evaluate_model(("m", Model()), frames + [hot], align="none", max_force=10.0,
                             max_force_mode="flag")
    assert len(flagged.flagged_frames) == 1 and flagged.overall.n_structures == 5


def test_groups_fall_back_to_source_file_and_formation_energies(tmp_path):
    """No config_type: one group per file; bulk frames give formation-like energies."""
    from ase.build import bulk, fcc111

    def lab(a, ctype=None):
        a = a.copy()
        a.calc = EMT()
        a.calc = SinglePointCalculator(a, energy=a.get_potential_energy(), forces=a.get_forces())
        if ctype:
            a.info["config_type"] = ctype
        return a

    b = bulk("Cu", "fcc", a=3.6, cubic=True)
    slabs = [fcc111("Cu", (2, 2, 3), vacuum=5.0) for _ in range(2)]
    slabs[1].rattle(0.05, seed=1)
    ase.io.write(tmp_path / "traj_a.xyz", [lab(s) for s in slabs], format="extxyz")
    ase.io.write(tmp_path / "traj_b.xyz", [lab(b.copy(), "bulk")], format="extxyz")
    ev = evaluate_model(("soft", ScaledEMT(0.8)), [str(tmp_path / "traj_a.xyz"),
                                                     str(tmp_path / "traj_b.xyz")])
    assert set(ev.groups) == {"traj_a.xyz", "bulk"}
    g = ev.groups["traj_a.xyz"]
    assert g.n_energy_form == 2
    # formation-like energy error = (0.8 - 1)·(E_slab - N·E_bulk/N_bulk)/N exactly
    e = [lab(s).get_potential_energy() for s in slabs]
    eb = lab(b.copy()).get_potential_energy() / len(b)
    expected = np.mean([abs(-0.2 * (ei - 12 * eb) / 12) for ei in e])
    assert g.energy_form_mae_per_atom == pytest.approx(expected, rel=1e-6)


def test_energy_keys(tmp_path, data):
    frames = []
    for a in data[:2]:
        b = a.copy()
        b.info["dft_energy"] = a.calc.results["energy"]
        b.arrays["dft_forces"] = a.calc.results["forces"].copy()
        b.calc = None
        frames.append(b)
    path = tmp_path / "keys.xyz"
    ase.io.write(path, frames, format="extxyz")
    ev = evaluate_model(("emt", EMT()), str(path), energy_key="dft_energy",
                        forces_key="dft_forces")
    assert ev.overall.forces_mae == pytest.approx(0.0, abs=1e-6)
