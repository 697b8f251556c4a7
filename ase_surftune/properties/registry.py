"""The property registry: name -> :class:`~ase_surftune.properties.protocol.PropertyCalc`.

``compare`` and ``benchmark`` loop over it instead of keeping their own if/elif chains, so
a property registered here (with :func:`register`) is measured by both. The built-in
properties (:mod:`ase_surftune.properties.calcs`) register when
:mod:`ase_surftune.properties` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ase_surftune.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.properties.protocol import PropertyCalc

__all__ = ["register", "get_property", "available_properties"]

_REGISTRY: dict[str, type[PropertyCalc]] = {}
_C = TypeVar("_C")


def register(name: str | None = None) -> Callable[[_C], _C]:
    """Class decorator: register a :class:`PropertyCalc` under ``name`` (default its
    ``name`` attribute). Registering another class under a taken name is an error."""

    def deco(cls: Any) -> Any:
        key = name or cls.name
        if not key:
            raise ConfigError(f"{cls.__name__} has no property name")
        old = _REGISTRY.get(key)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ConfigError(f"property {key!r} is already registered ({old.__name__})")
        _REGISTRY[key] = cls
        return cls

    return deco


def get_property(name: str) -> type[PropertyCalc]:
    """The calc class registered under ``name``.

    Raises:
        ConfigError: unknown name, naming the available ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown property {name!r}; available: "
                          f"{', '.join(available_properties())}") from None


def available_properties() -> list[str]:
    """Registered property names, in registration order."""
    return list(_REGISTRY)
