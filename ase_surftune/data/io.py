"""Reading and writing labelled configurations (any format :mod:`ase.io` reads)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms

from ase_surftune.core.errors import DataError
from ase_surftune.data.labels import (
    DEFAULT_GROUP,
    DataReport,
    OnError,
    PathLike,
    _as_voigt,
    _check_on_error,
    _set_labels,
)
from ase_surftune.data.validate import validate_config


def _normalise(atoms: Atoms, where: str, energy_key: str | None, forces_key: str | None,
               stress_key: str | None, group_key: str) -> Atoms:
    """Copy of ``atoms`` with labels in a SinglePointCalculator and the group set.

    Labels named by a key are taken from ``atoms.info`` (energy, stress) or
    ``atoms.arrays`` / ``atoms.info`` (forces) and removed there; otherwise from the
    attached calculator's results.
    """
    results = dict(getattr(atoms.calc, "results", None) or {})
    out = atoms.copy()  # drops the calculator, keeps info/arrays/constraints
    if energy_key is not None:
        if energy_key not in out.info:
            raise DataError(f"{where}: energy key {energy_key!r} not in info "
                            f"(keys: {sorted(out.info)})")
        energy = out.info.pop(energy_key)
    else:
        energy = results.get("energy", results.get("free_energy"))
        if energy is None:
            raise DataError(f"{where}: missing energy label (no calculator energy; "
                            f"pass energy_key= if it is stored under another name)")
    if forces_key is not None:
        if forces_key in out.arrays:
            forces = out.arrays.pop(forces_key)
        elif forces_key in out.info:
            forces = out.info.pop(forces_key)
        else:
            raise DataError(f"{where}: missing forces: key {forces_key!r} is neither a "
                            f"per-atom array ({sorted(out.arrays)}) nor an info key")
    else:
        forces = results.get("forces")
    if stress_key is not None:
        stress = out.info.pop(stress_key, None)
        if stress is None:
            raise DataError(f"{where}: stress key {stress_key!r} not in info")
    else:
        stress = results.get("stress")

    e_arr = np.asarray(energy, dtype=float)
    if e_arr.size != 1:
        raise DataError(f"{where}: energy label has {e_arr.size} values; expected one")
    f_arr = None if forces is None else np.asarray(forces, dtype=float)
    if f_arr is not None and f_arr.ndim == 1 and f_arr.size == 3 * len(out):
        f_arr = f_arr.reshape(-1, 3)  # flat per-structure info entries
    s_arr = None if stress is None else _as_voigt(stress, where)
    _set_labels(out, float(e_arr.reshape(())), f_arr, s_arr)
    group = out.info.get(group_key)
    out.info["config_type"] = DEFAULT_GROUP if group is None else str(group)
    return out



def _iter_frames(path: Path, index: Any, fmt: str | None) -> Iterator[Atoms]:
    """Frames of one file; parse errors surface as DataError naming the file."""
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    try:
        yield from ase.io.iread(str(path), index=index, format=fmt)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - ase.io raises many unrelated types
        hint = ("it is binary, not text" if isinstance(exc, UnicodeDecodeError)
                else f"{type(exc).__name__}: {exc}")
        raise DataError(f"{path}: cannot parse ({hint}); give a structure file ase.io "
                        f"reads (extxyz, traj, POSCAR, CIF...) or name its format") from exc


def read_structures(path: PathLike, index: Any = ":", format: str | None = None
                    ) -> list[Atoms]:
    """Unlabelled structures from any file :mod:`ase.io` reads.

    Raises:
        DataError: missing, empty, binary or unparsable file (names the file and why).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"structure file not found: {str(p)!r}")
    frames = list(_iter_frames(p, index, format))
    if not frames:
        raise DataError(f"{p}: no structures read (index={index!r})")
    return frames


def source_file(atoms: Atoms) -> str | None:
    """The file a frame was read from (:func:`read_labelled` tags ``info["source"] =
    "file@k"``), or None for frames without a source tag."""
    src = atoms.info.get("source")
    return str(src).rsplit("@", 1)[0] if src else None


