"""Helpers for the property CLI commands: option specs, YAML/CLI merging, inputs, outputs.

Every property command writes everything it produces (JSON, structures, plots, logs)
under one output folder (``-o``, default the current folder), never next to its input.
File names are ``<input stem>_<model label>_<what>.<ext>`` so that runs with different
models or heads (``spec@head``) in one folder do not overwrite each other.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase_surftune.core.errors import ConfigError, InvalidStructureError

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
                     specs: Iterable[OptionSpec] | Callable[[], Iterable[OptionSpec]],
                     run: Any, *,
                     structure_help: str = "structure file readable by ase.io",
                     many_structures: bool = False) -> argparse.ArgumentParser:
    """Add a property command: structure file(s), ``--index``, model/reference options,
    the workflow's own options (mirroring its keyword arguments), ``-o`` and ``func=run``.

    ``specs`` may be a function returning the specs: it is then called on the parser's
    first use (:func:`~ase_surftune.cli._common.defer`), so building the whole CLI does
    not import the settings models."""
    from ase_surftune.cli._common import add_model_args, defer

    p = subparsers.add_parser(name, help=help)
    if many_structures:
        p.add_argument("structures", nargs="+", help=structure_help)
    else:
        p.add_argument("structure", help=structure_help)
    add_index_arg(p)
    add_model_args(p)
    add_output_arg(p)
    if callable(specs):
        defer(p, lambda parser: add_options(parser, specs()))
    else:
        add_options(p, specs)
    p.set_defaults(func=run)
    return p


def add_index_arg(parser: argparse.ArgumentParser) -> None:
    """``--index``: which frame of a structure file to read (ASE index syntax)."""
    parser.add_argument("--index", default=None,
                        help="frame of the structure file, ase.io index syntax (default -1, "
                             "the last frame; a note names it when the file has several)")


def add_output_arg(parser: argparse.ArgumentParser) -> None:
    """``-o/--output``: the folder every output of the command goes to."""
    parser.add_argument("-o", "--output", default=None, metavar="DIR",
                        help="folder for everything the command writes: JSON, structures, "
                             "plots, logs (default: the current folder; created if missing). "
                             "A path ending in .json names the JSON file; the other outputs "
                             "go to its folder")


def merge_options(args: argparse.Namespace, config: dict[str, Any], keys: Iterable[str],
                  command: str) -> dict[str, Any]:
    """YAML config overlaid by explicit CLI flags; unknown YAML keys are a ConfigError."""
    keys = list(keys)
    unknown = sorted(set(config) - set(keys))
    if unknown:
        from ase_surftune.core.config import format_problems

        raise ConfigError(format_problems(command, "", [
            (k, f"unknown key (allowed: {', '.join(sorted(keys))})") for k in unknown]))
    out = dict(config)
    for k in keys:
        v = getattr(args, k, None)
        if v is not None:
            out[k] = v
    return out


def calculator_spec(args: argparse.Namespace) -> str:
    """The calculator spec of a command: ``--reference`` if given, else ``--model``."""
    return args.reference or args.model


def make_calculator(args: argparse.Namespace, spec: str | None = None):
    """Reference calculator (``--reference``) or model (``--model``; ``spec@head`` too)."""
    from ase_surftune.models.references import get_calculator

    spec = spec or calculator_spec(args)
    try:
        return get_calculator(spec, head=getattr(args, "head", None), device=args.device)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from exc


def parse_index(index: Any) -> Any:
    """ASE index syntax (``"-1"``, ``"0"``, ``":"``, ``"2:5"``) as an int or a slice."""
    if index is None or isinstance(index, (int, slice)):
        return index
    from ase.io.formats import string2index

    try:
        return string2index(str(index))
    except ValueError:
        raise ConfigError(f"--index must be an integer or a slice like 0:5, got {index!r}"
                          ) from None


def read_frames(path: str | Path, index: Any = ":") -> list:
    """The frames ``index`` selects from ``path`` (clear errors for a missing or bad file)."""
    from ase.io import read

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"structure file not found: {str(p)!r}")
    idx = parse_index(index)
    try:
        out = read(str(p), index=idx)
    except (IndexError, StopIteration):
        raise InvalidStructureError(f"{str(p)!r} has no frame {index!r}") from None
    except Exception as exc:
        raise InvalidStructureError(f"cannot read structure {str(p)!r}: {exc}") from exc
    return out if isinstance(out, list) else [out]


def read_structure(path: str | Path, index: Any = None, *, note: bool = True):
    """One structure from ``path``: frame ``index`` (ASE syntax), by default the last.

    Without ``index``, a multi-frame file gives its last frame and (``note``) a note on
    stderr naming the frame used and how to choose another.
    """
    frames = read_frames(path, ":" if index is None else index)
    if not frames:
        raise InvalidStructureError(f"{str(path)!r} holds no structure")
    if index is None:
        if len(frames) > 1 and note:
            print(f"note: {path} has {len(frames)} frames; using the last (index -1, frame "
                  f"{len(frames) - 1}); choose another with --index", file=sys.stderr)
        return frames[-1]
    if len(frames) != 1:
        raise ConfigError(f"--index {index!r} selects {len(frames)} frames of {str(path)!r}; "
                          f"this command takes one")
    return frames[0]


_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")
#: file suffixes of model files, dropped from labels (a folder keeps its full name)
_MODEL_SUFFIXES = (".stbundle", ".model", ".pt", ".pth", ".ckpt", ".zip")


def model_label(spec: str, head: str | None = None) -> str:
    """A file-name-safe label of a model spec and head: ``chgnet``, ``tiny_surf``, ``emt``.

    A path (``mace:/runs/a/model.stbundle``) gives its file stem (its folder's name for a
    generic stem such as ``model``); the head (``spec@head`` or ``head``) is appended.
    """
    from ase_surftune.models.references import parse_spec

    model, spec_head = parse_spec(spec)
    head = head or spec_head
    name = model.split(":", 1)[1] if re.match(r"^[A-Za-z0-9_-]+:", model) else model
    p = Path(name)
    stem = p.stem if p.suffix.lower() in _MODEL_SUFFIXES else p.name
    name = stem if stem not in ("model", "best", "final", "") else (p.parent.name or stem)
    label = _UNSAFE.sub("-", name).strip("-.") or "model"
    if head:
        label += "_" + (_UNSAFE.sub("-", head).strip("-.") or "head")
    return label


@dataclass(frozen=True)
class Outputs:
    """Where one command run writes: ``folder / f"{prefix}_{what}{suffix}"``."""

    folder: Path
    prefix: str
    json_file: Path | None = None

    def path(self, what: str, suffix: str) -> Path:
        """``<folder>/<prefix>_<what><suffix>``."""
        return self.folder / f"{self.prefix}_{what}{suffix}"

    def json(self, command: str) -> Path:
        """The JSON result file (``-o x.json`` if given, else ``<prefix>_<command>.json``)."""
        return self.json_file if self.json_file is not None else self.path(command, ".json")


def outputs(args: argparse.Namespace, structure: str | Path | None, *,
            default_stem: str = "structure") -> Outputs:
    """The :class:`Outputs` of a command run: the ``-o`` folder (created) and the prefix
    ``<input stem>_<model label>``."""
    out = getattr(args, "output", None)
    json_file = None
    if out is not None and str(out).lower().endswith(".json"):
        json_file = Path(out)
        folder = json_file.parent
    else:
        folder = Path(out) if out is not None else Path(".")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output {str(folder)!r} is a file; -o takes a folder "
                          f"(or a path ending in .json)")
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(structure).stem if structure is not None else default_stem
    label = model_label(calculator_spec(args), getattr(args, "head", None))
    return Outputs(folder=folder, prefix=f"{stem}_{label}", json_file=json_file)


def write_structures(path: str | Path, images: Any) -> Path:
    """Write one structure or a list as extended XYZ, atomically (temp file, then rename)."""
    from ase.io import write

    from ase_surftune.core.io import atomic_writer

    with atomic_writer(path, "w", encoding="utf-8") as fh:
        write(fh, images, format="extxyz")
    return Path(path)


def ints_to_supercell(v: Any) -> Any:
    """CLI ``--supercell`` list: 1 int → int, 3 → diagonal, 9 → 3×3; else unchanged."""
    if isinstance(v, list) and len(v) == 1:
        return v[0]
    if isinstance(v, list) and len(v) == 9:
        return [v[0:3], v[3:6], v[6:9]]
    return v


def command_inputs(args: argparse.Namespace, specs: Iterable[OptionSpec], name: str):
    """What a one-structure property command starts from: ``(options, structure,
    outputs, calculator)`` — YAML + flags merged for the ``specs`` keys, the structure
    file's frame, the output naming and the model or reference calculator."""
    from ase_surftune.cli._common import load_yaml

    opts = merge_options(args, load_yaml(args.config), [o[0] for o in specs], name)
    atoms = read_structure(args.structure, args.index)
    out = outputs(args, args.structure)
    return opts, atoms, out, make_calculator(args)
