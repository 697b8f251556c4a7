"""Environment-aware, energy-consistent correction of a potential's softening (issue 12).

One scalar cannot fix a model whose softening differs with the kind of distortion. This
module adds, to a global PES scale, a short-range residual that is *linear in its
coefficients* and depends on each atom's local environment (Δ-learning with a physical
basis):

    E′(R) = a·E_m(R) + Σ_Z n_Z b_Z
            + Σ_k c_k Σ_{i<j} φ_k(r_ij)                    (pair residual)
            + Σ_m d_m Σ_i ρ_i^{p_m},  ρ_i = Σ_j g(r_ij)    (embedding residual)

with smooth short-range functions (zero value and slope at the cutoff ``rc``):

    φ_k(r) = (1 − r/rc)^(k+3),  k = 0 … n_pair−1
    g(r)   = (1 − r/rc)^3

E′ is in eV. Forces are F′ = −∇E′ = a·F_m + (analytic residual forces) in eV/Å and the
stress is σ′ = (1/V) ∂E′/∂ε = a·σ_m + (residual virial / V) in eV/Å³ (ASE sign
convention), so MD with the corrected potential conserves energy when the model does.

The pair term adds the missing curvature near the nearest-neighbour distance. The
embedding term ρ² (and ρ³) makes the correction depend on how far an atom's density of
neighbours is from that of the bulk: its linear part in (ρ − ρ_bulk) is a pair term, so
with the pair basis present the choice of ρ_bulk only moves the per-element shift; the
quadratic/cubic parts give an energy whose curvature grows with the distortion of the
environment (compressed bulk, undercoordinated surface atoms) without any fixed
coordination label.

The candidate "scale that depends smoothly on a local descriptor, applied to per-atom
energies" is *not* offered: with a black-box ASE calculator the per-atom energies are
available but their gradients are not, so F′ = −∇E′ could not be formed exactly and the
wrapper would not conserve energy. The residual terms here need only positions.

All coefficients are fitted by one (ridge-stabilised) linear least-squares problem on
forces, per-atom energies and (optionally) stresses of ≤ a few labelled structures; see
:func:`fit_env_correction`. The fitted object is JSON-able (:meth:`to_dict`). The loss:

    L = (1/N_F) Σ (F_ref − F′)² + energy_weight (1/N_S) Σ ((E_ref − E′)/N_s)²
        + stress_weight (1/N_σ) Σ (σ_ref − σ′)²  + ridge · |c, d|²

(forces eV/Å, per-atom energies eV/atom, stresses eV/Å³), each term averaged over its
own count. Basis columns are normalised before the ridge is applied, so ``ridge`` is
dimensionless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list

from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.errors import DataError
from ase_surftune.core.io import to_jsonable
from ase_surftune.core.metrics import mae_rmse, softening_scale
from ase_surftune.data.labels import get_labels
from ase_surftune.models.env_basis import BasisValues, basis_terms
from ase_surftune.models.predict import predict_with

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

__all__ = ["EnvCorrection", "EnvCorrectedCalculator", "fit_env_correction", "basis_terms",
           "BasisValues", "per_group_scales"]

log = logging.getLogger(__name__)

SCALE_MODES = ("fit", "slope", "fixed")


@dataclass
class EnvCorrection:
    """A fitted environment-aware correction (see the module docstring for E′, F′, σ′).

    Attributes:
        scale: global PES scale ``a`` (dimensionless).
        shifts: per-element shift ``b_Z`` in eV/atom.
        rc: cutoff of the residual terms, Å.
        n_pair: number of pair functions φ_k.
        embed_powers: powers of the embedding functions.
        coefficients: one coefficient (eV) per basis function, pair first.
        info: fit diagnostics (s and force MAE before/after per group, ...).
    """

    scale: float = 1.0
    shifts: dict[str, float] = field(default_factory=dict)
    rc: float = 3.0
    n_pair: int = 3
    embed_powers: tuple[float, ...] = (2.0,)
    coefficients: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_basis(self) -> int:
        return self.n_pair + len(self.embed_powers)

    def residual(self, atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Residual (energy eV, forces eV/Å, stress eV/Å³ or None) without the scale."""
        b = basis_terms(atoms, self.rc, self.n_pair, self.embed_powers)
        c = np.asarray(self.coefficients, dtype=float)
        if c.size != self.n_basis:
            raise ValueError(f"{c.size} coefficients for {self.n_basis} basis functions")
        e = float(c @ b.energies) + self.energy_shift(atoms.numbers)
        f = np.tensordot(c, b.forces, axes=1)
        s = None if b.stresses is None else c @ b.stresses
        return e, f, s

    def energy_shift(self, numbers: np.ndarray) -> float:
        """Σ_i b_{Z_i} in eV."""
        return per_element_sum(self.shifts, numbers)

    def apply(self, atoms: Atoms, energy: float, forces: np.ndarray,
              stress: np.ndarray | None = None
              ) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Corrected (energy eV, forces eV/Å, stress eV/Å³) from the model's values."""
        e_r, f_r, s_r = self.residual(atoms)
        e = self.scale * float(energy) + e_r
        f = self.scale * np.asarray(forces, dtype=float) + f_r
        s = None
        if stress is not None and s_r is not None:
            s = self.scale * np.asarray(stress, dtype=float).reshape(-1)[:6] + s_r
        return e, f, s

    def summary(self) -> str:
        coef = ", ".join(f"{c:+.4g}" for c in self.coefficients)
        text = (f"environment correction a = {self.scale:.4f}, rc = {self.rc:.3f} Å, "
                f"{self.n_pair} pair + {len(self.embed_powers)} embedding terms [{coef}]")
        if "softening_scale_before" in self.info:
            text += (f"; fit-set s {self.info['softening_scale_before']:.3f} -> "
                     f"{self.info['softening_scale_after']:.3f}, force MAE "
                     f"{self.info['force_mae_before']:.4f} -> "
                     f"{self.info['force_mae_after']:.4f} eV/Å")
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (floats, lists, str keys only)."""
        return {"kind": "environment", "scale": float(self.scale),
                "shifts": {k: float(v) for k, v in self.shifts.items()},
                "rc": float(self.rc), "n_pair": int(self.n_pair),
                "embed_powers": [float(p) for p in self.embed_powers],
                "coefficients": [float(c) for c in self.coefficients],
                "info": to_jsonable(self.info)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnvCorrection:
        if d.get("kind", "environment") != "environment":
            raise ValueError(f"not an environment correction: kind={d.get('kind')!r}")
        out = cls(scale=float(d["scale"]),
                  shifts={str(k): float(v) for k, v in d.get("shifts", {}).items()},
                  rc=float(d["rc"]), n_pair=int(d["n_pair"]),
                  embed_powers=tuple(float(p) for p in d.get("embed_powers", ())),
                  coefficients=[float(c) for c in d["coefficients"]],
                  info=dict(d.get("info", {})))
        if len(out.coefficients) != out.n_basis:
            raise ValueError(f"{len(out.coefficients)} coefficients for {out.n_basis} "
                             f"basis functions")
        return out


class EnvCorrectedCalculator(Calculator):
    """An ASE calculator: any ASE ``calc`` (CHGNet, MACE, a bundle, EMT...) + a correction.

    Energy (eV), forces (eV/Å) and stress (eV/Å³, when the wrapped calculator gives one
    for a periodic cell) come from the same E′; see :class:`EnvCorrection`.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, calc: Calculator, correction: EnvCorrection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calc = calc
        self.correction = correction

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        work.calc = self.calc
        energy = work.get_potential_energy()
        forces = work.get_forces(apply_constraint=False)
        stress = None
        if "stress" in properties and all(work.pbc):
            stress = work.get_stress(voigt=True, apply_constraint=False)
        e, f, s = self.correction.apply(self.atoms, energy, forces, stress)
        self.results = {"energy": e, "free_energy": e, "forces": f}
        if s is not None:
            self.results["stress"] = s


