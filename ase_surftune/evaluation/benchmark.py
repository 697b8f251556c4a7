"""Benchmark sweeps: every row of a reference set measured with every model.

:func:`benchmark` reads a reference set (:mod:`ase_surftune.evaluation.reference_sets`:
a CSV/JSON table, or results of the property commands) and, for every model (spec
strings such as ``"chgnet"``, ``"emt"``, ``"run/model.stbundle@surface"``, or
``(label, calculator)`` pairs in-process):

1. builds each system's bulk — the row's ``structure`` file, else
   ``ase.build.bulk(element, cell, a=a, c=c)`` (cubic cell where one exists; cell type
   from ASE's reference state when the table gives none) — and relaxes it with the
   model (cell + positions, :func:`~ase_surftune.properties.relax`) → ``lattice_a`` /
   ``lattice_c`` (conventional cell, Å);
2. measures each row on that relaxed bulk through the property code:
   ``gamma`` → :func:`~ase_surftune.properties.surface_energies` (J/m²),
   ``barrier_vacancy`` → :func:`~ase_surftune.properties.vacancy_migration` (eV),
   ``vacancy_formation`` → :func:`~ase_surftune.properties.bulk.vacancy_formation` (eV),
   ``bulk_modulus`` → :func:`~ase_surftune.properties.bulk.equation_of_state` (GPa),
   ``phonons`` → :func:`~ase_surftune.properties.frequency_softening_ratio` on the
   reference's own displacements (the ratio is the mean ω_model/ω_ref; the value and
   reference columns are n/a);
3. writes ``benchmark.csv``/``.md``/``.json`` (one row per model × reference row:
   model, system, property, unit, reference, value, ratio = value/reference) and
   ``benchmark.png`` (every ratio, with the median and the min–max spread per property
   and model).

Settings (:class:`BenchmarkConfig`) reuse compare's sections (``lattice``, ``surface``,
``neb``, ``phonons``) plus ``eos`` and ``vacancy``, so one facet gets the same slab in
``compare`` and ``benchmark``; ``surface.miller`` is unused here (facets come from the
table).

Tasks run through :func:`ase_surftune.core.parallel.map_tasks` (``executor=None``,
``"process:N"``, ``"dask:N"`` or any Executor). Each finished task's result is written
atomically to ``OUTPUT/tasks/<task>-<fingerprint>.json`` by the task itself, so a
killed sweep resumes where it stopped: a task whose file exists with the same
fingerprint (model, system, row, settings, bulk, the content of structure and phonon
files) is not recomputed. A failed task is reported in the table (``error``, ratio n/a)
and retried on the next run. The output
folder is locked (:func:`ase_surftune.core.io.exclusive_lock`) while a sweep writes to it.
Nothing is written outside ``output_dir``.

Why one module of ~480 lines: config, task fingerprinting, resumable task store and the
sweep belong to one resumable workflow; its report and plots are in
:mod:`~ase_surftune.evaluation.benchmark_report`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.core.io import (
    atomic_write_json,
    clean_orphan_temps,
    exclusive_lock,
)
from ase_surftune.evaluation.benchmark_report import BenchmarkReport
from ase_surftune.evaluation.compare import (
    EOSSettings,
    LatticeSettings,
    NEBSettings,
    PhononSettings,
    SurfaceSettings,
    _Strict,
    load_settings,
)
from ase_surftune.evaluation.reference_sets import (
    ReferenceEntry,
    ReferenceSet,
    facet_key,
    load_reference_set,
)
from ase_surftune.properties.settings import VacancyFormationSettings

__all__ = ["BenchmarkConfig", "BenchmarkReport", "benchmark", "load_benchmark_config"]

log = logging.getLogger(__name__)

#: crystal structures for which ``ase.build.bulk(..., cubic=True)`` exists
_CUBIC = ("fcc", "bcc", "sc", "diamond", "zincblende", "rocksalt", "cesiumchloride",
          "fluorite")


class VacancySettings(VacancyFormationSettings):
    """:class:`~ase_surftune.properties.settings.VacancyFormationSettings` with a tighter
    relaxation: E_vac is a small difference of large energies, and fmax 0.05 eV/Å leaves
    about 0.5 % in it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    fmax: float = Field(0.01, gt=0, description="force threshold (eV/Å)")


