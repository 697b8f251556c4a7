"""Small I/O helpers shared by bundles, checkpoints and reports."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch


@contextlib.contextmanager
def _atomic_open(path: Path) -> Iterator[IO[bytes]]:
    """A binary file handle whose contents replace ``path`` (fsync + rename) on success.

    A crash or kill mid-write leaves the previous file (or nothing), never a truncated one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    with _atomic_open(path) as fh:
        torch.save(obj, fh)
    return path


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    with _atomic_open(path) as fh:
        fh.write(data)
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text (JSON reports, YAML)."""
    return atomic_write_bytes(text.encode("utf-8"), path)
