"""The report of ``compare``: the reference's and each model's properties with ratios
(model / reference, the property-level softening) and errors, as Markdown, CSV, JSON,
the figure and one reusable ``properties_<calculator>.json`` per calculator."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase_surftune.core.io import atomic_write_text
from ase_surftune.evaluation.measured import MeasuredProperties

__all__ = ["ComparisonReport"]


def _safe(name: str) -> str:
    from ase_surftune.evaluation.errors import _safe as s

    return s(name)


@dataclass
class ComparisonReport:
    """The reference's and each model's properties, with ratios and errors."""

    reference: str
    reference_values: MeasuredProperties
    models: list[MeasuredProperties]

    @property
    def labels(self) -> dict[str, str]:
        out = dict(self.reference_values.labels)
        for m in self.models:
            for k, v in m.labels.items():
                out.setdefault(k, v)
        return out

    def property_keys(self) -> list[str]:
        keys = list(self.reference_values.values)
        for m in self.models:
            keys += [k for k in m.values if k not in keys]
        return keys

    def model_names(self) -> list[str]:
        return [m.calculator for m in self.models]

    def _model(self, name: str) -> MeasuredProperties:
        for m in self.models:
            if m.calculator == name:
                return m
        raise KeyError(f"no model {name!r}; have {self.model_names()}")

    def value(self, key: str, model: str) -> float | None:
        v = self._model(model).values.get(key)
        return None if v is None or not math.isfinite(v) else v

    def ratio(self, key: str, model: str) -> float | None:
        """model / reference for property ``key`` (None if either is missing or ref = 0)."""
        v, r = self.value(key, model), self.reference_values.values.get(key)
        if v is None or r is None or not math.isfinite(r) or r == 0:
            return None
        return v / r

    def rows(self) -> list[dict[str, Any]]:
        """Long format: one row per (property, model)."""
        units = {**self.reference_values.units}
        out = []
        for key in self.property_keys():
            ref = self.reference_values.values.get(key)
            for m in self.models:
                units.update({k: u for k, u in m.units.items() if k not in units})
                v = self.value(key, m.calculator)
                err = None if v is None or ref is None else v - ref
                ratio = self.ratio(key, m.calculator)
                out.append({"property": key, "label": self.labels.get(key, key),
                            "unit": units.get(key, ""), "reference": ref,
                            "model": m.calculator, "value": v, "ratio": ratio, "error": err,
                            "relative_error": None if ratio is None else ratio - 1.0,
                            "converged": m.converged.get(key)})
        return out

    def to_markdown(self) -> str:
        """Wide table: property | unit | reference | per model: value, ratio, error."""
        from ase_surftune.evaluation.tables import fmt

        models = self.model_names()
        head = ["property", "unit", f"{self.reference} (ref)"]
        for m in models:
            head += [m, "ratio", "error"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        units = {**self.reference_values.units}
        for m in self.models:
            units.update({k: u for k, u in m.units.items() if k not in units})
        for key in self.property_keys():
            ref = self.reference_values.values.get(key)
            ref_ok = self.reference_values.converged.get(key, True)
            cells = [self.labels.get(key, key), units.get(key, ""),
                     fmt(ref) + ("" if ref_ok else " (nc)")]
            for m in models:
                v, r = self.value(key, m), self.ratio(key, m)
                conv = self._model(m).converged.get(key, True)
                cells += [fmt(v) + ("" if conv else " (nc)"), fmt(r, 3),
                          fmt(None if v is None or ref is None else v - ref)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference_values.to_dict(),
                "models": [m.to_dict() for m in self.models], "table": self.rows()}

    def write(self, output_dir: str | Path, *, plot: bool = True) -> dict[str, Path]:
        """``comparison.json``/``.csv``/``.md``, ``comparison.png`` and one
        ``properties_<calculator>.json`` per calculator (reusable as reference results)."""
        from ase_surftune.evaluation.tables import write_csv, write_json

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": write_json(self.to_dict(), out / "comparison.json"),
                 "csv": write_csv(self.rows(), out / "comparison.csv")}
        atomic_write_text(out / "comparison.md", self.to_markdown() + "\n")
        paths["markdown"] = out / "comparison.md"
        for mp in [self.reference_values, *self.models]:
            write_json(mp.to_dict(), out / f"properties_{_safe(mp.calculator)}.json")
        if plot:
            from ase_surftune.evaluation.plots import plot_comparison

            paths["figure"] = plot_comparison(self, out / "comparison.png")
        return paths
