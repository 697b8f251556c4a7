"""Property comparison across models and heads: the property-level softening table.

Every calculator — the reference and each model — goes through *the same* property code
(:mod:`ase_surftune.properties`) with the same settings:

1. relax the bulk (cell + positions) → ``lattice_a`` (Å; ``lattice_c`` too if non-cubic);
2. surface energies of the relaxed bulk for each Miller index → ``gamma_hkl`` (J/m²);
3. NEB migration barriers on the relaxed lattice → ``barrier_vacancy`` (bulk vacancy
   hop) and/or ``barrier_adatom_100`` (adatom hollow→hollow on fcc(100)), eV;
4. phonons of the relaxed bulk → ``phonon_mean_THz`` (q-weighted mean frequency over a
   mesh, modes above ``freq_cutoff``) and ``phonon_max_THz``.

For each property and model the table gives the value, its **ratio to the reference**
(the property-level softening: < 1 for surface energies, barriers and frequencies means a
too-soft PES) and its error (model − reference). The reference may be a calculator spec
(``"emt"``, ``"gpaw"``, a model) or results measured earlier (the ``properties_*.json``
written by :meth:`ComparisonReport.write`, or a ``comparison.json``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ase_surftune.core.config import StrictModel, validate_model
from ase_surftune.core.errors import ConfigError
from ase_surftune.evaluation.compare_report import ComparisonReport, _safe
from ase_surftune.evaluation.measured import MeasuredProperties
from ase_surftune.properties import settings

__all__ = ["CompareConfig", "MeasuredProperties", "ComparisonReport", "measure_properties",
           "compare", "load_compare_config", "PROPERTY_NAMES", "MIGRATIONS"]

log = logging.getLogger(__name__)

PROPERTY_NAMES = ("lattice", "surface", "neb", "phonons")


def comparable_properties() -> list[str]:
    """The registered properties measured on a relaxed bulk (``on_bulk``): what
    ``properties`` may name. A property registered later is accepted too; its settings
    are its own defaults unless :class:`CompareConfig` has a section of that name."""
    from ase_surftune.properties import available_properties, get_property

    return [p for p in available_properties() if get_property(p).on_bulk]
MIGRATIONS = ("vacancy", "adatom-100")


#: compare's sections are the property settings (:mod:`ase_surftune.properties.settings`),
#: mutable inside a config; the subclasses below change only the defaults they name.
_SECTION = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


class _Strict(StrictModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_M = TypeVar("_M", bound=BaseModel)


class LatticeSettings(settings.LatticeSettings):
    """Bulk relaxation (cell + positions), used by every other property."""

    model_config = _SECTION


class SurfaceSettings(settings.SurfaceSettings):
    """Slab settings: :class:`ase_surftune.properties.settings.SurfaceSettings` (the same
    as ``surface_energies`` and ``surftune surface``) with compare's facets (``miller``,
    also read as ``miller_indices``) and ``relax`` (= ``relax_slabs``). The bulk is the
    ``lattice`` property's relaxed bulk, so it is not relaxed again (``relax_bulk`` off)."""

    model_config = _SECTION

    miller_indices: list[tuple[int, int, int]] = Field(
        [(1, 1, 1), (1, 0, 0)], description="facets tabulated by compare")
    relax_bulk: bool = Field(False, description="relax the bulk again (compare measures "
                             "on the lattice property's relaxed bulk)")

    @model_validator(mode="before")
    @classmethod
    def _compare_names(cls, data: Any) -> Any:
        """compare's YAML names ``miller`` and ``relax`` win over the field names (a
        dumped config holds both after an override)."""
        if isinstance(data, dict):
            data = dict(data)
            for alias, name in (("miller", "miller_indices"), ("relax", "relax_slabs")):
                if alias in data:
                    data[name] = data.pop(alias)
        return data

    @property
    def miller(self) -> list[tuple[int, int, int]]:
        return self.miller_indices

    @property
    def relax(self) -> bool:
        return self.relax_slabs


class NEBSettings(settings.BarrierSettings):
    """:class:`ase_surftune.properties.settings.BarrierSettings` with a cheaper band:
    compare runs every property for the reference and each model, so it uses 3 images
    and 200 steps (the climbing image still finds the saddle of a symmetric hop)."""

    model_config = _SECTION

    n_images: int = Field(3, ge=1, description="intermediate images")
    steps: int = Field(200, ge=1, description="maximum optimizer steps")


class PhononSettings(settings.PhononTableSettings):
    """:class:`ase_surftune.properties.settings.PhononTableSettings` on an 8×8×8 mesh
    (compare's tables so far were measured on it; set ``mesh`` for another)."""

    model_config = _SECTION

    mesh: tuple[int, ...] = Field((8, 8, 8), description="q-mesh: 1 or 3 integers")


class EOSSettings(settings.EOSSettings):
    model_config = _SECTION


