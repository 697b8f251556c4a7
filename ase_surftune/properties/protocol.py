"""One protocol for every property (matcalc's ``PropCalc`` is the model).

A :class:`PropertyCalc` has a ``name``, a ``settings`` object (a
:class:`~ase_surftune.properties.settings.PropertySettings`, the one source of its
defaults) and ``calc(structure, calculator)``. ``calc`` takes an ``Atoms`` or the dict
another calc returned, and returns a dict that chains: the input dict's keys, the
result under ``name`` and ``"final_structure"`` (the structure the next calc should
start from: the relaxed bulk after ``lattice``/``relax``, else the input). So

    out = LatticeCalc().calc(bulk, calc)
    out = SurfaceCalc(miller_indices=["111"]).calc(out, calc)   # on the relaxed bulk

:meth:`PropertyCalc.table` turns a result into the scalar rows that ``compare`` and
``benchmark`` tabulate (:class:`PropertyValue`: key, value, unit, label, converged).
"""

from __future__ import annotations

import importlib
from abc import ABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ase import Atoms
from pydantic import BaseModel

from ase_surftune.core.config import validate_model
from ase_surftune.core.errors import InvalidStructureError
from ase_surftune.properties.settings import PropertySettings

__all__ = ["PropertyCalc", "PropertyValue", "structure_of"]


@dataclass
class PropertyValue:
    """One tabulated number: ``key`` (e.g. ``gamma_111``), value in ``unit``."""

    key: str
    value: float
    unit: str
    label: str
    converged: bool = True
    details: dict[str, Any] = field(default_factory=dict)


def structure_of(structure: Atoms | dict[str, Any]) -> Atoms:
    """The structure a calc works on: an ``Atoms``, or ``final_structure`` (else
    ``structure``) of a dict returned by another calc."""
    if isinstance(structure, dict):
        for key in ("final_structure", "structure"):
            if isinstance(structure.get(key), Atoms):
                return structure[key]
        raise InvalidStructureError("a property input dict needs an Atoms under "
                                    "'final_structure' or 'structure'")
    if not isinstance(structure, Atoms):
        raise InvalidStructureError(f"structure must be an ase.Atoms or a calc result dict, "
                                    f"got {type(structure).__name__}")
    return structure


class PropertyCalc(ABC):
    """Base of the property calculations: settings in, chaining result dict out.

    Args:
        settings: a settings instance or dict (validated; unknown keys refused).
        plot: PNG path of the calc's figure, for the calcs that draw one (phonon bands
            and DOS, the Wulff shape when ``wulff`` is set, MD log); None: no figure.
        overrides: single settings (``None`` values ignored).
    """

    name: ClassVar[str] = ""
    settings_cls: ClassVar[type[PropertySettings]] = PropertySettings
    #: measured on a (relaxed) bulk and tabulated: ``compare`` accepts it by name
    on_bulk: ClassVar[bool] = False
    #: ``"module:function"`` the default :meth:`run` calls as
    #: ``function(atoms, calculator, **settings.kwargs())``
    function: ClassVar[str] = ""

    def __init__(self, settings: BaseModel | dict[str, Any] | None = None, *,
                 plot: str | Path | None = None, **overrides: Any) -> None:
        self.plot = None if plot is None else str(plot)
        if isinstance(settings, self.settings_cls) and not overrides:
            self.settings = settings
            return
        if isinstance(settings, BaseModel):
            data = {k: getattr(settings, k) for k in type(settings).model_fields
                    if k in self.settings_cls.model_fields}
        else:
            data = dict(settings or {})
        data.update({k: v for k, v in overrides.items() if v is not None})
        self.settings = validate_model(self.settings_cls, data, f"{self.name} property")

    def run(self, atoms: Atoms, calculator: Any) -> Any:
        """The property's result object for ``atoms`` (the API function's result).

        The default calls :attr:`function` with the settings as keyword arguments; calcs
        that need more (a plot path, fixed arguments) override it."""
        if not self.function:
            raise NotImplementedError(f"{type(self).__name__} sets neither function nor run")
        module, _, attr = self.function.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        return fn(atoms, calculator, **self.settings.kwargs())

    def final_structure(self, result: Any) -> Atoms | None:
        """The structure the next calc should start from (None: the input one)."""
        return None

    def table(self, result: Any) -> list[PropertyValue]:
        """The scalar values of ``result`` that comparisons tabulate."""
        return []

    def calc(self, structure: Atoms | dict[str, Any], calculator: Any) -> dict[str, Any]:
        """Run on ``structure`` (Atoms or a previous calc's dict); returns the chained
        dict: the input dict's keys, ``{name: result, "final_structure": Atoms}``."""
        atoms = structure_of(structure)
        result = self.run(atoms, calculator)
        out = dict(structure) if isinstance(structure, dict) else {"structure": atoms}
        out[self.name] = result
        final = self.final_structure(result)
        out["final_structure"] = atoms if final is None else final
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"
