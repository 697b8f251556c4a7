"""CLI options generated from the API's settings models: one source for names, types,
defaults and help.

A settings model is a pydantic model (e.g. a :class:`~ase_surftune.core.config.StrictModel`)
whose fields carry ``Field(default, description="... (unit)")``. :func:`option_specs`
turns its fields into the ``(name, type, help)`` specs that
:func:`ase_surftune.cli._properties.add_options` adds to a parser, with the default taken
from the model (never repeated by hand in help text). Options default to ``None`` on the
command line, so a YAML ``--config`` value shows through unless a flag overrides it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

OptionSpec = tuple[str, Any, str]

__all__ = ["option_specs", "OptionSpec"]


def _scalar(tp: Any) -> Any:
    """The argparse type for a field annotation: float/int/str/"bool"/"ints"/"append"."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _scalar(args[0]) if len(args) == 1 else str
    if origin is Literal:
        return str
    if origin in (list, tuple, typing.Sequence):
        inner = typing.get_args(tp)[:1]
        return "ints" if inner and inner[0] is int else "append"
    if tp is bool:
        return "bool"
    if tp in (int, float, str):
        return tp
    return str


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "none"
    return str(value)


def option_specs(model: type[BaseModel], *, only: Iterable[str] | None = None,
                 exclude: Iterable[str] = ()) -> list[OptionSpec]:
    """``(name, type, help)`` for each field of ``model`` (all, or ``only``, minus ``exclude``).

    Help is the field's description plus ``(default: X)`` read from the model, and the
    allowed values of a ``Literal`` field.
    """
    names = list(only) if only is not None else list(model.model_fields)
    skip = set(exclude)
    specs: list[OptionSpec] = []
    for name in names:
        if name in skip:
            continue
        field = model.model_fields[name]
        help_ = (field.description or name.replace("_", " ")).rstrip(".")
        ann = field.annotation
        lit = [a for a in ([ann] + list(typing.get_args(ann)))
               if typing.get_origin(a) is Literal]
        if lit:
            help_ += f"; one of {', '.join(map(str, typing.get_args(lit[0])))}"
        if field.default is not PydanticUndefined:
            help_ += f" (default: {_default_text(field.default)})"
        elif field.default_factory is not None:
            help_ += f" (default: {_default_text(field.default_factory())})"
        specs.append((name, _scalar(ann), help_))
    return specs
