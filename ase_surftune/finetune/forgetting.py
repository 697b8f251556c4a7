"""Forgetting report: what fine-tuning did to the bulk chemistry the model knew.

Written by every fine-tuning run (``metrics["forgetting"]`` and ``forgetting.json``):

* **error level** — energy-per-atom and force errors of each head of the fine-tuned
  model on a held-out bulk set, before (the base model's head it started from) and
  after; and the target validation errors before/after.
  The bulk set is ``forgetting.bulk_file`` (reference labels, e.g. DFT or EMT) or, by
  default, strained/rattled ground-state crystals of the data's elements labelled by
  the *original* model — then "before" is zero by construction and the report gives
  the drift away from the original potential-energy surface;
* **property level** — equilibrium lattice constant and bulk modulus (Birch–Murnaghan
  EOS over ±``eos_range`` in volume) of each element's ground-state crystal, original
  vs every fine-tuned head;
* **summary** — one line, e.g. ``bulk force MAE +35.1 % (forgetting) [head Default];
  surface force MAE -62.0 % [head Default]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ase_surftune._io import atomic_write_json

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ase_surftune.bundle import Bundle

__all__ = ["ForgettingOptions", "forgetting_report", "bulk_reference_set", "bulk_errors",
           "eos_properties", "percent_change"]

log = logging.getLogger(__name__)

#: seed offset so the held-out bulk set never coincides with the replay pool
HOLDOUT_SEED_OFFSET = 7_777


class ForgettingOptions(BaseModel):
    """``forgetting:`` section of a fine-tuning config."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    bulk_file: str | None = None
    n_bulk: int = Field(8, ge=1)
    eos: bool = True
    eos_points: int = Field(7, ge=5)
    eos_range: float = Field(0.06, gt=0, lt=0.5)
    threshold_percent: float = Field(10.0, ge=0)


def percent_change(before: float | None, after: float | None) -> float | None:
    """100·(after − before)/before, or None when undefined (before ≈ 0)."""
    if before is None or after is None or abs(before) < 1e-12:
        return None
    return 100.0 * (after - before) / before


def bulk_reference_set(bundle0: Bundle, head: str, elements: Sequence[str],
                       options: ForgettingOptions, seed: int = 0) -> tuple[list[Atoms], str]:
    """The held-out bulk set and a description of its labels."""
    from ase_surftune.finetune.replay import bulk_candidates, bulk_elements, pseudo_label

    if options.bulk_file:
        from ase_surftune.data import read_labelled

        configs = read_labelled(options.bulk_file)
        allowed = set(bundle0.adapter.elements)
        configs = [a for a in configs if set(a.get_chemical_symbols()) <= allowed]
        return configs, f"reference labels: {options.bulk_file}"
    if not bulk_elements(elements):
        return [], "none: no element of the data has a bulk crystal"
    configs = bulk_candidates(elements, options.n_bulk, seed=seed + HOLDOUT_SEED_OFFSET)
    labelled = pseudo_label(bundle0.adapter, configs, head,
                            shifts=bundle0.reference_energies.get(head))
    return labelled, f"original model {bundle0.adapter.name}:{head} (drift, no reference labels)"


def bulk_errors(bundle: Bundle, head: str, configs: Sequence[Atoms]) -> dict[str, float]:
    """Energy-per-atom (eV/atom) and force (eV/Å) MAEs of ``bundle``'s ``head``."""
    from ase_surftune.data import get_labels

    pred = bundle.predict(list(configs), head, batch_size=8)
    de, df = [], []
    for i, a in enumerate(configs):
        e, f, _ = get_labels(a)
        de.append((pred.energy[i] - e) / len(a))
        df.append((pred.forces[i] - f).ravel())
    de_a, df_a = np.asarray(de), np.concatenate(df)
    return {"n_structures": len(configs), "energy_mae_per_atom": float(np.mean(np.abs(de_a))),
            "forces_mae": float(np.mean(np.abs(df_a))),
            "forces_rmse": float(np.sqrt(np.mean(df_a ** 2)))}


def _eos_cell(symbol: str) -> tuple[Atoms, float]:
    """Ground-state crystal (cubic cell where possible) and its lattice constant a."""
    from ase.build import bulk

    from ase_surftune.finetune.replay import ground_state_bulk

    try:
        at = bulk(symbol, cubic=True)
    except (ValueError, KeyError, RuntimeError, TypeError, AssertionError):
        at = ground_state_bulk(symbol)
    return at, float(at.cell.lengths()[0])


