"""Forgetting at the property level: what fine-tuning did to the physics a head knew.

For each element of the training data (that has a bulk crystal) and for every head,
before (the base model's head it started from) and after fine-tuning:

* equilibrium lattice constant ``a`` (Å) and bulk modulus ``B`` (GPa) from a
  Birch–Murnaghan fit (:class:`ase.eos.EquationOfState`) of the conventional cell over
  ±``eos_range`` in volume;
* surface energy γ (J/m²) of the low-index facets — fcc (111), (100), (110); bcc (110),
  (100), (111); hcp (0001) — built by :mod:`ase.build` at each head's *own* lattice
  constant and scored by :func:`ase_surftune.properties.surface.slab_surface_energy`
  against the same head's bulk energy;
* vacancy formation energy E_f (eV) = E(N−1) − (N−1)/N·E(N) in the 2×2×2 conventional
  supercell at the head's own lattice constant.

Slabs and vacancy cells are unrelaxed unless ``relax`` is set (then atoms relax at fixed
cell with :func:`ase_surftune.properties.relax.relax`). Every change larger than
``threshold_percent`` (default 5 %) is flagged in the summary line, the JSON
(``flags``) and the figure (red bars).

The error level (bulk E/F errors per head) is computed inside every fine-tuning run
(:mod:`ase_surftune.training.forgetting`); :func:`report_run` adds the property level
to it and rewrites ``forgetting.json`` and ``forgetting.png`` in the run folder.
``surftune finetune`` calls it after training.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from ase_surftune.training.forgetting import ForgettingOptions, percent_change

if TYPE_CHECKING:  # pragma: no cover
    from ase.calculators.calculator import BaseCalculator

    from ase_surftune.training.api import FinetuneResult

__all__ = ["LOW_INDEX_FACETS", "element_properties", "compare_properties",
           "property_forgetting", "report_run", "plot_forgetting"]

log = logging.getLogger(__name__)

#: low-index facets per lattice (ASE reference-state symmetry)
LOW_INDEX_FACETS: dict[str, tuple[str, ...]] = {
    "fcc": ("111", "100", "110"), "bcc": ("110", "100", "111"), "hcp": ("0001",)}
#: vacuum (Å) on each side of the facet slabs
_VACUUM = 8.0


def _lattice(symbol: str) -> str | None:
    from ase.data import atomic_numbers, reference_states

    st = reference_states[atomic_numbers[symbol]]
    return None if st is None else st.get("symmetry")


def _energy(atoms: Atoms, calc: BaseCalculator) -> float:
    a = atoms.copy()
    a.calc = calc
    return float(a.get_potential_energy())


def _eos(calc: BaseCalculator, symbol: str, points: int, vrange: float
         ) -> tuple[Atoms | None, dict[str, float | None]]:
    """Conventional cell at the fitted equilibrium, and a (Å), B (GPa), e0 (eV/atom)."""
    from ase.build import bulk
    from ase.eos import EquationOfState
    from ase.units import GPa

    from ase_surftune.training.replay import ground_state_bulk

    try:
        at = bulk(symbol, cubic=True)
    except (ValueError, KeyError, RuntimeError, TypeError, AssertionError):
        at = ground_state_bulk(symbol)
    v_ref, a_ref = at.get_volume(), float(at.cell.lengths()[0])
    vols, energies = [], []
    for s in np.linspace(1 - vrange, 1 + vrange, points) ** (1 / 3):
        b = at.copy()
        b.set_cell(at.cell.array * s, scale_atoms=True)
        vols.append(b.get_volume())
        energies.append(_energy(b, calc))
    none = {"a": None, "B_GPa": None, "e0_per_atom": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v0, e0, b0 = EquationOfState(vols, energies, eos="birchmurnaghan").fit()
    except Exception as exc:  # noqa: BLE001  (no minimum in range, failed fit)
        log.warning("EOS fit of %s failed: %s; a, B, γ and E_vac not reported", symbol, exc)
        return None, none
    if not (np.isfinite(v0) and (1 - 2 * vrange) * v_ref < v0 < (1 + 2 * vrange) * v_ref
            and np.isfinite(b0)):
        log.warning("EOS of %s: no minimum near the reference volume (v0 = %.3g Å³ vs "
                    "%.3g); a, B, γ and E_vac not reported", symbol, v0, v_ref)
        return None, none
    eq = at.copy()
    eq.set_cell(at.cell.array * (v0 / v_ref) ** (1 / 3), scale_atoms=True)
    return eq, {"a": float(a_ref * (v0 / v_ref) ** (1 / 3)), "B_GPa": float(b0 / GPa),
                "e0_per_atom": float(e0 / len(at))}


def _slab(symbol: str, lattice: str, facet: str, a: float, c_over_a: float | None,
          layers: int) -> Atoms:
    from ase import build

    size = (1, 1, layers)
    if lattice == "hcp":
        return build.hcp0001(symbol, size=size, a=a, c=a * (c_over_a or np.sqrt(8 / 3)),
                             vacuum=_VACUUM, periodic=True)
    fn = getattr(build, f"{lattice}{facet}")
    return fn(symbol, size=size, a=a, vacuum=_VACUUM, periodic=True)


def element_properties(calc: BaseCalculator, symbol: str,
                       options: ForgettingOptions | None = None) -> dict[str, float | None]:
    """a (Å), B (GPa), ``gamma_<hkl>`` (J/m²) and ``E_vac`` (eV) of ``symbol`` with ``calc``.

    Values that cannot be computed (no EOS minimum, a lattice without low-index slabs
    here) are None.
    """
    from ase_surftune.properties.surface import slab_surface_energy

    o = options or ForgettingOptions()
    lattice = _lattice(symbol)
    eq, out = _eos(calc, symbol, o.eos_points, o.eos_range)
    facets = tuple(o.facets) if o.facets else LOW_INDEX_FACETS.get(lattice or "", ())
    if eq is None:
        out.update({f"gamma_{f}": None for f in facets})
        if o.vacancy:
            out["E_vac"] = None
        return out
    e_bulk = out["e0_per_atom"]
    cell = eq.cell.lengths()
    for f in facets:
        key = f"gamma_{f}"
        try:
            slab = _slab(symbol, lattice or "", f, out["a"],
                         cell[2] / cell[0] if lattice == "hcp" else None, o.slab_layers)
        except AttributeError:
            log.warning("no %s(%s) slab builder for %s; γ not reported", lattice, f, symbol)
            out[key] = None
            continue
        r = slab_surface_energy(slab, calc, e_bulk, relax_slab=o.relax,
                                fix_bottom_layers=0)
        out[key] = float(r.gamma)
    if o.vacancy:
        sc = eq.repeat(2 if len(eq) >= 2 else 3)
        e_full = _energy(sc, calc)
        vac = sc.copy()
        del vac[0]
        if o.relax:
            from ase_surftune.properties.relax import relax

            vac.calc = calc
            e_vac = float(relax(vac, calc, fmax=0.02, steps=200).energy)
        else:
            e_vac = _energy(vac, calc)
        n = len(sc)
        out["E_vac"] = float(e_vac - (n - 1) / n * e_full)
    return out


def compare_properties(before: dict[str, float | None], after: dict[str, float | None],
                       threshold_percent: float) -> dict[str, Any]:
    """``{prop: {before, after, change_percent, flagged}}`` for the keys of ``after``."""
    out = {}
    for k, v in after.items():
        if k == "e0_per_atom":  # an absolute energy: depends on each head's reference
            continue
        b = before.get(k)
        pct = percent_change(b, v)
        out[k] = {"before": b, "after": v, "change_percent": pct,
                  "flagged": pct is not None and abs(pct) > threshold_percent}
    return out


def _fmt_pct(p: float) -> str:
    return f"{p:+.1f} %".replace("-", "−")


def property_forgetting(before: dict[str, BaseCalculator], after: dict[str, BaseCalculator],
                        head_pairs: dict[str, str], elements: Sequence[str],
                        options: ForgettingOptions | None = None) -> dict[str, Any]:
    """Property-level forgetting of every head.

    Args:
        before: ``{base head: calculator of the original model's head}``.
        after: ``{fine-tuned head: calculator}``.
        head_pairs: ``{fine-tuned head: base head it started from}``.
        elements: elements of the training data (those without a bulk crystal are skipped).
        options: :class:`ForgettingOptions` (``threshold_percent``, EOS points, facets...).

    Returns:
        ``{"properties": {head: {element: {prop: {before, after, change_percent,
        flagged}}}}, "flags": [...], "summary": "..."}``.
    """
    from ase_surftune.training.replay import bulk_elements

    o = options or ForgettingOptions()
    syms = bulk_elements(sorted(set(elements)))
    cache: dict[str, dict[str, dict]] = {}
    props: dict[str, Any] = {}
    flags: list[str] = []
    for head, base_head in head_pairs.items():
        if base_head not in cache:
            cache[base_head] = {s: element_properties(before[base_head], s, o) for s in syms}
        props[head] = {"started_from": base_head}
        for s in syms:
            cmp = compare_properties(cache[base_head][s],
                                     element_properties(after[head], s, o),
                                     o.threshold_percent)
            props[head][s] = cmp
            flags += [f"head {head}: {k}({s}) {_fmt_pct(v['change_percent'])}"
                      for k, v in cmp.items() if v["flagged"]]
    if flags:
        summary = (f"FLAG: {len(flags)} property change(s) > {o.threshold_percent:g} %: "
                   + ", ".join(flags))
    else:
        summary = (f"properties (a, B, γ, E_vac) of {', '.join(syms) or 'no element'} "
                   f"within {o.threshold_percent:g} % for every head")
    return {"properties": props, "flags": flags, "property_summary": summary,
            "property_settings": {"relaxed": o.relax, "eos_range": o.eos_range,
                                  "slab_layers": o.slab_layers, "vacuum_A": _VACUUM}}


def plot_forgetting(report: dict[str, Any], path: str | Path) -> Path | None:
    """Bar chart of every property change (%) per head, ±threshold band, flagged in red."""
    import io

    from ase_surftune.core.io import atomic_write_bytes
    from ase_surftune.evaluation.plots import _plt

    rows = []
    for head, per in report.get("properties", {}).items():
        for sym, cmp in per.items():
            if sym == "started_from":
                continue
            for k, v in cmp.items():
                if v["change_percent"] is not None:
                    rows.append((f"{head}: {k}({sym})", v["change_percent"], v["flagged"]))
    if not rows:
        return None
    thr = report.get("threshold_percent", 5.0)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.5))
    y = np.arange(len(rows))
    ax.barh(y, [r[1] for r in rows], color=["C3" if r[2] else "C0" for r in rows])
    ax.axvspan(-thr, thr, color="0.9", zorder=0, label=f"±{thr:g} %")
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("change after fine-tuning (%)")
    ax.set_title("forgetting: property changes per head (red: flagged)", fontsize=9)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def report_run(result: FinetuneResult, options: ForgettingOptions | None = None
               ) -> dict[str, Any]:
    """Add the property level to a fine-tuning run's forgetting report.

    Loads the original model (``config.model``) and the run's bundle, measures every
    head before/after (:func:`property_forgetting`), merges the result into
    ``result.metrics["forgetting"]`` and rewrites ``forgetting.json`` and
    ``forgetting.png`` in the run folder (atomically).
    """
    from ase_surftune.core.io import atomic_write_json
    from ase_surftune.models.backends import load_model
    from ase_surftune.models.calculator import SurfTuneCalculator

    cfg = result.config
    o = options or (cfg.forgetting if cfg is not None else ForgettingOptions())
    rep = dict(result.metrics.get("forgetting") or {})
    bundle0 = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    bundle = result.load_bundle(device=cfg.device)
    head_pairs = {h: v["started_from"] for h, v in rep.get("heads", {}).items()} or \
        {bundle.resolve_head(None): bundle0.resolve_head(None)}
    elements = sorted(bundle.element_counts(bundle.resolve_head(None)) or {})
    before = {b: SurfTuneCalculator(bundle0, head=b) for b in set(head_pairs.values())}
    after = {h: SurfTuneCalculator(bundle, head=h) for h in head_pairs}
    prop = property_forgetting(before, after, head_pairs, elements, o)
    err_summary = rep.get("error_summary", rep.get("summary"))
    err_flags = rep.get("error_flags", rep.get("flags", []))
    rep.update(prop)
    rep.update(threshold_percent=o.threshold_percent, error_summary=err_summary,
               error_flags=err_flags, flags=list(err_flags) + prop["flags"],
               summary="; ".join(x for x in (err_summary, prop["property_summary"]) if x))
    out = Path(result.output_dir)
    atomic_write_json(out / "forgetting.json", rep)
    if cfg is None or cfg.plot:
        plot_forgetting(rep, out / "forgetting.png")
    result.metrics["forgetting"] = rep
    return rep
