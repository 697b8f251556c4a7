"""Small I/O helpers: atomic writes, folder locks, orphaned temp files.

One idiom for every file a run writes (checkpoints, bundles, metrics, configs, reports,
label files): the bytes go to a *unique* temporary file in the same folder
(``.NAME.XXXXXXXX.tmp``), are flushed and fsynced, the temp file is renamed over the
target (``os.replace``, atomic on POSIX) and the folder is fsynced so the rename itself
survives a power cut. A crash or kill at any moment leaves the previous file (or
nothing), never a torn one; the only debris is a hidden temp file, removed by
:func:`clean_orphan_temps` when the next run starts (under the folder lock).

Locks: :func:`exclusive_lock` takes an ``fcntl.flock`` on a lock file holding the owner's
PID. The kernel drops the lock when the process dies (even by SIGKILL), so a stale lock
file never blocks anyone; a second writer gets :class:`~ase_surftune.core.errors.LockedError`
("in use by PID …").
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from ase_surftune.core.errors import LockedError

__all__ = ["atomic_torch_save", "atomic_write_stream", "atomic_writer", "atomic_write_text",
           "atomic_write_bytes", "atomic_write_json", "fsync_dir", "clean_orphan_temps",
           "exclusive_lock", "move_aside", "load_yaml", "to_jsonable", "TEMP_SUFFIX"]

#: Suffix of the temporary files written by :func:`atomic_writer`.
TEMP_SUFFIX = ".tmp"
# ".NAME.<mkstemp random part>.tmp" (current) and "NAME.tmp" (fixed names of v1)
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder so that a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = TEMP_SUFFIX) -> Iterator[Path]:
    """A unique temporary path next to ``path`` for a library that writes files by name
    (phonopy's ``save``...); on success it is fsynced and renamed over ``path`` and the
    folder fsynced, on any exception removed, leaving ``path`` as it was.

    ``suffix`` keeps an extension the writer looks at (e.g. ``".yaml"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w", **open_kw: Any) -> Iterator[IO[Any]]:
    """Open a unique temp file next to ``path``; on success fsync and rename it over ``path``.

    On any exception (or ``KeyboardInterrupt``) the temp file is removed and ``path`` is
    left as it was.
    """
    with atomic_path(path) as tmp, open(tmp, mode, **open_kw) as fh:
        yield fh


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see the module docstring)."""
    with atomic_writer(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
    return Path(path)


def to_jsonable(obj: Any, *, strict: bool = False, as_fields: bool = False) -> Any:
    """``obj`` as plain JSON types, so that ``json.dumps`` writes valid JSON.

    The one sanitiser of the package: NumPy scalars and arrays become Python numbers and
    lists; NaN/inf (Python or NumPy floats) become ``None`` (JSON has no NaN); dataclass
    instances without a ``to_dict()`` become dicts of their fields (fields with
    ``metadata={"json": False}`` are left out); objects with ``to_dict()`` give that dict
    (an explicit form wins); pymatgen/monty ``MSONable``
    objects go through :func:`monty.json.jsanitize`; :class:`ase.Atoms` become
    ``{"symbols", "positions" (Å), "cell" (Å), "pbc"}``; paths become strings; dict keys
    become strings; tuples and sets become lists (sets sorted).

    Args:
        strict: raise ``TypeError`` for any other type (e.g. when writing a model config
            that must read back exactly); otherwise such values are returned unchanged.
        as_fields: serialise ``obj`` itself (a dataclass) by its fields even if it has a
            ``to_dict()``: what a ``to_dict`` built on this function passes.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if type(obj).__module__ == "numpy" and callable(getattr(obj, "tolist", None)):
        return to_jsonable(obj.tolist(), strict=strict)  # numpy scalars and arrays
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, strict=strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, strict=strict) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v, strict=strict) for v in sorted(obj, key=repr)]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, type):
        pass  # a class is not data
    elif callable(getattr(obj, "to_dict", None)) and not as_fields:
        return to_jsonable(obj.to_dict(), strict=strict)
    elif dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name), strict=strict)
                for f in dataclasses.fields(obj) if f.metadata.get("json", True)}
    elif callable(getattr(obj, "as_dict", None)):  # MSONable (pymatgen, monty)
        from monty.json import jsanitize

        return to_jsonable(jsanitize(obj, strict=True), strict=strict)
    elif _is_atoms(obj):
        return {"symbols": obj.get_chemical_symbols(), "positions": obj.positions.tolist(),
                "cell": obj.cell.array.tolist(), "pbc": [bool(p) for p in obj.pbc]}
    if strict:
        raise TypeError(f"{type(obj).__name__} has no JSON form")
    return obj