class BenchmarkConfig(_Strict):
    """How ``benchmark`` measures each property (see the module docstring)."""

    lattice: LatticeSettings = Field(default_factory=LatticeSettings)
    surface: SurfaceSettings = Field(default_factory=SurfaceSettings)
    neb: NEBSettings = Field(default_factory=NEBSettings)
    phonons: PhononSettings = Field(default_factory=PhononSettings)
    eos: EOSSettings = Field(default_factory=EOSSettings)
    vacancy: VacancySettings = Field(default_factory=VacancySettings)


def load_benchmark_config(config: Any = None, **overrides: Any) -> BenchmarkConfig:
    """A validated :class:`BenchmarkConfig` from an instance, dict or YAML path;
    ``overrides`` set keys (``"surface.min_slab_size"=6.0``)."""
    return load_settings(BenchmarkConfig, config, "benchmark", **overrides)


# --------------------------------------------------------------------------- tasks


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _file_digest(path: str | None) -> str | None:
    """sha256 of a file's bytes (None for no path; "missing" if it does not exist)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return "missing"
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _safe(name: str) -> str:
    from ase_surftune.evaluation.errors import _safe as s

    return s(name)


def _atoms_dict(atoms: Any) -> dict[str, Any]:
    return {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
            "cell": atoms.cell.array.tolist(), "pbc": [bool(p) for p in atoms.pbc]}


def _atoms(d: dict[str, Any]) -> Any:
    from ase import Atoms

    return Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=d["pbc"])


def build_bulk(system: str, *, structure: str | None = None, cell: str | None = None,
               a: float | None = None, c: float | None = None) -> Any:
    """The starting bulk of a reference row: its ``structure`` file, else
    ``ase.build.bulk(system, cell, a=a, c=c)`` (cubic cell where one exists).

    Raises:
        ConfigError: a missing structure file or a system ASE cannot build.
    """
    if structure is not None:
        import ase.io

        p = Path(structure)
        if not p.is_file():
            raise ConfigError(f"structure of {system} not found: {str(p)!r}")
        try:
            return ase.io.read(str(p))
        except Exception as exc:
            raise DataError(f"cannot read structure {str(p)!r}: {exc}") from exc
    from ase.build import bulk

    kw: dict[str, Any] = {"crystalstructure": cell, "a": a}
    if c is not None:
        kw["c"] = c
    try:
        if cell is None or cell in _CUBIC:
            try:
                return bulk(system, cubic=True, **kw)
            except (ValueError, KeyError, RuntimeError, AssertionError):
                pass
        return bulk(system, **kw)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"cannot build a bulk of {system!r} (cell {cell or 'ASE default'}"
                          f"): {exc}; give a 'cell' (fcc, bcc, hcp...) and 'a', or a "
                          f"'structure' file") from None


_CALCS: dict[tuple[str, str], Any] = {}


def _calculator(model: Any, device: str) -> Any:
    """One calculator per spec and process (models load once per worker)."""
    from ase_surftune.evaluation._spec import make_calculator

    if not isinstance(model, str):
        return make_calculator(model, device=device)
    key = (model, device)
    if key not in _CALCS:
        _CALCS[key] = make_calculator(model, device=device)
    return _CALCS[key]


def _measure(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task; returns ``{"value", "converged", "details"}``."""
    from ase_surftune.properties import frequency_softening_ratio, get_property, relax
    from ase_surftune.properties.bulk import conventional_lattice
    from ase_surftune.properties.relax import NotConvergedWarning

    calc = _calculator(task["model"], task["device"])
    s = task["settings"]
    kind = task["kind"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        if kind == "bulk":
            start = build_bulk(task["system"], **task["build"])
            r = relax(start, calc, relax_cell=True, fmax=s["fmax"], steps=s["steps"],
                      optimizer=s["optimizer"])
            a, c, crystal = conventional_lattice(r.atoms)
            return {"value": None, "converged": r.converged,
                    "details": {"atoms": _atoms_dict(r.atoms), "lattice_a": a,
                                "lattice_c": c, "crystal_system": crystal,
                                "energy_per_atom": r.energy_per_atom, "steps": r.steps}}
        if kind == "phonons":
            atoms = None
            if not str(task["path"]).lower().endswith((".yaml", ".yml")):
                atoms = build_bulk(task["system"], **task["build"])  # the reference's cell
            res = frequency_softening_ratio(atoms, calc, task["path"],
                                            supercell=s["supercell"],
                                            displacement=s["displacement"], mesh=s["mesh"],
                                            freq_cutoff=s["freq_cutoff"])
            return {"value": None, "ratio": res.ratio, "converged": True,
                    "details": {"ratio_std": res.ratio_std, "n_modes": res.n_modes,
                                "mesh": res.mesh, "min_frequency_model":
                                    res.min_frequency_model}}
        if kind not in _ROW_PROPERTIES:
            raise ConfigError(f"unknown benchmark task kind {kind!r}")
        prop, extra, key = _row_property(kind, task)
        pc = get_property(prop)(s, **extra)
        row = next(v for v in pc.table(pc.run(_atoms(task["relaxed"]), calc)) if v.key == key)
        return {"value": row.value, "converged": row.converged, "details": row.details}


#: benchmark row kind -> the registered property that measures it
_ROW_PROPERTIES = {"gamma": "surface", "barrier_vacancy": "neb",
                   "vacancy_formation": "vacancy_formation", "bulk_modulus": "eos"}


def _row_property(kind: str, task: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(registered property, settings overrides, table key) of one benchmark row."""
    if kind == "gamma":
        facet = tuple(task["facet"])
        return "surface", {"miller_indices": [facet], "relax_bulk": False}, \
            "gamma_" + "".join(map(str, facet))
    if kind == "barrier_vacancy":
        return "neb", {"migrations": ["vacancy"]}, "barrier_vacancy"
    return _ROW_PROPERTIES[kind], {}, kind



def _run_task(task: dict[str, Any], store: str | None) -> dict[str, Any]:
    """One task (module level, so it pickles to workers); stores its result atomically."""
    out = _measure(task)
    out.update({"fingerprint": task["fingerprint"], "name": task["name"]})
    if store is not None:
        try:
            atomic_write_json(Path(store) / task["name"], _jsonable(out))
        except OSError as exc:  # a remote worker without the folder: the caller stores it
            log.warning("could not store %s: %s", task["name"], exc)
    return out


def _jsonable(obj: Any) -> Any:
    from ase_surftune.core.io import to_jsonable

    return to_jsonable(obj)


def _load_done(store: Path, name: str, fingerprint: str) -> dict[str, Any] | None:
    p = store / name
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        log.warning("ignoring unreadable stored result %s", p)
        return None
    return d if isinstance(d, dict) and d.get("fingerprint") == fingerprint else None


def _build_spec(entries: list[ReferenceEntry]) -> dict[str, Any]:
    """One bulk description per system; conflicting rows are an error."""
    spec: dict[str, Any] = {"structure": None, "cell": None, "a": None, "c": None}
    for e in entries:
        for k, have in list(spec.items()):
            v = getattr(e, k)
            if v is None:
                continue
            if have is not None and have != v and not (
                    isinstance(v, float) and math.isclose(v, have, rel_tol=1e-9)):
                raise ConfigError(f"rows of {e.system} disagree on {k}: {have!r} vs {v!r}")
            spec[k] = have if have is not None else v
    return spec


# --------------------------------------------------------------------------- report


# --------------------------------------------------------------------------- sweep

#: benchmark row kind -> the config section of its settings
_KIND_SETTINGS = {"gamma": "surface", "barrier_vacancy": "neb", "vacancy_formation": "vacancy",
                  "bulk_modulus": "eos", "phonons": "phonons"}


class _Sweep:
    """Tasks of one sweep: fingerprinted names, and results reused from ``store`` or
    computed through :func:`~ase_surftune.core.parallel.map_tasks` and stored."""

    def __init__(self, store: Path, executor: Any, progress: bool, device: str,
                 specs: dict[str, dict[str, Any]]) -> None:
        self.store, self.executor, self.progress = store, executor, progress
        self.device, self.specs = device, specs
        self.counts = {"reused": 0, "computed": 0}

    def run(self, tasks: list[dict[str, Any]], desc: str) -> dict[str, dict[str, Any]]:
        from ase_surftune.core.parallel import map_tasks

        results: dict[str, dict[str, Any]] = {}
        todo = []
        for t in tasks:
            done = _load_done(self.store, t["name"], t["fingerprint"])
            if done is not None:
                results[t["name"]] = done
                self.counts["reused"] += 1
            else:
                todo.append(t)
        if not todo:
            return results
        runs = map_tasks(_run_task, [(t, str(self.store)) for t in todo], self.executor,
                         labels=[t["name"] for t in todo], progress=self.progress, desc=desc)
        for t, r in zip(todo, runs):
            self.counts["computed"] += 1
            if r.ok:
                results[t["name"]] = r.value
                if not (self.store / t["name"]).is_file():  # worker could not write
                    atomic_write_json(self.store / t["name"], _jsonable(r.value))
            else:
                log.error("%s failed: %s", t["name"], r.error)
                results[t["name"]] = {"error": r.error}
        return results

    def task(self, kind: str, model: Any, label: str, system: str, settings: dict[str, Any],
             key: str, **extra: Any) -> dict[str, Any]:
        # files by content: an edited structure or FORCE_SETS under the same name
        # must not reuse results measured on the old one
        build = self.specs[system]
        files = [build["structure"], extra.get("path")]
        ident = {"kind": kind, "model": label, "system": system, "settings": settings,
                 "build": build, "files": [_file_digest(f) for f in files],
                 **{k: v for k, v in extra.items() if k != "relaxed"}}
        fp = _fingerprint(ident)
        name = f"{_safe(label)}__{_safe(system)}__{_safe(key)}-{fp}.json"
        return {"kind": kind, "model": model, "device": self.device, "system": system,
                "settings": settings, "build": build, "fingerprint": fp, "name": name,
                **extra}


def _table_row(label: str, e: ReferenceEntry, bulk: dict[str, Any] | None,
               result: dict[str, Any] | None) -> dict[str, Any]:
    """One table row: the reference entry, the model's value (from its bulk task for
    lattice rows and failed bulks, else from its row task) and value/reference."""
    row = {"model": label, "system": e.system, "property": e.property,
           "facet": None if e.facet is None else facet_key(e.facet), "key": e.key,
           "label": e.label, "unit": e.unit, "reference": e.value, "value": None,
           "ratio": None, "converged": None, "source": e.source, "error": None}
    if result is None:  # from the bulk task
        if "error" in bulk:
            row["error"] = f"bulk relaxation failed: {bulk['error']}"
        else:
            row["value"] = bulk["details"][e.property]
            row["converged"] = bulk["converged"]
    elif "error" in result:
        row["error"] = result["error"]
    else:
        row["value"], row["converged"] = result["value"], result["converged"]
        if "ratio" in result:
            row["ratio"] = result["ratio"]
    if row["ratio"] is None and row["value"] is not None and e.value:
        row["ratio"] = row["value"] / e.value
    return row


def benchmark(reference: str | Path | ReferenceSet, models: Sequence[Any] | str,
              config: BenchmarkConfig | dict | str | Path | None = None, *,
              output_dir: str | Path = "benchmark_out", executor: Any = None,
              device: str = "cpu", progress: bool = True, system: str | None = None,
              plot: bool = True, **overrides: Any) -> BenchmarkReport:
    """Measure every reference row with every model; write the ratio table and figure.

    Args:
        reference: a reference table/JSON path (see
            :mod:`~ase_surftune.evaluation.reference_sets`) or a :class:`ReferenceSet`.
        models: specs (``"emt"``, ``"chgnet"``, ``"bundle.stbundle@head"``...) or
            ``(label, calculator)`` pairs (in-process executors only).
        config: :class:`BenchmarkConfig`, dict or YAML path; ``overrides`` set keys
            (``**{"surface.min_slab_size": 6.0}``).
        output_dir: everything goes here (tables, figure, ``tasks/`` result store).
        executor: ``None``, ``"process[:N]"``, ``"dask[:N]"`` or an Executor.
        system: the system of a results JSON that does not name it.

    Returns:
        :class:`BenchmarkReport` (also written to ``output_dir``).

    Raises:
        ConfigError: bad reference or settings (before anything is computed);
        LockedError: another sweep writes to ``output_dir``.

    Why this is over 80 lines: it is a public API function whose docstring
    documents every keyword argument with its unit; the code is 59 lines.
    """
    from ase_surftune.core.parallel import check_executor
    from ase_surftune.evaluation._spec import spec_label

    refs = load_reference_set(reference, system=system)
    cfg = load_benchmark_config(config, **overrides)
    check_executor(executor)
    models = [models] if isinstance(models, (str, Path)) else list(models)
    if not models:
        raise ConfigError("give at least one model (-m MODEL)")
    labels = [spec_label(m) for m in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"model labels must be unique, got {labels}")
    specs = {s: _build_spec(refs.for_system(s)) for s in refs.systems()}
    sett = cfg.model_dump(mode="json")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {str(out)!r} exists and is not a folder")
    store = out / "tasks"
    with exclusive_lock(out / ".surftune.lock", f"benchmark output folder {str(out)!r}"):
        store.mkdir(parents=True, exist_ok=True)
        clean_orphan_temps(store)
        clean_orphan_temps(out)
        sweep = _Sweep(store, executor, progress, device, specs)
        # stage 1: each model's relaxed bulk of each system that needs one
        need_bulk = [s for s in refs.systems()
                     if any(e.property != "phonons" for e in refs.for_system(s))]
        bulk_tasks = {(lab, s): sweep.task("bulk", m, lab, s, sett["lattice"], "bulk")
                      for m, lab in zip(models, labels) for s in need_bulk}
        bulks = sweep.run(list(bulk_tasks.values()), "relax bulks")
        # stage 2: the rows
        row_tasks: list[dict[str, Any]] = []
        plan: list[tuple[str, ReferenceEntry, str | None, str | None]] = []
        for m, lab in zip(models, labels):
            for e in refs.entries:
                bt = bulk_tasks.get((lab, e.system))
                if e.property in ("lattice_a", "lattice_c") or (
                        e.property != "phonons" and "error" in bulks[bt["name"]]):
                    plan.append((lab, e, bt["name"], None))
                    continue
                extra: dict[str, Any] = {}
                if e.property == "phonons":
                    extra["path"] = e.path
                else:
                    extra.update(relaxed=bulks[bt["name"]]["details"]["atoms"],
                                 bulk_fp=bt["fingerprint"])
                if e.facet is not None:
                    extra["facet"] = list(e.facet)
                t = sweep.task(e.property, m, lab, e.system,
                               sett[_KIND_SETTINGS[e.property]], e.key, **extra)
                row_tasks.append(t)
                plan.append((lab, e, None, t["name"]))
        done = sweep.run(row_tasks, "benchmark rows")
        rows = [_table_row(lab, e, bulks.get(bn) if bn else None, done.get(rn) if rn else None)
                for lab, e, bn, rn in plan]
        report = BenchmarkReport(reference=refs.origin, models=labels, rows=rows,
                                 config=sett, reused=sweep.counts["reused"],
                                 computed=sweep.counts["computed"])
        report.write(out, plot=plot)
    return report
