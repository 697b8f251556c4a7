"""One calculator's measured property values, as ``compare`` tabulates them and reference
sets provide them (its own module so that both use it without importing each other)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase_surftune.core.errors import ConfigError

__all__ = ["MeasuredProperties"]


@dataclass
class MeasuredProperties:
    """Property values of one calculator, keyed e.g. ``lattice_a``, ``gamma_1,1,1``.

    Attributes:
        calculator: spec or label of the calculator.
        values: property key → value (units in ``units``).
        units, labels: key → unit string / human-readable name.
        converged: key → whether the underlying relaxation/NEB converged.
        details: key → small dict of supporting data (NEB energies, all γ...).
        timings: key → wall time in s.
        config: the :class:`CompareConfig` (as dict) it was measured with.
    """

    calculator: str
    values: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    converged: dict[str, bool] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, value: float, unit: str, label: str, converged: bool = True,
            **details: Any) -> None:
        self.values[key] = float(value)
        self.units[key] = unit
        self.labels[key] = label
        self.converged[key] = bool(converged)
        if details:
            self.details[key] = details

    def to_dict(self) -> dict[str, Any]:
        from ase_surftune.evaluation.tables import jsonable

        return jsonable({"calculator": self.calculator, "values": self.values,
                         "units": self.units, "labels": self.labels,
                         "converged": self.converged, "details": self.details,
                         "timings": self.timings, "config": self.config})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasuredProperties:
        if "values" not in d or "calculator" not in d:
            raise ConfigError("reference results must hold 'calculator' and 'values' (the "
                              "properties_*.json written by compare)")
        return cls(calculator=str(d["calculator"]),
                   values={k: (math.nan if v is None else float(v))
                           for k, v in d["values"].items()},
                   units=dict(d.get("units", {})), labels=dict(d.get("labels", {})),
                   converged=dict(d.get("converged", {})), details=dict(d.get("details", {})),
                   timings=dict(d.get("timings", {})), config=dict(d.get("config", {})))

    @classmethod
    def load(cls, path: str | Path) -> MeasuredProperties:
        """From a ``properties_*.json`` or the ``reference`` of a ``comparison.json``."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"reference results file not found: {str(p)!r}")
        d = json.loads(p.read_text())
        if "reference" in d and isinstance(d["reference"], dict):
            d = d["reference"]
        return cls.from_dict(d)
