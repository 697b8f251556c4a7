"""Forgetting report (issue 12): property level, like-for-like energies, element coverage.

The property checks run on EMT and on EMT with its whole PES scaled by 1.3 — a model
whose bulk was deliberately made stiffer. Scaling E by 1.3 leaves every equilibrium
geometry unchanged and multiplies B, γ and the vacancy energy by exactly 1.3, so the
expected changes are known: a 0 %, B/γ/E_vac +30 %.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from test_evaluate import ScaledEMT

from ase_surftune.evaluation.forgetting import (
    element_properties,
    plot_forgetting,
    property_forgetting,
)
from ase_surftune.training.forgetting import ForgettingOptions, relative_energy_errors


def test_emt_cu_properties_pinned():
    """EMT Cu: a, B, unrelaxed γ of the low-index facets and E_vac (deterministic)."""
    p = element_properties(EMT(), "Cu")
    assert p["a"] == pytest.approx(3.58982, abs=2e-4)
    assert p["B_GPa"] == pytest.approx(134.414, abs=0.05)
    assert p["gamma_111"] == pytest.approx(1.04412, abs=1e-4)
    assert p["gamma_100"] == pytest.approx(1.13383, abs=1e-4)
    assert p["gamma_110"] == pytest.approx(1.23172, abs=1e-4)
    # close-packed facet lowest, as for every fcc metal
    assert p["gamma_111"] < p["gamma_100"] < p["gamma_110"]
    assert p["E_vac"] == pytest.approx(1.23839, abs=1e-4)


def test_stiffer_bulk_is_flagged(tmp_path):
    rep = property_forgetting({"Default": EMT()}, {"Default": ScaledEMT(1.3)},
                              {"Default": "Default"}, ["Cu", "O"],
                              ForgettingOptions(threshold_percent=5.0))
    cu = rep["properties"]["Default"]["Cu"]
    assert "O" not in rep["properties"]["Default"]  # no bulk crystal: skipped, not faked
    assert cu["B_GPa"]["change_percent"] == pytest.approx(30.0, abs=1e-4)
    assert cu["B_GPa"]["flagged"]
    assert abs(cu["a"]["change_percent"]) < 1e-4 and not cu["a"]["flagged"]
    for k in ("gamma_111", "gamma_100", "gamma_110", "E_vac"):
        assert cu[k]["change_percent"] == pytest.approx(30.0, abs=1e-3)
        assert cu[k]["flagged"]
    assert "head Default: B_GPa(Cu) +30.0 %" in rep["flags"]
    assert rep["property_summary"].startswith("FLAG: 5 property change(s) > 5 %")
    json.dumps(rep)  # JSON-able as written
    rep["threshold_percent"] = 5.0
    png = plot_forgetting(rep, tmp_path / "forgetting.png")
    assert png is not None and png.stat().st_size > 1000


def test_mild_change_within_threshold_not_flagged():
    rep = property_forgetting({"Default": EMT()}, {"Default": ScaledEMT(1.03)},
                              {"Default": "Default"}, ["Cu"], ForgettingOptions(vacancy=False))
    assert rep["flags"] == []
    assert "within 5 % for every head" in rep["property_summary"]
    assert rep["properties"]["Default"]["Cu"]["B_GPa"]["change_percent"] == \
        pytest.approx(3.0, abs=1e-4)


def _labelled(atoms, e):
    a = atoms.copy()
    a.calc = SinglePointCalculator(a, energy=e, forces=np.zeros((len(a), 3)))
    return a


def test_relative_energy_errors_ignore_each_models_own_reference():
    """A head in another energy reference (+1855 eV/atom) is not 'forgetting'; a
    change of the relative energies is."""
    cells = [bulk("Cu", "fcc", a=3.6).repeat((n, 1, 1)) for n in (1, 2, 2)]
    cells.append(bulk("Au", "fcc", a=4.1))  # composition seen once: no relative information
    ref = [-3.0, -6.0, -5.9, -3.2]
    configs = [_labelled(c, e) for c, e in zip(cells, ref)]
    shifted = [e + 1855.0 * len(c) for e, c in zip(ref, cells)]
    err = relative_energy_errors(configs, shifted)
    assert err.shape == (3,) and np.allclose(err, 0.0, atol=1e-9)
    worse = list(shifted)
    worse[2] += 0.2  # one structure off by 0.1 eV/atom
    err = relative_energy_errors(configs, worse)
    assert np.mean(np.abs(err)) == pytest.approx(np.mean([0.1 / 3, 0.1 / 3, 0.2 / 3]))


def test_unseen_element_warning_once_per_head_and_element():
    from ase_surftune.data import element_counts
    from ase_surftune.models.backends import load_model
    from ase_surftune.models.calculator import SurfTuneCalculator, UnseenElementWarning

    b = load_model("chgnet")
    head = b.resolve_head(None)
    cu = bulk("Cu", "fcc", a=3.6)
    b.head_info[head] = {"element_counts": element_counts([cu.repeat(2)])}
    assert b.head_info[head]["element_counts"] == {"Cu": 8}
    calc = SurfTuneCalculator(b)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenElementWarning)
        cu.calc = calc
        cu.get_potential_energy()  # seen: no warning
    cuau = bulk("Cu", "fcc", a=3.8).repeat((2, 1, 1))
    cuau[1].symbol = "Au"
    with pytest.warns(UnseenElementWarning, match=r"never saw element\(s\) \['Au'\]"):
        cuau.calc = calc
        cuau.get_potential_energy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenElementWarning)
        cuau.rattle(0.01, seed=1)
        cuau.get_potential_energy()  # same head and element: warned once only
        calc.predict([cuau])
    assert b.unseen_elements(head, ["Cu", "Au", "Ag"]) == ["Ag", "Au"]
