"""Distilled surrogate (seed 001), training side: the student's config, its build
and its training on teacher labels.

The workflow (:func:`ase_surftune.evaluation.distill.distill`, CLI ``surftune distill``)
lives above the property layer because it samples with MD and checks properties; this
module holds only what belongs to training:

* the config (:class:`DistillConfig`, :func:`load_distill_config`);
* :func:`label_with`: copies of structures labelled by the teacher bundle (calibrated
  energies, forces, stresses);
* strategy ``distill`` (:class:`DistillStrategy`): builds a small MACE (few channels,
  L=0 or 1; E0s fitted to the teacher's energies, scale from the teacher's force RMS)
  that the one training loop trains;
* :func:`train_student`: split the labelled samples and run the fine-tuning engine with
  that strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from pydantic import Field

from ase_surftune.core.config import StrictModel, validate_model
from ase_surftune.core.errors import ConfigError, ModelLoadError
from ase_surftune.training.strategies import Strategy, register_strategy

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.data import Split
    from ase_surftune.models.backends.base import ModelAdapter
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.training.api import FinetuneResult
    from ase_surftune.training.config import FinetuneConfig

__all__ = ["StudentOptions", "SamplingOptions", "PropertyCheckOptions", "DistillConfig",
           "DistillStrategy", "label_with", "train_student", "load_distill_config"]


class StudentOptions(StrictModel):
    """Architecture of the student MACE (``strategy_options.student``)."""

    channels: int = Field(8, ge=1)
    max_L: Literal[0, 1] = 0
    num_interactions: int = Field(2, ge=1)
    correlation: int = Field(2, ge=1)
    max_ell: int = Field(2, ge=1)
    num_bessel: int = Field(8, ge=1)
    r_max: float | None = Field(None, gt=0)
    dtype: Literal["float32", "float64"] = "float32"


class SamplingOptions(StrictModel):
    temperatures: list[float] = Field(default_factory=lambda: [300.0, 600.0])
    md_steps: int = Field(100, ge=0)
    md_interval: int = Field(10, ge=1)
    timestep: float = Field(2.0, gt=0)
    n_rattled: int = Field(4, ge=0)
    rattle: float = Field(0.05, ge=0)
    n_strained: int = Field(4, ge=0)
    strain: float = Field(0.03, ge=0, lt=0.5)


class PropertyCheckOptions(StrictModel):
    surface: bool = True
    phonon: bool = True
    speed_calls: int = Field(5, ge=1)


class DistillConfig(StrictModel):
    """``surftune distill`` configuration (see ``examples/distill_*.yaml``)."""

    teacher: str = Field(description="the fine-tuned teacher bundle (.stbundle)")
    head: str | None = Field(None, description="teacher head that labels the samples")
    seeds: list[str] = Field(default_factory=list)
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    student: StudentOptions = Field(default_factory=StudentOptions)
    checks: PropertyCheckOptions = Field(default_factory=PropertyCheckOptions)
    valid_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    seed: int = Field(0, description="random seed (sampling, split, student initialisation)")
    output_dir: str = Field("distill_out", description="folder for the student bundle and "
                            "the report")
    #: passed to the fine-tuning engine (epochs, batch_size, optimizer, loss, ...)
    training: dict[str, Any] = Field(default_factory=dict)
    progress: bool = Field(False, description="progress bars")


def load_distill_config(config: DistillConfig | dict | str | Path, **overrides: Any
                        ) -> DistillConfig:
    """Validate a distillation config (dict, YAML path or object); one clear error."""
    base = None
    if isinstance(config, DistillConfig):
        data = config.model_dump()
    elif isinstance(config, (str, Path)):
        from ase_surftune.core.io import load_yaml

        data = load_yaml(config)
        base = Path(config).resolve().parent
    else:
        data = dict(config)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if base is not None:
        def _abs(v: str) -> str:
            return v if Path(v).is_absolute() or not (base / v).exists() else str(base / v)

        if isinstance(data.get("teacher"), str):
            data["teacher"] = _abs(data["teacher"])
        data["seeds"] = [_abs(s) for s in data.get("seeds", [])]
        if isinstance(data.get("output_dir"), str) and not Path(data["output_dir"]).is_absolute():
            data["output_dir"] = str(base / data["output_dir"])
    source = str(config) if isinstance(config, (str, Path)) else ""
    cfg = validate_model(DistillConfig, data, "distillation", source,
                         example="examples/distill_chgnet_teacher.yaml")
    if not Path(cfg.teacher).is_file():
        raise ModelLoadError(f"teacher bundle not found: {cfg.teacher!r} (distillation needs "
                             f"a fine-tuned bundle file as teacher)")
    missing = [s for s in cfg.seeds if not Path(s).is_file()]
    if missing:
        raise ConfigError(f"Invalid distillation config: seeds: file(s) not found: {missing}")
    return cfg


# --------------------------------------------------------------------------- strategy


def _fit_e0(configs: Sequence[Atoms], elements: list[str]) -> dict[str, float]:
    from ase_surftune.data import get_labels

    A = np.array([[np.sum(a.numbers == _z(s)) for s in elements] for a in configs], float)
    y = np.array([get_labels(a)[0] for a in configs])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return {s: float(c) for s, c in zip(elements, coef)}


def _z(symbol: str) -> int:
    from ase.data import atomic_numbers

    return atomic_numbers[symbol]


class DistillOptions(StrictModel):
    """``strategy_options`` of the ``distill`` strategy."""

    student: StudentOptions = Field(default_factory=StudentOptions)


@register_strategy
class DistillStrategy(Strategy):
    """Train a fresh small MACE (the student) on the teacher-labelled data."""

    name: ClassVar[str] = "distill"
    keeps_base_weights: ClassVar[bool] = False
    #: the teacher's graphs cannot be fed to the student (other backend/cutoff)
    shares_graphs: ClassVar[bool] = False
    options_model = DistillOptions

    def __init__(self, config: FinetuneConfig | None = None) -> None:
        super().__init__(config)
        self.student = self.options.student
        self._train: list[Atoms] = []
        self._teacher_head: str | None = None

    @classmethod
    def check_config(cls, config: FinetuneConfig, backend: str) -> list[str]:
        bad = []
        if config.freeze is not None:
            bad.append("freeze: only used by strategy 'frozen'")
        return bad  # strategy_options are validated by DistillOptions, keys strategy_options.*

    def bind_data(self, train: Sequence[Atoms], valid: Sequence[Atoms] = (),
                  test: Sequence[Atoms] = ()) -> None:
        self._train = list(train)

    def prepare(self, adapter: ModelAdapter, head: str) -> ModelAdapter:
        from ase.neighborlist import neighbor_list

        from ase_surftune.data import get_labels
        from ase_surftune.models.backends.mace import MACEAdapter
        from ase_surftune.models.backends.mace_builders import build_mace

        self._teacher_head = head
        if not self._train:
            raise ConfigError("strategy 'distill' needs training structures")
        s = self.student
        elements = sorted({x for a in self._train for x in a.get_chemical_symbols()}, key=_z)
        r_max = s.r_max or min(float(adapter.r_max), 5.0)
        e0 = _fit_e0(self._train, elements)
        f = np.concatenate([get_labels(a)[1].ravel() for a in self._train])
        scale = float(np.sqrt(np.mean(f ** 2))) or 1.0
        nn = np.mean([len(neighbor_list("i", a, r_max)) / len(a) for a in self._train])
        seed = self.config.seed if self.config is not None else 0
        dtype = torch.float32 if s.dtype == "float32" else torch.float64
        model = build_mace(elements, r_max=r_max, channels=s.channels, max_L=s.max_L,
                           num_interactions=s.num_interactions, correlation=s.correlation,
                           max_ell=s.max_ell, num_bessel=s.num_bessel, atomic_energies=e0,
                           avg_num_neighbors=float(max(nn, 1.0)), scale=scale, seed=seed,
                           dtype=dtype)
        self._student_info = {**s.model_dump(), "elements": elements, "r_max": r_max, "E0": e0,
                              "scale": scale, "avg_num_neighbors": float(nn)}
        return MACEAdapter(model, name=f"{adapter.name}-student", dtype=dtype)

    def train_head(self, adapter: ModelAdapter, head: str) -> str:
        return adapter.heads[0]

    def head_pairs(self) -> dict[str, str]:
        return {"Default": self._teacher_head or "Default"}

    def report(self, adapter: ModelAdapter) -> dict[str, Any]:
        rep = super().report(adapter)
        rep["student"] = dict(getattr(self, "_student_info", {}))
        rep["teacher_head"] = self._teacher_head
        return rep


# --------------------------------------------------------------------------- labels and training


def label_with(bundle: Bundle, configs: Sequence[Atoms], head: str | None = None,
               batch_size: int = 8) -> list[Atoms]:
    """Copies of ``configs`` labelled by ``bundle``'s calibrated ``head``."""
    from ase_surftune.models.predict import predict_with

    configs = list(configs)
    stress = all(a.pbc.all() for a in configs)
    pred = predict_with(bundle, configs, head=head, batch_size=batch_size, compute_stress=stress)
    out = []
    for i, a in enumerate(configs):
        b = a.copy()
        b.calc = None
        kw: dict[str, Any] = {"energy": float(pred.energy[i]), "forces": np.array(pred.forces[i])}
        if pred.stress[i] is not None:
            kw["stress"] = pred.stress[i]
        b.calc = SinglePointCalculator(b, **kw)
        b.info["label_source"] = f"teacher:{bundle.adapter.name}:{bundle.resolve_head(head)}"
        out.append(b)
    return out


