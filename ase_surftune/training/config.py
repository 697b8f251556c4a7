"""Fine-tuning configuration: pydantic v2 models, YAML loading and validation.

Every problem in a configuration (unknown key, wrong type, missing file, a strategy
or dtype the backend cannot do) is reported in *one* :class:`~ase_surftune.core.errors.ConfigError`
whose message lists each offending key, before any model is loaded or data is read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ase_surftune.core.config import StrictModel, validate_model
from ase_surftune.core.errors import ConfigError
from ase_surftune.training.forgetting import ForgettingOptions
from ase_surftune.training.registry import STRATEGIES

__all__ = ["FinetuneConfig", "LossConfig", "OptimizerConfig", "SchedulerConfig",
           "FreezeConfig", "LinearConfig", "load_config", "infer_backend"]


#: the file(s) named in "unknown key" messages
EXAMPLE_FILES = "examples/finetune_*.yaml"


class LossConfig(StrictModel):
    """Weighted loss on energy (per atom, eV/atom, or per structure, eV), forces (eV/Å)
    and stress (eV/Å³).

    ``energy_per``: what the energy term compares. ``atom`` (default): E/N (eV/atom), so
    every structure counts alike whatever its size. ``structure``: the total energy E
    (eV), so a per-atom error of a 15-atom cell weighs (15/4)² × that of a 4-atom one;
    divide ``energy_weight`` by ~N² of the typical structure to keep its balance with the
    forces. Properties that are total-energy differences within one large cell (a vacancy
    barrier) need that cell's energies more accurately per atom than a small slab's γ.
    ``sqrt_atoms``: E/√N (eV/√atom), in between: a per-atom error of a 15-atom cell weighs
    15/4 × that of a 4-atom one (the scale on which errors of independent atoms add in
    quadrature); divide ``energy_weight`` by the typical N to keep the balance.
    ``huber_delta`` is in the energy term's unit. Errors are reported per atom either way.
    """

    energy_weight: float = Field(1.0, ge=0)
    energy_per: Literal["atom", "sqrt_atoms", "structure"] = "atom"
    forces_weight: float = Field(10.0, ge=0)
    stress_weight: float = Field(0.0, ge=0)
    kind: Literal["mse", "huber"] = "mse"
    huber_delta: float = Field(0.01, gt=0)

    @model_validator(mode="after")
    def _some_weight(self) -> LossConfig:
        if self.energy_weight == self.forces_weight == self.stress_weight == 0:
            raise ValueError("at least one of energy_weight, forces_weight, stress_weight "
                             "must be > 0")
        return self


class OptimizerConfig(StrictModel):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class SchedulerConfig(StrictModel):
    """``plateau``: ReduceLROnPlateau on the validation loss; ``cosine``: cosine decay
    over ``epochs`` to ``min_lr``; ``none``: constant learning rate."""

    name: Literal["none", "plateau", "cosine"] = "plateau"
    factor: float = Field(0.5, gt=0, lt=1)
    patience: int = Field(3, ge=0)
    min_lr: float = Field(1e-6, ge=0)


class FreezeConfig(StrictModel):
    """Which blocks the ``frozen`` strategy freezes (its ``strategy_options``, or the
    ``freeze`` section).

    ``k``: freeze the first k of the backend's ordered blocks (embedding → interactions
    → readout). ``patterns``: fnmatch patterns on block names (``"interaction_*"``) or
    parameter names (``"chgnet.atom_embedding.*"``). Both may be given (union). Without
    either (or without a ``freeze`` section), the backend's default k is used:
    :data:`ase_surftune.training.strategies.DEFAULT_FROZEN_K` (CHGNet 4, MACE 2: all but
    the last interaction block and the readout).
    """

    k: int | None = Field(None, ge=1)
    patterns: list[str] | None = None


class LinearConfig(StrictModel):
    """Options of the ``linear`` strategy (see :mod:`ase_surftune.models.correction`):
    E' = a·(E − Σe_Z^model) + Σe_Z^model + Σb_Z, F' = a·F, σ' = a·σ.

    ``fit``: ``"slope"`` (default; a = ΣF_ref²/ΣF_ref·F, corrected s = 1 on the training
    data), ``"tls"`` or ``"mse"`` (the former least-squares fit). ``energy_weight`` only
    matters for ``"mse"``.
    """

    energy_weight: float = Field(1.0, ge=0)
    fit_shifts: bool = True
    use_energies: bool = True
    fit: Literal["slope", "tls", "mse"] = "slope"


class FinetuneConfig(StrictModel):
    """Everything a fine-tuning run needs. See ``examples/finetune_*.yaml``."""

    model: str = Field("chgnet",
        description=("model spec: chgnet, chgnet-0.2.0, mace:/path.model, m3gnet:/folder or "
                     "a bundle path"))
    strategy: str = Field("full",
        description=("fine-tuning strategy: full, frozen, linear, multihead, scratch, "
                     "distill"))
    head: str | None = Field(None, description="head of a multi-head model to start from")
    # ---- data
    train_file: Path | list[Path] | None = None
    valid_file: Path | list[Path] | None = None
    valid_fraction: float = Field(0.1, ge=0, lt=1)
    #: how ``valid_fraction`` is split off: whole trajectories (frames of one relaxation
    #: never on both sides; see ``data.split_by_trajectory``) or single frames
    valid_split: Literal["trajectory", "random"] = "trajectory"
    #: info key naming each frame's trajectory (default: info["trajectory"]..., else the
    #: source file); e.g. "config_type" when every config_type is one relaxation
    split_key: str | None = None
    #: validation frames that select the best epoch and drive early stopping: "auto" =
    #: the slab (surface) frames when the validation set has any, else all; a fnmatch
    #: pattern on config_type (e.g. "slab*"); None = the whole validation set
    monitor_group: str | None = "auto"
    test_file: Path | list[Path] | None = None
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    group_key: str = "config_type"
    exclude_fixed_atoms: bool = False
    align_energies: bool = True
    #: eV/Å; frames whose largest reference atomic force exceeds it are dropped from
    #: train/valid/test (``max_force_mode: drop``) or only flagged (``flag``); every such
    #: frame is named in the log and in ``metrics["max_force"]``
    max_force: float | None = Field(None, gt=0,
        description=("drop (or flag) frames whose largest reference atomic force exceeds "
                     "this, eV/Å; each one is named"))
    max_force_mode: Literal["drop", "flag"] = Field("drop",
        description="what max_force does to a frame")
    # ---- strategy options
    freeze: FreezeConfig | None = None
    linear: LinearConfig = Field(default_factory=LinearConfig)
    #: options of the strategy, validated by its ``options_model`` (errors keyed
    #: ``strategy_options.<key>``); stored as given, read typed via :attr:`options`
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    forgetting: ForgettingOptions = Field(default_factory=lambda: ForgettingOptions())
    # ---- optimisation
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    epochs: int = Field(50, ge=1, description="training epochs")
    #: at least this many optimiser steps: ``epochs`` is raised to
    #: ceil(min_steps / batches per epoch) when that is more (small training sets:
    #: 4 structures in batches of 4 make 1 step per epoch). None: ``epochs`` as given.
    #: Applies to the cosine schedule's length too. See :func:`planned_epochs`.
    min_steps: int | None = Field(None, ge=1,
        description=("at least this many optimiser steps (raises epochs on small "
                     "training sets)"))
    batch_size: int = Field(4, ge=1, description="structures per training batch")
    #: structures per validation batch; None = "auto" (the backend's atom budget)
    valid_batch_size: int | None = Field(None, ge=1)
    patience: int | None = Field(10, ge=1)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    clip_grad: float | None = Field(10.0, gt=0)
    #: any integer in [0, 2**32 - 1] (NumPy's seed range)
    seed: int = Field(0, ge=0, le=2**32 - 1,
        description="random seed (splits, shuffling, initialisation)")
    dtype: Literal["float32", "float64"] | None = None
    device: str = Field("cpu", description="torch device")
    num_threads: int | None = Field(None, ge=1)
    # ---- output
    output_dir: Path = Field(Path("finetune_out"),
        description="folder for the bundle, checkpoints, metrics and plots")
    #: True: continue from output_dir/checkpoint.pt (an error if there is none);
    #: "auto": continue if there is a checkpoint, else start a new run (an old run in
    #: output_dir is moved aside, as with overwrite)
    resume: bool | Literal["auto"] = False
    #: a new run into a folder holding a run moves the old one aside (``NAME.old-<time>``)
    overwrite: bool = Field(False,
        description=("output_dir holds a run: move it aside to NAME.old-<time> and start a "
                     "new run (without this, such a folder is refused)"))
    checkpoint_every_steps: int | None = Field(None, ge=1)
    progress: bool = Field(True, description="progress bars")
    plot: bool = True

    @field_validator("train_file", "valid_file", "test_file")
    @classmethod
    def _files_exist(cls, v: Path | list[Path] | None) -> Path | list[Path] | None:
        if v is None:
            return v
        paths = v if isinstance(v, list) else [v]
        if not paths:
            raise ValueError("empty list of files; give at least one file")
        missing = [str(p) for p in paths if not Path(p).is_file()]
        if missing:
            raise ValueError(f"file(s) not found: {missing}; check the path (relative paths "
                             f"are resolved against the YAML file's folder)")
        return v

    @field_validator("output_dir")
    @classmethod
    def _output_dir_usable(cls, v: Path) -> Path:
        p = Path(v)
        for q in (p, *p.parents):
            if q.exists() and not q.is_dir():
                raise ValueError(f"{str(q)!r} is an existing file, not a folder; choose "
                                 f"another output_dir")
            if q.exists():
                break
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        import torch

        try:
            torch.device(v)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"not a torch device: {v!r}; use cpu, cuda or cuda:N") from exc
        return v

    @field_validator("strategy")
    @classmethod
    def _strategy_known(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; known: {sorted(STRATEGIES)}")
        return v

    @field_validator("model")
    @classmethod
    def _model_known(cls, v: str) -> str:
        infer_backend(v)  # raises ValueError with a clear message
        return v

    @field_validator("strategy_options")
    @classmethod
    def _options_typed(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Validate against the strategy's options model (nested errors keep their keys)."""
        model = getattr(STRATEGIES.get(info.data.get("strategy", "")), "options_model", None)
        if model is not None:
            model.model_validate(v)
        return v

    @model_validator(mode="after")
    def _fits_backend(self) -> FinetuneConfig:
        backend = infer_backend(self.model)
        problems: list[str] = []
        if backend == "chgnet" and self.dtype == "float64":
            problems.append("dtype: CHGNet runs in float32 only; use dtype: float32 "
                            "(or leave it out)")
        problems += STRATEGIES[self.strategy].check_config(self, backend)
        if self.resume is not False and self.overwrite:
            problems.append("resume and overwrite exclude each other: resume continues the "
                            "run in output_dir, overwrite moves it aside; give only one")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def backend(self) -> str:
        return infer_backend(self.model)

    @property
    def options(self) -> Any:
        """``strategy_options`` as the strategy's typed options model (None if it has none)."""
        return STRATEGIES[self.strategy].parse_options(self.strategy_options)

    def planned_epochs(self, n_batches: int) -> int:
        """Epochs the loop runs at ``n_batches`` optimiser steps per epoch: ``epochs``, or
        ceil(``min_steps`` / ``n_batches``) when that is more."""
        if self.min_steps is None or n_batches < 1:
            return self.epochs
        return max(self.epochs, -(-self.min_steps // n_batches))

    def fingerprint(self) -> str:
        """Hash of the settings that determine the trajectory of the weights.

        A checkpoint is only resumed under a config with the same fingerprint. The rule
        for what may change between a run and its resumption: ``epochs`` may be extended
        (not cut below the epochs already run) unless the scheduler is ``cosine``, whose
        schedule depends on it; ``patience``, the checkpoint interval and the output
        options (``progress``, ``plot``, ``resume``, ``overwrite``, ``output_dir``,
        ``num_threads``, ``valid_batch_size``, ``forgetting``) may change. Every other
        field changes the weights and is part of the fingerprint.
        """
        exclude = {"epochs", "min_steps", "patience", "progress", "plot", "resume",
                   "overwrite", "output_dir", "checkpoint_every_steps", "num_threads",
                   "valid_batch_size", "forgetting"}
        if self.scheduler.name == "cosine":
            exclude -= {"epochs", "min_steps"}
        d = self.model_dump(mode="json", exclude=exclude)
        if d.get("min_steps", 0) is None:  # keep fingerprints of runs from before the option
            d.pop("min_steps")
        if d.get("max_force") is None:  # keep fingerprints of runs from before the option
            d.pop("max_force", None)
            d.pop("max_force_mode", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def infer_backend(spec: str) -> str:
    """``"chgnet"``, ``"mace"`` or ``"m3gnet"`` for a model spec, without loading the model.

    Raises:
        ValueError: unknown name or missing file (message lists the known names).
    """
    from ase_surftune.core.errors import ModelLoadError
    from ase_surftune.models.loading import spec_backend

    try:
        return spec_backend(spec)
    except ModelLoadError as exc:  # one parser: ase_surftune.core.specs
        raise ValueError(str(exc)) from None


def load_config(config: FinetuneConfig | dict[str, Any] | str | Path,
                **overrides: Any) -> FinetuneConfig:
    """Validate a config given as a model, a dict or a YAML file path.

    Relative file paths in a YAML file are resolved against the file's directory.

    Raises:
        ConfigError: one message listing every problem.
    """
    source = "(dict)"
    base: Path | None = None
    if isinstance(config, FinetuneConfig):
        data = config.model_dump()
        source = "(object)"
    elif isinstance(config, (str, Path)):
        from ase_surftune.core.io import load_yaml

        data = load_yaml(config)
        source = repr(str(config))
        base = Path(config).resolve().parent
    elif isinstance(config, dict):
        data = dict(config)
    else:
        raise ConfigError(f"config must be a FinetuneConfig, dict or YAML path, got "
                          f"{type(config).__name__}")
    data.update(overrides)
    if base is not None:
        for key in ("train_file", "valid_file", "test_file", "output_dir"):
            v = data.get(key)
            if isinstance(v, str):
                data[key] = str(base / v) if not Path(v).is_absolute() else v
            elif isinstance(v, list):
                data[key] = [str(base / x) if isinstance(x, str) and not Path(x).is_absolute()
                             else x for x in v]
        m = data.get("model")
        if isinstance(m, str) and (base / m).is_file() and not Path(m).is_absolute():
            data["model"] = str(base / m)
        if isinstance(m, str) and m.lower().startswith("mace:") and \
                not Path(m[5:]).is_absolute() and (base / m[5:]).is_file():
            data["model"] = "mace:" + str(base / m[5:])
    return validate_model(FinetuneConfig, data, "fine-tuning", source, example=EXAMPLE_FILES)
