"""Output helpers: Markdown tables, CSV and JSON writers (atomic, NaN-safe)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["markdown_table", "fmt", "write_csv", "write_json", "jsonable"]


def jsonable(obj: Any) -> Any:
    """Numpy values/arrays, paths and objects with ``to_dict`` as JSON types; NaN → None."""
    from ase_surftune.core.io import to_jsonable

    return to_jsonable(obj)


def _atomic_write(path: Path, text: str) -> Path:
    from ase_surftune.core.io import atomic_write_text

    return atomic_write_text(path, text)


def write_json(data: Any, path: str | Path) -> Path:
    """Indented JSON, written through a temporary file and a rename."""
    return _atomic_write(Path(path), json.dumps(jsonable(data), indent=2) + "\n")


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path,
              columns: Sequence[str] | None = None) -> Path:
    """Rows of dicts as CSV (columns: given, else the union in first-seen order)."""
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if jsonable(r.get(k)) is None else jsonable(r.get(k)))
                    for k in columns})
    return _atomic_write(Path(path), buf.getvalue())


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: numbers to ``digits`` significant-ish decimals, None/NaN as '–'."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return "–"
        if v != 0 and (abs(v) >= 1e4 or abs(v) < 10 ** -(digits - 1)):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]],
                   columns: Sequence[tuple[str, str, float | None]], digits: int = 4) -> str:
    """A GitHub Markdown table.

    Args:
        rows: dicts of values.
        columns: ``(key, header, factor)``; numeric values are multiplied by ``factor``
            when it is not None (e.g. 1000 for eV → meV).
    """
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, factor in columns:
            v = r.get(key)
            if factor is not None and isinstance(v, (int, float, np.number)) and v is not None \
                    and not isinstance(v, bool):
                v = float(v) * factor
            cells.append(fmt(v, digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