def train_student(cfg: DistillConfig, labelled: Sequence[Atoms], head: str
                  ) -> tuple[FinetuneResult, Split]:
    """Split teacher-labelled samples and train the student with strategy ``distill``.

    Args:
        cfg: the validated distillation config (``training`` overrides the defaults
            below; ``student`` sets the architecture).
        labelled: samples labelled by the teacher (:func:`label_with`).
        head: the teacher head whose labels they are.

    Returns:
        The fine-tuning result (student bundle at ``bundle_path``; ``metrics["finetuned"]``
        are student-vs-teacher errors) and the train/valid/test split it used.
    """
    from ase_surftune.data import split
    from ase_surftune.training.api import finetune

    parts = split(list(labelled), (1 - cfg.valid_fraction - cfg.test_fraction,
                                   cfg.valid_fraction, cfg.test_fraction), seed=cfg.seed)
    train_cfg = {"epochs": 30, "batch_size": 4, "patience": 10,
                 "loss": {"energy_weight": 20.0, "forces_weight": 10.0}, **cfg.training,
                 "model": cfg.teacher, "strategy": "distill", "head": head,
                 "strategy_options": {"student": cfg.student.model_dump()},
                 "output_dir": cfg.output_dir, "seed": cfg.seed, "progress": cfg.progress,
                 "align_energies": True}
    train_cfg.setdefault("forgetting", {"eos": False, "n_bulk": 4})
    # the student must track the teacher everywhere, not only on slab frames
    train_cfg.setdefault("monitor_group", None)
    res = finetune(train_cfg, train=parts.train, valid=parts.valid, test=parts.test)
    return res, parts
