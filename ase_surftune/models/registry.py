"""Backend registry: backend name -> adapter class, dtype names, named models.

Sits below :mod:`~ase_surftune.models.bundle` and :mod:`~ase_surftune.models.loading`
and imports the backend modules only when one is asked for, so a bundle can rebuild
any adapter without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ase_surftune.core.errors import ModelLoadError
from ase_surftune.core.specs import known_model_names

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.models.backends.base import ModelAdapter

__all__ = ["adapter_class", "available_models", "parse_dtype", "BACKENDS"]

#: backend names, in the order the CLI lists them
BACKENDS = ("chgnet", "mace", "m3gnet")

_DTYPES = {"float32": torch.float32, "float64": torch.float64,
           torch.float32: torch.float32, torch.float64: torch.float64}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"float32"``/``"float64"``/torch dtype/None -> torch dtype/None."""
    if dtype is None:
        return None
    try:
        return _DTYPES[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown dtype {dtype!r}; use 'float32' or 'float64'") from None


def adapter_class(backend: str) -> type[ModelAdapter]:
    """The adapter class registered for a backend name (``"chgnet"``, ``"mace"``, ``"m3gnet"``)."""
    if backend == "chgnet":
        from ase_surftune.models.backends.chgnet import CHGNetAdapter

        return CHGNetAdapter
    if backend == "mace":
        from ase_surftune.models.backends.mace import MACEAdapter

        return MACEAdapter
    if backend == "m3gnet":
        from ase_surftune.models.backends.m3gnet import M3GNetAdapter

        return M3GNetAdapter
    raise ModelLoadError(f"Unknown backend {backend!r}; known: {list(BACKENDS)}")


def available_models() -> list[str]:
    """Named model specs (local files and bundles are accepted too)."""
    return known_model_names()
