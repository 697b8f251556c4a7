"""Matplotlib (Agg) plots for the property workflows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


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


def plot_phonons(path: str | Path, distances: list[np.ndarray], frequencies: list[np.ndarray],
                 labels: list[tuple[float, str]], dos_freq: np.ndarray | None,
                 dos: np.ndarray | None, title: str = "") -> str:
    """Phonon bands (THz) along the path segments, with the total DOS alongside."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True,
                             gridspec_kw={"width_ratios": [3, 1]})
    ax = axes[0]
    for d, f in zip(distances, frequencies):
        ax.plot(d, f, "-", color="C0", lw=1)
    for x, _ in labels:
        ax.axvline(x, color="k", lw=0.5)
    ax.axhline(0, color="k", lw=0.5, ls=":")
    ax.set_xticks([x for x, _ in labels])
    ax.set_xticklabels([lab for _, lab in labels])
    if distances:
        ax.set_xlim(distances[0][0], distances[-1][-1])
    ax.set_ylabel("frequency (THz)")
    if title:
        ax.set_title(title)
    if dos_freq is not None and dos is not None:
        axes[1].plot(dos, dos_freq, color="C0")
        axes[1].set_xlabel("DOS")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
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
