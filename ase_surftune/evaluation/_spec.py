"""Calculator specs used by ``evaluate``, ``compare`` and ``learning-curve``.

A *spec* is a plain string, so that work can be described, logged, cached and shipped to
another process (a later issue runs these functions through ``concurrent.futures``):

==================================  ===============================================
``"emt"``, ``"gpaw"``               reference calculators (:mod:`ase_surftune.models.references`)
``"chgnet"``, ``"mace:/x.model"``   models, as :func:`ase_surftune.models.backends.load_model`
``"run/model.stbundle"``            a fine-tuned bundle (its default head)
``"run/model.stbundle@surface"``    ``spec@head``: one head of a (multi-head) model
==================================  ===============================================

``spec@head`` is split at the *last* ``@`` unless the whole string names an existing
file or the part after ``@`` contains a path separator (so paths containing ``@`` keep
working). Live ASE calculators are accepted wherever a spec is, for in-process use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase.calculators.calculator import BaseCalculator

from ase_surftune.core.errors import ConfigError
from ase_surftune.models.references import parse_spec

__all__ = ["parse_spec", "make_calculator", "spec_label"]


def spec_label(spec: Any) -> str:
    """A short printable name for a spec or calculator (used in tables and file names)."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, (list, tuple)) and len(spec) == 2:  # (label, calculator)
        return str(spec[0])
    name = getattr(spec, "name", None) or type(spec).__name__
    return str(name)


def make_calculator(spec: Any, device: str = "cpu") -> BaseCalculator:
    """An ASE calculator from a spec string, a ``(label, calculator)`` pair or a calculator.

    Raises:
        ConfigError: unknown reference name or malformed spec.
        ModelLoadError / HeadError: the model or head cannot be loaded.
    """
    if isinstance(spec, (list, tuple)) and len(spec) == 2 and not isinstance(spec[1], str):
        spec = spec[1]
    if not isinstance(spec, (str, Path)):
        if hasattr(spec, "get_potential_energy") or isinstance(spec, BaseCalculator):
            return spec
        raise ConfigError(f"expected a calculator spec or an ASE calculator, got "
                          f"{type(spec).__name__}")
    from ase_surftune.models.references import get_calculator

    try:
        return get_calculator(str(spec), device=device)
    except ValueError as exc:
        if isinstance(exc, ConfigError) or type(exc).__module__.startswith("ase_surftune"):
            raise
        raise ConfigError(str(exc)) from exc
