"""Helpers shared by CLI commands: YAML configs, output paths, JSON writing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    parser.add_argument("--executor", default=None,
                        help="process[:N] or dask[:N] to run the work in parallel (default: "
                             "in process); see ase_surftune.core.parallel")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-o", "--output", default=default_output,
                        help=f"output folder; everything is written here (default: "
                             f"{default_output})")
    add_trust_arg(parser)
