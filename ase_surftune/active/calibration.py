"""Calibration of the committee's uncertainty against the true error, and its scale factor.

The committee (:mod:`~ase_surftune.active.committee`) ranks structures by how unsure it
is, but its spread has no reason to be the size of the error: readout heads perturbed by
``committee.noise`` disagree by what the perturbation leaves, not by what the model gets
wrong (on Cu/EMT the raw force spread was 10-20x the true error). So the loop fits one
scalar per quantity, ``k`` (forces and energy separately), with ``error ~ k x spread``:

* **What is fitted.** Per structure, the true error ``e`` of the model whose committee
  predicted the spread ``u``: forces, the RMS over atoms of the 3-vector error (eV/Å),
  against ``u`` = sqrt(mean over atoms of the summed member variance) (eV/Å), the same
  definition, so ``E[e²] = k² u²`` if the members' spread is a Gaussian error's shape;
  energy, ``|E/N − E_ref/N|`` (eV/atom) against the members' std of E/N (eV/atom).
* **The estimator.** ``k = sqrt(mean(e² / u²))``: the maximum-likelihood scale of a
  Gaussian error with standard deviation ``k·u`` (:func:`fit_scale`).
* **On what.** Only on structures the predicting committee never trained on: each batch
  of new labels, scored *before* it is labelled and added (:func:`pooled_scale` pools the
  batches of iterations 1..i; the batch of iteration i+1 is then scored with it, never
  with a k that saw it). The held-out set, when given, is never fitted on.
* **What it changes.** Nothing the loop decides: selection uses ranks, which a positive
  scalar keeps. The report shows the scaled uncertainties next to the raw ones and the
  calibration before/after (``error/uncertainty`` ratios; 1 = calibrated in scale).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

__all__ = ["calibration", "error_ratios", "fit_scale", "model_errors", "force_errors",
           "pooled_scale",
           "spearman"]


def model_errors(model: Any, labelled: Sequence[Atoms], device: str = "cpu"
                 ) -> dict[str, Any]:
    """True errors of ``model`` (a bundle path or spec) on labelled structures.

    Returns ``{"forces": per-structure RMS force error (eV/Å), "energy": per-structure
    |ΔE|/N (eV/atom), "force_mae": MAE over all components (eV/Å)}``.
    """
    from ase_surftune.data import get_labels
    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.models.predict import predict_with

    pred = predict_with(SurfTuneCalculator(str(model), device=device), labelled)
    rms, e_pa, absall = [], [], []
    for k, (a, f) in enumerate(zip(labelled, pred.forces)):
        e_ref, f_ref = get_labels(a)[:2]
        d = np.asarray(f) - f_ref
        rms.append(math.sqrt(float((d ** 2).sum(axis=1).mean())))
        e_pa.append(abs(float(pred.energy[k]) - float(e_ref)) / len(a))
        absall.append(np.abs(d).ravel())
    return {"forces": np.array(rms), "energy": np.array(e_pa),
            "force_mae": float(np.concatenate(absall).mean()) if absall else math.nan}


def force_errors(model: Any, labelled: Sequence[Atoms], device: str = "cpu"
                 ) -> tuple[np.ndarray, float]:
    """Per-structure RMS force error (eV/Å) of ``model`` and the overall MAE (eV/Å)."""
    err = model_errors(model, labelled, device)
    return err["forces"], err["force_mae"]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation, or None (printed "n/a") for < 3 points or a constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def fit_scale(uncertainty: Sequence[float], error: Sequence[float]) -> float | None:
    """``k = sqrt(mean(e²/u²))`` over structures with ``u > 0`` (see the module
    docstring); None without such a structure."""
    u, e = np.asarray(uncertainty, float), np.asarray(error, float)
    ok = (u > 0) & np.isfinite(u) & np.isfinite(e)
    if not ok.any():
        return None
    return float(math.sqrt(np.mean((e[ok] / u[ok]) ** 2)))


def error_ratios(u: np.ndarray, e: np.ndarray) -> dict[str, float | None]:
    """Mean and RMS of error/uncertainty over structures with ``u > 0`` (None: none)."""
    ok = u > 0
    if not ok.any():
        return {"mean_error_over_uncertainty": None, "rms_error_over_uncertainty": None}
    z = e[ok] / u[ok]
    return {"mean_error_over_uncertainty": float(np.mean(z)),
            "rms_error_over_uncertainty": float(math.sqrt(np.mean(z ** 2)))}


def calibration(uncertainty: Sequence[float], error: Sequence[float],
                scale: float | None = None) -> dict[str, Any]:
    """Spearman(uncertainty, true error), n, and the error/uncertainty ratios (mean and
    RMS; 1 = calibrated in scale). With ``scale`` (a k fitted on *other* data), also the
    ratios of the scaled uncertainty ``k·u`` under ``"scaled"`` (Spearman is unchanged by
    a positive scale); ``"scaled": None`` when no k is known yet."""
    u, e = np.asarray(uncertainty, float), np.asarray(error, float)
    out: dict[str, Any] = {"n": len(u), "spearman": spearman(u, e), **error_ratios(u, e)}
    out["scale"] = scale
    out["scaled"] = error_ratios(scale * u, e) if scale else None
    return out


def pooled_scale(iterations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """k for forces and energy fitted on the batches of ``iterations`` (each scored
    before it was labelled): ``{"forces", "energy", "n", "iterations"}`` (None: no
    batch had a committee prediction yet)."""
    uf, ef, ue, ee, used = [], [], [], [], []
    for it in iterations:
        if it.get("batch_uncertainty"):
            uf += it["batch_uncertainty"]
            ef += it["batch_force_error"]
            if it.get("batch_energy_uncertainty") and it.get("batch_energy_error"):
                ue += it["batch_energy_uncertainty"]
                ee += it["batch_energy_error"]
            used.append(it["iteration"])
    return {"forces": fit_scale(uf, ef) if uf else None,
            "energy": fit_scale(ue, ee) if ue else None, "n": len(uf), "iterations": used}