# --------------------------------------------------------------------------- fitting


def _auto_rc(frames: Sequence[Atoms]) -> float:
    """Half-way between the first and second neighbour shell of fcc, from the fit frames.

    1.2 × the median nearest-neighbour distance (Å), i.e. first shell only.
    """
    nn = []
    for at in frames:
        if len(at) < 2 and not any(at.pbc):
            continue
        i, d = neighbor_list("id", at, 6.0)
        if len(d):
            nn.append(np.min(d))
    if not nn:
        raise DataError("cannot choose a cutoff: no neighbours within 6 Å in the fit frames")
    return 1.2 * float(np.median(nn))


def fit_env_correction(model_calc: Calculator, frames: Sequence[Atoms], *,
                       rc: float | None = None, n_pair: int = 2,
                       embed_powers: Sequence[float] = (2.0,),
                       scale: str = "fit", fixed_scale: float = 1.0,
                       energy_weight: float = 1.0, stress_weight: float = 0.0,
                       ridge: float = 1e-3, fit_shifts: bool = True,
                       max_frames: int | None = 3) -> EnvCorrection:
    """Fit an :class:`EnvCorrection` of ``model_calc`` to labelled ``frames``.

    One linear least-squares problem in (a, b_Z, c_k, d_m); the loss is in the module
    docstring.

    Args:
        model_calc: the model, any ASE calculator.
        frames: labelled structures (energy, forces; stress used when present and
            ``stress_weight > 0``), at most ``max_frames`` of them.
        rc: cutoff in Å (default: 1.2 × median nearest-neighbour distance).
        n_pair: number of pair functions (0 for none).
        embed_powers: embedding powers (empty for none).
        scale: ``"fit"`` (a is a free least-squares unknown), ``"slope"`` (a restores the
            slope first, a = ΣF_ref² / ΣF_ref·F_m, then the residual is fitted to what
            is left) or ``"fixed"`` (a = ``fixed_scale``).
        fixed_scale: a for ``scale="fixed"``.
        energy_weight, stress_weight: weights of the energy and stress terms.
        ridge: Tikhonov weight on the (normalised) residual coefficients. The defaults
            (2 pair functions, ridge 1e-3) were set from the conditioning of the fit on
            3 structures (3 pair functions without ridge gave coefficients of ±600 eV that
            cancel), not from held-out scores.
        fit_shifts: fit per-element shifts b_Z (needs energies).
        max_frames: refuse more frames than this (the point is a fit from very little
            data; ``None`` for no limit).

    Returns:
        The correction; ``info`` holds the softening scale and force MAE before/after on
        the fit frames, per group too (``groups``).

    Raises:
        DataError: no frames, too many frames, unlabelled frames, or no force signal.
    """
    frames = _check_fit_args(frames, max_frames, scale)
    rc = float(rc) if rc is not None else _auto_rc(frames)
    embed_powers = tuple(float(p) for p in embed_powers)
    refs = [get_labels(at) for at in frames]
    mods = list(zip(*predict_with(model_calc, frames, compute_stress=[
        stress_weight > 0 and all(at.pbc) for at in frames])))  # (E, F, σ) per frame
    bases = [basis_terms(at, rc, n_pair, embed_powers) for at in frames]
    f_ref = np.concatenate([r[1].reshape(-1) for r in refs])
    f_mod = np.concatenate([m[1].reshape(-1) for m in mods])
    if not np.any(f_ref) or not np.any(f_mod):
        raise DataError("fit frames carry no force signal (all forces zero)")
    elements = sorted({chemical_symbols[int(z)] for at in frames for z in at.numbers})
    problem = _Problem(elements=elements if fit_shifts else [], free_scale=scale == "fit",
                       a_fixed=(float(f_ref @ f_ref) / float(f_ref @ f_mod) if scale == "slope"
                                else float(fixed_scale)),
                       k_res=n_pair + len(embed_powers))
    mat, y = problem.rows(frames, refs, mods, bases, f_ref, f_mod, energy_weight,
                          stress_weight)
    sol = _ridge_lstsq(mat, y, problem.c0, problem.k_res, ridge)
    c0, k_res = problem.c0, problem.k_res
    corr = EnvCorrection(scale=float(sol[0]) if problem.free_scale else problem.a_fixed,
                         shifts={el: float(sol[c0 + k_res + q])
                                 for q, el in enumerate(problem.elements)},
                         rc=rc, n_pair=n_pair, embed_powers=embed_powers,
                         coefficients=[float(v) for v in sol[c0:c0 + k_res]])
    f_after = [corr.apply(at, m[0], m[1])[1] for at, m in zip(frames, mods)]
    f_new = np.concatenate([f.reshape(-1) for f in f_after])
    corr.info = {
        "scale_mode": scale, "n_structures": len(frames),
        "n_atoms": int(sum(len(at) for at in frames)),
        "energy_weight": float(energy_weight), "stress_weight": float(stress_weight),
        "ridge": float(ridge),
        "softening_scale_before": softening_scale(f_ref, f_mod),
        "softening_scale_after": softening_scale(f_ref, f_new),
        "force_mae_before": mae_rmse(f_ref - f_mod)[0],
        "force_mae_after": mae_rmse(f_ref - f_new)[0],
        "groups": per_group_scales(frames, [m[1] for m in mods], f_after),
    }
    log.info("%s", corr.summary())
    return corr