class CompareConfig(_Strict):
    """What ``compare`` measures and how (see ``examples/compare_cu.yaml``).

    ``bulk_file`` (any ASE-readable structure) overrides ``element``/``crystal``/``a``,
    which otherwise build ``ase.build.bulk(element, crystal, a=a, cubic=True)``.
    """

    element: str = "Cu"
    crystal: str = "fcc"
    a: float | None = Field(None, gt=0)
    bulk_file: Path | None = None
    properties: list[str] = list(PROPERTY_NAMES)
    lattice: LatticeSettings = Field(default_factory=LatticeSettings)
    surface: SurfaceSettings = Field(default_factory=SurfaceSettings)
    neb: NEBSettings = Field(default_factory=NEBSettings)
    phonons: PhononSettings = Field(default_factory=PhononSettings)
    eos: EOSSettings = Field(default_factory=EOSSettings)

    @field_validator("properties")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in comparable_properties()]
        if bad:
            raise ValueError(f"unknown properties {bad}; compare measures "
                             f"{comparable_properties()} (the registered bulk properties)")
        return v

    def section(self, name: str) -> Any:
        """The settings of property ``name`` (its section, else the property's defaults)."""
        return getattr(self, name, None)

    def bulk(self):
        """The starting bulk structure (Atoms)."""
        if self.bulk_file is not None:
            import ase.io

            p = Path(self.bulk_file)
            if not p.is_file():
                raise ConfigError(f"bulk_file not found: {str(p)!r}")
            return ase.io.read(str(p))
        from ase.build import bulk

        try:
            return bulk(self.element, self.crystal, a=self.a, cubic=True)
        except Exception as exc:
            raise ConfigError(f"cannot build a {self.crystal} bulk of {self.element!r}: "
                              f"{exc}") from None


def load_compare_config(config: CompareConfig | dict[str, Any] | str | Path | None = None,
                        **overrides: Any) -> CompareConfig:
    """A validated :class:`CompareConfig` from a config object, dict or YAML path.

    Raises:
        ConfigError: every invalid or unknown key, in one message.
    """
    return load_settings(CompareConfig, config, "compare", **overrides)


def load_settings(cls: type[_M], config: Any = None, what: str = "compare",
                  **overrides: Any) -> _M:
    """A validated settings model ``cls`` from an instance, dict or YAML path, with
    ``overrides`` (``None`` values ignored; ``"surface.miller"`` sets a nested key).

    Raises:
        ConfigError: every invalid or unknown key, in one message.
    """
    if isinstance(config, BaseModel):
        data = config.model_dump()
    elif config is None:
        data = {}
    elif isinstance(config, dict):
        data = dict(config)
    else:
        from ase_surftune.core.io import load_yaml

        data = load_yaml(config)
        if data.get("bulk_file") is not None and not Path(data["bulk_file"]).is_absolute():
            data["bulk_file"] = str(Path(config).parent / data["bulk_file"])
    for key, val in overrides.items():
        if val is None:
            continue
        if "." in key:
            top, sub = key.split(".", 1)
            data.setdefault(top, {})
            if isinstance(data[top], BaseModel):
                data[top] = data[top].model_dump()
            data[top][sub] = val
        else:
            data[key] = val
    return validate_model(cls, data, what, "" if isinstance(config, (dict, BaseModel))
                          or config is None else str(config))


# --------------------------------------------------------------------------- measurement


