"""The strategy registry: name → :class:`~ase_surftune.training.strategies.Strategy` class.

A module of its own so that the config (which validates ``strategy`` and
``strategy_options`` against it) and the strategies (which read the config) do not
import each other. Importing :mod:`ase_surftune.training` registers the built-in
strategies (full, frozen, scratch, linear, multihead, distill).
"""

from __future__ import annotations

from typing import Any

from ase_surftune.core.errors import ConfigError

__all__ = ["STRATEGIES", "register_strategy", "get_strategy"]

#: name -> Strategy subclass (typed loosely: this module must not import strategies)
STRATEGIES: dict[str, Any] = {}


def register_strategy(cls: Any) -> Any:
    """Class decorator adding a strategy to :data:`STRATEGIES` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str, config: Any = None) -> Any:
    """An instance of the strategy registered as ``name`` (ConfigError if unknown)."""
    try:
        return STRATEGIES[name](config)
    except KeyError:
        raise ConfigError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}") from None