def _check_fit_args(frames: Sequence[Atoms], max_frames: int | None, scale: str
                    ) -> list[Atoms]:
    frames = list(frames)
    if not frames:
        raise DataError("no frames to fit an environment correction on")
    if max_frames is not None and len(frames) > max_frames:
        raise DataError(f"{len(frames)} fit frames; the environment correction is meant "
                        f"to be fitted on at most {max_frames} (pass max_frames=None)")
    if scale not in SCALE_MODES:
        raise ValueError(f"scale must be one of {SCALE_MODES}, got {scale!r}")
    return frames


@dataclass
class _Problem:
    """The least-squares layout of :func:`fit_env_correction`: columns [a?] [c_k, d_m] [b_Z]."""

    elements: list[str]
    free_scale: bool
    a_fixed: float
    k_res: int

    @property
    def c0(self) -> int:
        return int(self.free_scale)

    @property
    def n_cols(self) -> int:
        return self.c0 + self.k_res + len(self.elements)

    def _target(self, ref: Any, model: Any) -> Any:
        """What the residual columns fit: ref, or ref − a·model when a is not free."""
        return ref - (0.0 if self.free_scale else self.a_fixed * model)

    def rows(self, frames: Sequence[Atoms], refs: list[Any], mods: list[Any],
             bases: list[Any], f_ref: np.ndarray, f_mod: np.ndarray, energy_weight: float,
             stress_weight: float) -> tuple[np.ndarray, np.ndarray]:
        """Weighted design matrix and target: force, energy and stress rows."""
        k_res, n_el = self.k_res, len(self.elements)
        w_f = 1.0 / np.sqrt(f_ref.size)
        bf = np.concatenate([b.forces.reshape(k_res, 3 * b.forces.shape[1]) for b in bases],
                            axis=1).T
        cols = ([f_mod[:, None]] if self.free_scale else []) + [bf, np.zeros((f_ref.size,
                                                                               n_el))]
        rows, ys = [w_f * np.hstack(cols)], [w_f * self._target(f_ref, f_mod)]
        if energy_weight > 0:
            for at, r, m, b in zip(frames, refs, mods, bases):
                w_e = np.sqrt(energy_weight / len(frames)) / len(at)
                row = np.zeros(self.n_cols)
                if self.free_scale:
                    row[0] = m[0]
                row[self.c0:self.c0 + k_res] = b.energies
                for z in at.numbers:
                    sym = chemical_symbols[int(z)]
                    if sym in self.elements:
                        row[self.c0 + k_res + self.elements.index(sym)] += 1.0
                rows.append(w_e * row[None, :])
                ys.append(np.array([w_e * self._target(r[0], m[0])]))
        st = [(r[2], m[2], b.stresses) for r, m, b in zip(refs, mods, bases)
              if r[2] is not None and m[2] is not None and b.stresses is not None]
        if stress_weight > 0 and st:
            w_s = np.sqrt(stress_weight / (6 * len(st)))
            for s_ref, s_mod, s_b in st:
                block = np.zeros((6, self.n_cols))
                if self.free_scale:
                    block[:, 0] = s_mod
                block[:, self.c0:self.c0 + k_res] = s_b.T
                rows.append(w_s * block)
                ys.append(w_s * self._target(np.asarray(s_ref), s_mod))
        return np.vstack(rows), np.concatenate(ys)