def _is_atoms(obj: Any) -> bool:
    from ase import Atoms

    return isinstance(obj, Atoms)


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2,
                      default: Callable[[Any], Any] | None = str) -> Path:
    """``json.dumps(data)`` written atomically, with a trailing newline."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=default) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a unique temporary file in the same folder, fsync, then rename.

    A crash or kill mid-write leaves the previous file (or nothing), never a truncated one.
    """
    import torch

    return atomic_write_stream(path, lambda fh: torch.save(obj, fh))


def atomic_write_stream(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a unique temp file next to ``path``, then fsync and rename.

    Like :func:`atomic_torch_save` for any binary format (zip archives...).
    """
    with atomic_writer(path, "wb") as fh:
        write(fh)
    return Path(path)


def clean_orphan_temps(folder: str | Path, names: list[str] | None = None) -> list[Path]:
    """Remove temp files left by killed atomic writes in ``folder``; return what was removed.

    Only files of this module's pattern (``.NAME.XXXXXXXX.tmp``) and v1's fixed
    ``NAME.tmp`` names are touched; with ``names``, only those of the given target
    names. Call it while holding the folder's :func:`exclusive_lock` so that no live
    writer's temp file is removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if not p.is_file() or not p.name.endswith(TEMP_SUFFIX):
            continue
        m = _TEMP_RE.match(p.name)
        target = m.group("name") if m else p.name[:-len(TEMP_SUFFIX)]
        if names is not None and target not in names:
            continue
        if names is None and m is None and not (folder / target).exists():
            continue  # a fixed-name NAME.tmp only counts as ours next to its NAME
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


@contextlib.contextmanager
def exclusive_lock(lock_path: str | Path, what: str) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created, holding our PID).

    Args:
        lock_path: the lock file (e.g. ``run_dir/.surftune.lock``, ``labels.xyz.lock``).
        what: words naming the protected thing in the error (``"output folder 'run'"``).

    Raises:
        LockedError: another process holds the lock; the message names its PID.
    """
    import fcntl

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(lock_path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise LockedError(f"{what} is in use by PID {owner} (lock {str(lock_path)!r}); "
                              f"wait for that run to finish or use another path") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield lock_path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def move_aside(path: str | Path) -> Path:
    """Rename ``path`` to ``path.old-YYYYmmdd-HHMMSS`` (a counter is added if taken)."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = path.with_name(f"{path.name}.old-{stamp}")
    k = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.old-{stamp}-{k}")
        k += 1
    os.replace(path, dest)
    fsync_dir(path.parent)
    return dest


def load_yaml(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML mapping (empty dict for ``None``); clear error if not a mapping."""
    if path is None:
        return {}
    import yaml

    from ase_surftune.core.errors import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file not found: {str(p)!r}")
    try:
        with p.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise ConfigError(f"Config {str(p)!r} is not valid YAML{at}: {problem}; fix the "
                          f"syntax (indentation, 'key: value', matching quotes/brackets)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"Config {str(p)!r} is not a text (UTF-8) YAML file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config {str(p)!r} must be a YAML mapping, got {type(data).__name__}")
    return data
