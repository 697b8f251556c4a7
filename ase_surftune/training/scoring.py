"""Featurized samples, energy-reference shifts and the errors ``finetune`` reports.

The errors use the same definitions (:mod:`ase_surftune.core.metrics`) and the same
energy reference (the bundle's stored shifts) as ``evaluate``'s default, so the two
print the same numbers for the same model and frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.metrics import mae_rmse, softening_stats
from ase_surftune.data import energy_weight, free_atom_mask, get_labels
from ase_surftune.training.losses import Sample, predict_samples

__all__ = ["featurize_samples", "retarget", "frame_errors", "bundle_errors",
           "residual_shifts", "labels"]


def labels(atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Reference energy (eV), forces (eV/Å) and stress (Voigt, eV/Å³ or None)."""
    return get_labels(atoms)


def featurize_samples(adapter, configs: Sequence[Atoms], shifts: dict[str, float] | None = None,
                      exclude_fixed_atoms: bool = False, progress: bool = False,
                      desc: str = "featurize") -> list[Sample]:
    """Featurize each structure once and attach targets in the model frame (E − Σδ, eV)
    and its energy weight (:func:`energy_weight`)."""
    from tqdm.auto import tqdm

    shifts = shifts or {}
    out = []
    for atoms in tqdm(configs, desc=desc, disable=not progress, unit="struct"):
        adapter.check_atoms(atoms)
        e, f, s = labels(atoms)
        out.append(Sample(
            graph=adapter.featurize(atoms),
            energy=float(e - per_element_sum(shifts, atoms.numbers)),
            forces=torch.as_tensor(f, dtype=adapter.dtype), n_atoms=len(atoms),
            stress=None if s is None else torch.as_tensor(voigt_6_to_full_3x3_stress(s),
                                                          dtype=adapter.dtype),
            force_mask=torch.as_tensor(free_atom_mask(atoms)) if exclude_fixed_atoms else None,
            numbers=np.asarray(atoms.numbers), energy_weight=energy_weight(atoms)))
    return out


def retarget(samples: list[Sample], configs: Sequence[Atoms], shifts: dict[str, float]) -> None:
    """Re-express the samples' energy targets against new per-element shifts (eV/atom)."""
    for s, atoms in zip(samples, configs):
        s.energy = float(labels(atoms)[0] - per_element_sum(shifts, atoms.numbers))


def frame_errors(configs: Sequence[Atoms], energies: np.ndarray, forces: Sequence[np.ndarray],
                 exclude_fixed_atoms: bool) -> dict[str, Any]:
    """MAE/RMSE of energy per atom (eV/atom) and force components (eV/Å), and the
    softening scale, of predictions against the frames' labels."""
    de, fr, fm = [], [], []
    for atoms, e, f in zip(configs, energies, forces):
        e_ref, f_ref, _ = labels(atoms)
        de.append((e - e_ref) / len(atoms))
        m = free_atom_mask(atoms) if exclude_fixed_atoms else slice(None)
        fr.append(np.asarray(f_ref)[m])
        fm.append(np.asarray(f)[m])
    e_mae, e_rmse = mae_rmse(de)
    df = np.concatenate([(b - a).ravel() for a, b in zip(fr, fm)]) if fr else np.zeros(0)
    f_mae, f_rmse = mae_rmse(df)
    soft = softening_stats(fr, fm)
    return {"n_structures": len(de), "energy_mae_per_atom": e_mae,
            "energy_rmse_per_atom": e_rmse, "forces_mae": f_mae, "forces_rmse": f_rmse,
            "softening_scale": soft["s_all"], "softening_scale_band": soft["s_band"],
            "softening_note": soft["note"]}


def bundle_errors(bundle, head: str, samples: list[Sample], configs: Sequence[Atoms],
                  batch_size: int | str, exclude_fixed_atoms: bool) -> dict[str, Any]:
    """:func:`frame_errors` of a bundle's head (its shifts and correction applied)."""
    e_raw, f_raw = predict_samples(bundle.adapter, head, samples, batch_size)
    es, fs = [], []
    for atoms, e, f in zip(configs, e_raw, f_raw):
        e2, f2, _ = bundle.postprocess(head, e, f, atoms.numbers, atoms=atoms)
        es.append(e2)
        fs.append(f2)
    return frame_errors(configs, np.asarray(es), fs, exclude_fixed_atoms)


def residual_shifts(configs: Sequence[Atoms], model_energies: np.ndarray,
                    elements: list[str] | None = None,
                    report: dict[str, Any] | None = None) -> dict[str, float]:
    """Per-element shifts (eV/atom) fitted on the energy residuals of ``configs`` (training
    frames only); the fit's method/rank/reason go into ``report`` when given."""
    from ase_surftune.data.alignment import fit_shifts

    e_ref = np.array([labels(a)[0] for a in configs])
    fit = fit_shifts(list(configs), e_ref - model_energies, elements=elements)
    if report is not None:
        report.update({k: v for k, v in fit.to_dict().items() if k != "shifts"})
    return fit.shifts
