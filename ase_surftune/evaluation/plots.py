"""Figures (matplotlib, Agg backend): parity plots with the softening slope, the property
ratio figure of ``compare`` and learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# The reports are typed ``Any`` on purpose: their modules import this one to draw, and
# importing them back (even for type checking) would make an import cycle. Each function
# names the report class it draws in its docstring.
ModelEvaluation = ComparisonReport = BenchmarkReport = LearningCurveResult = Any

__all__ = [
    "plot_benchmark",
    "plot_comparison",
    "plot_learning_curve",
    "plot_parity",
    "ratio_limits",
]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    from ase_surftune.core.io import atomic_writer

    p = Path(path)
    with atomic_writer(p, "wb") as fh:
        fig.savefig(fh, format=p.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    _plt().close(fig)
    return p


def plot_parity(ev: ModelEvaluation, path: str | Path) -> Path:
    """Energy-per-atom and force-component parity plots, coloured by group, with the
    fitted softening slope s (y = s·x through the origin) drawn on the force panel."""
    plt = _plt()
    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(10, 4.5))
    p = ev.parity
    groups = list(dict.fromkeys(p["energy_groups"].tolist()))
    for k, g in enumerate(groups):
        me = p["energy_groups"] == g
        mf = p["force_groups"] == g
        ax_e.scatter(p["energy_ref"][me], p["energy_model"][me], s=12, color=f"C{k % 10}",
                     label=g)
        ax_f.scatter(p["forces_ref"][mf], p["forces_model"][mf], s=4, alpha=0.5,
                     color=f"C{k % 10}", label=g)
    for ax, x, y in ((ax_e, p["energy_ref"], p["energy_model"]),
                     (ax_f, p["forces_ref"], p["forces_model"])):
        if len(x):
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1, label="y = x")
    s = ev.overall.softening_scale
    if s is not None and len(p["forces_ref"]):
        xr = np.array([p["forces_ref"].min(), p["forces_ref"].max()])
        ax_f.plot(xr, s * xr, "r-", lw=1.5, label=f"slope s = {s:.3f}")
    ax_e.set_xlabel("reference energy (eV/atom)")
    ax_e.set_ylabel("model energy, aligned (eV/atom)")
    ax_e.set_title(f"E MAE {1000 * ev.overall.energy_mae_per_atom:.1f} meV/atom")
    ax_f.set_xlabel("reference force component (eV/Å)")
    ax_f.set_ylabel("model force component (eV/Å)")
    ax_f.set_title(f"F MAE {ev.overall.forces_mae:.3f} eV/Å")
    ax_f.legend(fontsize=7, loc="upper left")
    if len(groups) > 1:
        ax_e.legend(fontsize=7, loc="upper left")
    fig.suptitle(ev.model)
    return _save(fig, path)


def ratio_limits(values: Any, pad: float = 0.05) -> tuple[float, float]:
    """y-limits around the finite ``values`` and the ideal ratio 1 (not from 0), so that
    the 0.6–1.05 range where softening shows is not squashed."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)] + [1.0], float)
    lo, hi = float(v.min()), float(v.max())
    span = max(hi - lo, 0.02)
    return lo - pad * span - 0.02, hi + pad * span + 0.02


def comparison_keys(report: ComparisonReport) -> list[str]:
    """The properties with at least one model ratio: those the figure shows."""
    models = report.model_names()
    return [k for k in report.property_keys()
            if any(report.ratio(k, m) is not None for m in models)]


