"""``surftune compare``: properties per model vs a reference — the property-softening table.

Measure relaxed lattice constants, surface energies, NEB barriers and phonon frequencies
with the reference and each model through the same code; print each property per model,
its ratio to the reference (the property-level softening) and its error. Settings come
from an optional YAML config (see examples/compare_cu.yaml); options override it.
"""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import add_command, add_sweep_args

_DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "compare", trust=False, config=None,
        help="property table (γ, barriers, phonons, lattice) of models vs a reference, "
             "with ratios",
        description=_DESCRIPTION)
    p.add_argument("-c", "--config", default=None, help="YAML config")
    p.add_argument("-r", "--reference", default="emt",
                   help="reference: emt, gpaw, a model spec, results JSON from an earlier "
                        "run (properties_*.json / comparison.json), or a reference table "
                        "(.csv/.json, or the JSON of surftune surface/neb/phonons; its rows "
                        "for --element are used) (default: emt)")
    p.add_argument("-m", "--model", action="append", default=None, metavar="SPEC",
                   help="model spec, repeatable; spec@HEAD picks a head (default: chgnet)")
    p.add_argument("--element", default=None, help="element of the bulk (default Cu)")
    p.add_argument("--crystal", default=None, help="crystal structure (default fcc)")
    p.add_argument("--properties", default=None,
                   help="comma-separated subset of lattice,surface,neb,phonons,eos,"
                        "vacancy_formation (the registered bulk properties; default the "
                        "first four)")
    p.add_argument("--miller", action="append", default=None,
                   help="Miller index for surface energies, e.g. 111 (repeatable)")
    p.add_argument("--migration", action="append", default=None,
                   choices=("vacancy", "adatom-100"), help="NEB migration (repeatable)")
    add_sweep_args(p, "compare_out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.evaluation import compare, load_compare_config

    props = None if args.properties is None else \
        [s.strip() for s in args.properties.split(",") if s.strip()]
    cfg = load_compare_config(args.config, element=args.element, crystal=args.crystal,
                              properties=props, **{"surface.miller": args.miller,
                                                   "neb.migrations": args.migration})
    report = compare(args.reference, args.model or ["chgnet"], cfg, device=args.device,
                     executor=args.executor,
                     progress=not args.no_progress, output_dir=args.output)
    print(report.to_markdown())
    print("\nratio = model / reference (< 1: softer than the reference); "
          "(nc) = relaxation/NEB not converged, or imaginary phonon modes")
    print(f"results: {args.output}/comparison.json, comparison.csv, comparison.png")
    return 0
