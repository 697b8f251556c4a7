"""One config system: strict pydantic models and one error format for every loader.

Every YAML/dict config of the package (fine-tuning, distillation, compare, learning
curves, active learning, property settings) derives from :class:`StrictModel` and is
validated through :func:`validate_model`, so a user sees the same kind of message
whichever command they ran: every problem at once, each with its dotted key, before any
work starts.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ase_surftune.core.errors import ConfigError

__all__ = ["StrictModel", "validate_model", "format_validation_error", "format_problems"]

_M = TypeVar("_M", bound=BaseModel)


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown keys and validates assignments."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def format_validation_error(exc: ValidationError, what: str, source: str = "",
                            example: str | None = None) -> str:
    """The house format: ``Invalid <what> config <source> (N problems):`` + one line each.

    Args:
        exc: the pydantic error.
        what: the kind of config, e.g. ``"fine-tuning"``.
        source: where it came from (a file path, ``"(dict)"``); may be empty.
        example: a file that lists the valid keys, named in "unknown key" lines.
    """
    return format_problems(what, source, problems(exc, example))


def format_problems(what: str, source: str, found: list[tuple[str, str]]) -> str:
    """The house format for ``(dotted key, message)`` problems found by any check."""
    lines = [f"  {loc}: {msg}" for loc, msg in found]
    n = len(lines)
    where = f" {source}" if source else ""
    return (f"Invalid {what} config{where} ({n} problem{'s' * (n > 1)}):\n"
            + "\n".join(lines))


def problems(exc: ValidationError, example: str | None = None,
             prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, message)`` for each error of ``exc``, keys prefixed by ``prefix``."""
    out = []
    hint = f"; {example} lists the keys" if example else ""
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        loc = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "(top level)")
        typ = err["type"]
        if typ == "extra_forbidden":
            msg = f"unknown key (check the spelling{hint})"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if typ != "missing" and "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
        out.append((loc, msg))
    return out


def validate_model(cls: type[_M], data: Any, what: str, source: str = "",
                   example: str | None = None) -> _M:
    """``cls.model_validate(data)``, raising :class:`ConfigError` in the house format."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, what, source, example)) from None
