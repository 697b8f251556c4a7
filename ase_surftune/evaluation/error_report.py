"""Results of error evaluations: one model (:class:`ModelEvaluation`) and several
(:class:`EvaluationReport`, which writes JSON, CSV, a Markdown table and parity plots)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ase_surftune.core.io import atomic_write_text
from ase_surftune.evaluation.error_stats import STAT_FIELDS, ErrorStats

__all__ = ["ModelEvaluation", "EvaluationReport"]


@dataclass
class ModelEvaluation:
    """One model on one data set: overall and per-group :class:`ErrorStats`.

    ``parity`` holds the raw arrays for plots (not serialised): reference and model
    energies per atom (aligned), force components, and the group of each.
    """

    model: str
    overall: ErrorStats
    groups: dict[str, ErrorStats]
    alignment: dict[str, Any] | None
    high_force_quantile: float
    n_skipped_stress: int = 0
    wall_time_s: float | None = None
    parity: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: frames left out by ``max_force`` (``{"index", "source", "group", "max_force"}``)
    dropped_frames: list[dict[str, Any]] = field(default_factory=list)
    #: frames above ``max_force`` that were kept but flagged
    flagged_frames: list[dict[str, Any]] = field(default_factory=list)
    max_force: float | None = None

    @property
    def energy_reference(self) -> str:
        """Short label of where the energy reference came from (shown in every table)."""
        return str((self.alignment or {}).get("label", "none"))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "energy_reference": self.energy_reference,
                "overall": self.overall.to_dict(),
                "groups": {g: s.to_dict() for g, s in self.groups.items()},
                "alignment": self.alignment, "high_force_quantile": self.high_force_quantile,
                "max_force": self.max_force, "dropped_frames": self.dropped_frames,
                "flagged_frames": self.flagged_frames, "wall_time_s": self.wall_time_s}

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows (model, group, metrics...) — overall first, then each group."""
        ref = self.energy_reference
        out = [{"model": self.model, "group": "all", "energy_reference": ref,
                **self.overall.to_dict()}]
        out += [{"model": self.model, "group": g, "energy_reference": ref, **s.to_dict()}
                for g, s in self.groups.items()]
        return out

    def notes(self) -> list[str]:
        """Lines a reader must see next to the table: self-alignment, dropped frames."""
        out = []
        al = self.alignment or {}
        if al.get("warning"):
            out.append(f"{self.model}: {al['warning']}")
        if al.get("reason"):
            out.append(f"{self.model}: energy alignment: {al['reason']}")
        for kind, frames in (("dropped", self.dropped_frames),
                             ("flagged (kept)", self.flagged_frames)):
            for fr in frames:
                out.append(f"{self.model}: {kind} frame {fr['source']} (group {fr['group']}): "
                           f"max |F_ref| = {fr['max_force']:.2f} eV/Å > --max-force "
                           f"{self.max_force:g}")
        return out


@dataclass
class EvaluationReport:
    """Several models evaluated on the same data set."""

    models: list[ModelEvaluation]
    data: str | None = None
    group_key: str = "config_type"

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "group_key": self.group_key,
                "models": [m.to_dict() for m in self.models]}

    def rows(self) -> list[dict[str, Any]]:
        return [r for m in self.models for r in m.rows()]

    def to_markdown(self, groups: bool = True) -> str:
        """Markdown table (model, group, energy reference, n, energies three ways, force
        and stress MAE, softening scales) followed by the notes of every model."""
        from ase_surftune.evaluation.tables import markdown_table

        cols = [("model", "model", None), ("group", "group", None),
                ("energy_reference", "E ref", None), ("n_structures", "n", None),
                ("energy_mae_per_atom", "E MAE (meV/atom)", 1000.0),
                ("energy_rel_mae_per_atom", "E rel. MAE (meV/atom)", 1000.0),
                ("energy_form_mae_per_atom", "E form. MAE (meV/atom)", 1000.0),
                ("forces_mae", "F MAE (eV/Å)", None), ("forces_rmse", "F RMSE (eV/Å)", None),
                ("stress_mae", "σ MAE (meV/Å³)", 1000.0),
                ("softening_scale", "s (all)", None),
                ("softening_scale_band", "s (band)", None),
                ("softening_scale_frame_median", "s (frame median)", None),
                ("n_force_excluded", "F comps excluded", None),
                ("softening_scale_high_force", "s (high |F|)", None)]
        rows = []
        for r in self.rows():
            if not groups and r["group"] != "all":
                continue
            r = dict(r)
            r["n_force_excluded"] = r["n_force_excluded_high"] + r["n_force_excluded_low"]
            if r.get("softening_note"):
                r["softening_scale"] = r["softening_note"]
            rows.append(r)
        text = markdown_table(rows, cols)
        from ase_surftune.core.metrics import FORCE_BAND_MAX, FORCE_NOISE_FLOOR

        text += (f"\n\ns (band): components with {FORCE_NOISE_FLOOR:g} <= |F_ref| <= "
                 f"{FORCE_BAND_MAX:g} eV/Å. E ref: where the energy reference came from "
                 f"(stored = the model's own calibration, align-on = fitted on other "
                 f"frames, SELF-ALIGNED = fitted on the scored frames).")
        notes = [n for m in self.models for n in m.notes()]
        if notes:
            text += "\n\n" + "\n".join(f"- {n}" for n in notes)
        return text

    def write(self, output_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
        """Write ``evaluation.json``, ``evaluation.csv``, ``evaluation.md`` and parity plots."""
        from ase_surftune.evaluation.tables import write_csv, write_json

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": write_json(self.to_dict(), out / "evaluation.json"),
                 "csv": write_csv(self.rows(), out / "evaluation.csv",
                                  ["model", "group", "energy_reference", *STAT_FIELDS,
                                   "n_stress"])}
        atomic_write_text(out / "evaluation.md", self.to_markdown() + "\n")
        paths["markdown"] = out / "evaluation.md"
        if plots:
            from ase_surftune.evaluation.plots import plot_parity

            for i, m in enumerate(self.models):
                paths[f"parity_{i}"] = plot_parity(m, out / f"parity_{_safe(m.model)}.png")
        return paths


def _safe(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return keep.strip("._")[-60:] or "model"
