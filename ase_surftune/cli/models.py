"""``surftune models``: model specs this installation understands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list named models (CHGNet bundled, MACE-MP and "
                                      "M3GNet by download)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.models.backends import available_models

    for name in available_models():
        where = ("bundled, offline" if name.startswith("chgnet") else
                 "downloaded by matgl (m3gnet extra)" if name.startswith("m3gnet")
                 else "downloaded by mace-torch")
        print(f"{name:24s} {where}")
    print("also: mace:/path/file.model, m3gnet:/path/folder, /path/model.stbundle")
    return 0