def eos_properties(bundle: Bundle, head: str, symbol: str, points: int = 7,
                   vrange: float = 0.06) -> dict[str, float]:
    """Lattice constant (Å), equilibrium volume per atom (Å³) and bulk modulus (GPa)
    of ``symbol``'s ground-state crystal from a Birch–Murnaghan fit."""
    from ase.eos import EquationOfState
    from ase.units import GPa

    at, a_ref = _eos_cell(symbol)
    v_ref = at.get_volume()
    scales = np.linspace(1 - vrange, 1 + vrange, points) ** (1 / 3)
    cells = []
    for s in scales:
        b = at.copy()
        b.set_cell(at.cell.array * s, scale_atoms=True)
        cells.append(b)
    energies = bundle.predict(cells, head, batch_size=points).energy
    vols = [c.get_volume() for c in cells]
    nan = {"a": float("nan"), "v0_per_atom": float("nan"), "B_GPa": float("nan")}
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v0, _, b0 = EquationOfState(vols, energies, eos="birchmurnaghan").fit()
    except Exception as exc:  # noqa: BLE001  (no minimum in range, failed fit)
        log.warning("EOS fit for %s (head %s) failed: %s", symbol, head, exc)
        return nan
    if not (np.isfinite(v0) and 0.5 * v_ref < v0 < 2.0 * v_ref and np.isfinite(b0)):
        log.warning("EOS of %s (head %s): no minimum near the reference volume "
                    "(v0 = %.3g Å³ vs %.3g); lattice constant and B not reported",
                    symbol, head, v0, v_ref)
        return nan
    return {"a": float(a_ref * (v0 / v_ref) ** (1 / 3)), "v0_per_atom": float(v0 / len(at)),
            "B_GPa": float(b0 / GPa)}


def _fmt_pct(p: float | None) -> str:
    return "n/a" if p is None else f"{p:+.1f} %".replace("-", "−")


def forgetting_report(bundle0: Bundle, bundle: Bundle, *, head_pairs: dict[str, str],
                      target_head: str, options: ForgettingOptions | None = None,
                      elements: Sequence[str] = (), target_before: dict | None = None,
                      target_after: dict | None = None, output_dir: str | Path | None = None,
                      seed: int = 0, bulk_set: Sequence[Atoms] | None = None
                      ) -> dict[str, Any]:
    """Error- and property-level forgetting of ``bundle`` relative to ``bundle0``.

    Args:
        bundle0: the original (base) model.
        bundle: the fine-tuned model.
        head_pairs: ``{fine-tuned head: base head it started from}``; each is reported.
        target_head: the head trained on the target data.
        options: :class:`ForgettingOptions`.
        elements: elements of the target data (bulk set and EOS).
        target_before, target_after: target validation errors (from the run).
        output_dir: where ``forgetting.json`` goes (optional).
        bulk_set: labelled bulk structures to use instead of ``options.bulk_file``.
    """
    o = options or ForgettingOptions()
    base_default = bundle0.resolve_head(None)
    if bulk_set is not None:
        configs, source = list(bulk_set), "given bulk set (reference labels)"
    else:
        configs, source = bulk_reference_set(bundle0, base_default, elements, o, seed)
    rep: dict[str, Any] = {"bulk_set": {"source": source, "n_structures": len(configs)},
                           "heads": {}, "properties": {}}
    before_cache: dict[str, dict] = {}
    for head, base_head in head_pairs.items():
        if base_head not in before_cache:
            before_cache[base_head] = bulk_errors(bundle0, base_head, configs) if configs else {}
        after = bulk_errors(bundle, head, configs) if configs else {}
        before = before_cache[base_head]
        rep["heads"][head] = {
            "started_from": base_head, "bulk_before": before, "bulk_after": after,
            "bulk_forces_mae_change_percent": percent_change(before.get("forces_mae"),
                                                             after.get("forces_mae")),
            "bulk_energy_mae_change_percent": percent_change(
                before.get("energy_mae_per_atom"), after.get("energy_mae_per_atom")),
        }
    if target_before or target_after:
        rep["target"] = {"head": target_head, "before": target_before, "after": target_after,
                         "forces_mae_change_percent": percent_change(
                             (target_before or {}).get("forces_mae"),
                             (target_after or {}).get("forces_mae"))}
    if o.eos:
        from ase_surftune.finetune.replay import bulk_elements

        for sym in bulk_elements(sorted(set(elements))):
            entry: dict[str, Any] = {}
            for base_head in sorted(set(head_pairs.values())):
                entry[f"original:{base_head}"] = eos_properties(bundle0, base_head, sym,
                                                                o.eos_points, o.eos_range)
            for head, base_head in head_pairs.items():
                p = eos_properties(bundle, head, sym, o.eos_points, o.eos_range)
                ref = entry[f"original:{base_head}"]
                p["a_change_percent"] = percent_change(ref["a"], p["a"])
                p["B_change_percent"] = percent_change(ref["B_GPa"], p["B_GPa"])
                entry[head] = p
            rep["properties"][sym] = entry
    # summary: the head that keeps the base behaviour (multi-head) or the only head
    anchored = [h for h in head_pairs if h != target_head] or [target_head]
    parts = []
    for h in anchored[:1] + ([target_head] if anchored[0] != target_head else []):
        hr = rep["heads"][h]
        pct = hr["bulk_forces_mae_change_percent"]
        if pct is None:
            drift = hr["bulk_after"].get("forces_mae", float("nan"))
            parts.append(f"bulk force drift {drift:.4f} eV/Å from the original [head {h}]")
        else:
            verdict = "forgetting" if pct > o.threshold_percent else "retained"
            parts.append(f"bulk force MAE {_fmt_pct(pct)} ({verdict}) [head {h}]")
    if "target" in rep:
        parts.append(f"surface force MAE {_fmt_pct(rep['target']['forces_mae_change_percent'])}"
                     f" [head {target_head}]")
    rep["summary"] = "; ".join(parts)
    if output_dir is not None:
        p = Path(output_dir)
        p.mkdir(parents=True, exist_ok=True)
        atomic_write_json(p / "forgetting.json", rep)
    return rep
