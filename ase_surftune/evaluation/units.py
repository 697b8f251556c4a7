"""The vocabulary of reference sets: canonical property names, their units and labels,
the column-name aliases tables use, and unit conversion to the tool's units."""

from __future__ import annotations

import re

from ase_surftune.core.errors import ConfigError

__all__ = ["PROPERTY_UNITS", "PROPERTY_LABELS", "convert_units"]

#: canonical property → the tool's unit
PROPERTY_UNITS: dict[str, str] = {
    "gamma": "J/m²", "lattice_a": "Å", "lattice_c": "Å", "bulk_modulus": "GPa",
    "vacancy_formation": "eV", "barrier_vacancy": "eV", "phonons": "",
}
#: human-readable names (tables and figures)
PROPERTY_LABELS: dict[str, str] = {
    "gamma": "γ", "lattice_a": "a", "lattice_c": "c", "bulk_modulus": "B",
    "vacancy_formation": "E_vac", "barrier_vacancy": "E_m (vacancy)", "phonons": "ω/ω_ref",
}

_ALIASES: dict[str, str] = {}
for _canon, _names in {
    "gamma": ("gamma", "γ", "surfaceenergy", "esurf", "surfenergy", "gammasurf"),
    "lattice_a": ("latticea", "a", "a0", "latticeconstant", "latticeparameter", "alat"),
    "lattice_c": ("latticec", "c", "c0"),
    "bulk_modulus": ("bulkmodulus", "b", "b0", "bmod"),
    "vacancy_formation": ("vacancyformation", "vacancyformationenergy", "evac", "ef", "efvac",
                          "evf", "formationenergy"),
    "barrier_vacancy": ("barriervacancy", "barrier", "vacancybarrier", "vacancymigration",
                        "migrationbarrier", "vacancymigrationbarrier", "em", "ea", "emig",
                        "evm"),
    "phonons": ("phonons", "phonon", "phonopy", "phonondata", "forcesets"),
}.items():
    for _n in _names:
        _ALIASES[_n] = _canon

_SYSTEM_COLS = ("system", "element", "formula", "material", "name")
_META_COLS = {"cell": ("cell", "celltype", "crystal", "crystalstructure", "structuretype",
                       "lattice", "prototype"),
              "facet": ("facet", "miller", "surface", "hkl"),
              "source": ("source", "reference", "ref", "citation", "doi"),
              "structure": ("structure", "structurepath", "structurefile", "file"),
              "units": ("units", "unit")}

# unit → (dimension, factor to the tool's unit of that dimension)
_UNITS: dict[str, tuple[str, float]] = {
    "j/m2": ("energy_area", 1.0), "jm-2": ("energy_area", 1.0),
    "mev/a2": ("energy_area", 0.016021766208), "ev/a2": ("energy_area", 16.021766208),
    "erg/cm2": ("energy_area", 1e-3), "mj/m2": ("energy_area", 1e-3),
    "ev": ("energy", 1.0), "mev": ("energy", 1e-3), "kj/mol": ("energy", 0.010364269574),
    "kcal/mol": ("energy", 0.043364104), "ry": ("energy", 13.605693123),
    "ha": ("energy", 27.211386246),
    "a": ("length", 1.0), "nm": ("length", 10.0), "pm": ("length", 0.01),
    "bohr": ("length", 0.529177210903),
    "gpa": ("pressure", 1.0), "kbar": ("pressure", 0.1), "mbar": ("pressure", 100.0),
    "mpa": ("pressure", 1e-3), "ev/a3": ("pressure", 160.21766208),
}
_DIMENSION = {"gamma": "energy_area", "lattice_a": "length", "lattice_c": "length",
              "bulk_modulus": "pressure", "vacancy_formation": "energy",
              "barrier_vacancy": "energy"}


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower()


def _norm_unit(unit: str) -> str:
    u = str(unit).strip().lower().replace(" ", "").replace("²", "2").replace("³", "3")
    u = u.replace("^", "").replace("**", "").replace("angstrom", "a").replace("å", "a")
    u = u.replace("ang", "a").replace("jm^-2", "jm-2").replace("j/m^2", "j/m2")
    return u


def convert_units(value: float, unit: str | None, prop: str) -> float:
    """``value`` in ``unit`` → the tool's unit of ``prop`` (J/m², eV, Å, GPa).

    Raises:
        ConfigError: an unknown unit, or one of another dimension (eV for γ...).
    """
    if prop not in _DIMENSION or unit is None or str(unit).strip() == "":
        return float(value)
    u = _norm_unit(unit)
    if u not in _UNITS:
        raise ConfigError(f"unknown unit {unit!r} for {prop}; use one of "
                          f"{sorted(k for k, (d, _) in _UNITS.items() if d == _DIMENSION[prop])}")
    dim, factor = _UNITS[u]
    if dim != _DIMENSION[prop]:
        raise ConfigError(f"unit {unit!r} is not a unit of {prop} (expected "
                          f"{PROPERTY_UNITS[prop]})")
    return float(value) * factor
