"""ase_surftune: fine-tune universal interatomic potentials for surfaces and defects.

Heavy submodules (torch, mace, chgnet) are imported lazily so that ``import
ase_surftune`` and the ``surftune`` CLI start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ase_surftune import _compat
from ase_surftune.core.lazy import lazy_exports

_compat.install()
# the composition root: hand the model-spec resolver down to data.label() (data < models)
from ase_surftune.models import references as _references  # noqa: E402,F401

__version__ = "0.1.0"

__all__ = ["SurfTuneCalculator", "load_model", "Bundle", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.models.backends import load_model
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.models.calculator import SurfTuneCalculator


#: public name -> the module that defines it (imported on first use)
_LAZY = {"SurfTuneCalculator": "ase_surftune.models.calculator",
         "load_model": "ase_surftune.models.backends",
         "Bundle": "ase_surftune.models.bundle"}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