def measure_properties(calculator: Any, config: CompareConfig | dict | str | Path | None = None,
                       *, label: str | None = None, device: str = "cpu",
                       progress: bool = False, plot_dir: str | Path | None = None
                       ) -> MeasuredProperties:
    """Measure the configured properties with one calculator (spec, pair or calculator).

    The same function measures the reference and every model, so differences come only
    from the potential energy surfaces. The bulk is relaxed first (the ``lattice``
    property); every other property is the registered
    :class:`~ase_surftune.properties.protocol.PropertyCalc` of that name, run on the
    relaxed bulk with the config's section as its settings.
    """
    import warnings

    from tqdm.auto import tqdm

    from ase_surftune.evaluation._spec import make_calculator, spec_label
    from ase_surftune.properties import get_property
    from ase_surftune.properties.relax import NotConvergedWarning

    cfg = load_compare_config(config)
    calc = make_calculator(calculator, device=device)
    name = label or spec_label(calculator)
    out = MeasuredProperties(calculator=name, config=cfg.model_dump(mode="json"))
    todo = ["lattice"] + [p for p in cfg.properties if p != "lattice"]
    bar = tqdm(todo, desc=f"properties [{name}]", disable=not progress, unit="prop")
    state: dict[str, Any] = {"structure": cfg.bulk()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        for prop in bar:
            bar.set_postfix_str(prop)
            t0 = time.perf_counter()
            plot = None if plot_dir is None else \
                str(Path(plot_dir) / f"{prop}_{_safe(name)}.png")
            pc = get_property(prop)(cfg.section(prop), plot=plot)
            state = pc.calc(state, calc)
            if prop == "lattice" and "lattice" not in cfg.properties:
                continue  # the relaxed bulk only
            for v in pc.table(state[prop]):
                out.add(v.key, v.value, v.unit, v.label, v.converged, **v.details)
            out.timings[prop] = round(time.perf_counter() - t0, 3)
    return out


# --------------------------------------------------------------------------- report


def _as_reference(reference: Any, cfg: CompareConfig, device: str, progress: bool,
                  plot_dir: Any) -> MeasuredProperties:
    if isinstance(reference, MeasuredProperties):
        return reference
    if isinstance(reference, dict):
        return MeasuredProperties.from_dict(reference)
    from ase_surftune.evaluation.reference_sets import (
        ReferenceSet,
        is_reference_table,
        load_reference_set,
    )

    if isinstance(reference, ReferenceSet):
        return reference.to_measured(cfg.element)
    if isinstance(reference, (str, Path)) and str(reference).endswith(".json") \
            and _is_compare_json(reference):
        mp = MeasuredProperties.load(reference)
        if mp.config and mp.config != cfg.model_dump(mode="json"):
            log.warning("reference results %s were measured with different settings",
                        reference)
        return mp
    if isinstance(reference, (str, Path)) and (is_reference_table(reference) or
                                               str(reference).endswith((".csv", ".json"))):
        # a table or a property command's JSON: reference data, never a model
        return load_reference_set(reference).to_measured(cfg.element)
    return measure_properties(reference, cfg, device=device, progress=progress,
                              plot_dir=plot_dir)


def _is_compare_json(path: str | Path) -> bool:
    """A ``properties_*.json``/``comparison.json`` written by compare (else: other data)."""
    p = Path(path)
    if not p.is_file():
        return True  # MeasuredProperties.load says "not found"
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False  # load_reference_set reports the bad JSON
    if isinstance(d, dict) and isinstance(d.get("reference"), dict):
        d = d["reference"]
    return isinstance(d, dict) and "values" in d and "calculator" in d


def _measure_task(model: Any, cfg: dict[str, Any], device: str,
                  plot_dir: Path | None) -> MeasuredProperties:
    """One model's measurements (module level so that it pickles to executor workers)."""
    return measure_properties(model, cfg, device=device, progress=False, plot_dir=plot_dir)


def compare(reference: Any, models: Sequence[Any],
            config: CompareConfig | dict | str | Path | None = None, *,
            device: str = "cpu", progress: bool = True, output_dir: str | Path | None = None,
            executor: Any = None, **overrides: Any) -> ComparisonReport:
    """Measure properties with the reference and every model; tabulate ratios and errors.

    Args:
        reference: a calculator spec (``"emt"``, ``"gpaw"``, a model), a calculator,
            or reference results (a ``.json`` path, a dict or :class:`MeasuredProperties`),
            or a reference set (a ``.csv``/``.json`` table or the JSON of a property
            command, see :mod:`~ase_surftune.evaluation.reference_sets`; its rows for
            ``element`` are used).
        models: specs (``"chgnet"``, ``"run/model.stbundle@surface"``...), calculators
            or ``(label, calculator)`` pairs.
        config: :class:`CompareConfig`, dict or YAML path; ``overrides`` set keys
            (``properties=["surface"]``, ``"surface.miller"=[...]``).
        output_dir: if given, write the report there (:meth:`ComparisonReport.write`).
        executor: where the models are measured: ``None`` (in this process), ``"process"``
            / ``"process:N"`` (a local pool), or any ``concurrent.futures.Executor`` such as
            ``dask.distributed.Client(...).get_executor()`` (see :mod:`ase_surftune.core.parallel`;
            give models as spec strings so they pickle). A model whose measurement fails
            is reported in the table (``details["error"]``) instead of stopping the others.
    """
    cfg = load_compare_config(config, **overrides)
    if isinstance(models, (str, Path)):
        models = [models]
    if not models:
        raise ConfigError("give at least one model to compare with the reference")
    plot_dir = None if output_dir is None else Path(output_dir)
    ref = _as_reference(reference, cfg, device, progress, plot_dir)
    from ase_surftune.core.parallel import map_tasks

    cfg_d = cfg.model_dump(mode="json")
    runs = map_tasks(_measure_task, [(m, cfg_d, device, plot_dir) for m in models], executor,
                     labels=[str(m) for m in models], progress=progress, desc="compare models")
    if not any(r.ok for r in runs):
        raise RuntimeError(f"every model failed; first error: {runs[0].error}")
    measured = []
    for r in runs:
        if r.ok:
            measured.append(r.value)
        else:
            log.error("measuring %s failed: %s", r.label, r.error)
            measured.append(MeasuredProperties(calculator=r.label, details={"error": r.error}))
    report = ComparisonReport(reference=ref.calculator, reference_values=ref, models=measured)
    if output_dir is not None:
        report.write(output_dir)
    return report
