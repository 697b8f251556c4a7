"""Error statistics of one set of labelled frames: energies three ways (absolute,
relative within a composition, formation-like), force and stress MAE/RMSE and the
softening scales; the groups frames are scored in.

Units: energies eV/atom, forces eV/Å per component, stress eV/Å³ per Voigt component,
softening scales dimensionless. Used by :func:`ase_surftune.evaluation.errors.evaluate_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_surftune.core.errors import DataError

__all__ = ["STAT_FIELDS", "ErrorStats", "group_of", "relative_energies",
           "formation_energies"]

#: Columns of the per-(model, group) rows in CSV and Markdown output.
STAT_FIELDS = ("n_structures", "n_atoms", "energy_mae_per_atom", "energy_rmse_per_atom",
               "energy_rel_mae_per_atom", "n_energy_rel", "energy_form_mae_per_atom",
               "n_energy_form", "forces_mae", "forces_rmse", "stress_mae", "stress_rmse",
               "softening_scale", "softening_scale_band", "softening_scale_frame_median",
               "n_force_excluded_high", "n_force_excluded_low", "softening_note",
               "softening_scale_high_force")


@dataclass
class ErrorStats:
    """Errors of one model on one set of structures.

    Energies in eV/atom, forces in eV/Å (per component), stress in eV/Å³ (per Voigt
    component; ``None`` when no structure has a stress label). ``energy_rel_*``: energy
    relative to the mean of the same composition (over ``n_energy_rel`` frames in
    compositions with ≥ 2 frames); ``energy_form_*``: formation-like slab − bulk energy
    (``n_energy_form`` frames). Softening scales are dimensionless (1 = no bias, < 1 =
    model too soft; see :func:`ase_surftune.core.metrics.softening_stats`): ``None`` with
    ``softening_note = "n/a (too little force signal)"`` when the group's force signal
    is too small.
    """

    n_structures: int
    n_atoms: int
    energy_mae_per_atom: float
    energy_rmse_per_atom: float
    forces_mae: float
    forces_rmse: float
    softening_scale: float | None
    softening_scale_high_force: float | None
    stress_mae: float | None = None
    stress_rmse: float | None = None
    n_stress: int = 0
    energy_rel_mae_per_atom: float | None = None
    n_energy_rel: int = 0
    energy_form_mae_per_atom: float | None = None
    n_energy_form: int = 0
    softening_scale_band: float | None = None
    softening_scale_frame_median: float | None = None
    n_force_excluded_high: int = 0
    n_force_excluded_low: int = 0
    softening_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (*STAT_FIELDS, "n_stress")}



def _stats(e_ref_pa: np.ndarray, e_mod_pa: np.ndarray, f_ref: list[np.ndarray],
           f_mod: list[np.ndarray], s_ref: list[np.ndarray | None],
           s_mod: list[np.ndarray | None], quantile: float,
           e_rel: tuple[np.ndarray, np.ndarray], e_form: tuple[np.ndarray, np.ndarray]
           ) -> ErrorStats:
    """Statistics of one set of frames. ``e_rel``/``e_form``: (reference, model) per-atom
    relative / formation-like energies of these frames, NaN where not defined."""
    from ase_surftune.core.metrics import mae_rmse, softening_stats
    from ase_surftune.models.correction import softening_scale_high_force

    fr = np.concatenate([f.reshape(-1, 3) for f in f_ref]) if f_ref else np.zeros((0, 3))
    fm = np.concatenate([f.reshape(-1, 3) for f in f_mod]) if f_mod else np.zeros((0, 3))
    e_mae, e_rmse = mae_rmse(e_mod_pa - e_ref_pa)
    f_mae, f_rmse = mae_rmse(fm - fr)
    soft = softening_stats(f_ref, f_mod)
    s_hf = None
    if soft["s_all"] is not None:
        try:
            s_hf = softening_scale_high_force(fr, fm, quantile)
        except DataError:
            s_hf = None
    pairs = [(a, b) for a, b in zip(s_ref, s_mod) if a is not None and b is not None]
    st_mae = st_rmse = None
    if pairs:
        st_mae, st_rmse = mae_rmse(np.concatenate([b - a for a, b in pairs]))
    extra: dict[str, Any] = {}
    for name, (ref, mod) in (("rel", e_rel), ("form", e_form)):
        ok = np.isfinite(ref) & np.isfinite(mod)
        extra[f"energy_{name}_mae_per_atom"] = mae_rmse(mod[ok] - ref[ok])[0] if ok.any() \
            else None
        extra[f"n_energy_{name}"] = int(ok.sum())
    return ErrorStats(n_structures=len(e_ref_pa), n_atoms=int(len(fr)),
                      energy_mae_per_atom=e_mae, energy_rmse_per_atom=e_rmse,
                      forces_mae=f_mae, forces_rmse=f_rmse, softening_scale=soft["s_all"],
                      softening_scale_high_force=s_hf, stress_mae=st_mae, stress_rmse=st_rmse,
                      n_stress=len(pairs), softening_scale_band=soft["s_band"],
                      softening_scale_frame_median=soft["s_frame_median"],
                      n_force_excluded_high=soft["n_excluded_high"],
                      n_force_excluded_low=soft["n_excluded_low"],
                      softening_note=soft["note"], **extra)


def _free(atoms: Atoms) -> np.ndarray:
    from ase_surftune.data import free_atom_mask

    return free_atom_mask(atoms)


def group_of(atoms: Atoms, group_key: str = "config_type") -> str:
    """The evaluation group of a frame: ``info[group_key]``; without one, the source file
    (``info["source"]`` = ``"file@k"`` from :func:`~ase_surftune.data.read_labelled`), so
    frames of different trajectories are not lumped into one ``"default"`` group."""
    from ase_surftune.data import DEFAULT_GROUP, source_file

    g = atoms.info.get(group_key)
    if g is None or str(g) == DEFAULT_GROUP:
        src = source_file(atoms)
        if src:
            return Path(src).name or DEFAULT_GROUP
        return DEFAULT_GROUP
    return str(g)


def _composition_key(atoms: Atoms) -> str:
    from ase.formula import Formula

    return str(Formula(atoms.get_chemical_formula()).reduce()[0])


def relative_energies(configs: Sequence[Atoms], e_pa: np.ndarray) -> np.ndarray:
    """E/N minus the mean E/N of the frames with the same reduced composition (eV/atom);
    NaN for compositions with a single frame. Independent of per-element references."""
    keys = [_composition_key(a) for a in configs]
    out = np.full(len(configs), np.nan)
    for k in set(keys):
        idx = [i for i, kk in enumerate(keys) if kk == k]
        if len(idx) >= 2:
            out[idx] = e_pa[idx] - np.mean(e_pa[idx])
    return out


def formation_energies(configs: Sequence[Atoms], energies: np.ndarray, bulk_index: dict[str, int]
                       ) -> np.ndarray:
    """(E − N·E_bulk/N_bulk)/N (eV/atom) of non-bulk frames against the bulk frame
    ``bulk_index[composition]``; NaN for bulk frames and compositions without bulk."""
    out = np.full(len(configs), np.nan)
    for i, a in enumerate(configs):
        j = bulk_index.get(_composition_key(a))
        if j is None or j == i:
            continue
        out[i] = (energies[i] - len(a) * energies[j] / len(configs[j])) / len(a)
    return out


def _bulk_frames(configs: Sequence[Atoms], groups: Sequence[str], e_ref: np.ndarray
                 ) -> dict[str, int]:
    """Lowest reference E/N bulk frame (group name contains "bulk") per composition."""
    best: dict[str, int] = {}
    for i, (a, g) in enumerate(zip(configs, groups)):
        if "bulk" not in g.lower():
            continue
        k = _composition_key(a)
        if k not in best or e_ref[i] / len(a) < e_ref[best[k]] / len(configs[best[k]]):
            best[k] = i
    return best


def _max_force(forces: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(forces, axis=1))) if len(forces) else 0.0
