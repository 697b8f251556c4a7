"""Helpers shared by CLI commands: options from settings models, YAML configs, output
paths, JSON writing."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

from ase_surftune.core.io import load_yaml  # noqa: F401  (the commands' YAML reader)


def add_model_args(parser: argparse.ArgumentParser, *, reference: bool = True) -> None:
    """--model/--head/--device (and --reference) as every property command takes them."""
    parser.add_argument("-m", "--model", default="chgnet",
                        help="model spec: chgnet, chgnet-0.2.0, mace:/path.model, "
                             "mace-mp-0-medium, m3gnet:/folder or a bundle path "
                             "(default: chgnet)")
    parser.add_argument("--head", default=None, help="head of a multi-head model")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_trust_arg(parser)
    if reference:
        parser.add_argument("--reference", default=None, metavar="NAME",
                            help="use a reference calculator instead of a model: emt, gpaw")


def add_trust_arg(parser: argparse.ArgumentParser) -> None:
    """``--trust-pickle``: allow model files that are Python pickles (every command that
    takes a model spec has it; ``main`` applies it with :func:`ase_surftune.core.trust.trust_pickle`)."""
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow model files that are Python pickles (MACE .model files, "
                             "legacy version-1 bundles). Reading a pickle can run arbitrary "
                             "code: use only for files from a source you trust")


def write_json(data: Any, path: str | Path) -> Path:
    """Write JSON atomically (temp file then rename) and return the path."""
    from ase_surftune.core.io import atomic_write_json, to_jsonable

    return atomic_write_json(path, to_jsonable(data), default=_json_default)


def _json_default(obj: Any) -> Any:
    from ase_surftune.core.io import to_jsonable

    return to_jsonable(obj, strict=True)  # raises TypeError for a type JSON lacks


def add_sweep_args(parser: argparse.ArgumentParser, default_output: str) -> None:
    """--device, --executor, --no-progress, -o and --trust-pickle: what every command
    that measures several models through :mod:`ase_surftune.core.parallel` takes."""
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_executor_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-o", "--output", default=default_output,
                        help=f"output folder; everything is written here (default: "
                             f"{default_output})")
    add_trust_arg(parser)


class LazyParser(argparse.ArgumentParser):
    """An argument parser whose options may be added on first use (:meth:`defer`), so a
    command whose options come from a settings model imports that model only when the
    command runs or prints its help: ``surftune --help`` stays instant."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Any] = []

    def defer(self, build: Any) -> None:
        """Call ``build(self)`` before this parser first parses or formats help."""
        self._deferred.append(build)

    def _build(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._build()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._build()
        return super().format_help()

    def format_usage(self) -> str:
        self._build()
        return super().format_usage()


def defer(parser: argparse.ArgumentParser, build: Any) -> None:
    """``build(parser)`` on first use of a :class:`LazyParser`, at once for any other."""
    if isinstance(parser, LazyParser):
        parser.defer(build)
    else:
        build(parser)


def add_setting_options(parser: argparse.ArgumentParser, model: type[BaseModel],
                        only: Iterable[str], *, short: Mapping[str, str] | None = None,
                        as_text: Iterable[str] = ()) -> list[str]:
    """``--name`` options for the fields ``only`` of a settings model: types, defaults and
    help (with units) come from the model through
    :func:`ase_surftune.cli._options.option_specs`, never from a table kept here.

    Every option defaults to ``None`` so that a config file's value shows through unless
    the flag is given; a bool field gives ``--name/--no-name``. ``short`` adds short flags
    (``{"output_dir": "-o"}``); fields in ``as_text`` are taken as one string that the
    model parses itself (comma lists). Returns the option names (argparse ``dest``).
    """
    from ase_surftune.cli._options import option_specs

    short = dict(short or {})
    text = set(as_text)
    names = []
    for name, typ, help_ in option_specs(model, only=only):
        flags = [short[name]] if name in short else []
        flags.append("--" + name.replace("_", "-"))
        kw: dict[str, Any] = {"dest": name, "default": None, "help": help_}
        if name in text:
            kw["type"] = str
        elif typ == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif typ == "ints":
            kw.update(type=int, nargs="+")
        elif typ == "append":
            kw["action"] = "append"
        else:
            kw["type"] = typ
        parser.add_argument(*flags, **kw)
        names.append(name)
    return names


def given(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The options among ``names`` given on the command line (not ``None``)."""
    return {k: v for k in names if (v := getattr(args, k, None)) is not None}


def add_command(subparsers: argparse._SubParsersAction, name: str, help: str,
                description: str, *, config: str | None = "YAML config file",
                trust: bool = True) -> argparse.ArgumentParser:
    """A subcommand parser with its help/description, an optional positional ``config``
    file and ``--trust-pickle``; the caller adds the rest and ``set_defaults(func=...)``."""
    p = subparsers.add_parser(name, help=help, description=description)
    if config:
        p.add_argument("config", help=config)
    if trust:
        add_trust_arg(p)
    return p


def add_executor_arg(parser: argparse.ArgumentParser, what: str = "run the work") -> None:
    """``--executor``: process[:N] or dask[:N] (see :mod:`ase_surftune.core.parallel`)."""
    parser.add_argument("--executor", default=None,
                        help=f"process[:N] or dask[:N] to {what} in parallel (default: in "
                             f"process); see ase_surftune.core.parallel")
