"""Distillation workflow (seed 001): a small, fast MACE student of a fine-tuned teacher.

Pipeline (:func:`distill`, CLI ``surftune distill config.yaml``):

1. load the teacher bundle (any backend, any head);
2. sample configurations from the seed structures (:func:`sample_configurations`):
   Langevin MD with the teacher at the chosen temperatures
   (:func:`ase_surftune.properties.md.run_md`), plus rattled and strained copies;
3. label them with the teacher (:func:`ase_surftune.training.distill.label_with`);
4. train the student (:func:`ase_surftune.training.distill.train_student`, strategy
   ``distill`` in the one training loop);
5. report student-vs-teacher errors on held-out samples, the speed-up per force call and
   a property check (:mod:`ase_surftune.evaluation.distill_check`).

The workflow lives in the evaluation layer because steps 2 and 5 use properties; the
training layer keeps the config, the strategy and the student's training. The old path
``ase_surftune.finetune.distill`` resolves here, so this module re-exports the
training-side names too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from pydantic import BaseModel, ConfigDict

from ase_surftune.core.errors import ConfigError
from ase_surftune.core.io import atomic_write_json
from ase_surftune.evaluation.distill_check import is_bulk, property_check, time_force_calls
from ase_surftune.models.bundle import Bundle
from ase_surftune.models.calculator import SurfTuneCalculator
from ase_surftune.training.distill import (
    DistillConfig,
    DistillStrategy,
    PropertyCheckOptions,
    SamplingOptions,
    StudentOptions,
    label_with,
    load_distill_config,
    train_student,
)

__all__ = ["StudentOptions", "SamplingOptions", "PropertyCheckOptions", "DistillConfig",
           "DistillStrategy", "DistillResult", "sample_configurations", "label_with",
           "distill", "load_distill_config", "train_student"]

log = logging.getLogger(__name__)


def _md_frames(s0: Atoms, calc: SurfTuneCalculator, options: SamplingOptions, k: int,
               seed: int, workdir: Path) -> list[Atoms]:
    """Frames of teacher Langevin MD from seed ``k`` at each temperature (start excluded)."""
    from ase.io import read

    from ase_surftune.properties.md import run_md

    out: list[Atoms] = []
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
            log.warning("MD at %s K on seed %d stopped early: %s", temp, k, res.stop_reason)
    return out


def _distorted(s0: Atoms, options: SamplingOptions, rng: np.random.Generator) -> list[Atoms]:
    """``n_rattled`` rattled and ``n_strained`` strained (+ lightly rattled) copies."""
    out = []
    for _ in range(options.n_rattled):
        a = s0.copy()
        a.positions += rng.normal(scale=options.rattle, size=a.positions.shape)
        a.info["config_type"] = "distill/rattled"
        out.append(a)
    for _ in range(options.n_strained):
        a = s0.copy()
        eps = rng.uniform(-options.strain, options.strain, size=(3, 3))
        eps = np.eye(3) + (eps + eps.T) / 2
        if not is_bulk(a):  # slabs: strain in plane only
            eps[2, :] = eps[:, 2] = 0
            eps[2, 2] = 1
        a.set_cell(a.cell.array @ eps, scale_atoms=True)
        a.positions += rng.normal(scale=options.rattle / 2, size=a.positions.shape)
        a.info["config_type"] = "distill/strained"
        out.append(a)
    return out


def sample_configurations(teacher: Bundle, seeds: Sequence[Atoms], options: SamplingOptions,
                          head: str | None = None, seed: int = 0,
                          workdir: str | Path | None = None) -> list[Atoms]:
    """MD (teacher, each temperature), rattled and strained copies of every seed."""
    rng = np.random.default_rng(seed)
    out: list[Atoms] = []
    calc = SurfTuneCalculator(teacher, head=head)
    workdir = Path(workdir or ".")
    workdir.mkdir(parents=True, exist_ok=True)
    for k, s0 in enumerate(seeds):
        s0 = s0.copy()
        s0.calc = None
        if options.md_steps > 0:
            out.extend(_md_frames(s0, calc, options, k, seed, workdir))
        out.extend(_distorted(s0, options, rng))
    return out


class DistillResult(BaseModel):
    """Where the student went and what :func:`distill` measured."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    bundle_path: Path
    output_dir: Path
    report: dict[str, Any]


def _speedup(teacher: Bundle, student: Bundle, probe: Atoms, n: int,
             head: str | None) -> dict[str, Any]:
    t_teacher = time_force_calls(teacher, probe, n, head)
    t_student = time_force_calls(student, probe, n)
    return {"teacher_s_per_call": t_teacher, "student_s_per_call": t_student,
            "speedup": t_teacher / t_student if t_student > 0 else None,
            "structure": probe.get_chemical_formula(), "n_atoms": len(probe)}


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
    res, parts = train_student(cfg, labelled, head)
    student = res.load_bundle()
    m = res.metrics
    report = {
        "teacher": cfg.teacher, "teacher_head": head, "student_bundle": str(res.bundle_path),
        "n_samples": {"train": len(parts.train), "valid": len(parts.valid),
                      "test": len(parts.test)},
        "student_vs_teacher": m["finetuned"].get("test") or m["finetuned"].get("valid"),
        "student": m.get("student"),
        "speedup": _speedup(teacher, student, seed_atoms[0], cfg.checks.speed_calls, head),
        "properties": property_check(teacher, student, seed_atoms, head, cfg.checks),
        "sampling_time_s": round(t_sample, 2),
        "forgetting_summary": m.get("forgetting", {}).get("summary"),
    }
    student.metrics = {**student.metrics, "distillation": report}
    student.head_info = {h: {**v, "trained_on": f"teacher labels: {cfg.teacher}:{head}"}
                         for h, v in student.head_info.items()}
    student.save(res.bundle_path)
    atomic_write_json(out_dir / "distill_report.json", report)
    return DistillResult(bundle_path=res.bundle_path, output_dir=out_dir, report=report)
