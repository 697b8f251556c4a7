"""Issue 15: one property protocol, a registry, one settings source (EMT, self-contained)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT

from ase_surftune.core.errors import ConfigError
from ase_surftune.properties import (
    available_properties,
    get_property,
    neb_barrier,
    phonons,
    register,
    relax,
    run_md,
    surface_energies,
)
from ase_surftune.properties import settings as S
from ase_surftune.properties.bulk import equation_of_state, vacancy_formation
from ase_surftune.properties.protocol import PropertyCalc


def test_registry_lists_and_refuses():
    assert available_properties() == ["relax", "lattice", "eos", "vacancy_formation",
                                      "surface", "neb", "phonons", "md"]
    with pytest.raises(ConfigError, match="unknown property 'gamma'.*surface"):
        get_property("gamma")

    class Other(PropertyCalc):
        name = "surface"

        def run(self, atoms, calculator):
            return None

    with pytest.raises(ConfigError, match="already registered"):
        register()(Other)
    assert get_property("surface").__name__ == "SurfaceCalc"


@pytest.mark.parametrize("func, model, skip", [
    (surface_energies, S.SurfaceSettings, {"recommended_layers"}),
    (relax, S.RelaxSettings, set()),
    (neb_barrier, S.NEBSettings, set()),
    (phonons, S.PhononSettings, set()),
    (run_md, S.MDSettings, set()),
    (equation_of_state, S.EOSSettings, set()),
    (vacancy_formation, S.VacancyFormationSettings, set()),
])
def test_api_defaults_are_the_settings(func, model, skip):
    sig = inspect.signature(func).parameters
    inst = model()
    for name in model.model_fields:
        if name in skip:
            continue
        default = sig[name].default
        want = getattr(inst, name)
        if isinstance(want, list):
            default, want = list(default), want
        assert default == want, name
        assert model.model_fields[name].description, name  # help text with units
    with pytest.raises(Exception):
        inst.steps = 1  # frozen: nobody changes a default process-wide


def test_settings_errors_in_house_format():
    with pytest.raises(ConfigError, match=r"Invalid surface property config \(2 problems\)"
                                          r"(.|\n)*min_slab_size(.|\n)*typo: unknown key"):
        get_property("surface")({"min_slab_size": -1, "typo": 3})
    calc = get_property("surface")(miller_indices=["Cu110", "0001"][:1])
    assert calc.settings.miller_indices == [(1, 1, 0)]


def test_compare_and_benchmark_sections_derive_from_property_settings():
    from ase_surftune.evaluation.benchmark import BenchmarkConfig, VacancySettings
    from ase_surftune.evaluation.compare import CompareConfig, load_compare_config

    cfg = CompareConfig()
    pairs = {"lattice": S.LatticeSettings, "surface": S.SurfaceSettings,
             "neb": S.BarrierSettings, "phonons": S.PhononTableSettings,
             "eos": S.EOSSettings}
    # the only defaults compare changes, each documented in its section class
    changed = {"surface": {"miller_indices", "relax_bulk"}, "neb": {"n_images", "steps"},
               "phonons": {"mesh"}}
    for name, base in pairs.items():
        sec = getattr(cfg, name)
        assert isinstance(sec, base)
        diff = {k for k in base.model_fields if getattr(sec, k) != getattr(base(), k)}
        assert diff == changed.get(name, set()), name
    assert issubclass(VacancySettings, S.VacancyFormationSettings)
    assert BenchmarkConfig().vacancy.fmax == 0.01  # tight: E_vac is a small difference
    assert cfg.surface.miller == [(1, 1, 1), (1, 0, 0)] and cfg.surface.relax is True
    with pytest.raises(ConfigError, match="properties"):
        load_compare_config({"properties": ["md"]})  # registered, but no bulk property
    # compare's YAML names override a dumped config's field names
    again = load_compare_config(cfg, **{"surface.miller": ["100"], "surface.relax": False})
    assert again.surface.miller_indices == [(1, 0, 0)] and again.surface.relax_slabs is False


def test_chained_calcs_match_the_api_and_the_physics():
    """lattice → eos on EMT Cu: the adapter gives the API's numbers, and the EOS minimum
    sits at the relaxed lattice (two independent routes to a0)."""
    start = bulk("Cu", "fcc", a=3.70, cubic=True)
    lat = get_property("lattice")()
    out = lat.calc(start, EMT())
    direct = relax(start, EMT(), relax_cell=True, fmax=0.01, steps=300, optimizer="BFGS")
    a = lat.table(out["lattice"])[0].value
    assert a == pytest.approx(direct.atoms.cell.cellpar()[0], abs=1e-10)
    assert out["final_structure"].calc is None and out["structure"] is start
    out = get_property("eos")().calc(out, EMT())
    eos = out["eos"]
    assert eos.a == pytest.approx(a, abs=2e-3)  # E(V) minimum = relaxed cell
    assert 120 < eos.bulk_modulus < 150  # EMT Cu: about 134 GPa
    assert set(out) == {"structure", "lattice", "eos", "final_structure"}


def test_neb_calc_tabulates_vacancy_barrier():
    pc = get_property("neb")(n_images=1, steps=100, fmax=0.1, supercell=(2, 2, 2))
    cu = bulk("Cu", "fcc", a=3.59, cubic=True)
    rows = pc.table(pc.run(cu, EMT()))
    assert [r.key for r in rows] == ["barrier_vacancy"]
    assert 0.3 < rows[0].value < 1.5 and rows[0].unit == "eV"


@pytest.mark.slow
def test_md_ramp_only_through_public_setters():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    with pytest.raises(ConfigError, match="temperature_end.*nvt_langevin"):
        run_md(atoms, EMT(), "nvt_nose_hoover", steps=5, temperature_end=600,
               progress=False)
    res = run_md(atoms, EMT(), "nvt_langevin", steps=200, timestep=2.0, temperature=100,
                 temperature_end=900, friction=0.05, loginterval=10, seed=3, progress=False)
    t = np.array(res.log["temperature"])
    assert t[-5:].mean() > t[:5].mean() + 300


def test_one_layer_finder():
    from ase_surftune.properties._base import layer_indices
    from ase_surftune.properties.surface import slab_layers

    slab = fcc100("Cu", size=(3, 3, 3), vacuum=6.0)
    assert [len(x) for x in layer_indices(slab)] == [9, 9, 9]
    tilted = fcc111("Cu", size=(2, 2, 4), vacuum=6.0, orthogonal=False)
    assert slab_layers(tilted) == layer_indices(tilted)
    assert [len(x) for x in slab_layers(tilted)] == [4, 4, 4, 4]


def test_single_point_and_migration_barrier_api():
    from ase_surftune.properties.neb import migration_barrier
    from ase_surftune.properties.single_point import default_slab, single_point

    slab = default_slab()
    rows = single_point([slab], EMT(), stress=False)
    ref = slab.copy()
    ref.calc = EMT()
    assert rows[0]["energy_eV"] == pytest.approx(ref.get_potential_energy(), abs=1e-12)
    assert slab.calc is None and rows[0]["n_atoms"] == 36
    with pytest.raises(ConfigError, match="2 end points or a band"):
        migration_barrier([slab], EMT())
    with pytest.raises(ConfigError, match="vacancy hops only"):
        migration_barrier([slab, slab], EMT(), relax_bulk=True)


def test_cli_help_defaults_come_from_settings():
    from ase_surftune.cli import neb, surface
    from ase_surftune.cli import phonons as ph

    helps = {name: h for name, _, h in surface.options()}
    assert helps["min_slab_size"].endswith(f"(default: {S.SURFACE.min_slab_size})")
    assert "(Å)" in helps["min_slab_size"]
    assert "recommended_layers" not in helps
    assert dict((n, h) for n, _, h in neb.options())["k"].endswith("(default: 0.1)")
    assert dict((n, t) for n, t, _ in ph.options())["mesh"] == "ints"


def test_a_registered_bulk_property_is_measured_by_compare():
    """Add a property with @register: compare accepts and measures it, no compare edit."""
    from ase_surftune.evaluation.compare import measure_properties
    from ase_surftune.properties import registry
    from ase_surftune.properties.protocol import PropertyValue

    @register()
    class VolumeCalc(PropertyCalc):
        name = "volume_per_atom"
        on_bulk = True

        def run(self, atoms, calculator):
            return atoms.get_volume() / len(atoms)

        def table(self, result):
            return [PropertyValue("volume_per_atom", result, "Å³", "V/atom")]

    try:
        mp = measure_properties("emt", {"element": "Cu", "a": 3.7,
                                        "properties": ["lattice", "volume_per_atom"]})
    finally:
        registry._REGISTRY.pop("volume_per_atom")
    a = mp.values["lattice_a"]
    assert mp.values["volume_per_atom"] == pytest.approx(a ** 3 / 4, rel=1e-9)  # fcc cell
