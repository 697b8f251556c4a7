"""Lazy re-exports: a package names its public objects without importing heavy modules.

One idiom for every package ``__init__`` that re-exports lazily (PEP 562)::

    __getattr__, __dir__ = lazy_exports(__name__, globals(), {"Bundle": "ase_surftune.models.bundle"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any], where: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``where`` maps a public name to the
    module that defines it; the module is imported on first access and the value cached
    in ``namespace`` (the package's ``globals()``), so later look-ups are plain."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
