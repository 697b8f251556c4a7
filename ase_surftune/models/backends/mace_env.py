"""Importing mace safely (one place).

``mace`` must be imported before ``e3nn`` under torch 2.13, and importing mace sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` process-wide, which would switch off torch's safe
``torch.load`` default for this process and its children. Every import of mace in
ase_surftune goes through :func:`import_mace`, which restores the variable to what it
was (unset if it was unset).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

__all__ = ["import_mace", "preserve_torch_load_env"]

_UNSAFE_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def preserve_torch_load_env() -> Any:
    """Restore ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` on exit (mace's imports set it to 1)."""
    before = os.environ.get(_UNSAFE_ENV)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_UNSAFE_ENV, None)
        else:
            os.environ[_UNSAFE_ENV] = before


def import_mace() -> None:
    """Import mace (before e3nn) and the mace modules ase_surftune uses, without letting
    mace switch off torch's safe ``torch.load`` default for the process or its children.

    Use this instead of ``import mace`` everywhere (library, tests, benchmarks).
    """
    _import_mace()


@functools.lru_cache(maxsize=1)
def _import_mace() -> Any:
    with preserve_torch_load_env():
        import mace  # noqa: F401  (must precede e3nn)
        import mace.calculators  # noqa: F401  (sets the variable again on import)
        import mace.tools.scripts_utils  # noqa: F401
        from mace import data as mace_data
        from mace.tools import torch_geometric, torch_tools

    return mace_data, torch_geometric, torch_tools
