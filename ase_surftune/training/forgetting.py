"""Forgetting report, error level: what fine-tuning did to the bulk chemistry the model knew.

Written by every fine-tuning run (``metrics["forgetting"]``, ``forgetting.json``):

* **bulk errors per head** — relative energy per atom (each structure's error minus the
  mean error of its composition, so each model is compared after its *own* per-element
  reference: a constant reference shift between a fine-tuned head and the labels cannot
  show up as "forgetting") and force MAE/RMSE on a held-out bulk set, before (the base
  model's head it started from) and after.
  The bulk set is ``forgetting.bulk_file`` (reference labels, e.g. DFT or EMT) or, by
  default, strained/rattled ground-state crystals of the data's elements labelled by
  the *original* model — then "before" is zero by construction and the report gives
  the drift away from the original potential-energy surface;
* **target validation errors** before/after, named after what the validation set holds.

The property level (lattice constant, bulk modulus, γ of the low-index facets, vacancy
formation energy per head) lives in :mod:`ase_surftune.evaluation.forgetting` (it needs
the property layer, which sits above training); ``surftune finetune`` runs it after
training, API users call :func:`ase_surftune.evaluation.forgetting.report_run`.
Any change beyond ``threshold_percent`` (default 5 %) is flagged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from ase_surftune.core.config import StrictModel
from ase_surftune.core.io import atomic_write_json
from ase_surftune.core.metrics import mae_rmse

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ase_surftune.models.bundle import Bundle

__all__ = ["ForgettingOptions", "forgetting_report", "bulk_reference_set", "bulk_errors",
           "relative_energy_errors", "percent_change", "describe_set", "error_summary"]

log = logging.getLogger(__name__)

#: seed offset so the held-out bulk set never coincides with the replay pool
HOLDOUT_SEED_OFFSET = 7_777


class ForgettingOptions(StrictModel):
    """``forgetting:`` section of a fine-tuning config."""

    enabled: bool = True
    bulk_file: str | None = None
    n_bulk: int = Field(8, ge=1)
    #: property level (evaluation.forgetting): EOS a and B, γ of facets, vacancy E_f
    properties: bool = True
    #: kept for older configs: ``eos: false`` also turns the property level off
    eos: bool = True
    eos_points: int = Field(7, ge=5)
    eos_range: float = Field(0.06, gt=0, lt=0.5)
    #: facets for γ, e.g. ["111", "100", "110"]; None: the lattice's low-index facets
    facets: list[str] | None = None
    slab_layers: int = Field(6, ge=3)
    vacancy: bool = True
    #: relax slabs and vacancy cells (slower); False: unrelaxed values at each head's own a
    relax: bool = False
    #: flag any change larger than this, in percent
    threshold_percent: float = Field(5.0, ge=0)


def percent_change(before: float | None, after: float | None) -> float | None:
    """100·(after − before)/before, or None when undefined (before ≈ 0)."""
    if before is None or after is None or abs(before) < 1e-12:
        return None
    return 100.0 * (after - before) / before


def bulk_reference_set(bundle0: Bundle, head: str, elements: Sequence[str],
                       options: ForgettingOptions, seed: int = 0) -> tuple[list[Atoms], str]:
    """The held-out bulk set and a description of its labels."""
    from ase_surftune.training.replay import bulk_candidates, bulk_elements, pseudo_label

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


def relative_energy_errors(configs: Sequence[Atoms], predicted: Sequence[float]
                           ) -> np.ndarray:
    """Per-atom energy errors (eV/atom) relative to the mean error of each composition.

    A model and its labels may sit on different per-element references (a fine-tuned
    head in the DFT frame, labels from the original model in its own frame): a constant
    per-composition offset is not forgetting, so it is removed — within each
    composition, not fitted across them. Structures whose composition occurs once carry
    no relative information and are left out (the array is shorter).
    """
    from ase_surftune.data import get_labels

    by_comp: dict[str, list[float]] = {}
    for a, e in zip(configs, predicted):
        by_comp.setdefault(a.get_chemical_formula(mode="hill", empirical=True), []).append(
            (float(e) - get_labels(a)[0]) / len(a))
    out = [np.asarray(v) - np.mean(v) for v in by_comp.values() if len(v) > 1]
    return np.concatenate(out) if out else np.zeros(0)


def bulk_errors(bundle: Bundle, head: str, configs: Sequence[Atoms]) -> dict[str, Any]:
    """Relative energy-per-atom MAE (eV/atom, see :func:`relative_energy_errors`) and
    force MAE/RMSE (eV/Å) of ``bundle``'s ``head`` on ``configs``."""
    from ase_surftune.data import get_labels
    from ase_surftune.models.predict import predict_with

    pred = predict_with(bundle, configs, head=head, batch_size=8)
    df = np.concatenate([(pred.forces[i] - get_labels(a)[1]).ravel()
                         for i, a in enumerate(configs)])
    de = relative_energy_errors(configs, pred.energy)
    f_mae, f_rmse = mae_rmse(df)
    return {"n_structures": len(configs),
            "energy_rel_mae_per_atom": mae_rmse(de)[0] if de.size else None,
            "n_energy_rel": int(de.size), "forces_mae": f_mae, "forces_rmse": f_rmse}


