"""Linear softening correction of a potential-energy surface (Deng et al., seed 002).

Two energy modes (stored in :attr:`LinearCorrection.mode`):

* ``"relative"`` (default for new fits) — the scale acts on the model's energy
  *relative to its own per-element reference energies* e_Z^model (eV/atom,
  :attr:`LinearCorrection.model_reference`)::

      E' = a·(E − Σ_i e_{Z_i}^model) + Σ_i e_{Z_i}^model + Σ_i b_{Z_i}
      F' = a·F,      σ' = a·σ

  so a stretches the energy *landscape* around the model's own reference, and the
  shifts b_Z (eV/atom) stay small and physical: they only remove what the model gets
  wrong about the reference-level energy of each element (not (1 − a)·E, which is
  ±1000 eV/atom when E is already on another DFT code's reference).
* ``"total"`` (bundles written before this mode existed) — ``E' = a·E + Σ b_Z``.

In both modes the added terms do not depend on positions, so forces and stress stay
the exact derivatives of E': F' = −∇E' = a·F, σ' = a·σ (eV, eV/Å, eV/Å³).

``E`` is whatever energy is handed to :meth:`LinearCorrection.apply`: inside a bundle
that is the model energy *after* the bundle's reference-energy shifts, so
``model_reference`` is in the same frame.

Fits (:func:`fit_linear_correction`, ``fit=``):

* ``"slope"`` (default, seed-faithful): a = Σ F_ref² / Σ F_ref·F_model, so that the
  corrected model's softening scale on the fitting data is exactly 1;
* ``"tls"``: total least squares of F_ref against F_model (errors in both);
* ``"mse"``: the former least-squares fit a = argmin Σ (F_ref − a F_model)² (jointly
  with energies); its corrected slope is cos² < 1 by construction.

The softening scale itself is defined once, in :mod:`ase_surftune.core.metrics`
(re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.errors import DataError
from ase_surftune.core.metrics import force_signal_ok, mae_rmse, paired_forces, softening_scale
from ase_surftune.data import alignment
from ase_surftune.data.labels import get_labels
from ase_surftune.models.predict import predict_with
from ase_surftune.models.scale_fit import (
    FitKind,
    _joint_mse,
    fit_model_reference,
    scale_from_forces,
    softening_scale_high_force,
)

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms
    from ase.calculators.calculator import Calculator

__all__ = ["LinearCorrection", "fit_linear_correction", "fit_linear_correction_from_calc",
           "fit_model_reference", "softening_scale", "softening_scale_high_force",
           "scale_from_forces", "assess_correction", "compare_before_after",
           "CORRECTION_VERSION"]

log = logging.getLogger(__name__)

#: version of the stored correction dict (1: ``E' = a·E + Σb``; 2: adds ``mode``)
CORRECTION_VERSION = 2


@dataclass
class LinearCorrection:
    """A fitted PES scale and per-element energy shifts.

    Attributes:
        scale: dimensionless PES scale ``a`` (1 = no rescaling).
        shifts: per-element energy shift ``b_Z`` in eV/atom, keyed by chemical symbol.
        info: fit diagnostics (softening scale before/after, n_structures, warnings...).
        mode: ``"relative"`` (scale about ``model_reference``) or ``"total"`` (legacy,
            ``E' = a·E + Σ b``); see the module docstring.
        model_reference: e_Z^model in eV/atom (``"relative"`` mode only).
    """

    scale: float = 1.0
    shifts: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    mode: str = "total"
    model_reference: dict[str, float] = field(default_factory=dict)

    def energy_shift(self, numbers: np.ndarray) -> float:
        """Σ_i b_{Z_i} in eV for atoms with atomic numbers ``numbers``."""
        return per_element_sum(self.shifts, numbers)

    def reference_energy(self, numbers: np.ndarray) -> float:
        """Σ_i e_{Z_i}^model in eV (0 in ``"total"`` mode)."""
        if self.mode != "relative":
            return 0.0
        return per_element_sum(self.model_reference, numbers)

    def apply_energy(self, energy: float, numbers: np.ndarray) -> float:
        """Corrected energy E' (eV) of one structure with model energy ``energy`` (eV)."""
        ref = self.reference_energy(numbers)
        return self.scale * (float(energy) - ref) + ref + self.energy_shift(numbers)

    def apply(self, energy: float, forces: np.ndarray, numbers: np.ndarray,
              stress: np.ndarray | None = None
              ) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Corrected (energy eV, forces eV/Å, stress eV/Å³) for one structure."""
        e = self.apply_energy(energy, numbers)
        f = self.scale * np.asarray(forces)
        s = None if stress is None else self.scale * np.asarray(stress)
        return e, f, s

    def summary(self) -> str:
        """One-line report: scale, shifts and the softening scale before/after the fit."""
        shifts = ", ".join(f"{k}: {v:+.4f}" for k, v in self.shifts.items()) or "none"
        text = (f"linear correction ({self.info.get('fit', 'mse')} fit, {self.mode} energies) "
                f"a = {self.scale:.6f}, shifts b_Z (eV/atom) {{{shifts}}}")
        for key, name in (("", "fitting data"), ("valid_", "validation data")):
            before = self.info.get(f"{key}softening_scale_before")
            if before is not None:
                after = self.info.get(f"{key}softening_scale_after")
                text += f"; softening scale s on {name} {before:.4f} -> {after:.4f}"
            if f"{key}force_mae_before" in self.info:
                text += (f", force MAE {self.info[f'{key}force_mae_before']:.4f} -> "
                         f"{self.info[f'{key}force_mae_after']:.4f} eV/Å")
        for w in self.info.get("warnings", []):
            text += f"\nWARNING: {w}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (floats, strings, dicts, lists)."""
        return {"kind": "linear", "version": CORRECTION_VERSION, "mode": self.mode,
                "scale": float(self.scale),
                "shifts": {k: float(v) for k, v in self.shifts.items()},
                "model_reference": {k: float(v) for k, v in self.model_reference.items()},
                "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinearCorrection:
        """Inverse of :meth:`to_dict`; dicts without ``mode`` (version 1) are ``"total"``."""
        if d.get("kind", "linear") != "linear":
            raise DataError(f"not a linear correction: kind={d.get('kind')!r}")
        mode = str(d.get("mode", "total"))
        if mode not in ("total", "relative"):
            raise DataError(f"unknown linear-correction mode {mode!r}")
        return cls(scale=float(d["scale"]), shifts={k: float(v) for k, v in d["shifts"].items()},
                   info=dict(d.get("info", {})), mode=mode,
                   model_reference={k: float(v)
                                    for k, v in d.get("model_reference", {}).items()})


# --------------------------------------------------------------------------- fitting


def compare_before_after(f_ref: Sequence[np.ndarray], f_before: Sequence[np.ndarray],
                         f_after: Sequence[np.ndarray], *,
                         e_ref: Sequence[float] | None = None,
                         e_before: Sequence[float] | None = None,
                         e_after: Sequence[float] | None = None,
                         n_atoms: Sequence[int] | None = None,
                         prefix: str = "", name: str = "fitting data",
                         strict_signal: bool = False) -> dict[str, Any]:
    """Softening scale and errors of a model before and after any correction (one idiom
    for every correction kind: the numbers and the loud warnings).

    Args:
        f_ref, f_before, f_after: forces per structure (eV/Å): reference, model, corrected.
        e_ref, e_before, e_after: total energies (eV), same frame for all three; with
            ``n_atoms`` (atoms per structure) the per-atom energy MAE is reported too.
        prefix: key prefix (``"valid_"``...); name: the data's name in the warnings.
        strict_signal: report s only when the reference forces carry enough signal
            (:func:`~ase_surftune.core.metrics.force_signal_ok`; for small groups), not
            merely when they are not all zero.

    Returns:
        JSON-able dict: ``{prefix}softening_scale_before/after`` (None without force
        signal), ``{prefix}force_mae_before/after`` (eV/Å), optionally
        ``{prefix}energy_mae_per_atom_before/after`` (eV/atom), and ``warnings``: one line
        each when s moved away from 1 or an error grew.
    """
    r, m = paired_forces(list(f_ref), list(f_before))
    _, m1 = paired_forces(list(f_ref), list(f_after))
    out: dict[str, Any] = {}
    warnings: list[str] = []
    signal = force_signal_ok(r) if strict_signal else bool(r.any())
    s0 = softening_scale(r, m) if signal else None
    s1 = softening_scale(r, m1) if signal else None
    out[f"{prefix}softening_scale_before"], out[f"{prefix}softening_scale_after"] = s0, s1
    out[f"{prefix}force_mae_before"] = mae_rmse(r - m)[0]
    out[f"{prefix}force_mae_after"] = mae_rmse(r - m1)[0]
    if s0 is not None and s1 is not None and abs(s1 - 1) > abs(s0 - 1) + 1e-9:
        warnings.append(f"softening scale on {name} moved AWAY from 1: {s0:.3f} -> {s1:.3f}")
    if out[f"{prefix}force_mae_after"] > out[f"{prefix}force_mae_before"] * (1 + 1e-9):
        warnings.append(f"force MAE on {name} GREW: {out[f'{prefix}force_mae_before']:.4f} "
                        f"-> {out[f'{prefix}force_mae_after']:.4f} eV/Å")
    if e_ref is not None and e_before is not None and e_after is not None \
            and n_atoms is not None:
        n_at = np.asarray(n_atoms, dtype=float)
        e_r = np.asarray(e_ref, dtype=float)
        before = mae_rmse((np.asarray(e_before, dtype=float) - e_r) / n_at)[0]
        after = mae_rmse((np.asarray(e_after, dtype=float) - e_r) / n_at)[0]
        out[f"{prefix}energy_mae_per_atom_before"] = before
        out[f"{prefix}energy_mae_per_atom_after"] = after
        if after > before * (1 + 1e-9) + 1e-12:
            warnings.append(f"energy MAE on {name} GREW: {before * 1000:.2f} -> "
                            f"{after * 1000:.2f} meV/atom")
    out["warnings"] = warnings
    return out


def assess_correction(corr: LinearCorrection, ref_forces: Sequence[np.ndarray],
                      model_forces: Sequence[np.ndarray],
                      ref_energies: Sequence[float] | None = None,
                      model_energies: Sequence[float] | None = None,
                      numbers_list: Sequence[Sequence[int] | np.ndarray] | None = None,
                      prefix: str = "", name: str = "fitting data") -> dict[str, Any]:
    """Softening scale and errors of the model before and after ``corr`` on some data.

    Returns a JSON-able dict with ``{prefix}softening_scale_before/after``,
    ``{prefix}force_mae_before/after`` (eV/Å), ``{prefix}energy_mae_per_atom_before/
    after`` (eV/atom; when energies are given, in the frame of ``model_energies``) and
    ``warnings``: one line each when s moved away from 1 or an error grew
    (:func:`compare_before_after`).
    """
    have_e = (ref_energies is not None and model_energies is not None
              and numbers_list is not None)
    e_after = ([corr.apply_energy(e, z) for e, z in zip(model_energies, numbers_list)]
               if have_e else None)
    return compare_before_after(
        ref_forces, model_forces, [corr.scale * np.asarray(f) for f in model_forces],
        e_ref=ref_energies if have_e else None, e_before=model_energies if have_e else None,
        e_after=e_after, n_atoms=[len(z) for z in numbers_list] if have_e else None,
        prefix=prefix, name=name)


def fit_linear_correction(ref_energies: Sequence[float] | np.ndarray | None,
                          ref_forces: Sequence[np.ndarray],
                          model_energies: Sequence[float] | np.ndarray | None,
                          model_forces: Sequence[np.ndarray],
                          numbers_list: Sequence[Sequence[int] | np.ndarray], *,
                          energy_weight: float = 1.0, fit_shifts: bool = True,
                          use_energies: bool = True, fit: FitKind = "slope",
                          mode: Literal["relative", "total"] = "relative"
                          ) -> LinearCorrection:
    """Fit the PES scale ``a`` and per-element shifts ``b_Z``.

    The scale (``fit``, see the module docstring): ``"slope"`` (default) a = ΣF_ref² /
    ΣF_ref·F_model from the forces alone, so the corrected s on these data is exactly
    1; ``"tls"`` total least squares; ``"mse"`` the joint least-squares fit below.

    Energies (``mode``): ``"relative"`` (default) first fits the model's own reference
    energies e_Z^model (:func:`fit_model_reference`) and scales E − Σe_Z^model;
    ``"total"`` scales E itself (the pre-v2 behaviour).

    Shifts: with energies and ``fit_shifts``, b_Z are fitted (per-atom least squares,
    :func:`ase_surftune.data.alignment.fit_shifts`, with its rank check and shared-shift
    fallback) to E_ref − E'(b = 0) at fixed a. For ``fit="mse"`` a and b are fitted
    jointly (the loss is in :mod:`ase_surftune.models.scale_fit`); with
    ``fit_shifts=False`` energies then constrain a directly.
    Without energies (``ref_energies``/``model_energies`` None or ``use_energies=False``)
    only a is fitted, from forces, and shifts are empty.

    Args:
        ref_energies: reference total energies per structure, eV (or None).
        ref_forces: reference forces per structure, ``(n_s, 3)`` eV/Å.
        model_energies: model total energies per structure, eV (or None), in the frame
            in which the correction will be applied (a bundle: after its shifts).
        model_forces: model forces per structure, ``(n_s, 3)`` eV/Å.
        numbers_list: atomic numbers per structure.
        energy_weight: weight of the per-atom energy term (``fit="mse"`` only).
        fit_shifts: fit per-element shifts ``b_Z`` (eV/atom).
        use_energies: use energies at all.
        fit: ``"slope"``, ``"tls"`` or ``"mse"``.
        mode: ``"relative"`` or ``"total"``.

    Returns:
        A :class:`LinearCorrection`; its ``info`` holds the :func:`assess_correction`
        figures on the fitting data (s, force and energy MAE before/after), ``warnings``,
        ``fit``, ``mode``, ``n_structures``, ``n_atoms``, ``energy_weight``,
        ``used_energies`` and the shift and model-reference fit reports.

    Raises:
        DataError: inconsistent lengths/shapes, NaN/inf, or data that cannot determine
            ``a`` (zero or anti-correlated forces).

    Why this is over 80 lines: it is a public API function whose docstring
    documents every keyword argument with its unit; the code is 31 lines.
    """
    numbers, f_ref, f_mod = _check_fit_inputs(ref_forces, model_forces, numbers_list, fit,
                                              mode, energy_weight)
    n_struct = len(numbers)
    e_ref, e_mod = _fit_energies(ref_energies, model_energies, n_struct, use_energies)
    have_e = e_ref is not None
    info: dict[str, Any] = {"fit": fit, "mode": mode}
    model_ref, e_base = _model_reference(model_energies, numbers, mode, info)
    shifts: dict[str, float] = {}
    if fit == "mse":
        a, shifts = _joint_mse(f_ref, f_mod, None if not have_e else e_ref - e_base,
                               None if not have_e else e_mod - e_base, numbers,
                               energy_weight if have_e else 0.0, fit_shifts)
    else:
        if not f_mod.any():
            raise DataError("cannot determine the PES scale: all model forces are zero; give "
                            "structures with non-zero forces")
        a = float(scale_from_forces(f_ref, f_mod, fit))
        if have_e and fit_shifts:
            sf = alignment.fit_shifts(numbers, e_ref - (a * (e_mod - e_base) + e_base))
            shifts = sf.shifts
            info["shift_fit"] = {k: v for k, v in sf.to_dict().items() if k != "shifts"}
    corr = LinearCorrection(scale=a, shifts=shifts, mode=mode, model_reference=model_ref)
    info.update(n_structures=int(n_struct), n_atoms=int(sum(len(z) for z in numbers)),
                energy_weight=float(energy_weight), used_energies=bool(have_e))
    check = assess_correction(corr, list(ref_forces), list(model_forces), e_ref, e_mod,
                              numbers if have_e else None)
    info["warnings"] = check.pop("warnings")
    info.update(check)
    corr.info = info
    log.info("%s", corr.summary())
    return corr


def _check_fit_inputs(ref_forces: Sequence[np.ndarray], model_forces: Sequence[np.ndarray],
                      numbers_list: Sequence[Sequence[int] | np.ndarray], fit: str,
                      mode: str, energy_weight: float
                      ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Checked atomic numbers and flat reference/model force components (eV/Å)."""
    n_struct = len(numbers_list)
    if n_struct == 0:
        raise DataError("no structures to fit a linear correction on")
    if len(ref_forces) != n_struct or len(model_forces) != n_struct:
        raise DataError(f"{n_struct} structures but {len(ref_forces)} reference and "
                        f"{len(model_forces)} model force arrays")
    if fit not in ("slope", "tls", "mse"):
        raise DataError(f"unknown fit {fit!r}; use 'slope', 'tls' or 'mse'")
    if mode not in ("relative", "total"):
        raise DataError(f"unknown mode {mode!r}; use 'relative' or 'total'")
    numbers = [np.asarray(z, dtype=int).ravel() for z in numbers_list]
    for i, (z, fr, fm) in enumerate(zip(numbers, ref_forces, model_forces)):
        if np.shape(fr) != (len(z), 3) or np.shape(fm) != (len(z), 3):
            raise DataError(f"structure {i}: {len(z)} atoms but reference forces "
                            f"{np.shape(fr)} and model forces {np.shape(fm)}")
    f_ref, f_mod = paired_forces(list(ref_forces), list(model_forces))
    if energy_weight < 0:
        raise ValueError(f"energy_weight must be >= 0, got {energy_weight}")
    return numbers, f_ref, f_mod


def _fit_energies(ref_energies: Sequence[float] | np.ndarray | None,
                  model_energies: Sequence[float] | np.ndarray | None, n_struct: int,
                  use_energies: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Reference and model total energies (eV) to fit on, or ``(None, None)``."""
    if not use_energies or ref_energies is None or model_energies is None:
        return None, None
    e_ref = np.asarray(ref_energies, dtype=float).ravel()
    e_mod = np.asarray(model_energies, dtype=float).ravel()
    if e_ref.size != n_struct or e_mod.size != n_struct:
        raise DataError(f"{n_struct} structures but {e_ref.size} reference and "
                        f"{e_mod.size} model energies")
    if not (np.all(np.isfinite(e_ref)) and np.all(np.isfinite(e_mod))):
        raise DataError("energies contain NaN/inf")
    return e_ref, e_mod


def _model_reference(model_energies: Sequence[float] | np.ndarray | None,
                     numbers: list[np.ndarray], mode: str, info: dict[str, Any]
                     ) -> tuple[dict[str, float], np.ndarray]:
    """e_Z^model (eV/atom) and Σ_i e_Z^model per structure (eV); zeros in ``"total"`` mode.

    Records the reference fit (or why there is none) in ``info``.
    """
    e_base = np.zeros(len(numbers))
    if mode != "relative":
        return {}, e_base
    if model_energies is None:
        info["model_reference_fit"] = {"reason": "no model energies: scale acts on E"}
        return {}, e_base
    e_m_all = np.asarray(model_energies, dtype=float).ravel()
    if e_m_all.size != len(numbers) or not np.all(np.isfinite(e_m_all)):
        raise DataError(f"{len(numbers)} structures but {e_m_all.size} model energies "
                        f"(or NaN/inf)")
    model_ref, info["model_reference_fit"] = fit_model_reference(e_m_all, numbers)
    return model_ref, np.array([per_element_sum(model_ref, z) for z in numbers])


def fit_linear_correction_from_calc(configs: Sequence[Atoms], calc: Calculator,
                                    **kwargs: Any) -> LinearCorrection:
    """Evaluate ``calc`` (the model) on labelled ``configs`` and fit a correction.

    Reference labels come from :func:`ase_surftune.data.get_labels`; model energies (eV)
    and raw forces (eV/Å, constraints not applied) from ``calc`` through
    :func:`~ase_surftune.models.predict.predict_with` (batched for models). ``kwargs`` go to
    :func:`fit_linear_correction`.
    """
    configs = list(configs)
    labels = [get_labels(atoms) for atoms in configs]
    e_mod, f_mod, _ = predict_with(calc, configs)
    return fit_linear_correction([lab[0] for lab in labels], [lab[1] for lab in labels],
                                 list(e_mod), f_mod, [a.numbers.copy() for a in configs],
                                 **kwargs)
