"""Reference sets as data: tabulated DFT (or any) values read from CSV or JSON.

A reference set is a list of :class:`ReferenceEntry` rows — one number for one property
of one system — that ``surftune benchmark`` measures with every model and ``surftune
compare -r`` compares against. Values are converted to the tool's units on reading.

Schema (CSV columns or JSON keys; case and spaces in names do not matter)
-------------------------------------------------------------------------
Required:

``system``
    an element (``Cu``), a formula (``MgO``) or an element with a facet (``Cu111``,
    ``Cu(110)``, ``Ru0001``, ``Ti10-10``). Also accepted as ``element`` or ``formula``.
``property``
    one of (aliases in brackets, matched ignoring case, ``_``, ``-`` and spaces)

    ===================  =====  ==============================================================
    key                  unit   meaning / aliases
    ===================  =====  ==============================================================
    ``gamma``            J/m²   surface energy of ``facet`` [surface_energy, γ, e_surf]
    ``lattice_a``        Å      conventional lattice constant a [a, a0, lattice_constant]
    ``lattice_c``        Å      conventional c (hcp...) [c]
    ``bulk_modulus``     GPa    B from an EOS fit [B, B0]
    ``vacancy_formation`` eV    E_f of a bulk vacancy [E_vac, E_f, vacancy_formation_energy]
    ``barrier_vacancy``  eV     nearest-neighbour vacancy hop barrier [barrier, E_m, E_a,
                                vacancy_migration, migration_barrier]
    ``phonons``          –      ``value`` is a path: ``phonopy_params.yaml`` (with forces),
                                ``phonopy_disp.yaml`` or ``FORCE_SETS`` [phonon, phonopy]
    ===================  =====  ==============================================================
``value``
    the number (or the phonon data path).

Optional: ``units`` (converted: J/m², meV/Å², eV/Å², erg/cm²; eV, meV, kJ/mol,
kcal/mol; Å, nm, pm, bohr; GPa, kbar, Mbar, MPa, eV/Å³ — default the unit above),
``facet`` (3-index ``111``/``1,1,0``/``(1-10)`` or hcp 4-index ``0001``/``10-10``;
may instead be part of ``system``), ``source`` (citation), ``structure`` (a structure
file, relative to the table), ``cell`` (``fcc``, ``bcc``, ``hcp``, ``diamond``...;
aliases ``cell_type``, ``crystal``, ``crystal_structure``; default: ASE's reference
state of the element), ``a`` and ``c`` (Å, used to build the bulk; the bulk is
relaxed with each model anyway).

Common layouts read as well:

* **wide tables**: no ``property`` column; every other column named after a property
  (optionally with its unit: ``gamma (J/m^2)``, ``E_m [eV]``, ``B_GPa``) holds values,
  one row per system — e.g. a γ table ``system,cell,gamma`` with ``Cu111``-style
  names, a γ table with one column per facet (``element,gamma_111,gamma(100)``), or a
  barrier table ``element,barrier`` with one row per element. In a wide
  table, an ``a`` column is a reference lattice constant *and* the starting a;
* **JSON**: ``{"entries": [{...}, ...]}`` (optionally ``"source"``, ``"units"`` as
  defaults for all entries) or a bare list of entries;
* **results of the property commands** as references: the JSON written by ``surftune
  surface`` (γ per facet), ``surftune neb`` (barrier; give the system, it is not in the
  file), ``surftune phonons`` (its ``phonopy_params.yaml``), and ``compare``'s
  ``properties_*.json`` / ``comparison.json``.

Each entry has a canonical ``key`` as used by :mod:`ase_surftune.evaluation.compare`:
``gamma_111``, ``lattice_a``, ``lattice_c``, ``bulk_modulus``, ``vacancy_formation``,
``barrier_vacancy``, ``phonons``.

Why one module of ~470 lines: about a third of it is the schema documentation above,
which belongs next to the parser it documents; units are in
:mod:`~ase_surftune.evaluation.units`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.evaluation.units import (  # noqa: F401  (re-exported)
    _ALIASES,
    _DIMENSION,
    _META_COLS,
    _SYSTEM_COLS,
    _UNITS,
    PROPERTY_LABELS,
    PROPERTY_UNITS,
    _norm,
    _norm_unit,
    convert_units,
)

__all__ = [
    "PROPERTY_UNITS",
    "ReferenceEntry",
    "ReferenceSet",
    "convert_units",
    "is_reference_table",
    "load_reference_set",
    "parse_facet",
    "split_system",
]


def parse_facet(value: Any) -> tuple[int, int, int]:
    """A facet as a Miller index: the package's one facet parser
    (:func:`ase_surftune.properties.facets.parse_facet`: ``111``, ``(1-10)``, ``1,1,0``,
    ``-110``, ``Cu111`` and hcp Miller–Bravais ``0001``/``10-10``/``11-20``)."""
    from ase_surftune.properties.facets import parse_facet as _parse

    return _parse(value)


def facet_key(miller: Sequence[int]) -> str:
    """``(1, -1, 0)`` → ``"1-10"`` (the suffix of ``gamma_…`` keys, as compare writes them)."""
    return "".join(map(str, miller))


def split_system(system: str) -> tuple[str, str | None]:
    """``"Cu111"`` → ``("Cu", "111")``; ``"Ru(0001)"`` → ``("Ru", "0001")``;
    ``"MgO"`` → ``("MgO", None)``. A facet part needs at least three digits."""
    from ase.data import chemical_symbols

    s = str(system).strip()
    m = re.fullmatch(r"([A-Z][a-z]?)[\s_]*(\(?[-\d,\s]+\)?)", s)
    if m and m.group(1) in chemical_symbols and len(re.findall(r"\d", m.group(2))) >= 3:
        return m.group(1), m.group(2).strip().strip("()")
    return s, None


@dataclass
class ReferenceEntry:
    """One reference value, in the tool's units (``unit``); ``raw_value``/``raw_unit``
    keep what the table said. ``value`` is None and ``path`` set for phonon data."""

    system: str
    property: str
    value: float | None
    unit: str
    facet: tuple[int, int, int] | None = None
    path: str | None = None
    source: str = ""
    structure: str | None = None
    cell: str | None = None
    a: float | None = None
    c: float | None = None
    raw_value: Any = None
    raw_unit: str | None = None

    @property
    def key(self) -> str:
        """``gamma_111``, ``lattice_a``, ``barrier_vacancy``... (compare's keys)."""
        return f"gamma_{facet_key(self.facet)}" if self.property == "gamma" and self.facet \
            else self.property

    @property
    def label(self) -> str:
        if self.property == "gamma" and self.facet:
            return f"γ({facet_key(self.facet)})"
        return PROPERTY_LABELS.get(self.property, self.property)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["facet"] = None if self.facet is None else facet_key(self.facet)
        d["key"] = self.key
        return d


@dataclass
class ReferenceSet:
    """Reference entries read from one file (``origin``)."""

    entries: list[ReferenceEntry]
    origin: str = ""
    notes: list[str] = field(default_factory=list)

    def systems(self) -> list[str]:
        return list(dict.fromkeys(e.system for e in self.entries))

    def for_system(self, system: str) -> list[ReferenceEntry]:
        return [e for e in self.entries if e.system == system]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "surftune-reference/1", "origin": self.origin,
                "entries": [e.to_dict() for e in self.entries]}

    def to_measured(self, system: str, label: str | None = None):
        """The entries of ``system`` as compare's :class:`MeasuredProperties`
        (phonon data paths are left out: compare measures its own phonons)."""
        from ase_surftune.evaluation.measured import MeasuredProperties

        ents = [e for e in self.for_system(system) if e.value is not None]
        if not ents:
            raise ConfigError(f"reference {self.origin!r} has no values for {system!r}; it "
                              f"holds {self.systems()}")
        mp = MeasuredProperties(calculator=label or Path(self.origin).name or "reference")
        for e in ents:
            mp.add(e.key, float(e.value), e.unit, e.label, True,
                   **({"source": e.source} if e.source else {}))
        return mp


