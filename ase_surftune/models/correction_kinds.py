"""The kinds of softening correction a bundle head may carry, and the one dispatch on them.

* ``"linear"`` — :class:`~ase_surftune.models.correction.LinearCorrection` (a PES scale
  and per-element shifts; needs only the atomic numbers);
* ``"environment"`` — :class:`~ase_surftune.models.env_correction.EnvCorrection` (a
  scale plus short-range pair/embedding residual; needs the positions).

A stored correction is a plain JSON dict tagged ``"kind"``; dicts without a kind (bundles
written before the tag existed) are linear. Reading one never executes code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ase_surftune.core.errors import DataError
from ase_surftune.models.correction import LinearCorrection
from ase_surftune.models.env_correction import EnvCorrection

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

__all__ = ["Correction", "CORRECTION_TYPES", "correction_from_dict", "as_correction",
           "apply_correction"]

#: any correction a bundle head may carry
Correction = Union[LinearCorrection, EnvCorrection]
CORRECTION_TYPES = (LinearCorrection, EnvCorrection)
_KINDS: dict[str, Any] = {"linear": LinearCorrection, "environment": EnvCorrection}


def correction_from_dict(d: dict[str, Any]) -> Correction:
    """The correction stored as ``d`` (``kind`` absent: linear). DataError if unknown."""
    kind = d.get("kind", "linear")
    if kind not in _KINDS:
        raise DataError(f"unknown correction kind {kind!r}; known: {sorted(_KINDS)}")
    return _KINDS[kind].from_dict(d)


def as_correction(c: Any) -> Correction | None:
    """``c`` as a correction object: None, a correction, or its dict."""
    if c is None or isinstance(c, CORRECTION_TYPES):
        return c
    if isinstance(c, dict):
        return correction_from_dict(c)
    raise TypeError(f"correction must be a LinearCorrection, an EnvCorrection, a dict or "
                    f"None, got {type(c)}")


def apply_correction(corr: Correction, energy: float, forces: np.ndarray,
                     numbers: np.ndarray, stress: np.ndarray | None = None,
                     atoms: Atoms | None = None
                     ) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Corrected (energy eV, forces eV/Å, stress eV/Å³ in the shape given: 3×3 or Voigt).

    ``atoms`` (the structure, positions in Å) is required for an environment correction.
    """
    if isinstance(corr, EnvCorrection):
        if atoms is None:
            raise ValueError("an environment correction needs the structure (atoms=...)")
        return corr.apply(atoms, energy, forces, stress)
    return corr.apply(energy, forces, numbers, stress)
