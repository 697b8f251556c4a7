"""The resumable labelling workflow: :func:`label` with any ASE calculator."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError

from ase_surftune.core.errors import DataError
from ase_surftune.data.hashing import structure_hash
from ase_surftune.data.labels import (
    DEFAULT_GROUP,
    DataReport,
    OnError,
    PathLike,
    _check_on_error,
    _set_labels,
    get_labels,
)
from ase_surftune.data.references import SpecResolver, resolve_spec
from ase_surftune.data.validate import check_min_distance

log = logging.getLogger(__name__)

def _read_done(path: Path, *, repair: bool = True,
               report: DataReport | None = None) -> list[Atoms]:
    """Readable frames of a partly written extxyz label file.

    Only a torn *final* frame (a write cut off by a kill: too few lines or no final
    newline) is cut from the file (``repair=True``). A damaged frame in the middle is
    reported (``report``, log warning) and skipped; the valid frames after it are kept and
    the file is not rewritten, so no label is ever lost. Frames are found by their atom
    count line; where that line itself is garbage, the reader resynchronises on the next
    line that starts a readable frame.

    Raises:
        DataError: the file is not text (e.g. binary bytes): refusing to touch it.
    """
    if not path.exists() or path.stat().st_size == 0:
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text extxyz label file ({exc.reason} at byte "
                        f"{exc.start}); refusing to append to it: use another output path")
    frames: list[Atoms] = []
    lines = text.splitlines(keepends=True)
    offsets = np.cumsum([0] + [len(x) for x in lines])
    i, torn_at = 0, None
    while i < len(lines):
        try:
            nat = int(lines[i].strip())
        except ValueError:
            nat = -1
        block = lines[i:i + nat + 2] if nat >= 0 else []
        if nat >= 0 and (len(block) < nat + 2 or not block[-1].endswith("\n")):
            if i + nat + 2 >= len(lines):  # runs to the end of the file: a torn last frame
                torn_at = i
                break
        atoms = None
        if nat >= 0 and len(block) == nat + 2:
            try:
                atoms = ase.io.read(io.StringIO("".join(block)), format="extxyz")
            except Exception:  # noqa: BLE001 - a damaged frame is skipped, not fatal
                atoms = None
        if atoms is not None:
            frames.append(atoms)
            i += nat + 2
            continue
        # a damaged frame: skip to the next line that starts a readable frame
        j = i + 1
        while j < len(lines) and not _starts_frame(lines, j):
            j += 1
        msg = f"unreadable frame at lines {i + 1}-{j} skipped (kept the frames after it)"
        if j >= len(lines) and not text.endswith("\n"):
            torn_at = i
            break
        if report is not None:
            report.add_skip(str(path), len(frames), msg)
        else:
            log.warning("%s: %s", path, msg)
        i = j
    if torn_at is not None and repair:
        log.warning("%s: cutting a torn final frame (line %d on) after %d frame(s)", path,
                    torn_at + 1, len(frames))
        with open(path, "r+b") as fh:
            fh.truncate(len(text[:int(offsets[torn_at])].encode("utf-8")))
            fh.flush()
            os.fsync(fh.fileno())
    return frames


def _starts_frame(lines: list[str], i: int) -> bool:
    """True if ``lines[i]`` is an atom count followed by a readable extxyz frame."""
    try:
        nat = int(lines[i].strip())
    except ValueError:
        return False
    block = lines[i:i + nat + 2]
    if nat < 0 or len(block) < nat + 2:
        return False
    try:
        ase.io.read(io.StringIO("".join(block)), format="extxyz")
    except Exception:  # noqa: BLE001
        return False
    return True


def _compute(atoms: Atoms, calc: Calculator, properties: Sequence[str]) -> Atoms:
    """A copy of ``atoms`` labelled by ``calc`` (energy, forces, stress where possible)."""
    work = atoms.copy()
    work.calc = calc
    energy = work.get_potential_energy()
    forces = work.get_forces(apply_constraint=False) if "forces" in properties else None
    stress = None
    if "stress" in properties and all(work.pbc):
        try:
            stress = work.get_stress(voigt=True, apply_constraint=False)
        except PropertyNotImplementedError:
            stress = None
    out = atoms.copy()
    _set_labels(out, energy, forces, stress)
    return out


def label(configs: Sequence[Atoms], calc: Calculator | str, out_path: PathLike,
          resume: bool = True, progress: bool = True,
          properties: Sequence[str] = ("energy", "forces", "stress"),
          on_error: OnError = "raise", report: DataReport | None = None,
          executor: Any = None, resolve: SpecResolver | None = None) -> list[Atoms]:
    """Label structures with any ASE calculator, appending each result to an extxyz file.

    Each labelled frame is written, flushed and fsync'ed as soon as it is computed, with
    ``info["label_index"]`` (position in ``configs``) and ``info["structure_hash"]``
    (:func:`structure_hash` of the input structure). With ``resume=True`` an existing
    ``out_path`` is read first and every input whose structure hash is already there is
    reused, not recomputed; an incomplete last frame (a write cut off by an interruption)
    is discarded. At the end the file holds one frame per labelled input, in input order.

    Stress (eV/Å³, Voigt) is computed only for fully periodic cells and when the
    calculator implements it. Forces (eV/Å) are raw (constraints not applied).

    Args:
        configs: structures to label (any labels they carry are ignored).
        calc: an ASE calculator (EMT, GPAW, VASP, ...), reused for every structure, or a
            spec string (``"emt"``, ``"gpaw"``, a model spec) resolved in each worker
            (see :mod:`ase_surftune.data.references`).
        out_path: extxyz file to write.
        resume: reuse matching frames already in ``out_path`` (a torn final frame is cut,
            a damaged frame in the middle is reported and skipped, never the frames after
            it); ``False`` starts afresh, moving an existing file aside to
            ``NAME.old-<time>`` (labels may have cost hours).
        progress: show a tqdm progress bar.
        properties: which of energy/forces/stress to compute.
        on_error: ``"raise"`` when the calculator fails, or ``"skip"`` the structure
            (logged, recorded in ``report``; it is retried on the next resume).
        report: a :class:`DataReport` to append counts and skips to.
        executor: ``None`` (this process), ``"process[:N]"`` or any
            ``concurrent.futures.Executor`` (Dask...; see :mod:`ase_surftune.core.parallel`).
            Results are still written one by one as they complete, so an interrupted
            parallel run resumes too. The calculator (or spec) must pickle.
        resolve: builds a calculator from a model spec string (a module-level function,
            so that it pickles); default: the resolver the package registers,
            :func:`ase_surftune.models.references.get_calculator`.

    Returns:
        Copies of the inputs (exact positions, constraints kept) with labels in a
        SinglePointCalculator, in input order (skipped ones omitted).

    The label file is locked (``.NAME.lock``, fcntl) while labelling: a second
    ``label`` on the same file gets :class:`~ase_surftune.core.errors.LockedError`.

    Raises:
        DataError: the calculator fails (``on_error="raise"``), or ``out_path`` holds
            frames that match none of ``configs`` (refusing to overwrite labels that may
            have been expensive; use another path or ``resume=False``).
    """
    from ase_surftune.core.io import clean_orphan_temps, exclusive_lock

    _check_on_error(on_error)
    report = report if report is not None else DataReport()
    path = Path(out_path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a file name for the labels (e.g. "
                        f"{path / 'labels.xyz'})")
    from ase_surftune.core.parallel import check_executor

    check_executor(executor)
    configs = list(configs)
    for i, a in enumerate(configs):  # DFT on overlapping atoms wastes hours, then fails
        if not np.all(np.isfinite(a.positions)):
            raise DataError(f"configs[{i}] ({a.get_chemical_formula()}): NaN/inf positions; "
                            f"fix or remove it")
        check_min_distance(a, f"configs[{i}] ({a.get_chemical_formula()})")
    if isinstance(calc, str):
        calc = _Spec(calc, resolve)
    if isinstance(calc, _Spec) and executor is None:
        _resolve_calc(calc)  # an unknown spec fails here, before any file is touched
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(f".{path.name}.lock"), f"label file {str(path)!r}"):
        clean_orphan_temps(path.parent, names=[path.name])
        return _label_locked(configs, calc, path, resume, progress, properties,
                             on_error, report, executor)


def _label_locked(configs: list[Atoms], calc: Calculator | _Spec, path: Path, resume: bool,
                  progress: bool, properties: Sequence[str], on_error: OnError,
                  report: DataReport, executor: Any) -> list[Atoms]:
    """:func:`label` while holding the label file's lock."""
    hashes = [structure_hash(a) for a in configs]
    done: dict[int, Atoms] = {}
    if resume:
        by_hash = {f.info.get("structure_hash"): f for f in _read_done(path, report=report)}
        foreign = set(by_hash) - set(hashes)
        if foreign:
            raise DataError(f"{path}: holds {len(foreign)} frame(s) that match none of the "
                            f"structures to label; use another out_path or resume=False")
        for i, h in enumerate(hashes):
            if h in by_hash:
                done[i] = _relabel_copy(configs[i], by_hash[h], i, h)
        if done:
            log.info("%s: resuming, %d of %d already labelled", path, len(done), len(configs))
    elif path.exists() and path.stat().st_size > 0:  # --restart: keep the old labels
        from ase_surftune.core.io import move_aside

        old = move_aside(path)
        log.warning("%s: restarting; the previous labels are kept in %s", path, old)
    todo = [i for i in range(len(configs)) if i not in done]
    iterator: Iterable[tuple[int, Atoms | None, BaseException | None]] = _label_results(
        configs, todo, calc, tuple(properties), executor)
    if progress and todo:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(todo), desc=f"labelling {path.name}",
                        unit="structure")
    with open(path, "a") as fh:
        for i, out, exc in iterator:
            if exc is not None:
                if on_error == "raise":
                    raise DataError(f"labelling configs[{i}] "
                                    f"({configs[i].get_chemical_formula()}) failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
                report.add_skip(f"configs[{i}]", i, f"calculator failed: {exc}")
                continue
            out.info["label_index"] = i
            out.info["structure_hash"] = hashes[i]
            out.info.setdefault("config_type", DEFAULT_GROUP)
            ase.io.write(fh, out, format="extxyz")
            fh.flush()
            os.fsync(fh.fileno())
            done[i] = out
    report.n_read += len(configs)
    report.n_kept += len(done)
    stored = _read_done(path, repair=False)
    # return the labels as stored (extxyz precision), so that a fresh run and a resumed
    # run give bit-identical data (and the same dataset hash for a resumed fine-tuning)
    by_hash = {f.info.get("structure_hash"): f for f in stored}
    ordered = [_relabel_copy(configs[i], by_hash[hashes[i]], i, hashes[i])
               if hashes[i] in by_hash else done[i] for i in sorted(done)]
    if [f.info.get("label_index") for f in stored] != sorted(done):
        _atomic_write(path, ordered)  # restore input order (e.g. after skips/resume)
    return ordered


@dataclass(frozen=True)
class _Spec:
    """A calculator spec string and the resolver for model specs (pickles by reference)."""

    spec: str
    resolve: SpecResolver | None = None


_CALC_CACHE: dict[_Spec, Any] = {}


def _resolve_calc(calc: Any) -> Any:
    """A calculator instance for ``calc`` (spec strings are built once per process)."""
    if not isinstance(calc, _Spec):
        return calc
    if calc not in _CALC_CACHE:
        _CALC_CACHE[calc] = resolve_spec(calc.spec, calc.resolve)
    return _CALC_CACHE[calc]


def _label_task(atoms: Atoms, calc: Any, properties: tuple[str, ...]) -> Atoms:
    """Label one structure (module level so that it pickles to executor workers)."""
    return _compute(atoms, _resolve_calc(calc), properties)


def _label_results(configs: Sequence[Atoms], todo: Sequence[int], calc: Any,
                   properties: tuple[str, ...], executor: Any
                   ) -> Iterator[tuple[int, Atoms | None, BaseException | None]]:
    """Yield ``(index, labelled, error)`` as structures finish (in order when inline)."""
    if executor is None:
        for i in todo:
            try:
                yield i, _label_task(configs[i], calc, properties), None
            except Exception as exc:  # noqa: BLE001 - any calculator failure
                yield i, None, exc
        return
    from concurrent.futures import as_completed

    from ase_surftune.core.parallel import get_executor

    ex, owned = get_executor(executor)
    try:
        futures = {ex.submit(_label_task, configs[i], calc, properties): i for i in todo}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result(), None
            except Exception as exc:  # noqa: BLE001 - reported like a serial failure
                yield futures[fut], None, exc
    finally:
        if owned:
            ex.shutdown(wait=True, cancel_futures=True)


def _relabel_copy(atoms: Atoms, frame: Atoms, index: int, h: str) -> Atoms:
    """``atoms`` (exact input) with the labels of an already written ``frame``."""
    energy, forces, stress = get_labels(frame)
    out = atoms.copy()
    _set_labels(out, energy, forces, stress)
    out.info["label_index"] = index
    out.info["structure_hash"] = h
    out.info.setdefault("config_type", frame.info.get("config_type", DEFAULT_GROUP))
    return out


def _atomic_write(path: Path, configs: Sequence[Atoms]) -> None:
    from ase_surftune.core.io import atomic_writer

    with atomic_writer(path, "w") as fh:
        ase.io.write(fh, list(configs), format="extxyz")
