"""``surftune heads MODEL``: a model's heads and what data trained each."""

from __future__ import annotations

import argparse
import json

from ase_surftune.cli._common import add_trust_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("heads", help="list the heads of a model or bundle")
    p.add_argument("model", help="model spec or bundle path; or 'export' followed by one, "
                   "to write one head as a plain MACE .model / CHGNet file")
    p.add_argument("--json", action="store_true", help="print JSON")
    # `surftune heads export BUNDLE --head H -o FILE`: models.export.export_head
    p.add_argument("file", nargs="?", help="with 'export': the model or bundle to export from")
    p.add_argument("--head", help="with 'export': the head (default: the default head)")
    p.add_argument("-o", "--output", help="with 'export': output file (MACE .model / CHGNet .pt)")
    p.add_argument("--drop-correction", action="store_true",
                   help="with 'export': export a head with a linear correction without it")
    add_trust_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.model == "export" and args.file:
        from ase_surftune.core.errors import ConfigError
        from ase_surftune.models.export import export_head

        if not args.output:
            raise ConfigError("heads export needs an output file: -o FILE")
        print(export_head(args.file, args.head, args.output,
                          drop_correction=args.drop_correction))
        return 0
    from ase_surftune.models.backends import load_model

    bundle = load_model(args.model)
    default = bundle.resolve_head(None)
    rows = []
    for h in bundle.heads:
        info = bundle.head_info.get(h, {})
        rows.append({"head": h, "default": h == default, **info})
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in ("head", "default")}
        trained = extra.get("trained_on") or extra.get("data") or "foundation (not fine-tuned)"
        print(f"{'*' if r['default'] else ' '} {r['head']:20s} {trained}")
        for k, v in extra.items():
            if k not in ("trained_on", "data"):
                print(f"    {k}: {v}")
    return 0
