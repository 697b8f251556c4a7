"""Phonons with phonopy + EMT: Cu dispersion, softening ratio, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_surftune.core.errors import ConfigError
from ase_surftune.properties import frequency_softening_ratio, parse_supercell, phonons


@pytest.fixture(scope="module")
def cu_phonons(tmp_path_factory):
    d = tmp_path_factory.mktemp("ph")
    res = phonons(bulk("Cu", "fcc", a=3.59), EMT(), supercell=3, mesh=8,
                  plot=d / "cu.png", phonopy_params=d / "phonopy_params.yaml")
    return res, d


def test_cu_emt_dispersion(cu_phonons):
    res, d = cu_phonons
    assert res.n_displacements == 1  # fcc: one symmetry-reduced displacement
    assert not res.has_imaginary and res.imaginary_modes == []
    assert res.min_frequency > -0.05
    freqs = [np.asarray(f) for f in res.band_frequencies]
    # acoustic branches vanish at Γ (first point of the path) and the top is Cu-like (~7-9 THz)
    assert res.band_labels[0][1] == "Γ"
    assert np.allclose(freqs[0][0], 0.0, atol=0.05)
    assert max(f.max() for f in freqs) == pytest.approx(8.15429, rel=1e-4)  # EMT, THz
    assert freqs[0].shape[1] == 3  # one atom: three branches
    # heat capacity tends to the Dulong–Petit limit 3R ≈ 24.94 J/(K mol)
    assert res.thermal["heat_capacity"][-1] == pytest.approx(24.94, rel=0.02)
    assert res.thermal["heat_capacity"][-1] == pytest.approx(24.74634, rel=1e-4)  # EMT value
    assert res.thermal["heat_capacity"][0] == pytest.approx(0.0, abs=1e-6)
    assert (d / "cu.png").is_file() and (d / "phonopy_params.yaml").is_file()
    data = json.loads(json.dumps(res.to_dict()))
    assert data["has_imaginary"] is False and "phonon" not in data


def test_thermal_only_run_matches_the_full_one(cu_phonons):
    full, _ = cu_phonons
    res = phonons(bulk("Cu", "fcc", a=3.59), EMT(), supercell=3, mesh=8, bands=False,
                  dos=False)
    assert res.band_frequencies == [] and res.band_labels == [] and res.dos == []
    for key in ("free_energy", "entropy", "heat_capacity"):
        np.testing.assert_allclose(res.thermal[key], full.thermal[key], rtol=1e-12)
    assert not res.has_imaginary and res.min_frequency > -0.05
    with pytest.raises(ConfigError, match="plot needs bands"):
        phonons(bulk("Cu", "fcc", a=3.59), EMT(), supercell=2, mesh=4, dos=False,
                plot="x.png")


@pytest.mark.slow
def test_softening_ratio_of_model_against_itself(cu_phonons, tmp_path):
    res, d = cu_phonons
    atoms = bulk("Cu", "fcc", a=3.59)
    from phonopy.file_IO import write_FORCE_SETS

    write_FORCE_SETS(res.phonon.dataset, filename=str(tmp_path / "FORCE_SETS"))
    r_yaml = frequency_softening_ratio(None, EMT(), d / "phonopy_params.yaml", mesh=6)
    r_fs = frequency_softening_ratio(atoms, EMT(), tmp_path / "FORCE_SETS", supercell=3, mesh=6)
    r_calc = frequency_softening_ratio(atoms, EMT(), EMT(), supercell=3, mesh=6)
    assert r_yaml.ratio == pytest.approx(1.0, abs=1e-12)
    assert r_calc.ratio == pytest.approx(1.0, abs=1e-12)
    assert r_fs.ratio == pytest.approx(1.0, abs=1e-8)  # FORCE_SETS stores 10 decimals
    assert r_yaml.n_modes > 0 and r_yaml.ratio_std < 1e-10


def test_softening_ratio_detects_a_softer_model(cu_phonons):
    """Forces scaled by 0.81 give frequencies scaled by 0.9 (ω ∝ √k)."""
    from ase.calculators.calculator import Calculator, all_changes

    class Scaled(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            e = EMT()
            a = self.atoms.copy()
            a.calc = e
            self.results = {"energy": 0.81 * a.get_potential_energy(),
                            "forces": 0.81 * a.get_forces()}

    res, d = cu_phonons
    r = frequency_softening_ratio(None, Scaled(), d / "phonopy_params.yaml", mesh=6)
    assert r.ratio == pytest.approx(0.9, abs=1e-6)


@pytest.mark.parametrize("bad", [(2, 2), [[1, 0], [0, 1]], (2.5, 2, 2), "2x2x2",
                                 [[1, 0, 0], [0, 1, 0], [0, 0, 0]], True, [[1, 0, 0]] * 2])
def test_bad_supercell(bad):
    with pytest.raises(ConfigError, match="supercell"):
        parse_supercell(bad)
    with pytest.raises(ConfigError):
        phonons(bulk("Cu"), EMT(), supercell=bad)


def test_supercell_forms():
    assert parse_supercell(2).tolist() == np.diag([2, 2, 2]).tolist()
    assert parse_supercell((1, 2, 3)).tolist() == np.diag([1, 2, 3]).tolist()
    m = [[-1, 1, 1], [1, -1, 1], [1, 1, -1]]
    assert parse_supercell(m).tolist() == m
