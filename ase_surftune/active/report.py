"""The active-learning report: one row per iteration (JSON, CSV), the chosen structures
and why (``selected.csv``), target convergence (``progress.png``) and the calibration of
the committee's force uncertainty against the true force error (``calibration.png``).

Values that cannot be computed are ``None`` in JSON, empty in CSV and "n/a" in text: the
first batch has no committee (nothing labelled yet), so no calibration; ``random`` mode
builds no committee unless ``committee.in_random_mode``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase_surftune.active.config import ActiveConfig

__all__ = ["format_row", "report_rows", "write_report"]


def report_rows(state: dict[str, Any], cfg: ActiveConfig) -> list[dict[str, Any]]:
    """One row per measured model: iteration 0 (the starting model), then each iteration."""
    rows: list[dict[str, Any]] = []
    ref = (state.get("reference") or {}).get("properties", {}).get("values", {})

    def targets(values: dict[str, Any], row: dict[str, Any]) -> None:
        for t in cfg.targets:
            row[t] = values.get(t)
            if ref.get(t):
                row[f"{t}_ratio"] = None if values.get(t) is None else values[t] / ref[t]

    if "baseline" in state:
        b = state["baseline"]
        row = {"iteration": 0, "n_labels": 0, "batch": 0, "label_time_s": 0.0}
        targets(b["properties"]["values"], row)
        row["holdout_force_mae"] = (b.get("holdout") or {}).get("force_mae")
        rows.append(row)
    cum_t, n = 0.0, 0
    for it in state["iterations"]:
        if "label" in it["done"]:
            cum_t += float(it.get("label_time_s", 0.0))
            n += int(it.get("n_labelled", 0))
        if "measure" not in it["done"]:
            continue
        row = {"iteration": it["iteration"], "n_labels": n, "batch": it.get("n_labelled"),
               "label_time_s": round(cum_t, 2), "n_candidates": it.get("n_candidates")}
        targets(it["properties"]["values"], row)
        for t, c in (it.get("changes") or {}).items():
            row[f"{t}_change"] = c
        cb = it.get("calibration_batch") or {}
        row["batch_spearman"] = cb.get("spearman")
        row["batch_force_mae_before"] = it.get("batch_force_mae_before")
        h = it.get("holdout") or {}
        row["holdout_force_mae"] = h.get("force_mae")
        row["holdout_spearman"] = (h.get("calibration") or {}).get("spearman")
        row["within_reference"] = it.get("within_reference")
        row["stop"] = it.get("stop")
        rows.append(row)
    return rows


def format_row(row: dict[str, Any], targets: list[str]) -> str:
    """One printable line (``n/a`` for missing values)."""
    def f(v: Any, d: int = 4) -> str:
        return "n/a" if v is None else (f"{v:.{d}g}" if isinstance(v, float) else str(v))

    parts = [f"iter {row['iteration']}", f"labels {row['n_labels']}"]
    parts += [f"{t} {f(row.get(t))}" + (f" (Δ {f(row.get(f'{t}_change'), 2)})"
                                         if row["iteration"] else "") for t in targets]
    parts.append(f"holdout F-MAE {f(row.get('holdout_force_mae'), 3)}")
    if row["iteration"]:
        parts.append(f"Spearman(batch) {f(row.get('batch_spearman'), 2)}")
    return ", ".join(parts)


def write_report(state: dict[str, Any], out: Path, cfg: ActiveConfig) -> list[dict[str, Any]]:
    """Write report.json/report.csv/selected.csv and the plots; returns the rows."""
    from ase_surftune.evaluation.tables import write_csv, write_json

    rows = report_rows(state, cfg)
    chosen = []
    for it in state["iterations"]:
        for k, j in enumerate(it.get("selected") or []):
            unc = it.get("uncertainty")
            err = it.get("batch_force_error") or []
            chosen.append({"iteration": it["iteration"], "candidate": j,
                           "source": it["sources"][k], "reason": it["reasons"][k],
                           "force_uncertainty": unc["forces"][j] if unc else None,
                           "energy_uncertainty": unc["energy"][j] if unc else None,
                           "true_force_error": err[k] if k < len(err) else None})
    summary = {"status": state["status"], "n_labels": state["n_labels"],
               "budget": cfg.budget, "tolerance": cfg.tolerance, "selection": cfg.selection,
               "targets": cfg.targets, "labeller": cfg.labeller,
               "reference": (state.get("reference") or {}).get("properties", {}).get("values"),
               "labels_to_reference": _labels_to_reference(rows, cfg),
               "calibration_all_batches": _pooled(state),
               "iterations": rows, "selected": chosen}
    write_json(summary, out / "report.json")
    write_csv(rows, out / "report.csv")
    write_csv(chosen, out / "selected.csv")
    _plots(state, rows, out, cfg)
    return rows


def _labels_to_reference(rows: list[dict[str, Any]], cfg: ActiveConfig) -> int | None:
    """Labels at the first iteration whose targets are all within tolerance of the
    labeller's own values (None: not reached, or no reference measured)."""
    for r in rows:
        if r["iteration"] and r.get("within_reference"):
            return int(r["n_labels"])
    return None


def _pooled(state: dict[str, Any]) -> dict[str, Any] | None:
    """Calibration over every labelled batch that had a committee prediction."""
    from ase_surftune.active.committee import calibration

    u, e = [], []
    for it in state["iterations"]:
        if it.get("batch_uncertainty"):
            u += it["batch_uncertainty"]
            e += it["batch_force_error"]
    return calibration(u, e) if u else None


def _plots(state: dict[str, Any], rows: list[dict[str, Any]], out: Path,
           cfg: ActiveConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ase_surftune.core.io import atomic_writer

    if rows:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ref = (state.get("reference") or {}).get("properties", {}).get("values", {})
        for t in cfg.targets:
            xs = [r["n_labels"] for r in rows if r.get(t) is not None]
            base = ref.get(t) or next((r[t] for r in rows if r.get(t)), None)
            if not xs or not base:
                continue
            ax.plot(xs, [r[t] / base for r in rows if r.get(t) is not None], "o-", label=t)
        ax.axhspan(1 - cfg.tolerance, 1 + cfg.tolerance, color="0.9", zorder=0)
        ax.set_xlabel("labels used")
        ax.set_ylabel("target / reference" if ref else "target / starting value")
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_writer(out / "progress.png", "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
        plt.close(fig)
    pts = [(it["iteration"], it["batch_uncertainty"], it["batch_force_error"])
           for it in state["iterations"] if it.get("batch_uncertainty")]
    hold = [(it["iteration"], it["holdout"]["uncertainty"], it["holdout"]["force_error"])
            for it in state["iterations"] if (it.get("holdout") or {}).get("uncertainty")]
    if pts or hold:
        fig, ax = plt.subplots(figsize=(5, 4))
        for k, u, e in pts:
            ax.scatter(u, e, s=18, label=f"batch {k} (before labelling)")
        for k, u, e in hold[-1:]:
            ax.scatter(u, e, s=12, marker="x", c="k", label=f"held out, model {k}")
        lim = max(max(max(u), max(e)) for _, u, e in pts + hold) * 1.05
        ax.plot([0, lim], [0, lim], "k:", lw=0.8)
        ax.set_xlabel("committee force uncertainty (eV/Å)")
        ax.set_ylabel("true force error, RMS (eV/Å)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_writer(out / "calibration.png", "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
        plt.close(fig)
