"""Environment-aware, energy-consistent correction of a potential's softening (issue 12).

One scalar cannot fix a model whose softening differs with the kind of distortion. This
module adds, to a global PES scale, a short-range residual that is *linear in its
coefficients* and depends on each atom's local environment (Δ-learning with a physical
basis):

    E′(R) = a·(E_m(R) − Σ_i e_{Z_i}^model) + Σ_i e_{Z_i}^model + Σ_i b_{Z_i}
            + Σ_k c_k Σ_{i<j} φ_k(r_ij)                    (pair residual)
            + Σ_m d_m Σ_i ρ_i^{p_m},  ρ_i = Σ_j g(r_ij)    (embedding residual)
            + Σ_l q_l Σ_i |M_l,i|²                         (moments, l = 1, 2)
            + Σ_w h_w Σ_{i<j} ψ_w(r_ij)                    (wells about r0)
            [+ the same terms once more, each atom's share weighted by its
               bulk-likeness φ_i, with their own coefficients  (``gate``)]

with smooth short-range functions (zero value and slope at the cutoff ``rc``):

    φ_k(r) = (1 − r/rc)^(k+3),  k = 0 … n_pair−1
    g(r)   = (1 − r/rc)^3
    M_1,i  = Σ_j g(r_ij) u_ij,   M_2,i = Σ_j g(r_ij) (u_ij u_ijᵀ − I/3)   (u: unit bond)
    ψ_w(r) = (1 − exp(−(r − r0)²/2w²)) (1 − r/rc)²

The moments vanish with zero gradient in any ideal cubic crystal, so they stiffen
distortions of an atom's environment without moving the ideal bulk's E(V); the wells add
curvature at the bulk bond length r0 that saturates within ≈ w of it
(:mod:`ase_surftune.models.env_basis`). ``keep_eos`` in the fit holds the model's own E(V)
exactly (linear constraints), when its lattice constant and bulk modulus should stay.

E_m is the energy handed to :meth:`EnvCorrection.apply`: for a bundle head, the model's
energy *after* the bundle's reference-energy shifts (so, like the linear correction's,
everything is in the frame of the training labels); for :class:`EnvCorrectedCalculator`,
what the wrapped calculator returns. e_Z^model (eV/atom, ``model_reference``) is the
model's own per-element reference energy, fitted on the same frames: the scale stretches
the energy landscape about it, so the shifts b_Z stay small and physical instead of
absorbing (1 − a)·E_m (hundreds of eV when E_m sits on a DFT code's reference). An empty
``model_reference`` (corrections written before it existed) means e_Z^model = 0, i.e.
E′ = a·E_m + Σb_Z + residual. The reference terms do not depend on positions.

E′ is in eV. Forces are F′ = −∇E′ = a·F_m + (analytic residual forces) in eV/Å and the
stress is σ′ = (1/V) ∂E′/∂ε = a·σ_m + (residual virial / V) in eV/Å³ (ASE sign
convention, any 3-D cell), so MD with the corrected potential conserves energy when the
model does.

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
wrapper would not conserve energy. The residual terms here need only positions. (A
prototype with CHGNet's site energies and finite-difference forces,
``benchmarks/explore_peratom_scale.py``, raised both slabs' force error on real PBE
data; docs/dft_softening_study.md.)

All coefficients are fitted by one (ridge-stabilised) linear least-squares problem on
forces, per-atom energies and (optionally) stresses of ≤ a few labelled structures; see
:func:`fit_env_correction` (helpers in :mod:`ase_surftune.models.env_fit`). In
fine-tuning it is the strategy ``env`` (:mod:`ase_surftune.training.env_strategy`) and is
stored per head in the bundle (JSON, ``kind: "environment"``; :meth:`to_dict`). The
loss:

    L = (1/N_F) Σ (F_ref − F′)² + energy_weight (1/N_S) Σ ((E_ref − E′)/N_s)²
        + stress_weight (1/N_σ) Σ (σ_ref − σ′)²  + ridge · |c, d, q, h|²

(forces eV/Å, per-atom energies eV/atom, stresses eV/Å³), each term averaged over its
own count. With ``weighting="frame"`` the force term is instead
(1/N_S) Σ_s (1/N_F,s) Σ ((F_ref − F′)/F_rms,s)², every structure counting as much
relative to its own force signal. Basis columns are normalised before the ridge is
applied, so ``ridge`` is dimensionless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols
from ase.stress import voigt_6_to_full_3x3_stress

from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.errors import DataError
from ase_surftune.core.io import to_jsonable
from ase_surftune.data.labels import get_labels
from ase_surftune.models.correction import compare_before_after
from ase_surftune.models.env_basis import (
    BasisSpec,
    BasisValues,
    basis_residual,
    basis_terms,
    spec_terms,
)
from ase_surftune.models.env_fit import (
    SCALE_MODES,
    _Problem,
    _ridge_lstsq,
    auto_gate,
    auto_r0,
    auto_rc,
    check_fit_args,
    eos_cells,
    eos_constraints,
    format_groups,
    per_group_scales,
)
from ase_surftune.models.predict import predict_with
from ase_surftune.models.scale_fit import fit_model_reference

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

__all__ = ["EnvCorrection", "EnvCorrectedCalculator", "fit_env_correction", "basis_terms",
           "BasisValues", "per_group_scales", "assess_env_correction", "SCALE_MODES"]

log = logging.getLogger(__name__)


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
        model_reference: e_Z^model in eV/atom (empty: 0; see the module docstring).
    """

    scale: float = 1.0
    shifts: dict[str, float] = field(default_factory=dict)
    rc: float = 3.0
    n_pair: int = 3
    embed_powers: tuple[float, ...] = (2.0,)
    coefficients: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    model_reference: dict[str, float] = field(default_factory=dict)
    moments: tuple[int, ...] = ()
    wells: tuple[float, ...] = ()
    r0: float | None = None
    gate: float | None = None
    gate_r: float | None = None
    gate_n0: float | None = None
    #: where a fine-tuning run's metrics hold this correction (``metrics.json``)
    metrics_key: ClassVar[str] = "env_correction"

    @property
    def spec(self) -> BasisSpec:
        """The residual terms (:class:`~ase_surftune.models.env_basis.BasisSpec`)."""
        return BasisSpec(float(self.rc), int(self.n_pair), tuple(self.embed_powers),
                         tuple(self.moments), tuple(self.wells), self.r0, self.gate,
                         self.gate_r, self.gate_n0)

    @property
    def n_basis(self) -> int:
        return self.spec.n_terms

    def residual(self, atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Position-dependent residual (energy eV, forces eV/Å, Voigt stress eV/Å³ or None
        without a 3-D cell) plus the constant Σb_Z; without the scale."""
        e, f, s = basis_residual(atoms, self.spec, self.coefficients)
        return e + self.energy_shift(atoms.numbers), f, s

    def energy_shift(self, numbers: np.ndarray) -> float:
        """Σ_i b_{Z_i} in eV."""
        return per_element_sum(self.shifts, numbers)

    def scaled_energy(self, energy: float, numbers: np.ndarray) -> float:
        """a·(E_m − Σe_Z^model) + Σe_Z^model in eV (the scaled part of E′)."""
        ref = per_element_sum(self.model_reference, numbers)
        return self.scale * (float(energy) - ref) + ref

    def apply(self, atoms: Atoms, energy: float, forces: np.ndarray,
              stress: np.ndarray | None = None
              ) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Corrected (E′ eV, F′ eV/Å, σ′ eV/Å³) from the model's values for ``atoms``.

        ``stress`` may be a Voigt 6-vector or a 3×3 matrix; σ′ comes back in the same
        shape (None when no stress is given).
        """
        e_r, f_r, s_r = self.residual(atoms)
        e = self.scaled_energy(energy, atoms.numbers) + e_r
        f = self.scale * np.asarray(forces, dtype=float) + f_r
        if stress is None:
            return e, f, None
        st = np.asarray(stress, dtype=float)
        if s_r is None:
            raise ValueError("a stress needs a 3-D cell for the correction's virial")
        if st.shape == (3, 3):
            return e, f, self.scale * st + voigt_6_to_full_3x3_stress(s_r)
        return e, f, self.scale * st.reshape(-1)[:6] + s_r

    def summary(self) -> str:
        """Coefficients, then s and force MAE before -> after on the fit and validation
        data (whole set and per group). The warnings are in ``info["warnings"]``; the
        fit and the ``env`` strategy log them, and ``surftune finetune`` prints them once
        (from the run's ``metrics["warnings"]``)."""
        coef = ", ".join(f"{c:+.4g}" for c in self.coefficients)
        shifts = ", ".join(f"{k}: {v:+.4f}" for k, v in self.shifts.items()) or "none"
        text = (f"environment correction a = {self.scale:.4f}, rc = {self.rc:.3f} Å, "
                f"{self.spec.describe()} [{coef}], shifts b_Z (eV/atom) {{{shifts}}}")
        for key, name in (("", "fitting data"), ("valid_", "validation data")):
            if f"{key}force_mae_before" not in self.info:
                continue
            s0, s1 = (self.info.get(f"{key}softening_scale_{x}") for x in ("before", "after"))
            s_txt = "n/a" if s0 is None else f"{s0:.3f} -> {s1:.3f}"
            text += (f"\n{name}: s {s_txt}, force MAE {self.info[f'{key}force_mae_before']:.4f}"
                     f" -> {self.info[f'{key}force_mae_after']:.4f} eV/Å")
            groups = self.info.get(f"{key}groups") or {}
            text += "".join("\n" + line for line in format_groups(groups, name.split()[0]))
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (floats, lists, str keys only)."""
        return {"kind": "environment", "scale": float(self.scale),
                "shifts": {k: float(v) for k, v in self.shifts.items()},
                "rc": float(self.rc), "n_pair": int(self.n_pair),
                "embed_powers": [float(p) for p in self.embed_powers],
                "coefficients": [float(c) for c in self.coefficients],
                "model_reference": {k: float(v) for k, v in self.model_reference.items()},
                "moments": [int(m) for m in self.moments],
                "wells": [float(w) for w in self.wells],
                "r0": None if self.r0 is None else float(self.r0),
                **{k: None if getattr(self, k) is None else float(getattr(self, k))
                   for k in ("gate", "gate_r", "gate_n0")},
                "info": to_jsonable(self.info)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnvCorrection:
        """Inverse of :meth:`to_dict` (plain JSON numbers; never executes code)."""
        if d.get("kind", "environment") != "environment":
            raise ValueError(f"not an environment correction: kind={d.get('kind')!r}")
        out = cls(scale=float(d["scale"]),
                  shifts={str(k): float(v) for k, v in d.get("shifts", {}).items()},
                  rc=float(d["rc"]), n_pair=int(d["n_pair"]),
                  embed_powers=tuple(float(p) for p in d.get("embed_powers", ())),
                  coefficients=[float(c) for c in d["coefficients"]],
                  info=dict(d.get("info", {})),
                  model_reference={str(k): float(v)
                                   for k, v in d.get("model_reference", {}).items()},
                  moments=tuple(int(m) for m in d.get("moments", ())),
                  wells=tuple(float(w) for w in d.get("wells", ())),
                  r0=None if d.get("r0") is None else float(d["r0"]),
                  **{k: None if d.get(k) is None else float(d[k])
                     for k in ("gate", "gate_r", "gate_n0")})
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


def fit_env_correction(model_calc: Calculator, frames: Sequence[Atoms], *,
                       rc: float | None = None, n_pair: int = 2,
                       embed_powers: Sequence[float] = (2.0,),
                       scale: str = "fit", fixed_scale: float = 1.0,
                       energy_weight: float = 1.0, stress_weight: float = 0.0,
                       ridge: float = 1e-3, fit_shifts: bool = True,
                       max_frames: int | None = 3, relative: bool = True,
                       moments: Sequence[int] = (), wells: Sequence[float] = (),
                       r0: float | None = None, weighting: str = "component",
                       shells: int = 1, keep_eos: Atoms | None = None,
                       gate: float | None = None, gate_r: float | None = None,
                       gate_n0: float | None = None) -> EnvCorrection:
    """Fit an :class:`EnvCorrection` of ``model_calc`` to labelled ``frames``.

    One linear least-squares problem in (a, b_Z, c_k, d_m); the loss is in the module
    docstring.

    Args:
        model_calc: the model, any ASE calculator (a Bundle or SurfTuneCalculator is
            evaluated batched).
        frames: labelled structures (energy, forces; stress used when present and
            ``stress_weight > 0``), at most ``max_frames`` of them.
        rc: cutoff in Å (default: from the fit frames' nearest-neighbour distance and
            ``shells``, :func:`~ase_surftune.models.env_fit.auto_rc`).
        n_pair: number of pair functions (0 for none).
        embed_powers: embedding powers (empty for none).
        moments: orders (1, 2) of the moment terms (empty for none).
        wells: widths in Å of the well terms (empty for none).
        r0: the wells' centre in Å (default: the fit frames' median first-shell bond,
            :func:`~ase_surftune.models.env_fit.auto_r0`).
        weighting: ``"component"`` (every force component alike) or ``"frame"`` (each
            frame relative to its own rms force;
            :func:`~ase_surftune.models.env_fit.force_row_weights`).
        shells: neighbour shells the automatic cutoff spans (1 or 2).
        gate: width (neighbours) of the bulk-likeness gate: every term comes a second
            time weighted atom by atom by φ_i = exp(−(n_i − n0)²/2·gate²), n_i the atom's
            first-shell count (:mod:`~ase_surftune.models.env_basis`), so bulk atoms can
            be stiffened more than those at defects and surfaces. None: no gate.
        gate_r: the gate's first-shell edge in Å (default 1.207 × r0, half-way between
            fcc's first and second shells); gate_n0: an ideal bulk atom's first-shell
            count (default: the largest count among the fit atoms, rounded).
        keep_eos: an ideal bulk cell (no labels needed): the corrected model's energy
            per atom at ±1 and ±2 % strain, relative to this cell, is held to the
            model's own (exact linear constraints), so the correction leaves the
            model's lattice constant and bulk modulus as they were and stiffens only
            distortions. For models whose equation of state is already good while
            surfaces, defects and phonons are soft.
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
        relative: scale about the model's own per-element reference e_Z^model, fitted
            on ``frames`` (module docstring); with free shifts this changes only how
            E′ is split between a and b_Z, not E′ itself.

    Returns:
        The correction; ``info`` holds s, force and energy MAE before/after on the fit
        frames (:func:`assess_env_correction`), per group too (``groups``), and
        ``warnings``.

    Raises:
        DataError: no frames, too many frames, unlabelled frames, or no force signal.

    Why this is over 80 lines: a public API function whose docstring documents every
    keyword with its unit; the code is ~30 lines.
    """
    frames = check_fit_args(frames, max_frames, scale, weighting)
    rc = float(rc) if rc is not None else auto_rc(frames, shells)
    if gate is None and (gate_r is not None or gate_n0 is not None):
        raise ValueError("gate_r and gate_n0 shape the bulk-likeness gate; give gate "
                         "(its width in neighbours) too")
    if r0 is None and (wells or gate is not None):
        r0 = auto_r0(frames)
    if gate is not None and (gate_r is None or gate_n0 is None):
        auto_r, auto_n0 = auto_gate(frames, r0)
        gate_r = auto_r if gate_r is None else gate_r
        gate_n0 = auto_n0 if gate_n0 is None else gate_n0
    spec = BasisSpec(rc, int(n_pair), tuple(float(p) for p in embed_powers),
                     tuple(int(m) for m in moments), tuple(float(w) for w in wells),
                     float(r0) if wells else None,
                     *((float(gate), float(gate_r), float(gate_n0)) if gate is not None
                       else (None, None, None)))
    refs = [get_labels(at) for at in frames]
    mods = list(zip(*predict_with(model_calc, frames, compute_stress=[
        stress_weight > 0 and all(at.pbc) for at in frames])))  # (E, F, σ) per frame
    model_ref: dict[str, float] = {}
    if relative:
        model_ref, _ = fit_model_reference([m[0] for m in mods], [at.numbers for at in frames])
    base = [per_element_sum(model_ref, at.numbers) for at in frames]
    # the least squares sees energies relative to Σe_Z^model (reference and model alike)
    refs_rel = [(r[0] - e0, r[1], r[2]) for r, e0 in zip(refs, base)]
    mods_rel = [(m[0] - e0, m[1], m[2]) for m, e0 in zip(mods, base)]
    bases = [spec_terms(at, spec) for at in frames]
    f_ref = np.concatenate([r[1].reshape(-1) for r in refs])
    f_mod = np.concatenate([m[1].reshape(-1) for m in mods])
    if not np.any(f_ref) or not np.any(f_mod):
        raise DataError("fit frames carry no force signal (all forces zero)")
    elements = sorted({chemical_symbols[int(z)] for at in frames for z in at.numbers})
    problem = _Problem(elements=elements if fit_shifts else [], free_scale=scale == "fit",
                       a_fixed=(float(f_ref @ f_ref) / float(f_ref @ f_mod) if scale == "slope"
                                else float(fixed_scale)),
                       k_res=spec.n_terms)
    mat, y = problem.rows(frames, refs_rel, mods_rel, bases, f_ref, f_mod, energy_weight,
                          stress_weight, weighting)
    constraints = None
    if keep_eos is not None:
        cells = eos_cells(keep_eos)
        e_eos = predict_with(model_calc, cells)[0]
        constraints = eos_constraints(problem, e_eos, [spec_terms(c, spec) for c in cells],
                                      len(keep_eos))
    sol = _ridge_lstsq(mat, y, problem.c0, problem.k_res, ridge, constraints)
    c0, k_res = problem.c0, problem.k_res
    corr = EnvCorrection(scale=float(sol[0]) if problem.free_scale else problem.a_fixed,
                         shifts={el: float(sol[c0 + k_res + q])
                                 for q, el in enumerate(problem.elements)},
                         rc=rc, n_pair=spec.n_pair, embed_powers=spec.embed_powers,
                         moments=spec.moments, wells=spec.wells, r0=spec.r0,
                         gate=spec.gate, gate_r=spec.gate_r, gate_n0=spec.gate_n0,
                         coefficients=[float(v) for v in sol[c0:c0 + k_res]],
                         model_reference=model_ref)
    corr.info = {"scale_mode": scale, "weighting": weighting, "n_structures": len(frames),
                 "keep_eos": None if keep_eos is None else keep_eos.get_chemical_formula(),
                 "n_atoms": int(sum(len(at) for at in frames)),
                 "energy_weight": float(energy_weight), "stress_weight": float(stress_weight),
                 "ridge": float(ridge), "relative": bool(relative),
                 **assess_env_correction(corr, frames, [m[0] for m in mods],
                                         [m[1] for m in mods])}
    log.info("%s", corr.summary())
    for w in corr.info["warnings"]:
        log.warning("environment correction: %s", w)
    return corr


def assess_env_correction(corr: EnvCorrection, frames: Sequence[Atoms],
                          model_energies: Sequence[float], model_forces: Sequence[np.ndarray],
                          prefix: str = "", name: str = "fitting data") -> dict[str, Any]:
    """s, force MAE (eV/Å) and energy MAE (eV/atom) of the model before and after ``corr``
    on labelled ``frames``, for the whole set and per group (``{prefix}groups``), with
    one warning per number that moved the wrong way (the linear correction's idiom,
    :func:`~ase_surftune.models.correction.compare_before_after`).

    Args:
        corr: the correction.
        frames: labelled structures (reference energy eV, forces eV/Å).
        model_energies, model_forces: the model's values for ``frames``, in the frame the
            correction applies to (a bundle head: after its reference shifts).
        prefix: key prefix (``"valid_"``); name: the data's name in the report.
    """
    frames = list(frames)
    after = [corr.apply(at, e, f) for at, e, f in zip(frames, model_energies, model_forces)]
    labels = [get_labels(at) for at in frames]
    out = compare_before_after([lab[1] for lab in labels], list(model_forces),
                               [a[1] for a in after], e_ref=[lab[0] for lab in labels],
                               e_before=list(model_energies), e_after=[a[0] for a in after],
                               n_atoms=[len(at) for at in frames], prefix=prefix, name=name)
    groups = per_group_scales(frames, list(model_forces), [a[1] for a in after], name=name)
    out[f"{prefix}groups"] = groups
    out["warnings"] = out["warnings"] + [w for g in groups.values() for w in g["warnings"]]
    return out
