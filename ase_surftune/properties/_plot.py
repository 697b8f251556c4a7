"""Matplotlib (Agg) plots for the property workflows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_mep(path: str | Path, s: Sequence[float], e: Sequence[float],
             s_fit: Sequence[float] | None = None, e_fit: Sequence[float] | None = None,
             title: str = "") -> str:
    """Minimum-energy path: energy (eV) vs reaction coordinate (Å)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if s_fit is not None and e_fit is not None:
        ax.plot(s_fit, e_fit, "-", color="C0")
    ax.plot(s, e, "o", color="C1")
    ax.set_xlabel("reaction coordinate (Å)")
    ax.set_ylabel("energy (eV)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def phonon_figure(curves: Sequence[tuple[str, Any]], title: str | None = None):
    """One figure: the phonon bands (THz) of every entry over each other, with their total
    DOS (states/THz) alongside.

    Args:
        curves: ``(label, result)`` pairs; a result has ``band_distances``,
            ``band_frequencies``, ``band_labels``, ``dos_frequencies``, ``dos`` and
            ``formula`` (a :class:`~ase_surftune.properties.PhononResult`). Put the
            reference first: the q-path ticks are taken from the first entry, and it is
            drawn in black under the models (C0, C1, … colours).
        title: default "<formula>: <label> vs <label> …".

    Returns the matplotlib Figure (Agg backend; the caller saves or closes it).
    """
    plt = _plt()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2), sharey=True,
                             gridspec_kw={"width_ratios": [3, 1]})
    ax, ax_dos = axes
    handles = []
    for i, (label, res) in enumerate(curves):
        is_ref = i == 0 and len(curves) > 1  # wide grey under the models
        style = ({"color": "0.6", "lw": 2.8} if is_ref else
                 {"color": f"C{i - (len(curves) > 1)}", "lw": 1.1})
        for d, f in zip(res.band_distances, res.band_frequencies):
            ax.plot(d, f, "-", **style)
        if len(res.dos) and len(res.dos_frequencies):
            ax_dos.plot(res.dos, res.dos_frequencies, **style)
        handles.append(Line2D([], [], label=label, **style))
    first = curves[0][1] if curves else None
    if first is not None and first.band_distances:
        ticks = first.band_labels
        for x, _ in ticks:
            ax.axvline(x, color="0.5", lw=0.5)
        ax.set_xticks([x for x, _ in ticks])
        ax.set_xticklabels([lab for _, lab in ticks])
        ax.set_xlim(first.band_distances[0][0], first.band_distances[-1][-1])
    ax.axhline(0, color="k", lw=0.5, ls=":")
    ax.set_ylabel("frequency (THz)")
    ax.set_xlabel("wave vector")
    ax_dos.set_xlabel("DOS (states/THz)")
    ax_dos.set_xlim(left=0)
    if handles:
        ax.legend(handles=handles, loc="best", fontsize=8)
    if title is None:
        formula = getattr(first, "formula", "") if first is not None else ""
        title = f"{formula}: " + " vs ".join(lab for lab, _ in curves)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_phonons(path: str | Path, curves: Sequence[tuple[str, Any]],
                 title: str | None = None) -> str:
    """Save :func:`phonon_figure` of ``curves`` as a PNG at ``path`` (atomically)."""
    from ase_surftune.core.io import atomic_writer

    plt = _plt()
    fig = phonon_figure(curves, title)
    try:
        with atomic_writer(path, "wb") as fh:
            fig.savefig(fh, dpi=120, format="png")
    finally:
        plt.close(fig)
    return str(path)


def plot_md(path: str | Path, time_fs: Sequence[float], temperature: Sequence[float],
            epot: Sequence[float], etot: Sequence[float]) -> str:
    """Temperature (K) and energies (eV) vs time (fs)."""
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    axes[0].plot(time_fs, temperature)
    axes[0].set_ylabel("T (K)")
    axes[1].plot(time_fs, epot, label="E_pot")
    axes[1].plot(time_fs, etot, label="E_tot")
    axes[1].set_ylabel("energy (eV)")
    axes[1].set_xlabel("time (fs)")
    axes[1].legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
