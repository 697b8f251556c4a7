"""Wulff shapes (pymatgen) from surface energies γ in J/m²."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase_surftune.properties.facets import Miller, facet_key, parse_facet


def wulff_title(name: str, gamma: dict[str, float]) -> str:
    """Plot title: the material and γ (J/m²) per facet, lowest first."""
    parts = [f"({k.replace(',', ' ')}) {v:.3f}" for k, v in sorted(gamma.items(),
                                                                   key=lambda kv: kv[1])]
    return f"{name}: γ in J/m²: " + ", ".join(parts)


def wulff_shape(lattice, gamma: dict[str, float] | dict[Miller, float], *,
                plot_dir: str | Path | None = None, name: str = "wulff",
                title: str | None = None) -> dict[str, Any]:
    """Wulff shape from γ (J/m²) per Miller index via pymatgen's ``WulffShape``.

    Returns area-weighted γ (J/m²), shape factor, anisotropy, area fractions and the
    plot path (if ``plot_dir``: ``<plot_dir>/<name>_wulff.png``, titled with ``title``
    (default ``name``) and the γ values, with a J/m² colour bar).
    """
    from pymatgen.analysis.wulff import WulffShape

    millers, energies = [], []
    for k, v in gamma.items():
        millers.append(parse_facet(k))
        energies.append(float(v))
    ws = WulffShape(lattice, millers, energies)
    out: dict[str, Any] = {
        "weighted_surface_energy": float(ws.weighted_surface_energy),
        "shape_factor": float(ws.shape_factor),
        "anisotropy": float(ws.anisotropy),
        "area_fraction": {facet_key(k): float(v) for k, v in ws.area_fraction_dict.items()},
        "plot": None,
    }
    if plot_dir is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ax = ws.get_plot(bar_on=len(set(energies)) > 1, units_in_JPERM2=True)
        out["plot_title"] = wulff_title(title or name,
                                        {facet_key(m): e for m, e in zip(millers, energies)})
        ax.figure.suptitle(out["plot_title"], fontsize=9)
        path = Path(plot_dir) / f"{name}_wulff.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(path, dpi=120)
        plt.close(ax.figure)
        out["plot"] = str(path)
    return out