def read_labelled(path_or_paths: PathLike | Sequence[PathLike], index: Any = ":",
                  energy_key: str | None = None, forces_key: str | None = None,
                  stress_key: str | None = None, group_key: str = "config_type",
                  on_error: OnError = "raise", require_forces: bool = True,
                  format: str | None = None, report: DataReport | None = None
                  ) -> list[Atoms]:
    """Read labelled configurations from any file(s) :mod:`ase.io` reads.

    Works for extxyz, ASE ``.traj``/``.db``, VASP OUTCAR/vasprun.xml and more; the
    format is guessed from the file unless ``format`` is given. Labels come from the
    attached single-point calculator (extxyz ``energy``/``forces``/``stress``, traj,
    OUTCAR) or, when a key is given, from ``atoms.info[energy_key]`` (eV),
    ``atoms.arrays[forces_key]`` (eV/Å) and ``atoms.info[stress_key]`` (eV/Å³, ASE sign
    convention, Voigt 6, flat 9 or 3x3). Constraints (e.g. OC20 ``FixAtoms``) are kept.

    Returns copies whose labels sit in a fresh SinglePointCalculator (energy, forces,
    stress only), with ``info["config_type"]`` set from ``info[group_key]`` (or
    ``"default"``) and ``info["source"] = "file@k"`` (``k`` counts the frames selected by
    ``index``, so it is the frame number in the file for the default ``":"``).

    Args:
        path_or_paths: a file or a list of files.
        index: ase.io index per file (``":"`` = all frames).
        energy_key, forces_key, stress_key: names of the labels when not in a calculator.
        group_key: info key holding the group (copied into ``info["config_type"]``).
        on_error: ``"raise"`` on the first bad frame/file, or ``"skip"`` it, log a warning
            and record it in ``report``.
        require_forces: treat missing forces as bad data.
        format: ase.io format name, if it cannot be guessed.
        report: a :class:`DataReport` to append counts and skips to.

    Raises:
        DataError: a bad frame/file with ``on_error="raise"``; or, in any mode, when no
            configuration at all survives.
    """
    _check_on_error(on_error)
    report = report if report is not None else DataReport()
    paths = ([path_or_paths] if isinstance(path_or_paths, (str, os.PathLike))
             else list(path_or_paths))
    if not paths:
        raise DataError("read_labelled: no input files given")
    out: list[Atoms] = []
    for p in map(Path, paths):
        n_before = len(out)
        i = -1
        try:
            for i, atoms in enumerate(_iter_frames(p, index, format)):
                report.n_read += 1
                where = f"{p}@{i}"
                try:
                    conf = _normalise(atoms, where, energy_key, forces_key, stress_key,
                                      group_key)
                    validate_config(conf, require_forces=require_forces, where=where)
                except DataError as exc:
                    if on_error == "raise":
                        raise
                    report.add_skip(str(p), i, str(exc).removeprefix(f"{where}: "))
                    continue
                conf.info["source"] = where
                out.append(conf)
        except DataError as exc:
            if on_error == "raise":
                raise
            # File-level failure (empty, unparsable): earlier frames of it are kept.
            report.add_skip(str(p), None if i < 0 else i + 1, str(exc))
        if len(out) == n_before and on_error == "raise":
            raise DataError(f"{p}: no configurations read (index={index!r})")
    report.n_kept += len(out)
    if not out:
        raise DataError(f"no labelled configurations in {[str(p) for p in paths]}"
                        + (f"; skipped: {[str(s) for s in report.skipped]}"
                           if report.skipped else ""))
    return out


def write_labelled(configs: Iterable[Atoms], path: PathLike, format: str | None = None) -> None:
    """Write labelled configurations (energy eV, forces eV/Å, stress eV/Å³, info).

    The format is guessed from the extension (``.xyz``/``.extxyz`` → extxyz); the file
    reads back with :func:`read_labelled` and default keys.
    """
    configs = list(configs)
    fmt = format or _guess_format(path)
    ase.io.write(str(path), configs, format=fmt)


def _guess_format(path: PathLike) -> str | None:
    suffix = Path(path).suffix.lower()
    return "extxyz" if suffix in (".xyz", ".extxyz", "") else None
