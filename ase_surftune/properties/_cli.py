"""Helpers for the property CLI commands: option specs, YAML/CLI merging, I/O paths."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ase_surftune.errors import ConfigError, InvalidStructureError

# (name, type, help); type "bool" gives --name/--no-name, "list" a repeatable option
OptionSpec = tuple[str, Any, str]


def add_options(parser: argparse.ArgumentParser, specs: Iterable[OptionSpec]) -> list[str]:
    """Add ``--key`` options (default None so YAML values can show through)."""
    keys = []
    for name, typ, help_ in specs:
        flag = "--" + name.replace("_", "-")
        if typ == "bool":
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_)
        elif typ == "ints":
            parser.add_argument(flag, dest=name, type=int, nargs="+", default=None, help=help_)
        elif typ == "append":
            parser.add_argument(flag, dest=name, action="append", default=None, help=help_)
        else:
            parser.add_argument(flag, dest=name, type=typ, default=None, help=help_)
        keys.append(name)
    parser.add_argument("-c", "--config", default=None, help="YAML config; keys are the "
                        "option names with underscores; flags override it")
    return keys


def register_command(subparsers: argparse._SubParsersAction, name: str, help: str,
                     specs: Iterable[OptionSpec], run: Any, *,
                     structure_help: str = "structure file readable by ase.io",
                     many_structures: bool = False) -> argparse.ArgumentParser:
    """Add a property command: structure file(s), model/reference options, the
    workflow's own options (mirroring its keyword arguments), ``-o`` and ``func=run``."""
    from ase_surftune.cli._common import add_model_args

    p = subparsers.add_parser(name, help=help)
    if many_structures:
        p.add_argument("structures", nargs="+", help=structure_help)
    else:
        p.add_argument("structure", help=structure_help)
    add_model_args(p)
    add_options(p, specs)
    p.add_argument("-o", "--output", default=None, help="JSON path (default next to input)")
    p.set_defaults(func=run)
    return p


def merge_options(args: argparse.Namespace, config: dict[str, Any], keys: Iterable[str],
                  command: str) -> dict[str, Any]:
    """YAML config overlaid by explicit CLI flags; unknown YAML keys are a ConfigError."""
    keys = list(keys)
    unknown = sorted(set(config) - set(keys))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in the {command} config; "
                          f"allowed: {sorted(keys)}")
    out = dict(config)
    for k in keys:
        v = getattr(args, k, None)
        if v is not None:
            out[k] = v
    return out


def make_calculator(args: argparse.Namespace):
    """Reference calculator (``--reference``) or model (``--model``)."""
    from ase_surftune.references import get_calculator

    spec = args.reference or args.model
    try:
        return get_calculator(spec, head=args.head, device=args.device)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from exc


def read_structure(path: str | Path, index: Any = -1):
    """Read a structure with ase.io (clear errors for a missing or unreadable file)."""
    from ase.io import read

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"structure file not found: {str(p)!r}")
    try:
        return read(str(p), index=index)
    except Exception as exc:
        raise InvalidStructureError(f"cannot read structure {str(p)!r}: {exc}") from exc


def output_path(structure: str | Path, command: str, suffix: str,
                output: str | None = None) -> Path:
    """``<dir>/<stem>_<command><suffix>`` next to the input, or ``output`` if given."""
    if output is not None and suffix == ".json":
        return Path(output)
    p = Path(structure)
    return p.with_name(f"{p.stem}_{command}{suffix}")


def ints_to_supercell(v: Any) -> Any:
    """CLI ``--supercell`` list: 1 int → int, 3 → diagonal, 9 → 3×3; else unchanged."""
    if isinstance(v, list) and len(v) == 1:
        return v[0]
    if isinstance(v, list) and len(v) == 9:
        return [v[0:3], v[3:6], v[6:9]]
    return v
