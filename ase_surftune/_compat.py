"""Old module paths (before the layered layout of issue 15) keep importing, with a warning.

``import ase_surftune.bundle`` still works and yields :mod:`ase_surftune.models.bundle`
itself (the same module object, so ``isinstance`` and monkeypatching behave), after a
:class:`DeprecationWarning` naming the new path. One table, one finder; nothing else in
the package refers to the old names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

#: old top-level module -> new module (submodules follow: ``finetune.api`` -> ``training.api``)
MOVED: dict[str, str] = {
    "ase_surftune.errors": "ase_surftune.core.errors",
    "ase_surftune._io": "ase_surftune.core.io",
    "ase_surftune.trust": "ase_surftune.core.trust",
    "ase_surftune.threads": "ase_surftune.core.threads",
    "ase_surftune.metrics": "ase_surftune.core.metrics",
    "ase_surftune.parallel": "ase_surftune.core.parallel",
    "ase_surftune.alignment": "ase_surftune.data.alignment",
    "ase_surftune.backends": "ase_surftune.models.backends",
    "ase_surftune.bundle": "ase_surftune.models.bundle",
    "ase_surftune.calculator": "ase_surftune.models.calculator",
    "ase_surftune.correction": "ase_surftune.models.correction",
    "ase_surftune.env_correction": "ase_surftune.models.env_correction",
    "ase_surftune.references": "ase_surftune.models.references",
    "ase_surftune.plugin": "ase_surftune.models.plugin",
    "ase_surftune.finetune": "ase_surftune.training",
    # the distillation workflow moved above properties (the longest matching entry wins)
    "ase_surftune.finetune.distill": "ase_surftune.evaluation.distill",
}


def new_name(old: str) -> str | None:
    """The current module path for an old one, or None when ``old`` did not move."""
    for before, after in sorted(MOVED.items(), key=lambda kv: -len(kv[0])):
        if old == before or old.startswith(before + "."):
            return after + old[len(before):]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._own = (module.__spec__, getattr(module, "__loader__", None))
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias spec on the real module; put its own back
        module.__spec__, module.__loader__ = self._own


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = new_name(fullname)
        if new is None:
            return None
        warnings.warn(f"{fullname} moved to {new}; import it from there "
                      "(the old path will be removed in a later release)",
                      DeprecationWarning, stacklevel=3)
        return importlib.machinery.ModuleSpec(fullname, _Alias(new), is_package=True)


def install() -> None:
    """Register the finder once (idempotent)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
