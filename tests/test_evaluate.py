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

    from ase_surftune.calculator import SurfTuneCalculator
    from ase_surftune.correction import LinearCorrection

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
    ev7 = evaluate_model(("chgnet x0.7", soft), labelled, align="fit")
    assert ev7.overall.softening_scale == pytest.approx(0.7, abs=1e-6)
    assert ev7.model == "chgnet x0.7"


def test_alignment_removes_constant_offsets(data):
    shifted = []
    for a in data:
        b = a.copy()
        e = a.calc.results["energy"] + (-5.0 if a.info["config_type"] == "Cu" else 2.0) * len(a)
        b.calc = SinglePointCalculator(b, energy=e, forces=a.calc.results["forces"])
        b.info.update(a.info)
        shifted.append(b)
    raw = evaluate_model(("emt", EMT()), shifted, align="none")
    fit = evaluate_model(("emt", EMT()), shifted, align="fit")
    assert raw.overall.energy_mae_per_atom == pytest.approx(3.5, rel=1e-9)
    assert fit.overall.energy_mae_per_atom == pytest.approx(0.0, abs=1e-6)
    assert fit.alignment["shifts"]["Cu"] == pytest.approx(-5.0, abs=1e-6)
    assert fit.alignment["shifts"]["Au"] == pytest.approx(2.0, abs=1e-6)
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
    assert "| soft | all | 6 |" in md and "0.8000" in md
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
    assert "softening s" in out and "| emt | all | 6 |" in out
    d = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert d["models"][0]["overall"]["softening_scale"] == pytest.approx(1.0, abs=1e-6)  # extxyz rounding
    assert main(["evaluate", str(path), "-m", "nonexistent-model", "-o",
                 str(tmp_path / "o2"), "--no-progress"]) == 2
