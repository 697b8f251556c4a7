"""Active-learning configuration (pydantic v2): every problem in one ConfigError, before work.

A config names the **targets** (keys of :class:`~ase_surftune.evaluation.compare.MeasuredProperties`,
e.g. ``gamma_111`` J/m², ``barrier_vacancy`` eV, ``lattice_a`` Å, ``phonon_mean_THz``),
the **labeller** (``emt``, ``gpaw`` with ``labeller_options``, or any model spec as a
teacher), the label **budget** (structures), the relative **tolerance** on the change of
every target between iterations, the **batch size**, the **selection** mode
(``uncertainty`` or ``random``), and the fine-tuning options of each iteration.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ase_surftune.core.config import StrictModel, validate_model
from ase_surftune.core.errors import ConfigError

__all__ = [
    "DEFAULT_PROPERTIES",
    "ActiveConfig",
    "CommitteeSettings",
    "ExploreSettings",
    "load_active_config",
    "target_properties",
]


#: property settings of the loop (small cells: every candidate may become a DFT label).
#: ``surface.miller`` and ``neb.migrations`` are filled in from the targets.
DEFAULT_PROPERTIES: dict[str, Any] = {
    "element": "Cu",
    "lattice": {"fmax": 0.02, "steps": 60},
    "surface": {"min_slab_size": 5.0, "min_vacuum_size": 8.0, "relax": True, "fmax": 0.05,
                "steps": 60},
    # 15 atoms: the 2x2x1 cubic cell minus the vacancy; one climbing image (the fcc hop is
    # symmetric, its saddle is the midpoint)
    "neb": {"supercell": [2, 2, 1], "n_images": 1, "fmax": 0.05, "steps": 60,
            "relax_endpoints": True},
    "phonons": {"supercell": [1, 1, 1], "mesh": [6, 6, 6]},
}

_GAMMA = re.compile(r"^gamma_(\d)(\d)(\d)$")
_FIXED = {"lattice_a": "lattice", "lattice_c": "lattice", "barrier_vacancy": "neb",
          "barrier_adatom_100": "neb", "phonon_mean_THz": "phonons",
          "phonon_max_THz": "phonons"}


def target_properties(targets: list[str]) -> dict[str, Any]:
    """The compare-config pieces the targets need: properties, Miller indices, migrations.

    Raises:
        ValueError: a target no registered property produces.
    """
    props: list[str] = []
    miller: list[str] = []
    migrations: list[str] = []
    bad = []
    for t in targets:
        m = _GAMMA.match(t)
        if m:
            props.append("surface")
            miller.append("".join(m.groups()))
        elif t in _FIXED:
            props.append(_FIXED[t])
            if t.startswith("barrier_"):
                migrations.append("vacancy" if t == "barrier_vacancy" else "adatom-100")
        else:
            bad.append(t)
    if bad:
        raise ValueError(f"unknown target(s) {bad}; known: gamma_<hkl> (e.g. gamma_111), "
                         f"{sorted(_FIXED)}")
    return {"properties": sorted(set(props), key=["lattice", "surface", "neb",
                                                   "phonons"].index),
            "miller": list(dict.fromkeys(miller)), "migrations": list(dict.fromkeys(migrations))}


class CommitteeSettings(StrictModel):
    """Bootstrap committee on a shared trunk: ``size`` copies of the current model whose
    readout block alone is perturbed (``noise``) and re-trained (``epochs``) on bootstrap
    resamples of the labels.
    The spread of their energies (eV/atom) and forces (eV/Å) is the uncertainty."""

    size: int = Field(4, ge=2, le=16)
    epochs: int = Field(8, ge=1)
    #: readout perturbation before training, relative to each weight: w += noise·|w|·N(0,1)
    noise: float = Field(0.2, ge=0)
    lr: float = Field(1e-3, gt=0)
    #: also build the committee in ``random`` mode (only for its calibration report)
    in_random_mode: bool = False


class ExploreSettings(StrictModel):
    """Where candidates come from. Every structure the property workflows (bulk, slab and
    NEB relaxations) evaluate with the current model is recorded; up to
    ``frames_per_workflow`` of each (evenly spaced, ends kept) become candidates. Each
    workflow's final structure also gets short Langevin MD at ``md_temperatures`` (K,
    ``md_steps`` steps of ``md_timestep`` fs, a frame every ``md_interval``), rattled
    copies (σ in ``rattle``, Å) and strained copies (``strain``, fractional; in-plane for
    slabs)."""

    frames_per_workflow: int = Field(4, ge=0)
    md_temperatures: list[float] = Field(default_factory=lambda: [300.0, 900.0])
    md_steps: int = Field(20, ge=0)
    md_interval: int = Field(10, ge=1)
    md_timestep: float = Field(2.0, gt=0)
    rattle: list[float] = Field(default_factory=lambda: [0.05, 0.1])
    strain: list[float] = Field(default_factory=lambda: [-0.02, 0.02])
    max_candidates: int = Field(300, ge=1)

    @field_validator("md_temperatures", "rattle")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if any(x < 0 for x in v):
            raise ValueError(f"values must be >= 0, got {v}")
        return v

    @field_validator("strain")
    @classmethod
    def _strain(cls, v: list[float]) -> list[float]:
        if any(abs(x) >= 0.2 for x in v):
            raise ValueError(f"strains must be fractions below 0.2 in size, got {v}")
        return v


class ActiveConfig(StrictModel):
    """Everything :func:`~ase_surftune.active.loop.active_learn` needs (see
    ``examples/active_learn_cu.yaml``)."""

    model: str = "chgnet"
    targets: list[str] = Field(default_factory=lambda: ["gamma_111", "gamma_100",
                                                        "barrier_vacancy"])
    #: ``emt``, ``gpaw`` (``labeller_options`` = GPAW keywords) or a model spec (teacher)
    labeller: str = "emt"
    labeller_options: dict[str, Any] = Field(default_factory=dict)
    #: compare-config settings of the property workflows (defaults: DEFAULT_PROPERTIES)
    properties: dict[str, Any] = Field(default_factory=dict)
    budget: int = Field(24, ge=1, description="label budget (structures)")
    batch_size: int = Field(4, ge=1, description="structures labelled per iteration")
    tolerance: float = Field(0.03, gt=0, lt=1,
                             description="relative change of every target between two "
                                         "iterations that counts as converged")
    #: consecutive converged iterations needed to stop
    patience: int = Field(1, ge=1)
    #: what "converged" means. ``change``: every target's relative change from the
    #: previous iteration is below ``tolerance``, ``patience`` iterations in a row.
    #: ``window`` (noise-aware): every target's relative range (max − min) / |mean| over
    #: the last ``patience + 1`` measurements is below ``tolerance``, so neither one lucky
    #: small step nor a slow drift of sub-tolerance steps counts (fine-tuning noise moves
    #: the targets by ~1-3 % between iterations on Cu/EMT); use it with ``patience: 2``
    stop_rule: Literal["change", "window"] = "change"
    max_iterations: int = Field(20, ge=1)
    #: ``uncertainty`` (committee spread + diversity), ``random``, or ``stratified``
    #: (random's mix of workflows and structure kinds, the most uncertain of each);
    #: :mod:`ase_surftune.active.select`
    selection: Literal["uncertainty", "random", "stratified"] = Field(
        "uncertainty", description="how the batch is picked")
    #: uncertainty and stratified modes: each batch first takes the target workflows'
    #: stationary points (relaxed slabs and bulk, an NEB's saddle and relaxed end point)
    #: that no label is near yet, then picks the rest by the mode
    #: (:func:`~ase_surftune.active.select.uncovered_stationary`)
    stationary_first: bool = Field(False, description="label the target workflows' "
                                   "stationary points first (uncertainty/stratified selection)")
    #: the energy term of the stationary points' labels weighs this many times a
    #: perturbed frame's in every fine-tune (``info["config_energy_weight"]``, any
    #: selection mode). The targets are energy differences between exactly these
    #: structures, and a perturbed frame's forces already weigh in the loss
    stationary_energy_weight: float = Field(1.0, gt=0, description="energy weight of the "
                                            "stationary points' labels in fine-tuning")
    #: uncertainty mode: the batch is chosen by farthest-point sampling among the
    #: ``pool_factor * batch_size`` most uncertain candidates
    pool_factor: float = Field(3.0, ge=1.0)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of selection and training")
    committee: CommitteeSettings = Field(default_factory=CommitteeSettings)
    explore: ExploreSettings = Field(default_factory=ExploreSettings)
    #: FinetuneConfig keys for every iteration (not model/train_file/output_dir). The
    #: energy weight is 100 (fine-tuning's default is 1): the targets are energy
    #: differences, and with weight 1 the slab/bulk energies stayed ~10 meV/atom apart
    #: (γ(111) of CHGNet at 0.92 × EMT even with every candidate labelled; 100: 0.96).
    #: 45 epochs: with 15 the targets' floor was ~4 % on Cu/EMT, with 45 < 2 %.
    #: At least 400 optimiser steps on a cosine schedule: the first iterations have 1-2
    #: batches per epoch, and 45-90 steps fitted the labels' energies to only 4-5
    #: meV/atom (γ(111) 8 % low after 8 Cu labels; 500 steps: 1 meV/atom, every target
    #: within 3 %). Fine-tuning costs minutes, a DFT label far more.
    #: (benchmarks/RESULTS.md, active learning)
    finetune: dict[str, Any] = Field(default_factory=lambda: {
        "strategy": "full", "epochs": 45, "min_steps": 400, "scheduler": {"name": "cosine"},
        "loss": {"energy_weight": 100.0, "forces_weight": 10.0}})
    #: fine-tune from the previous iteration's model (True) or from ``model`` each time
    warm_start: bool = True
    #: labelled structures never trained on: force errors and uncertainty calibration
    holdout_file: Path | None = None
    #: also measure the targets with the labeller (cheap only for EMT or a model) and
    #: report each iteration's ratio to it
    reference_properties: bool = False
    #: benchmarking: stop as soon as every target is within ``tolerance`` of the
    #: labeller's own value (needs ``reference_properties``), and only then or at the
    #: budget (the convergence stop is off: it says nothing about reaching the reference)
    stop_on_reference: bool = False
    output_dir: Path = Field(Path("active_out"), description="folder of the run")
    #: continue the run in output_dir ("auto": if there is one)
    resume: bool | Literal["auto"] = "auto"
    overwrite: bool = False
    device: str = "cpu"
    num_threads: int | None = Field(1, ge=1)
    progress: bool = False

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one target")
        target_properties(v)
        return list(dict.fromkeys(v))

    @field_validator("holdout_file")
    @classmethod
    def _holdout(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"file not found: {str(v)!r}")
        return v

    @field_validator("labeller")
    @classmethod
    def _labeller(cls, v: str) -> str:
        from ase_surftune.models.references import REFERENCE_NAMES

        if v.lower() in REFERENCE_NAMES:
            return v.lower()
        from ase_surftune.training.config import infer_backend

        infer_backend(v)  # a model as teacher; raises ValueError naming the known ones
        return v

    @field_validator("finetune")
    @classmethod
    def _finetune_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        owned = {"model", "train_file", "valid_file", "output_dir", "resume", "overwrite"}
        bad = sorted(owned & set(v))
        if bad:
            raise ValueError(f"{bad} are set by the loop (model: warm start; data: the "
                             f"labels; output_dir: iter_NN/model); remove them")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ActiveConfig:
        problems = []
        if self.stop_on_reference and not self.reference_properties:
            problems.append("stop_on_reference needs reference_properties: true")
        if self.resume is not False and self.overwrite:
            problems.append("resume and overwrite exclude each other; give only one")
        if self.stationary_first and self.selection == "random":
            problems.append("stationary_first applies to selection uncertainty or "
                            "stratified; random is the unguided baseline")
        try:
            self.finetune_config(Path(self.output_dir) / "check")
        except ConfigError as exc:
            problems.append("finetune: " + "; ".join(
                ln.strip().removeprefix("(top level): ")
                for ln in str(exc).splitlines()[1:] or [str(exc)]))
        try:
            self.compare_config()
        except ConfigError as exc:
            problems.append(f"properties: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ------------------------------------------------------------------ derived configs
    def finetune_config(self, output_dir: Path, model: str | None = None, seed: int = 0,
                        **extra: Any):
        """The :class:`FinetuneConfig` of one fine-tuning step (``model``: warm start).

        The fine-tunes have no validation set, so each runs all its epochs and keeps the
        last (:func:`ase_surftune.training.loop.selection_rule`): stopping on the noise
        of the mean training loss cost the vacancy barrier 6 % (Cu/EMT: the same
        fine-tune stopped at epoch 38 and restored epoch 28 gives 1.088 × EMT, run to 45
        epochs 1.028; benchmarks/RESULTS.md).
        """
        from ase_surftune.training.config import load_config

        data = {"valid_fraction": 0.0, "progress": self.progress, "plot": False,
                "num_threads": self.num_threads, "device": self.device, "patience": None,
                **self.finetune, "model": model or self.model, "output_dir": str(output_dir),
                "resume": "auto", "seed": int(self.finetune.get("seed", 0)) + seed, **extra}
        return load_config(data)

    def compare_config(self):
        """The :class:`CompareConfig` the targets are measured with."""
        from ase_surftune.evaluation.compare import load_compare_config

        need = target_properties(self.targets)
        data = _merge(DEFAULT_PROPERTIES, self.properties)
        data["properties"] = need["properties"]
        if need["miller"]:
            data.setdefault("surface", {})["miller"] = need["miller"]
        if need["migrations"]:
            data.setdefault("neb", {})["migrations"] = need["migrations"]
        return load_compare_config(data)

    def labeller_calculator(self):
        """The reference calculator (EMT, GPAW with ``labeller_options``) or teacher model."""
        from ase_surftune.models.references import (
            REFERENCE_NAMES,
            get_calculator,
            get_reference_calculator,
        )

        if self.labeller in REFERENCE_NAMES:
            # GPAW takes YAML-friendly dicts (mode: {name: pw, ecut: 300}) as they are
            return get_reference_calculator(self.labeller, **self.labeller_options)
        return get_calculator(self.labeller, device=self.device)

    def fingerprint(self) -> str:
        """Hash of the settings that decide the run (output options excluded)."""
        d = self.model_dump(mode="json", exclude=set(_MAY_CHANGE))
        for key, default in _ADDED_LATER.items():  # runs started before they existed resume
            if d.get(key) == default:
                d.pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()

    def changed_settings(self, stored: dict[str, Any]) -> list[str]:
        """The fingerprinted settings in which this config differs from ``stored`` (a run's
        ``state.json`` config), by name."""
        now = self.model_dump(mode="json")
        return sorted(k for k in set(stored) | set(now) if k not in _MAY_CHANGE
                      and stored.get(k, _ADDED_LATER.get(k)) != now.get(k))


#: settings a resumed run may change (output options, the label budget): not fingerprinted
_MAY_CHANGE = ("output_dir", "resume", "overwrite", "progress", "num_threads",
               "max_iterations", "budget")

#: settings added after runs were made, left out of the fingerprint at their default
_ADDED_LATER: dict[str, Any] = {"stop_rule": "change", "stationary_first": False,
                                "stationary_energy_weight": 1.0}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def load_active_config(config: ActiveConfig | dict[str, Any] | str | Path,
                       **overrides: Any) -> ActiveConfig:
    """Validate a config (object, dict or YAML path; relative paths against the YAML's
    folder). Raises :class:`ConfigError` listing every problem."""
    source, base = "(dict)", None
    if isinstance(config, ActiveConfig):
        data = config.model_dump()
    elif isinstance(config, (str, Path)):
        from ase_surftune.core.io import load_yaml

        data = load_yaml(config)
        source, base = repr(str(config)), Path(config).resolve().parent
    elif isinstance(config, dict):
        data = dict(config)
    else:
        raise ConfigError(f"config must be an ActiveConfig, dict or YAML path, got "
                          f"{type(config).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    if base is not None:
        for key in ("holdout_file", "output_dir"):
            v = data.get(key)
            if isinstance(v, str) and not Path(v).is_absolute():
                data[key] = str(base / v)
        m = data.get("model")
        if isinstance(m, str) and not Path(m).is_absolute() and (base / m).is_file():
            data["model"] = str(base / m)
    return validate_model(ActiveConfig, data, "active-learning", source,
                          example="examples/active_learn_cu.yaml")
