"""Distilled surrogate (seed 001): a small, fast MACE student trained on a fine-tuned
teacher's own labels.

Pipeline (:func:`distill`, CLI ``surftune distill config.yaml``):

1. load the teacher bundle (any backend, any head);
2. sample configurations from the given seed structures: Langevin MD with the teacher
   at the chosen temperatures (``ase_surftune.properties.md.run_md``), plus rattled and
   strained copies;
3. label them with the teacher (calibrated energies, forces, stresses);
4. train a small MACE (few channels, L=0 or 1) through the shared fine-tuning engine:
   strategy ``distill`` builds the student (E0s fitted to the teacher's energies, scale
   from the teacher's force RMS) and the one training loop trains it;
5. report student-vs-teacher errors on held-out samples, the speed-up per force call,
   and a property check (surface energy, highest phonon frequency) student vs teacher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ase_surftune.core.errors import ConfigError, ModelLoadError
from ase_surftune.core.io import atomic_write_json
from ase_surftune.training.strategies import Strategy, register_strategy

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.models.backends.base import ModelAdapter
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.training.config import FinetuneConfig

__all__ = ["StudentOptions", "DistillConfig", "DistillStrategy", "DistillResult",
           "sample_configurations", "label_with", "distill", "load_distill_config"]

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudentOptions(_Strict):
    """Architecture of the student MACE (``strategy_options.student``)."""

    channels: int = Field(8, ge=1)
    max_L: Literal[0, 1] = 0
    num_interactions: int = Field(2, ge=1)
    correlation: int = Field(2, ge=1)
    max_ell: int = Field(2, ge=1)
    num_bessel: int = Field(8, ge=1)
    r_max: float | None = Field(None, gt=0)
    dtype: Literal["float32", "float64"] = "float32"


class SamplingOptions(_Strict):
    temperatures: list[float] = Field(default_factory=lambda: [300.0, 600.0])
    md_steps: int = Field(100, ge=0)
    md_interval: int = Field(10, ge=1)
    timestep: float = Field(2.0, gt=0)
    n_rattled: int = Field(4, ge=0)
    rattle: float = Field(0.05, ge=0)
    n_strained: int = Field(4, ge=0)
    strain: float = Field(0.03, ge=0, lt=0.5)


class PropertyCheckOptions(_Strict):
    surface: bool = True
    phonon: bool = True
    speed_calls: int = Field(5, ge=1)


class DistillConfig(_Strict):
    """``surftune distill`` configuration (see ``examples/distill_*.yaml``)."""

    teacher: str
    head: str | None = None
    seeds: list[str] = Field(default_factory=list)
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    student: StudentOptions = Field(default_factory=StudentOptions)
    checks: PropertyCheckOptions = Field(default_factory=PropertyCheckOptions)
    valid_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    seed: int = 0
    output_dir: str = "distill_out"
    #: passed to the fine-tuning engine (epochs, batch_size, optimizer, loss, ...)
    training: dict[str, Any] = Field(default_factory=dict)
    progress: bool = False


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
    try:
        cfg = DistillConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e["loc"])
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"  {loc}: {msg}")
        raise ConfigError("Invalid distillation config:\n" + "\n".join(lines)) from None
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


@register_strategy
class DistillStrategy(Strategy):
    """Train a fresh small MACE (the student) on the teacher-labelled data."""

    name: ClassVar[str] = "distill"
    keeps_base_weights: ClassVar[bool] = False
    #: the teacher's graphs cannot be fed to the student (other backend/cutoff)
    shares_graphs: ClassVar[bool] = False

    def __init__(self, config: FinetuneConfig | None = None) -> None:
        super().__init__(config)
        raw = (config.strategy_options if config else {}) or {}
        self.student = StudentOptions.model_validate(raw.get("student", {}))
        self._train: list[Atoms] = []
        self._teacher_head: str | None = None

    @classmethod
    def check_config(cls, config: FinetuneConfig, backend: str) -> list[str]:
        problems = []
        if config.freeze is not None:
            problems.append("freeze: only used by strategy 'frozen'")
        extra = set(config.strategy_options) - {"student"}
        if extra:
            problems.append(f"strategy_options: strategy 'distill' takes only 'student' "
                            f"(got {sorted(extra)})")
        try:
            StudentOptions.model_validate(config.strategy_options.get("student", {}))
        except ValidationError as exc:
            problems += [f"strategy_options.student.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                         for e in exc.errors()]
        return problems

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


# --------------------------------------------------------------------------- sampling


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


def _is_bulk(a: Atoms) -> bool:
    from ase_surftune.properties._base import vacuum_size

    return bool(a.pbc.all()) and vacuum_size(a) < 2.0


def sample_configurations(teacher: Bundle, seeds: Sequence[Atoms], options: SamplingOptions,
                          head: str | None = None, seed: int = 0,
                          workdir: str | Path | None = None) -> list[Atoms]:
    """MD (teacher, each temperature), rattled and strained copies of every seed."""
    from ase.io import read

    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.properties.md import run_md

    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    calc = SurfTuneCalculator(teacher, head=head)
    workdir = Path(workdir or ".")
    workdir.mkdir(parents=True, exist_ok=True)
    for k, s0 in enumerate(seeds):
        s0 = s0.copy()
        s0.calc = None
        if options.md_steps > 0:
            for t_i, temp in enumerate(options.temperatures):
                traj = workdir / f"md_seed{k}_{int(temp)}K.traj"
                res = run_md(s0, calc, "nvt_langevin", steps=options.md_steps,
                             timestep=options.timestep, temperature=float(temp),
                             seed=seed * 1000 + 10 * k + t_i, trajectory=traj,
                             traj_interval=options.md_interval, progress=False, friction=0.02)
                frames = read(traj, ":")[1:]  # skip the unrelaxed start frame
                for f in frames:
                    f.calc = None
                    f.info["config_type"] = f"distill/md{int(temp)}K"
                out.extend(frames)
                if not res.completed:
                    log.warning("MD at %s K on seed %d stopped early: %s", temp, k,
                                res.stop_reason)
        for _ in range(options.n_rattled):
            a = s0.copy()
            a.positions += rng.normal(scale=options.rattle, size=a.positions.shape)
            a.info["config_type"] = "distill/rattled"
            out.append(a)
        for _ in range(options.n_strained):
            a = s0.copy()
            eps = rng.uniform(-options.strain, options.strain, size=(3, 3))
            eps = np.eye(3) + (eps + eps.T) / 2
            if not _is_bulk(a):  # slabs: strain in plane only
                eps[2, :] = eps[:, 2] = 0
                eps[2, 2] = 1
            a.set_cell(a.cell.array @ eps, scale_atoms=True)
            a.positions += rng.normal(scale=options.rattle / 2, size=a.positions.shape)
            a.info["config_type"] = "distill/strained"
            out.append(a)
    return out


# --------------------------------------------------------------------------- checks


def _time_force_calls(bundle: Bundle, atoms: Atoms, n: int, head: str | None = None) -> float:
    """Median seconds per energy+forces call (positions perturbed so nothing is cached)."""
    from ase_surftune.models.calculator import SurfTuneCalculator

    a = atoms.copy()
    a.calc = SurfTuneCalculator(bundle, head=head)
    a.get_forces()  # warm-up
    times = []
    rng = np.random.default_rng(0)
    for _ in range(n):
        a.positions += rng.normal(scale=1e-3, size=a.positions.shape)
        t0 = time.perf_counter()
        a.get_forces()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _property_check(teacher: Bundle, student: Bundle, seeds: Sequence[Atoms],
                    head: str | None, checks: PropertyCheckOptions) -> dict[str, Any]:
    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.properties.phonons import phonons
    from ase_surftune.properties.surface import slab_surface_energy
    from ase_surftune.training.replay import ground_state_bulk

    out: dict[str, Any] = {}
    slabs = [a for a in seeds if not _is_bulk(a)]
    bulks = [a for a in seeds if _is_bulk(a)]
    if bulks:
        bulk = bulks[0].copy()
    else:
        syms = seeds[0].get_chemical_symbols()
        bulk = ground_state_bulk(max(set(syms), key=syms.count))
    models = {"teacher": (teacher, head), "student": (student, None)}
    if checks.surface and slabs:
        slab = slabs[0]
        res = {}
        for name, (b, h) in models.items():
            calc = SurfTuneCalculator(b, head=h)
            bb = bulk.copy()
            bb.calc = calc
            e_b = bb.get_potential_energy() / len(bb)
            r = slab_surface_energy(slab.copy(), calc, e_b, relax_slab=False)
            res[name] = float(r.gamma_unrelaxed)
        res["difference_percent"] = 100 * (res["student"] - res["teacher"]) / abs(res["teacher"])
        out["surface_energy_J_m2"] = res
    if checks.phonon:
        prim = ground_state_bulk(bulk.get_chemical_symbols()[0]) if len(set(
            bulk.get_chemical_symbols())) == 1 else bulk
        res = {}
        for name, (b, h) in models.items():
            ph = phonons(prim, SurfTuneCalculator(b, head=h), supercell=(2, 2, 2),
                         mesh=(4, 4, 4), band_npoints=5)
            res[name] = float(max(max(max(q) for q in seg) for seg in ph.band_frequencies))
        res["difference_percent"] = 100 * (res["student"] - res["teacher"]) / abs(res["teacher"])
        res["what"] = f"highest band frequency (THz) of {prim.get_chemical_formula()}"
        out["phonon_max_frequency_THz"] = res
    return out


# --------------------------------------------------------------------------- entry point


class DistillResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    bundle_path: Path
    output_dir: Path
    report: dict[str, Any]


def distill(config: DistillConfig | dict | str | Path, *, seeds: Sequence[Atoms] | None = None,
            **overrides: Any) -> DistillResult:
    """Distil a fine-tuned teacher bundle into a small MACE student bundle.

    Args:
        config: :class:`DistillConfig`, dict or YAML path.
        seeds: seed structures in memory (in addition to ``config.seeds`` files).

    Returns:
        :class:`DistillResult` with the student bundle path and the report
        (``student_vs_teacher``, ``speedup``, ``properties``), also written to
        ``distill_report.json``.
    """
    from ase.io import read

    from ase_surftune.data import split
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.training.api import finetune

    cfg = load_distill_config(config, **overrides)
    teacher = Bundle.load(cfg.teacher)
    head = teacher.resolve_head(cfg.head)
    seed_atoms = [a for p in cfg.seeds for a in read(p, ":")] + list(seeds or [])
    if not seed_atoms:
        raise ConfigError("Invalid distillation config: seeds: give at least one seed "
                          "structure (file) to sample from")
    out_dir = Path(cfg.output_dir)
    t0 = time.perf_counter()
    configs = sample_configurations(teacher, seed_atoms, cfg.sampling, head, cfg.seed,
                                    workdir=out_dir / "sampling")
    labelled = label_with(teacher, configs, head)
    t_sample = time.perf_counter() - t0
    parts = split(labelled, (1 - cfg.valid_fraction - cfg.test_fraction, cfg.valid_fraction,
                             cfg.test_fraction), seed=cfg.seed)
    train_cfg = {"epochs": 30, "batch_size": 4, "patience": 10,
                 "loss": {"energy_weight": 20.0, "forces_weight": 10.0}, **cfg.training,
                 "model": cfg.teacher, "strategy": "distill", "head": head,
                 "strategy_options": {"student": cfg.student.model_dump()},
                 "output_dir": str(out_dir), "seed": cfg.seed, "progress": cfg.progress,
                 "align_energies": True}
    train_cfg.setdefault("forgetting", {"eos": False, "n_bulk": 4})
    # the student must track the teacher everywhere, not only on slab frames
    train_cfg.setdefault("monitor_group", None)
    res = finetune(train_cfg, train=parts.train, valid=parts.valid, test=parts.test)
    student = res.load_bundle()
    m = res.metrics
    probe = seed_atoms[0]
    t_teacher = _time_force_calls(teacher, probe, cfg.checks.speed_calls, head)
    t_student = _time_force_calls(student, probe, cfg.checks.speed_calls)
    report = {
        "teacher": cfg.teacher, "teacher_head": head, "student_bundle": str(res.bundle_path),
        "n_samples": {"train": len(parts.train), "valid": len(parts.valid),
                      "test": len(parts.test)},
        "student_vs_teacher": m["finetuned"].get("test") or m["finetuned"].get("valid"),
        "student": m.get("student"),
        "speedup": {"teacher_s_per_call": t_teacher, "student_s_per_call": t_student,
                    "speedup": t_teacher / t_student if t_student > 0 else None,
                    "structure": probe.get_chemical_formula(), "n_atoms": len(probe)},
        "properties": _property_check(teacher, student, seed_atoms, head, cfg.checks),
        "sampling_time_s": round(t_sample, 2),
        "forgetting_summary": m.get("forgetting", {}).get("summary"),
    }
    student.metrics = {**student.metrics, "distillation": report}
    student.head_info = {h: {**v, "trained_on": f"teacher labels: {cfg.teacher}:{head}"}
                         for h, v in student.head_info.items()}
    student.save(res.bundle_path)
    atomic_write_json(out_dir / "distill_report.json", report)
    return DistillResult(bundle_path=res.bundle_path, output_dir=out_dir, report=report)