# --------------------------------------------------------------------------- readers


_GAMMA_FACET = re.compile(r"(?:gamma|γ|surface[\s_]*energy|e[\s_]*surf)[\s_]*"
                          r"\(?(?P<facet>-?\d[-\d,\s]*)\)?", re.IGNORECASE)


def _header_facet(name: str) -> str | None:
    """``"gamma_111"``, ``"γ(1-10)"``, ``"E_surf 0001"`` → the facet part, else None."""
    m = _GAMMA_FACET.fullmatch(str(name).strip())
    return m.group("facet").strip() if m else None


def _canon_property(name: str) -> str | None:
    if _header_facet(name) is not None:
        return "gamma"
    n = _norm(name)
    if n in _ALIASES:
        return _ALIASES[n]
    return None


def _split_header(col: str) -> tuple[str, str | None]:
    """``"gamma (J/m^2)"`` → ``("gamma", "J/m^2")``; ``"B_GPa"`` → ``("B", "GPa")``."""
    m = re.fullmatch(r"\s*(.+?)\s*[\(\[]\s*([^\)\]]+)\s*[\)\]]\s*", col)
    if m and not re.fullmatch(r"[-\d,\s]+", m.group(2)):  # "γ(1-10)": a facet, not a unit
        return m.group(1), m.group(2)
    if "_" in col:
        head, tail = col.rsplit("_", 1)
        if _norm_unit(tail) in _UNITS and _canon_property(head):
            return head, tail
    return col, None


