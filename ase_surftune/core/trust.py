"""Whether pickle-based model files may be read (``trust=True`` / ``--trust-pickle``).

Reading a Python pickle can run arbitrary code. ase_surftune's own formats (bundles
version 2, checkpoints) never need pickle; a few foreign or legacy formats do: MACE
``.model`` files, MACE-MP checkpoints and version-1 bundles. Those load only when the
caller opts in, either per call (``load_model(spec, trust=True)``,
``Bundle.load(path, trust=True)``, ``SurfTuneCalculator(spec, trust=True)``) or for a
block of code that reaches the loader through many layers (evaluation, fine-tuning
configs, the CLI's ``--trust-pickle``)::

    with trust_pickle():
        evaluate(["mace:/my/trusted.model"], data)

The block setting is process-wide (threads started inside see it) but does not reach
worker processes started by a process pool.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["trust_pickle", "pickle_trusted"]

_LOCK = threading.Lock()
_DEPTH = 0


@contextlib.contextmanager
def trust_pickle(enabled: bool = True) -> Iterator[None]:
    """Allow pickle-based model files inside the block (no-op with ``enabled=False``)."""
    global _DEPTH
    if not enabled:
        yield
        return
    with _LOCK:
        _DEPTH += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH -= 1


def pickle_trusted(trust: bool | None = None) -> bool:
    """The effective trust: ``trust`` if given, else whether a :func:`trust_pickle`
    block is active."""
    if trust is not None:
        return bool(trust)
    return _DEPTH > 0
