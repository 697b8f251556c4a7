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

import numpy as np

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
        _ratio_columns(row, "batch", cb, it.get("calibration_batch_energy"))
        k = it.get("uncertainty_scale") or {}
        row["k_forces"], row["k_energy"] = k.get("forces"), k.get("energy")
        h = it.get("holdout") or {}
        row["holdout_force_mae"] = h.get("force_mae")
        row["holdout_spearman"] = (h.get("calibration") or {}).get("spearman")
        _ratio_columns(row, "holdout", h.get("calibration"), h.get("calibration_energy"))
        row["within_reference"] = it.get("within_reference")
        row["stop"] = it.get("stop")
        rows.append(row)
    return rows


def _ratio_columns(row: dict[str, Any], prefix: str, forces: dict[str, Any] | None,
                   energy: dict[str, Any] | None) -> None:
    """RMS error/uncertainty of forces and energy, raw and scaled (None: n/a)."""
    for q, c in (("force", forces), ("energy", energy)):
        c = c or {}
        row[f"{prefix}_{q}_err_over_unc"] = c.get("rms_error_over_uncertainty")
        row[f"{prefix}_{q}_err_over_unc_scaled"] = (c.get("scaled") or {}).get(
            "rms_error_over_uncertainty")


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
        parts.append(f"k_F {f(row.get('k_forces'), 3)}")
    return ", ".join(parts)


def write_report(state: dict[str, Any], out: Path, cfg: ActiveConfig) -> list[dict[str, Any]]:
    """Write report.json/report.csv/selected.csv and the plots; returns the rows."""
    from ase_surftune.evaluation.tables import write_csv, write_json

    rows = report_rows(state, cfg)
    chosen = []
    scale = {"forces": None, "energy": None}
    for it in state["iterations"]:
        unc = it.get("uncertainty")
        err = it.get("batch_force_error") or []
        for k, j in enumerate(it.get("selected") or []):
            row = {"iteration": it["iteration"], "candidate": j,
                   "source": it["sources"][k], "reason": it["reasons"][k]}
            for q, key in (("force", "forces"), ("energy", "energy")):
                u = unc[key][j] if unc else None
                row[f"{q}_uncertainty"] = u
                # scaled by the k of the committee that predicted it (earlier batches)
                row[f"{q}_uncertainty_scaled"] = (u * scale[key] if u is not None
                                                  and scale[key] else None)
            row["true_force_error"] = err[k] if k < len(err) else None
            chosen.append(row)
        scale = it.get("uncertainty_scale") or scale
    summary = {"status": state["status"], "n_labels": state["n_labels"],
               "budget": cfg.budget, "tolerance": cfg.tolerance, "selection": cfg.selection,
               "targets": cfg.targets, "labeller": cfg.labeller,
               "reference": (state.get("reference") or {}).get("properties", {}).get("values"),
               "labels_to_reference": _labels_to_reference(rows, cfg),
               "calibration_all_batches": _pooled(state),
               "uncertainty_scale": _last_scale(state),
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


def _last_scale(state: dict[str, Any]) -> dict[str, Any] | None:
    """The latest k (forces, energy): what to multiply the last committee's spread by."""
    for it in reversed(state["iterations"]):
        if it.get("uncertainty_scale"):
            return it["uncertainty_scale"]
    return None


def _pooled(state: dict[str, Any]) -> dict[str, Any] | None:
    """Calibration over every labelled batch that had a committee prediction; ``scaled``:
    each batch's spread times the k fitted on the batches before it (out of sample;
    batches with no earlier k are left out of it, ``n_scaled`` says how many remain)."""
    from ase_surftune.active.calibration import calibration, error_ratios

    u, e, us, es = [], [], [], []
    k = None
    for it in state["iterations"]:
        if it.get("batch_uncertainty"):
            u += it["batch_uncertainty"]
            e += it["batch_force_error"]
            if k:
                us += [k * x for x in it["batch_uncertainty"]]
                es += it["batch_force_error"]
        k = (it.get("uncertainty_scale") or {}).get("forces") or k
    if not u:
        return None
    out = calibration(u, e)
    out["scaled"] = error_ratios(np.asarray(us), np.asarray(es)) if us else None
    out["n_scaled"] = len(us)
    return out


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
        if ref:  # the tolerance band around the reference; without one the stop is on
            # the change between iterations, which a band around the start would misstate
            ax.axhspan(1 - cfg.tolerance, 1 + cfg.tolerance, color="0.9", zorder=0,
                       label=f"±{cfg.tolerance:.0%} of the reference")
        ax.set_xlabel("labels used")
        ax.set_ylabel("target / reference" if ref else "target / starting value")
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_writer(out / "progress.png", "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
        plt.close(fig)
    _calibration_plot(state, out)


def _calibration_plot(state: dict[str, Any], out: Path) -> None:
    """Force error vs committee spread, raw (left) and scaled by k (right): each batch
    with the k of the batches before it, the held-out set with the last committee's k."""
    import matplotlib.pyplot as plt

    from ase_surftune.core.io import atomic_writer

    pts, k = [], None
    for it in state["iterations"]:
        if it.get("batch_uncertainty"):
            pts.append((f"batch {it['iteration']} (before labelling)",
                        it["batch_uncertainty"], it["batch_force_error"], k, "o"))
        k = (it.get("uncertainty_scale") or {}).get("forces") or k
    hold = [it for it in state["iterations"] if (it.get("holdout") or {}).get("uncertainty")]
    if hold:
        h = hold[-1]["holdout"]
        pts.append((f"held out, model {hold[-1]['iteration']}", h["uncertainty"],
                    h["force_error"], (h.get("calibration") or {}).get("scale"), "x"))
    if not pts:
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, scaled in zip(axes, (False, True)):
        lim = 0.0
        for c, (name, u, e, kk, mk) in enumerate(pts):
            if scaled and not kk:
                continue
            x = np.asarray(u) * (kk if scaled else 1.0)  # one colour per set in both panels
            ax.scatter(x, e, s=14 if mk == "x" else 18, marker=mk, label=name, c=f"C{c % 10}")
            lim = max(lim, float(x.max()), float(max(e)))
        ax.plot([0, lim * 1.05], [0, lim * 1.05], "k:", lw=0.8)
        ax.set_xlabel("k x committee force uncertainty (eV/Å)" if scaled
                      else "committee force uncertainty (eV/Å)")
        ax.set_title("scaled by k (fitted on earlier batches)" if scaled else "raw",
                     fontsize=9)
        if lim:
            ax.legend(fontsize=6)
    axes[0].set_ylabel("true force error, RMS (eV/Å)")
    fig.tight_layout()
    with atomic_writer(out / "calibration.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
