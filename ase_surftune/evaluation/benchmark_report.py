"""The table of a benchmark sweep: one row per model × reference row, per-property
summaries (median and spread of value/reference), Markdown/CSV/JSON and the figure."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase_surftune.core.io import atomic_write_text
from ase_surftune.evaluation.units import PROPERTY_LABELS

__all__ = ["BenchmarkReport"]


@dataclass
class BenchmarkReport:
    """One row per (model, reference row): reference, value and ratio = value/reference."""

    reference: str
    models: list[str]
    rows: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    reused: int = 0
    computed: int = 0

    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("error")]

    def summary(self) -> list[dict[str, Any]]:
        """Median and spread (min, max) of the finite ratios per model and property."""
        out = []
        for m in self.models:
            for prop in dict.fromkeys(r["property"] for r in self.rows):
                rs = [r["ratio"] for r in self.rows if r["model"] == m and r["property"] == prop
                      and r["ratio"] is not None and math.isfinite(r["ratio"])]
                n_rows = sum(1 for r in self.rows if r["model"] == m and r["property"] == prop)
                out.append({"model": m, "property": prop,
                            "label": PROPERTY_LABELS.get(prop, prop), "n": len(rs),
                            "n_rows": n_rows,
                            "median": statistics.median(rs) if rs else None,
                            "min": min(rs) if rs else None, "max": max(rs) if rs else None})
        return out

    def to_markdown(self) -> str:
        from ase_surftune.evaluation.tables import fmt

        head = ["model", "system", "property", "unit", "reference", "value", "ratio"]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for r in self.rows:
            val = fmt(r["value"]) if r["value"] is not None else "n/a"
            if r.get("error"):
                val = "failed"
            elif r.get("converged") is False:
                val += " (nc)"
            lines.append("| " + " | ".join([
                r["model"], r["system"], r["label"], r["unit"] or "–",
                fmt(r["reference"]) if r["reference"] is not None else "n/a", val,
                fmt(r["ratio"], 3) if r["ratio"] is not None else "n/a"]) + " |")
        lines += ["", "| model | property | n | median ratio | min | max |",
                  "|---|---|---|---|---|---|"]
        for s in self.summary():
            lines.append(f"| {s['model']} | {s['label']} | {s['n']}/{s['n_rows']} | "
                         f"{fmt(s['median'], 3) if s['median'] is not None else 'n/a'} | "
                         f"{fmt(s['min'], 3) if s['min'] is not None else 'n/a'} | "
                         f"{fmt(s['max'], 3) if s['max'] is not None else 'n/a'} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "models": self.models, "rows": self.rows,
                "summary": self.summary(), "config": self.config,
                "tasks": {"reused": self.reused, "computed": self.computed}}

    def write(self, output_dir: str | Path, *, plot: bool = True) -> dict[str, Path]:
        """``benchmark.json``/``.csv``/``.md`` and ``benchmark.png`` in ``output_dir``."""
        from ase_surftune.evaluation.tables import write_csv, write_json

        out = Path(output_dir)
        cols = ["model", "system", "property", "facet", "key", "unit", "reference", "value",
                "ratio", "converged", "source", "error"]
        paths = {"json": write_json(self.to_dict(), out / "benchmark.json"),
                 "csv": write_csv(self.rows, out / "benchmark.csv", columns=cols),
                 "markdown": atomic_write_text(out / "benchmark.md", self.to_markdown() + "\n")}
        if plot and any(r["ratio"] is not None for r in self.rows):
            from ase_surftune.evaluation.plots import plot_benchmark

            paths["figure"] = plot_benchmark(self, out / "benchmark.png")
        return paths
