"""Resolve a calculator spec to an ASE calculator: reference codes or models.

``get_calculator("emt")`` gives ASE's EMT, ``"gpaw"`` a PBE GPAW calculator (needs
the optional ``[dft]`` extra), anything else is treated as a model spec and gives a
:class:`~ase_surftune.models.calculator.SurfTuneCalculator`. Property workflows take any
ASE calculator; this is only the convenience used by the CLI and the demo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ase_surftune.core.errors import ConfigError
from ase_surftune.core.specs import split_head

# reference codes are labellers: the data layer owns them (re-exported here)
from ase_surftune.data.references import (
    REFERENCE_NAMES,
    get_reference_calculator,
    register_spec_resolver,
)

if TYPE_CHECKING:  # pragma: no cover
    from ase.calculators.calculator import BaseCalculator

__all__ = ["REFERENCE_NAMES", "get_calculator", "get_reference_calculator", "parse_spec"]


parse_spec = split_head  # "model@head" -> ("model", "head"); see ase_surftune.core.specs


def get_calculator(spec: str, head: str | None = None, device: str = "cpu",
                   **kwargs: Any) -> BaseCalculator:
    """A reference calculator if ``spec`` names one, else a SurfTuneCalculator for the model.

    ``spec`` may carry its head as ``"model@head"`` (see :func:`parse_spec`); giving a
    different ``head`` as well is a :class:`ConfigError`.
    """
    model, spec_head = parse_spec(spec)
    if spec_head is not None:
        if head is not None and head != spec_head:
            raise ConfigError(f"two heads given: {spec!r} names head {spec_head!r} but "
                              f"head={head!r}; give one")
        head = spec_head
    if model.lower() in REFERENCE_NAMES:
        if head is not None:
            raise ConfigError(f"reference calculator {model!r} has no heads (got {head!r})")
        return get_reference_calculator(model, **kwargs)
    from ase_surftune.models.calculator import SurfTuneCalculator

    return SurfTuneCalculator(model=model, head=head, device=device, **kwargs)


register_spec_resolver(get_calculator)  # data.label() builds model specs through this