def _float(v: Any, where: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: value {v!r} is not a number") from None
    if not math.isfinite(x):
        raise ConfigError(f"{where}: value {v!r} is not finite")
    return x


def _entry(row: dict[str, Any], prop_name: str, value: Any, unit: str | None,
           base: Path | None, where: str) -> ReferenceEntry:
    prop = _canon_property(prop_name)
    if prop is None:
        raise ConfigError(f"{where}: unknown property {prop_name!r}; use one of "
                          f"{sorted(PROPERTY_UNITS)} (aliases: see the module docstring)")
    sys_raw = next((row[k] for k in _SYSTEM_COLS if row.get(k) not in (None, "")), None)
    if sys_raw is None:
        raise ConfigError(f"{where}: no system (column 'system', 'element' or 'formula')")
    system, facet_s = split_system(str(sys_raw))
    col_facet = row.get("facet")
    facet = None
    if prop == "gamma":
        fs = [f for f in (facet_s, col_facet, _header_facet(prop_name)) if f not in (None, "")]
        if not fs:
            raise ConfigError(f"{where}: a surface energy needs a facet ('facet' column or "
                              f"a name such as Cu111)")
        facets = {parse_facet(str(f)) for f in fs}
        if len(facets) > 1:
            raise ConfigError(f"{where}: facet in the name {facet_s!r} and the column "
                              f"{col_facet!r} differ")
        facet = facets.pop()
    cell = row.get("cell") or None
    structure = row.get("structure") or None
    if structure is not None and base is not None and not Path(structure).is_absolute():
        structure = str(base / structure)
    a = _float(row["a"], where) if row.get("a") not in (None, "") else None
    c = _float(row["c"], where) if row.get("c") not in (None, "") else None
    if prop == "phonons":
        p = Path(str(value))
        if base is not None and not p.is_absolute():
            p = base / p
        return ReferenceEntry(system, prop, None, "", path=str(p),
                              source=str(row.get("source") or ""), structure=structure,
                              cell=cell, a=a, c=c, raw_value=value)
    x = _float(value, where)
    return ReferenceEntry(system, prop, convert_units(x, unit, prop), PROPERTY_UNITS[prop],
                          facet=facet, source=str(row.get("source") or ""),
                          structure=structure, cell=str(cell).lower() if cell else None,
                          a=a, c=c, raw_value=x, raw_unit=unit or None)


def _normalise_row(raw: dict[str, Any]) -> dict[str, Any]:
    """Map column names onto the schema's (system/cell/facet/source/structure/units)."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k is None:
            continue
        n = _norm(k)
        v = v.strip() if isinstance(v, str) else v
        if n in _SYSTEM_COLS:
            out[n] = v
            continue
        for canon, names in _META_COLS.items():
            if n in names:
                out[canon] = v
                break
        else:
            out[k] = v
    return out


def _rows_to_entries(rows: Iterable[dict[str, Any]], base: Path | None, origin: str,
                     defaults: dict[str, Any] | None = None) -> list[ReferenceEntry]:
    entries: list[ReferenceEntry] = []
    for i, raw in enumerate(rows, 1):
        row = {**(defaults or {}), **_normalise_row(raw)}
        where = f"{origin} row {i}"
        if not any(v not in (None, "") for v in raw.values()):
            continue
        prop_col = next((k for k in row if _norm(k) == "property"), None)
        if prop_col is not None:  # long format
            val_col = next((k for k in row if _norm(k) == "value"), None)
            if val_col is None:
                raise ConfigError(f"{where}: a 'property' column needs a 'value' column")
            entries.append(_entry(row, str(row[prop_col]), row[val_col], row.get("units"),
                                  base, where))
            continue
        # wide format: each property-named column is one entry
        found = False
        for col, v in row.items():
            if col in _META_COLS or col in _SYSTEM_COLS:
                continue
            name, unit = _split_header(col)
            if _canon_property(name) is None:
                continue
            found = True
            if v in (None, ""):
                continue  # this system lacks that property
            if _canon_property(name) == "lattice_a":
                row = {**row, "a": v if unit is None else convert_units(
                    _float(v, where), unit, "lattice_a")}
            entries.append(_entry(row, name, v, unit or row.get("units"), base, where))
        if not found:
            raise ConfigError(f"{where}: no 'property'/'value' columns and no column named "
                              f"after a property ({sorted(PROPERTY_UNITS)}); columns: "
                              f"{list(raw)}")
    return entries


def _read_csv(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ConfigError(f"reference table {str(path)!r} is empty")
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return list(csv.DictReader(lines, dialect=dialect))


def _element_of(formula: str) -> str:
    """``"Cu4"`` → ``"Cu"``; a compound keeps its reduced formula."""
    from ase.formula import Formula

    try:
        return str(Formula(formula).reduce()[0])
    except Exception:  # noqa: BLE001 - ase raises plain ValueErrors for odd strings
        return formula


def _from_results_json(d: dict[str, Any], path: Path, system: str | None) -> list[ReferenceEntry]:
    """Entries from the JSON of ``surftune surface``/``neb``/``phonons`` or compare."""
    src = f"{path.name}"
    measured_for = None  # the element the models of a comparison.json were measured for
    if "reference" in d and isinstance(d["reference"], dict) and "values" in d["reference"]:
        models = d.get("models") or [{}]
        measured_for = ((models[0] or {}).get("config") or {}).get("element")
        d = d["reference"]
    if "values" in d and "calculator" in d:  # compare's properties_*.json
        cfg = d.get("config") or {}
        sysname = system or cfg.get("element") or measured_for
        if not sysname:
            raise ConfigError(f"{str(path)!r}: say which system these results belong to")
        out = []
        for key, v in d["values"].items():
            if v is None:
                continue
            if key.startswith("gamma_"):
                out.append(ReferenceEntry(sysname, "gamma", float(v), "J/m²",
                                          facet=parse_facet(key[6:]), source=src,
                                          cell=cfg.get("crystal")))
            elif key in PROPERTY_UNITS:
                out.append(ReferenceEntry(sysname, key, float(v), PROPERTY_UNITS[key],
                                          source=src, cell=cfg.get("crystal")))
        return out
    if "gamma" in d and "bulk_formula" in d:  # surftune surface
        sysname = system or _element_of(d["bulk_formula"])
        return [ReferenceEntry(sysname, "gamma", float(g), "J/m²", facet=parse_facet(k),
                               source=src) for k, g in d["gamma"].items() if g is not None]
    if "barrier_forward" in d:  # surftune neb
        info = d.get("info") or {}
        if info.get("system") not in (None, "vacancy"):
            raise ConfigError(f"{str(path)!r} is a {info.get('system')} NEB; only vacancy "
                              f"hops are benchmark references")
        if not system:
            raise ConfigError(f"{str(path)!r} (a neb result) does not name its element: "
                              f"give the system (--system Cu)")
        return [ReferenceEntry(system, "barrier_vacancy", float(d["barrier_forward"]), "eV",
                               source=src)]
    if "phonopy_params" in d and "formula" in d:  # surftune phonons
        if not d.get("phonopy_params"):
            raise ConfigError(f"{str(path)!r} names no phonopy_params.yaml to compare with")
        p = Path(d["phonopy_params"])
        if not p.is_absolute() and not p.exists():
            p = path.parent / p.name
        return [ReferenceEntry(system or _element_of(d["formula"]), "phonons", None, "",
                               path=str(p), source=src)]
    raise ConfigError(f"{str(path)!r} is neither a reference table ({{'entries': [...]}}) nor "
                      f"results of surftune surface/neb/phonons/compare")


def load_reference_set(path: str | Path | ReferenceSet, *, system: str | None = None
                       ) -> ReferenceSet:
    """Read a reference set from a CSV/TSV table or a JSON file (see the module docstring).

    Args:
        path: the file (or a :class:`ReferenceSet`, returned as is).
        system: the system of a results JSON that does not name it (``surftune neb``),
            or to override it.

    Raises:
        ConfigError: a missing file, unknown property/unit, unreadable value; the message
            names the file and row.
    """
    if isinstance(path, ReferenceSet):
        return path
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"reference file not found: {str(p)!r}")
    base = p.parent
    if p.suffix.lower() == ".json":
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"reference {str(p)!r} is not valid JSON: {exc}") from None
        results_keys = {"bulk_formula", "barrier_forward", "values", "phonopy_params",
                        "reference"}
        if isinstance(d, list):
            entries = _rows_to_entries(d, base, str(p))
        elif isinstance(d, dict) and isinstance(d.get("entries"), list) \
                and not results_keys & set(d):  # (surftune surface has "entries" too)
            defaults = {k: d[k] for k in ("source", "units") if k in d}
            entries = _rows_to_entries(d["entries"], base, str(p), defaults)
        elif isinstance(d, dict):
            entries = _from_results_json(d, p, system)
        else:
            raise ConfigError(f"reference {str(p)!r}: expected a JSON object or list")
    elif p.suffix.lower() in (".csv", ".tsv", ".txt"):
        entries = _rows_to_entries(_read_csv(p), base, str(p))
    else:
        raise ConfigError(f"reference {str(p)!r}: expected a .csv/.tsv table or a .json file")
    if system is not None:
        for e in entries:
            e.system = system
    if not entries:
        raise ConfigError(f"reference {str(p)!r} holds no values")
    keys = [(e.system, e.key) for e in entries]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError(f"reference {str(p)!r} lists some values twice: {dup[:5]}")
    return ReferenceSet(entries=entries, origin=str(p))


def is_reference_table(path: str | Path) -> bool:
    """Whether ``path`` is a file to read as reference data (a table or a JSON) rather
    than a model or calculator spec."""
    p = Path(str(path))
    return p.is_file() and p.suffix.lower() in (".csv", ".tsv", ".json")