def _fmt_pct(p: float | None) -> str:
    return "n/a" if p is None else f"{p:+.1f} %".replace("-", "−")


def describe_set(configs: Sequence[Atoms]) -> str:
    """``"6 structures: slab111 ×3, vacancy ×3"``: what a validation set holds."""
    from collections import Counter

    c = Counter(str(a.info.get("config_type", "default")) for a in configs)
    groups = ", ".join(f"{k} ×{v}" for k, v in sorted(c.items()))
    return f"{len(configs)} structures: {groups}"


def forgetting_report(bundle0: Bundle, bundle: Bundle, *, head_pairs: dict[str, str],
                      target_head: str, options: ForgettingOptions | None = None,
                      elements: Sequence[str] = (), target_before: dict | None = None,
                      target_after: dict | None = None, target_set: str = "validation",
                      output_dir: str | Path | None = None, seed: int = 0,
                      bulk_set: Sequence[Atoms] | None = None) -> dict[str, Any]:
    """Error-level forgetting of ``bundle`` relative to ``bundle0`` (module docstring).

    Args:
        bundle0: the original (base) model.
        bundle: the fine-tuned model.
        head_pairs: ``{fine-tuned head: base head it started from}``; each is reported.
        target_head: the head trained on the target data.
        options: :class:`ForgettingOptions`.
        elements: elements of the target data (bulk set).
        target_before, target_after: target validation errors (from the run).
        target_set: what the target validation set holds (:func:`describe_set`); it names
            the set in the summary (never "surface" unless it holds surfaces).
        output_dir: where ``forgetting.json`` goes (optional, written atomically).
        bulk_set: labelled bulk structures to use instead of ``options.bulk_file``.
    """
    o = options or ForgettingOptions()
    base_default = bundle0.resolve_head(None)
    if bulk_set is not None:
        configs, source = list(bulk_set), "given bulk set (reference labels)"
    else:
        configs, source = bulk_reference_set(bundle0, base_default, elements, o, seed)
    rep: dict[str, Any] = {"bulk_set": {"source": source, "n_structures": len(configs),
                                        "energy": "relative within each composition "
                                                  "(each model after its own reference)"},
                           "threshold_percent": o.threshold_percent, "heads": {},
                           "flags": []}
    before_cache: dict[str, dict] = {}
    for head, base_head in head_pairs.items():
        if base_head not in before_cache:
            before_cache[base_head] = bulk_errors(bundle0, base_head, configs) if configs else {}
        after = bulk_errors(bundle, head, configs) if configs else {}
        before = before_cache[base_head]
        pf = percent_change(before.get("forces_mae"), after.get("forces_mae"))
        rep["heads"][head] = {
            "started_from": base_head, "bulk_before": before, "bulk_after": after,
            "bulk_forces_mae_change_percent": pf,
            "bulk_energy_rel_mae_change_percent": percent_change(
                before.get("energy_rel_mae_per_atom"), after.get("energy_rel_mae_per_atom")),
        }
        if pf is not None and pf > o.threshold_percent:
            rep["flags"].append(f"head {head}: bulk force MAE {_fmt_pct(pf)}")
    if target_before or target_after:
        rep["target"] = {"head": target_head, "set": target_set, "before": target_before,
                         "after": target_after,
                         "forces_mae_change_percent": percent_change(
                             (target_before or {}).get("forces_mae"),
                             (target_after or {}).get("forces_mae"))}
    rep["summary"] = error_summary(rep, target_head)
    if output_dir is not None:
        atomic_write_json(Path(output_dir) / "forgetting.json", rep)
    return rep


def error_summary(rep: dict[str, Any], target_head: str) -> str:
    """One line: bulk force change of the anchored head (or the only one) and target set."""
    thr = rep.get("threshold_percent", 5.0)
    heads = rep["heads"]
    anchored = [h for h in heads if h != target_head] or [target_head]
    parts = []
    for h in anchored[:1] + ([target_head] if anchored[0] != target_head else []):
        hr = heads[h]
        pct = hr["bulk_forces_mae_change_percent"]
        if pct is None:
            drift = hr["bulk_after"].get("forces_mae")
            parts.append("bulk force drift n/a (no bulk set)" if drift is None else
                         f"bulk force drift {drift:.4f} eV/Å from the original [head {h}]")
        else:
            verdict = "FLAG: forgetting" if pct > thr else "retained"
            parts.append(f"bulk force MAE {_fmt_pct(pct)} ({verdict}) [head {h}]")
    if "target" in rep:
        t = rep["target"]
        parts.append(f"target validation ({t['set']}) force MAE "
                     f"{_fmt_pct(t['forces_mae_change_percent'])} [head {target_head}]")
    return "; ".join(parts)