def plot_comparison(report: ComparisonReport, path: str | Path) -> Path:
    """Model/reference ratio per property (one bar per model, drawn from the ideal ratio
    1, a dot at the value, the ratio written next to it). Properties without any ratio
    (e.g. missing from the reference) get no slot; the y-axis spans the data and 1, not 0."""
    plt = _plt()
    models = report.model_names()
    keys = comparison_keys(report)
    n_m = max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * max(len(keys), 1) * (1 + 0.3 * n_m)), 4.5))
    x = np.arange(len(keys))
    width = 0.8 / n_m
    lo, hi = ratio_limits([report.ratio(k, m) for k in keys for m in models])
    for k, m in enumerate(models):
        ratios = [report.ratio(key, m) for key in keys]
        vals = np.asarray([np.nan if r is None else r for r in ratios], float)
        xs = x + (k - (n_m - 1) / 2) * width
        # bars grow from the ideal ratio 1 (down = softer): honest on an axis not from 0;
        # the dot marks the value, so a ratio of exactly 1 stays visible
        ax.bar(xs, vals - 1.0, width * 0.9, bottom=1.0, color=f"C{k % 10}", alpha=0.6)
        ax.scatter(xs, vals, color=f"C{k % 10}", s=18, zorder=3, label=m)
        for xi, r in zip(xs, ratios):
            if r is not None and np.isfinite(r):
                ax.annotate(f"{r:.2f}", (xi, r), xytext=(0, 4 if r >= 1 else -10),
                            textcoords="offset points", ha="center", fontsize=7)
    ax.axhline(1.0, color="k", ls="--", lw=1, label=f"reference ({report.reference})")
    ax.set_ylim(lo, hi)
    ax.set_xticks(x)
    ax.set_xticklabels([report.labels.get(key, key) for key in keys], rotation=20, ha="right",
                       fontsize=8)
    ax.set_ylabel("model / reference")
    ax.set_title("Property-level softening: ratio to the reference")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_benchmark(report: BenchmarkReport, path: str | Path) -> Path:
    """Every row's ratio (value/reference) as a point, grouped by property and offset
    by model, with the median (bar) and the min–max spread (line) per property and
    model; the ideal ratio 1 dashed; y-range around the data."""
    plt = _plt()
    rows = [r for r in report.rows if r["ratio"] is not None and np.isfinite(r["ratio"])]
    props = list(dict.fromkeys(r["property"] for r in rows))
    models = report.models
    n_m = max(len(models), 1)
    width = 0.8 / n_m
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(props) * (1 + 0.4 * n_m)), 4.5))
    summary = {(s["model"], s["property"]): s for s in report.summary()}
    for k, m in enumerate(models):
        for i, prop in enumerate(props):
            rs = [r for r in rows if r["model"] == m and r["property"] == prop]
            if not rs:
                continue
            x0 = i + (k - (n_m - 1) / 2) * width
            jitter = np.linspace(-0.25, 0.25, len(rs)) * width if len(rs) > 1 else [0.0]
            ax.scatter(x0 + np.asarray(jitter), [r["ratio"] for r in rs], s=14, alpha=0.7,
                       color=f"C{k % 10}", label=m if i == 0 else None, zorder=3)
            s = summary[(m, prop)]
            ax.plot([x0, x0], [s["min"], s["max"]], color=f"C{k % 10}", lw=1, zorder=2)
            ax.plot([x0 - 0.4 * width, x0 + 0.4 * width], [s["median"]] * 2, color="k", lw=2,
                    zorder=4)
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_ylim(*ratio_limits([r["ratio"] for r in rows]))
    from ase_surftune.evaluation.reference_sets import PROPERTY_LABELS

    ax.set_xticks(np.arange(len(props)))
    counts = [sum(1 for r in rows if r["property"] == p) for p in props]
    ax.set_xticklabels([f"{PROPERTY_LABELS.get(p, p)}\n(n={n})" for p, n in zip(props, counts)],
                       fontsize=8)
    ax.set_ylabel("model / reference")
    ax.set_title(f"Benchmark against {Path(report.reference).name}: ratio per row, "
                 f"median (bar) and min–max", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_learning_curve(result: LearningCurveResult, path: str | Path) -> Path:
    """Test force MAE and softening scale against the number of training structures
    (log x), one line per strategy (mean over seeds, error bars = spread), zero-shot
    as a horizontal line."""
    plt = _plt()
    fig, (ax_f, ax_s) = plt.subplots(1, 2, figsize=(11, 4.5))
    summary = result.summary()
    for k, strat in enumerate(sorted({r["strategy"] for r in summary} - {"zero-shot"})):
        rows = sorted((r for r in summary if r["strategy"] == strat), key=lambda r: r["n_train"])
        n = [r["n_train"] for r in rows]
        for ax, key in ((ax_f, "forces_mae"), (ax_s, "softening_scale")):
            y = np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)
            err = np.array([0.0 if r.get(key + "_std") is None else r[key + "_std"]
                            for r in rows], dtype=float)
            ax.errorbar(n, y, yerr=err, marker="o", capsize=3, color=f"C{k % 10}", label=strat)
    for r in summary:
        if r["strategy"] == "zero-shot":
            ax_f.axhline(r["forces_mae"], color="gray", ls=":", label="zero-shot")
            if r["softening_scale"] is not None:
                ax_s.axhline(r["softening_scale"], color="gray", ls=":", label="zero-shot")
    ax_s.axhline(1.0, color="k", ls="--", lw=1)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ns = sorted({r["n_train"] for r in summary if r["strategy"] != "zero-shot"})
    for ax in (ax_f, ax_s):
        ax.set_xscale("log")
        if ns:
            ax.set_xticks(ns)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training structures N")
        ax.legend(fontsize=7)
    ax_f.set_ylabel("test force MAE (eV/Å)")
    ax_s.set_ylabel("test softening scale s")
    fig.suptitle(f"Learning curves: {result.model}")
    return _save(fig, path)
