"""The ``surftune`` command line: a thin mirror of the Python API.

Each subcommand lives in its own module in this package and exposes

    register(subparsers) -> None   # adds its parser, sets ``func=run``

Modules are discovered automatically, so adding a command never touches this file.
Heavy imports (torch, chgnet, mace) happen inside each command's ``run`` so that
``surftune --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from ase_surftune import __version__
from ase_surftune.errors import SurfTuneError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surftune",
        description="Fine-tune universal interatomic potentials (CHGNet, MACE) for surfaces "
                    "and defects, and measure the result through physical properties.",
    )
    parser.add_argument("--version", action="version", version=f"ase_surftune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ase_surftune.trust import trust_pickle

    try:
        with trust_pickle(bool(getattr(args, "trust_pickle", False))):
            return int(args.func(args) or 0)
    except SurfTuneError as exc:
        print(f"surftune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"surftune {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
