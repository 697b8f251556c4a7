"""Learning curves: test error and softening scale against the number of training
structures N, for each fine-tuning strategy, with a fixed test set and seeds.

For every (strategy, N, seed) the driver fine-tunes on the first N structures of a
seeded permutation of the training pool (so the subsets for one seed are nested),
then evaluates the resulting bundle on the fixed test set with
:func:`~ase_surftune.evaluation.errors.evaluate_model` (its own stored energy shifts,
``align="stored"``: never fitted on the test frames). The zero-shot base model is the
N = 0 baseline (energies aligned with shifts fitted on the pool, ``align_on=pool``).
``max_force`` (eV/Å) drops pool, validation and test frames whose largest reference
atomic force exceeds it, and names each one (log and ``manifest.json``).

Resumable: each finished run is appended (and fsync'ed) to ``results.jsonl`` in the
output folder; a rerun skips finished runs, and an interrupted fine-tuning run continues
from its own checkpoint (``finetune(resume=True)``). Adding N values, strategies or seeds
to the config extends an existing curve; changing the data or any other setting is
refused, because old and new points would not be comparable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.evaluation.learning_curve_config import (
    LearningCurveConfig,
    load_learning_curve_config,
)

__all__ = ["LearningCurveConfig", "LearningCurveResult", "learning_curve",
           "load_learning_curve_config"]

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
MANIFEST_FILE = "manifest.json"


# --------------------------------------------------------------------------- results


@dataclass
class LearningCurveResult:
    """Rows of (strategy, n_train, seed) → test metrics, plus where they are stored."""

    model: str
    rows: list[dict[str, Any]]
    output_dir: Path
    complete: bool = True
    config: dict[str, Any] = field(default_factory=dict)

    METRICS = ("forces_mae", "forces_rmse", "energy_mae_per_atom", "softening_scale",
               "softening_scale_band", "softening_scale_high_force")

    def summary(self) -> list[dict[str, Any]]:
        """Mean and spread (std) over seeds per (strategy, n_train), sorted by N."""
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in self.rows:
            groups.setdefault((r["strategy"], r["n_train"]), []).append(r)
        out = []
        for (strat, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            row: dict[str, Any] = {"strategy": strat, "n_train": n, "n_seeds": len(rs)}
            for m in self.METRICS:
                vals = [r[m] for r in rs if r.get(m) is not None]
                row[m] = float(np.mean(vals)) if vals else None
                row[m + "_std"] = float(np.std(vals)) if len(vals) > 1 else None
            out.append(row)
        return out

    def to_markdown(self) -> str:
        """Strategy × N table of test force MAE (eV/Å) and softening scale."""
        from ase_surftune.evaluation.tables import fmt

        summ = self.summary()
        ns = sorted({r["n_train"] for r in summ})
        strategies = list(dict.fromkeys(r["strategy"] for r in summ))
        head = ["strategy"] + [f"N={n}" for n in ns]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for s in strategies:
            cells = [s]
            for n in ns:
                r = next((x for x in summ if x["strategy"] == s and x["n_train"] == n), None)
                cells.append("" if r is None else
                             f"{fmt(r['forces_mae'])} (s {fmt(r['softening_scale'], 3)})")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n\ncells: test force MAE in eV/Å (softening scale s)"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "complete": self.complete, "config": self.config,
                "rows": self.rows, "summary": self.summary()}

    def write(self, output_dir: str | Path | None = None, plot: bool = True
              ) -> dict[str, Path]:
        from ase_surftune.evaluation.tables import write_csv, write_json

        out = Path(output_dir or self.output_dir)
        paths = {"json": write_json(self.to_dict(), out / "learning_curve.json"),
                 "csv": write_csv(self.rows, out / "learning_curve.csv",
                                  ["strategy", "n_train", "seed", *self.METRICS, "n_test",
                                   "wall_time_s", "bundle"])}
        if plot and self.rows:
            from ase_surftune.evaluation.plots import plot_learning_curve

            paths["figure"] = plot_learning_curve(self, out / "learning_curve.png")
        return paths


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut off by an interruption
                log.warning("%s: ignoring an incomplete line", path)
    return rows


def _append_row(path: Path, row: dict[str, Any]) -> None:
    from ase_surftune.evaluation.tables import jsonable

    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as fh:  # after a line cut off by a kill, start a fresh line
        fh.write(("\n" if torn else "") + json.dumps(jsonable(row)) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read(paths: Any) -> list[Atoms]:
    from ase_surftune.data import read_labelled

    if paths is None:
        return []
    return read_labelled([str(p) for p in (paths if isinstance(paths, list) else [paths])])


def _fingerprint(cfg: LearningCurveConfig, pool: Sequence[Atoms], test: Sequence[Atoms],
                 valid: Sequence[Atoms]) -> str:
    from ase_surftune.data import dataset_hash

    d = cfg.model_dump(mode="json", exclude={"n_train", "strategies", "seeds", "output_dir",
                                              "progress", "train_file", "test_file",
                                              "valid_file", "zero_shot"})
    d["data"] = [dataset_hash(pool), dataset_hash(test), dataset_hash(valid) if valid else None]
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _drop_max_force(frames: list, max_force: float, name: str,
                    dropped: list[dict[str, Any]]) -> list:
    """Frames whose largest reference atomic force is <= ``max_force`` (eV/Å); the others
    are logged and appended to ``dropped``."""
    from ase_surftune.data import get_labels

    keep = []
    for i, a in enumerate(frames):
        f = get_labels(a)[1]
        fmax = float(np.max(np.linalg.norm(f, axis=1))) if len(f) else 0.0
        if fmax > max_force:
            src = str(a.info.get("source", f"{name}[{i}]"))
            dropped.append({"set": name, "source": src, "max_force": fmax})
            log.warning("learning curve: dropped %s frame %s: max |F_ref| %.2f eV/Å > "
                        "max_force %g", name, src, fmax, max_force)
            continue
        keep.append(a)
    return keep


def _fit_point(cfg_d: dict[str, Any], strat: str, n: int, seed: int, pool: list,
               valid_atoms: list, test_atoms: list, run_dir: str,
               ev_kw: dict[str, Any]) -> dict[str, Any]:
    """One learning-curve point: fine-tune on N structures, evaluate on the test set.

    Module level and free of live models so it runs in executor workers.
    """
    from ase_surftune.evaluation.errors import evaluate_model
    from ase_surftune.training import finetune

    t0 = time.perf_counter()
    cfg = LearningCurveConfig.model_validate(cfg_d)
    perm = np.random.default_rng(seed).permutation(len(pool))
    subset = [pool[j] for j in perm[:n]]
    res = finetune(cfg.run_config(strat, seed, Path(run_dir)), train=subset,
                   valid=valid_atoms, test=[])
    ev = evaluate_model(str(res.bundle_path), test_atoms, align="stored", **ev_kw)
    return {"strategy": strat, "n_train": n, "seed": seed,
            **{m: getattr(ev.overall, m) for m in LearningCurveResult.METRICS},
            "n_test": len(test_atoms), "wall_time_s": round(time.perf_counter() - t0, 3),
            "bundle": str(res.bundle_path)}


def learning_curve(config: LearningCurveConfig | dict | str | Path, *,
                   train: Sequence[Atoms] | None = None, test: Sequence[Atoms] | None = None,
                   valid: Sequence[Atoms] | None = None, resume: bool = True,
                   max_runs: int | None = None, executor: Any = None,
                   **overrides: Any) -> LearningCurveResult:
    """Fine-tune for each strategy, N and seed; evaluate on the fixed test set.

    Args:
        config: :class:`LearningCurveConfig`, dict or YAML path.
        train, test, valid: labelled structures in memory instead of the config's files
            (``train`` is the pool the N structures are drawn from; ``valid``, if any, is
            a fixed validation set for early stopping; without it each run trains for
            ``epochs`` and keeps the last epoch).
        resume: continue from ``results.jsonl`` in the output folder (default); False
            starts over (the old results file is moved aside to ``results.jsonl.old``).
        max_runs: stop after this many new fine-tuning runs (the result is then
            ``complete=False``); for budgeted or staged runs.
        executor: run the fine-tuning points through ``"process[:N]"`` or any
            ``concurrent.futures.Executor`` (Dask...; see :mod:`ase_surftune.core.parallel`);
            default: one after another in this process. Each finished point is appended
            to ``results.jsonl`` as it completes; a failed point is logged, skipped and
            retried on the next resume.
        **overrides: top-level config keys (``n_train=[...]``, ``output_dir=...``).

    Returns:
        :class:`LearningCurveResult`; also written to ``learning_curve.json/.csv/.png``.
    """
    cfg = load_learning_curve_config(config, **overrides)
    pool, test_atoms, valid_atoms, max_force_dropped = _load_sets(cfg, train, test, valid)
    ns = _sizes(cfg, len(pool))
    out = Path(cfg.output_dir)
    results_path = _prepare_output(cfg, out, _fingerprint(cfg, pool, test_atoms, valid_atoms),
                                   resume, {"n_pool": len(pool), "n_test": len(test_atoms),
                                            "max_force_dropped": max_force_dropped})
    rows = _read_rows(results_path)
    done = {(r["strategy"], r["n_train"], r["seed"]) for r in rows}
    ev_kw = {"high_force_quantile": cfg.high_force_quantile, "progress": False}
    if cfg.zero_shot and ("zero-shot", 0, 0) not in done:
        row = _zero_shot_point(cfg.model, pool, test_atoms, ev_kw)
        _append_row(results_path, row)
        rows.append(row)

    todo = [(s, n, seed) for seed in cfg.seeds for s in cfg.strategies for n in ns
            if (s, n, seed) not in done]
    complete = max_runs is None or len(todo) <= max_runs
    todo = todo if complete else todo[:max_runs]
    cfg_d = cfg.model_dump(mode="json")
    tasks = [(cfg_d, strat, n, seed, pool, valid_atoms, test_atoms,
              str(out / "runs" / f"{strat}_N{n}_seed{seed}"), ev_kw)
             for strat, n, seed in todo]
    new_rows, all_ok = _run_points(tasks, executor, results_path, cfg.progress)
    rows += new_rows

    def key_ok(r: dict[str, Any]) -> bool:
        return r["strategy"] == "zero-shot" or (r["strategy"] in cfg.strategies
                                                and r["n_train"] in ns and r["seed"] in cfg.seeds)

    rows = sorted((r for r in rows if key_ok(r)),
                  key=lambda r: (r["strategy"] != "zero-shot", r["strategy"], r["n_train"],
                                 r["seed"]))
    result = LearningCurveResult(model=cfg.model, rows=rows, output_dir=out,
                                 complete=complete and all_ok,
                                 config=cfg.model_dump(mode="json"))
    result.write()
    return result


def _load_sets(cfg: LearningCurveConfig, train: Sequence[Atoms] | None,
               test: Sequence[Atoms] | None, valid: Sequence[Atoms] | None
               ) -> tuple[list[Atoms], list[Atoms], list[Atoms], list[dict[str, Any]]]:
    """Pool, test and validation frames (in memory or from the config's files), with
    ``max_force`` applied; the fourth item names every dropped frame."""
    pool = list(train) if train is not None else _read(cfg.train_file)
    test_atoms = list(test) if test is not None else _read(cfg.test_file)
    valid_atoms = list(valid) if valid is not None else _read(cfg.valid_file)
    dropped: list[dict[str, Any]] = []
    if cfg.max_force is not None:
        pool, test_atoms, valid_atoms = (
            _drop_max_force(frames, cfg.max_force, name, dropped)
            for frames, name in ((pool, "train"), (test_atoms, "test"),
                                 (valid_atoms, "valid")))
    if not pool:
        raise DataError("learning curve: no training pool (train_file or train=...)")
    if not test_atoms:
        raise DataError("learning curve: no test set (test_file or test=...)")
    return pool, test_atoms, valid_atoms, dropped


def _sizes(cfg: LearningCurveConfig, n_pool: int) -> list[int]:
    """The N values the pool can supply (larger ones are skipped with a warning)."""
    ns = [n for n in cfg.n_train if n <= n_pool]
    dropped = [n for n in cfg.n_train if n > n_pool]
    if dropped:
        log.warning("learning curve: N=%s exceed the pool of %d structures; skipped",
                    dropped, n_pool)
    if not ns:
        raise DataError(f"every N in {cfg.n_train} exceeds the pool of {n_pool} structures")
    return ns


def _prepare_output(cfg: LearningCurveConfig, out: Path, fp: str, resume: bool,
                    info: dict[str, Any]) -> Path:
    """Create ``out``, set old results aside (``resume=False``) or refuse to resume a
    curve of other data/settings, write the manifest; return the results-file path."""
    from ase_surftune.evaluation.tables import write_json

    out.mkdir(parents=True, exist_ok=True)
    results_path, manifest_path = out / RESULTS_FILE, out / MANIFEST_FILE
    if not resume and results_path.exists():
        results_path.replace(results_path.with_name(RESULTS_FILE + ".old"))
    if not resume and (out / "runs").is_dir():  # fresh runs; the old ones are kept aside
        from ase_surftune.core.io import move_aside

        move_aside(out / "runs")
    if results_path.exists() and manifest_path.is_file():
        old = json.loads(manifest_path.read_text()).get("fingerprint")
        if old != fp:
            raise ConfigError(f"cannot resume the learning curve in {str(out)!r}: it was "
                              f"started with other data or settings (only n_train, "
                              f"strategies, seeds and progress may change); use another "
                              f"output_dir or resume=False")
    write_json({"fingerprint": fp, "config": cfg.model_dump(mode="json"), **info},
               manifest_path)
    return results_path


def _zero_shot_point(model: str, pool: list[Atoms], test_atoms: list[Atoms],
                     ev_kw: dict[str, Any]) -> dict[str, Any]:
    """The N = 0 row: the base model on the test set, energies aligned on the pool."""
    from ase_surftune.evaluation._spec import make_calculator
    from ase_surftune.evaluation.errors import evaluate_model

    t0 = time.perf_counter()
    ev = evaluate_model((model, make_calculator(model)), test_atoms, align_on=pool, **ev_kw)
    return {"strategy": "zero-shot", "n_train": 0, "seed": 0,
            **{m: getattr(ev.overall, m) for m in LearningCurveResult.METRICS},
            "n_test": len(test_atoms), "wall_time_s": round(time.perf_counter() - t0, 3),
            "bundle": None}


def _run_points(tasks: list[tuple], executor: Any, results_path: Path,
                progress: bool) -> tuple[list[dict[str, Any]], bool]:
    """Run :func:`_fit_point` for each task, appending each finished row to the results
    file as it completes. Returns the new rows and whether every point succeeded."""
    from concurrent.futures import as_completed

    from tqdm.auto import tqdm

    from ase_surftune.core.parallel import get_executor

    rows: list[dict[str, Any]] = []
    ok = True
    ex, owned = get_executor(executor)
    try:
        futures = {ex.submit(_fit_point, *t): t[1:4] for t in tasks}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="learning curve",
                        disable=not progress, unit="run"):
            strat, n, seed = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # noqa: BLE001 - one failed point must not stop the curve
                ok = False
                log.error("learning curve %s N=%d seed=%d failed: %s: %s", strat, n, seed,
                          type(exc).__name__, exc)
                continue
            _append_row(results_path, row)  # as each run finishes: the curve resumes
            rows.append(row)
            log.info("learning curve %s N=%d seed=%d: test force MAE %.4f eV/Å, s = %s",
                     strat, n, seed, row["forces_mae"], row["softening_scale"])
    finally:
        if owned:
            ex.shutdown(wait=True)
    return rows, ok
