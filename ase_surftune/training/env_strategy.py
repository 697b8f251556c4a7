"""Strategy ``env``: the environment-aware correction as a fine-tuning strategy.

No gradient steps. The base model (after the run's reference-energy shifts) is corrected
by :class:`~ase_surftune.models.env_correction.EnvCorrection`::

    E′ = a·(E_m − Σe_Z^model) + Σe_Z^model + Σb_Z + Σ_k c_k Σ_{i<j} φ_k(r_ij)
         + Σ_m d_m Σ_i ρ_i^{p_m}
    F′ = −∇E′,   σ′ = (1/V) ∂E′/∂ε          (eV, eV/Å, eV/Å³)

fitted on the training structures (at most ``max_frames``, default 3: the point is a fix
from very little DFT data) and stored as the head's correction in the bundle (JSON,
``kind: "environment"``), so the bundle calculator, ``evaluate``, ``compare`` and the
property workflows all use the corrected head. Like ``linear``, the run reports s and
force MAE before -> after on the fitting data and on the validation frames it never saw,
per group too, and warns loudly when s moves away from 1 or an error grows.

    strategy: env
    strategy_options: {rc: 3.1, n_pair: 2, embed_powers: [2.0], scale: fit}
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PositiveFloat, model_validator

from ase_surftune.core.config import StrictModel
from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.errors import ConfigError
from ase_surftune.training.config import FinetuneConfig, LinearConfig
from ase_surftune.training.registry import register_strategy
from ase_surftune.training.strategies import LinearStrategy

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.models.env_correction import EnvCorrection

__all__ = ["EnvConfig", "EnvStrategy"]

log = logging.getLogger(__name__)


class EnvConfig(StrictModel):
    """Options of the ``env`` strategy (the knobs of
    :func:`~ase_surftune.models.env_correction.fit_env_correction`).

    ``rc`` cutoff in Å (None: 1.2 × the nearest-neighbour distance of the fit frames,
    or 1.7 × with ``shells: 2``); ``n_pair`` pair functions; ``embed_powers`` embedding
    powers; ``moments`` orders (1, 2) of the moment terms; ``wells`` widths (Å) of the
    well terms about ``r0`` (Å; None: the fit frames' median first-shell bond);
    ``weighting``: ``component`` (every force component alike) or ``frame`` (each frame
    relative to its own rms force); ``keep_eos``: hold the model's equation of state
    (lattice constant, bulk modulus) of the training element's ASE reference crystal
    (``ase.build.bulk``; one element only) and stiffen only distortions; ``scale``:
    ``fit`` (a free), ``slope`` (a = ΣF_ref²/ΣF_ref·F_m first) or ``fixed``
    (``fixed_scale``); ``energy_weight``/``stress_weight`` loss weights; ``ridge`` on the
    normalised residual coefficients; ``fit_shifts`` per-element b_Z; ``max_frames``
    most training structures (None: no limit); ``relative`` scale about the model's own
    per-element reference; ``gate`` width (neighbours) of the bulk-likeness gate that adds a
    copy of every term weighted by how bulk-like each atom is (None: no gate), with
    ``gate_r`` its first-shell edge (Å) and ``gate_n0`` the ideal count (None: from the
    fit frames).
    """

    rc: float | None = Field(None, gt=0)
    shells: Literal[1, 2] = 1
    n_pair: int = Field(2, ge=0)
    embed_powers: list[float] = Field(default_factory=lambda: [2.0])
    moments: list[Literal[1, 2]] = Field(default_factory=list)
    wells: list[PositiveFloat] = Field(default_factory=list)
    r0: float | None = Field(None, gt=0)
    weighting: Literal["component", "frame"] = "component"
    keep_eos: bool = False
    scale: Literal["fit", "slope", "fixed"] = "fit"
    fixed_scale: float = Field(1.0, gt=0)
    energy_weight: float = Field(1.0, ge=0)
    stress_weight: float = Field(0.0, ge=0)
    ridge: float = Field(1e-3, ge=0)
    fit_shifts: bool = True
    max_frames: int | None = Field(3, ge=1)
    relative: bool = True
    gate: float | None = Field(None, gt=0)
    gate_r: float | None = Field(None, gt=0)
    gate_n0: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _gate_shape_needs_gate(self) -> EnvConfig:
        if self.gate is None and (self.gate_r is not None or self.gate_n0 is not None):
            raise ValueError("gate_r and gate_n0 shape the bulk-likeness gate; give gate "
                             "(its width in neighbours) too")
        return self


@register_strategy
class EnvStrategy(LinearStrategy):
    """Environment-aware correction of the base model; the weights are not touched."""

    name = "env"
    trains = False
    options_model = EnvConfig

    @classmethod
    def check_config(cls, config: FinetuneConfig, backend: str) -> list[str]:
        problems = super(LinearStrategy, cls).check_config(config, backend)
        if config.ema_decay is not None:
            problems.append("ema_decay: strategy 'env' does no gradient training")
        if config.linear != LinearConfig():
            problems.append("linear: only used by strategy 'linear'; give the env options "
                            "in strategy_options")
        return problems

    def fit_options(self) -> EnvConfig:  # type: ignore[override]
        return self.options

    def fit_correction(self, spec: Any, setup: Any, data: Any, feats: Any,
                       align: Any) -> EnvCorrection:
        """Fit on the training structures, then check on the validation ones (stages'
        ``train_model`` calls this instead of the linear fit)."""
        from ase_surftune.models.bundle import Bundle
        from ase_surftune.models.env_correction import (
            assess_env_correction,
            fit_env_correction,
        )
        from ase_surftune.training.losses import predict_samples

        o = self.options
        if o.max_frames is not None and len(data.train) > o.max_frames:
            raise ConfigError(
                f"strategy 'env' is fitted on at most {o.max_frames} training structures "
                f"(strategy_options.max_frames) but got {len(data.train)}; give fewer "
                f"in train_file (the rest in valid_file) or set max_frames: null")
        anchor = _eos_anchor(data.train) if o.keep_eos else None
        head = setup.base_head
        base = Bundle(adapter=setup.base, reference_energies={head: align.shifts},
                      default_head=head)  # E_m: the base model after the run's shifts
        corr = fit_env_correction(
            base, data.train, rc=o.rc, shells=o.shells, n_pair=o.n_pair,
            embed_powers=o.embed_powers, moments=o.moments, wells=o.wells, r0=o.r0,
            weighting=o.weighting, keep_eos=anchor, scale=o.scale, fixed_scale=o.fixed_scale,
            energy_weight=o.energy_weight, gate=o.gate, gate_r=o.gate_r, gate_n0=o.gate_n0,
            stress_weight=o.stress_weight, ridge=o.ridge, fit_shifts=o.fit_shifts,
            max_frames=o.max_frames, relative=o.relative)
        warnings = list(corr.info.get("warnings", []))
        if data.valid:
            e_v, f_v = predict_samples(setup.base, head, feats.base_valid, spec.vbs)
            e_v = [e + per_element_sum(align.shifts, a.numbers)
                   for e, a in zip(e_v, data.valid)]
            check = assess_env_correction(corr, data.valid, e_v, f_v, prefix="valid_",
                                          name="validation data")
            new = check.pop("warnings")
            corr.info.update(check)
        else:
            new = ["no validation data: the correction's effect on unseen frames is "
                   "unchecked"]
        corr.info["warnings"] = warnings + new
        log.info("%s", corr.summary())
        for w in new:  # (the fit logged its own)
            log.warning("environment correction: %s", w)
        return corr


def _eos_anchor(frames: Any) -> Any:
    """The ideal crystal ``keep_eos`` holds: ASE's reference structure of the one
    element in the training data."""
    from ase.build import bulk

    elements = sorted({s for at in frames for s in at.get_chemical_symbols()})
    if len(elements) != 1:
        raise ConfigError(f"strategy_options.keep_eos needs training data of one element "
                          f"(it holds that element's reference crystal); got {elements}")
    try:
        return bulk(elements[0])
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"strategy_options.keep_eos: ASE has no reference crystal for "
                          f"{elements[0]} ({exc})") from exc
