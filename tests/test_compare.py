"""Property comparison: EMT vs EMT gives ratios of exactly 1; a PES scaled by 0.7 gives
0.7 for surface energies and barriers, 1 for the lattice constant and √0.7 for phonon
frequencies; reference results can be reused from JSON; the CLI writes the table."""

from __future__ import annotations

import json
import math

import pytest
from ase.calculators.emt import EMT
from test_evaluate import ScaledEMT

from ase_surftune.core.errors import ConfigError
from ase_surftune.evaluation import (
    ComparisonReport,
    MeasuredProperties,
    compare,
    load_compare_config,
)

FAST = {"element": "Cu", "properties": ["lattice", "surface", "neb", "phonons"],
        "surface": {"miller": ["111", "100"], "min_slab_size": 5.0, "min_vacuum_size": 6.0},
        "neb": {"n_images": 1, "supercell": [2, 2, 2]},
        "phonons": {"supercell": [2, 2, 2], "mesh": [4, 4, 4]}}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[ComparisonReport, object]:
    out = tmp_path_factory.mktemp("cmp")
    rep = compare("emt", [("emt-copy", EMT()), ("soft", ScaledEMT(0.7))], FAST,
                  progress=False, output_dir=out)
    return rep, out


@pytest.mark.slow
def test_emt_vs_emt_ratios_are_one(report):
    rep, _ = report
    keys = rep.property_keys()
    assert keys == ["lattice_a", "gamma_111", "gamma_100", "barrier_vacancy",
                    "phonon_mean_THz", "phonon_max_THz"]
    ref = rep.reference_values.values
    # deterministic EMT values of these FAST settings (Å, J/m², eV, THz)
    assert ref["lattice_a"] == pytest.approx(3.58948, rel=1e-5)
    assert ref["gamma_111"] == pytest.approx(1.04424, rel=1e-4)
    assert ref["gamma_100"] == pytest.approx(1.13387, rel=1e-4)
    assert ref["barrier_vacancy"] == pytest.approx(0.79278, rel=1e-3)
    assert ref["phonon_mean_THz"] == pytest.approx(5.40603, rel=1e-4)
    for key in keys:
        assert rep.ratio(key, "emt-copy") == pytest.approx(1.0, abs=1e-9), key
    for row in rep.rows():
        if row["model"] == "emt-copy":
            assert row["error"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_scaled_pes_property_softening(report):
    rep, _ = report
    assert rep.ratio("lattice_a", "soft") == pytest.approx(1.0, abs=1e-4)
    for key in ("gamma_111", "gamma_100", "barrier_vacancy"):
        assert rep.ratio(key, "soft") == pytest.approx(0.7, rel=3e-3), key
    for key in ("phonon_mean_THz", "phonon_max_THz"):
        assert rep.ratio(key, "soft") == pytest.approx(math.sqrt(0.7), rel=3e-3), key


def test_outputs_and_reference_results_reuse(report, tmp_path):
    rep, out = report
    d = json.loads((out / "comparison.json").read_text())
    assert d["reference"]["calculator"] == "emt" and len(d["table"]) == 2 * 6
    assert (out / "comparison.png").stat().st_size > 1000
    md = (out / "comparison.md").read_text()
    assert "| γ(111) | J/m² |" in md and "emt-copy" in md
    # reuse the measured reference from JSON: no reference calculation needed
    ref = MeasuredProperties.load(out / "properties_emt.json")
    assert ref.values == pytest.approx(rep.reference_values.values)
    rep2 = compare(out / "comparison.json", [("emt", EMT())], FAST, progress=False,
                   properties=["lattice"])
    assert rep2.ratio("lattice_a", "emt") == pytest.approx(1.0, abs=1e-9)


def test_config_errors():
    with pytest.raises(ConfigError, match="surface.typo"):
        load_compare_config({"surface": {"typo": 1}})
    with pytest.raises(ConfigError, match="properties"):
        load_compare_config(properties=["elastic"])
    cfg = load_compare_config(None, **{"surface.miller": ["110"]})
    assert cfg.surface.miller == [(1, 1, 0)]


def test_cli_compare(report, tmp_path, capsys):
    from ase_surftune.cli import main

    _, out = report
    rc = main(["compare", "--reference", str(out / "properties_emt.json"), "-m", "emt",
               "--properties", "lattice", "-o", str(tmp_path / "c"), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| lattice a | Å |" in printed and "1.000" in printed
    rows = (tmp_path / "c" / "comparison.csv").read_text().splitlines()
    assert rows[0].startswith("property,label,unit,reference,model,value,ratio")
    assert float(rows[1].split(",")[6]) == pytest.approx(1.0, abs=1e-9)
    assert main(["compare", "--properties", "elastic", "-o", str(tmp_path / "d")]) == 2


def test_unconverged_reference_is_flagged_in_the_table():
    """A reference value from a run that did not converge is marked (nc), like a model's."""
    from ase_surftune.evaluation.compare import MeasuredProperties

    ref = MeasuredProperties(calculator="dft")
    ref.add("lattice_a", 3.6, "Å", "lattice a", converged=False)
    rep = compare(ref, [("emt", EMT())], {"properties": ["lattice"]}, progress=False)
    row = next(line for line in rep.to_markdown().splitlines() if line.startswith("| lattice a"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "3.6000 (nc)"
    assert not cells[3].endswith("(nc)")  # EMT's own relaxation converged
    assert float(cells[4]) == pytest.approx(0.997, abs=5e-4)  # EMT a 3.5895 Å / 3.6 (3 digits)