def _ridge_lstsq(mat: np.ndarray, y: np.ndarray, c0: int, k_res: int,
                 ridge: float) -> np.ndarray:
    """Least squares on normalised columns, ridge only on columns ``c0:c0 + k_res``."""
    norms = np.linalg.norm(mat, axis=0)
    norms[norms == 0] = 1.0
    mat_n = mat / norms
    if ridge > 0 and k_res:
        reg = np.zeros((k_res, mat.shape[1]))
        reg[np.arange(k_res), c0 + np.arange(k_res)] = np.sqrt(ridge)
        mat_n = np.vstack([mat_n, reg])
        y = np.concatenate([y, np.zeros(k_res)])
    sol_n, *_ = np.linalg.lstsq(mat_n, y, rcond=None)
    return sol_n / norms


def per_group_scales(frames: Sequence[Atoms], before: Sequence[np.ndarray],
                     after: Sequence[np.ndarray], min_force: float = 1e-3
                     ) -> dict[str, dict[str, Any]]:
    """Softening scale and force MAE (eV/Å) per ``config_type`` before and after.

    A group whose reference forces are all below ``min_force`` eV/Å (on average per
    component) gets ``None`` for s: too little force signal for a meaningful slope.
    """
    groups: dict[str, list[int]] = {}
    for k, at in enumerate(frames):
        groups.setdefault(str(at.info.get("config_type", "default")), []).append(k)
    out: dict[str, dict[str, Any]] = {}
    for name, idx in groups.items():
        fr = np.concatenate([get_labels(frames[k])[1].reshape(-1) for k in idx])
        fb = np.concatenate([np.asarray(before[k]).reshape(-1) for k in idx])
        fa = np.concatenate([np.asarray(after[k]).reshape(-1) for k in idx])
        enough = float(np.sqrt(np.mean(fr ** 2))) >= min_force
        out[name] = {"n_frames": len(idx),
                     "s_before": softening_scale(fr, fb) if enough else None,
                     "s_after": softening_scale(fr, fa) if enough else None,
                     "force_mae_before": mae_rmse(fr - fb)[0],
                     "force_mae_after": mae_rmse(fr - fa)[0]}
    return out
