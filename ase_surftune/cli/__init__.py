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
import traceback
from collections.abc import Sequence

from ase_surftune import __version__
from ase_surftune.core.errors import SurfTuneError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surftune",
        description="Fine-tune universal interatomic potentials (CHGNet, MACE) for surfaces "
                    "and defects, and measure the result through physical properties.",
    )
    parser.add_argument("--version", action="version", version=f"ase_surftune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    from ase_surftune.cli._common import LazyParser

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=LazyParser)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


#: Exceptions that mean "bad input or environment", reported as one line with exit 2.
#: ``OSError`` covers output paths (a file where a folder is wanted, no permission, disk
#: full); anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (SurfTuneError, OSError)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a multi-problem message joins its lines with ';')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    out = lines[0]
    for prev, line in zip(lines, lines[1:]):
        out += (" " if prev.endswith(":") else "; ") + line
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``surftune``; every expected failure is one line ``surftune CMD: error: …``
    on stderr with exit status 2 (``-v`` adds the traceback); Ctrl-C exits with 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") for a in argv)
    if verbose:  # accepted after the command too: surftune label ... -v
        argv = ["-v", *[a for a in argv if a not in ("-v", "--verbose")]]
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ase_surftune.core.trust import trust_pickle

    try:
        with trust_pickle(bool(getattr(args, "trust_pickle", False))):
            return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"surftune {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"surftune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
