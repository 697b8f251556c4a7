"""``surftune benchmark``: every row of a reference table measured with every model.

Read a reference set (CSV/JSON table, or the JSON of surftune
surface/neb/phonons/compare; schema in ase_surftune.evaluation.reference_sets), build
and relax each system's bulk with each model, measure every row through the property
code and write benchmark.csv/.md/.json and benchmark.png (ratio = model / reference)
under -o. Finished tasks are stored in OUT/tasks, so a killed run resumes where it
stopped.
"""

from __future__ import annotations

import argparse

from ase_surftune.cli._common import add_command, add_sweep_args

_DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "benchmark", trust=False, config=None,
        help="measure a reference table (γ, barriers, a, B, E_vac, phonons) with models; "
             "one ratio table and one figure",
        description=_DESCRIPTION)
    p.add_argument("reference", help="reference table (.csv/.tsv/.json) or results JSON")
    p.add_argument("-m", "--model", action="append", required=True, metavar="SPEC",
                   help="model spec, repeatable: chgnet, emt, mace:/x.model, "
                        "run/model.stbundle@HEAD ...")
    p.add_argument("-c", "--config", default=None,
                   help="YAML settings: sections lattice, surface, neb, phonons, eos, "
                        "vacancy (as compare's)")
    p.add_argument("--system", default=None,
                   help="system of a results JSON that does not name it (surftune neb)")
    p.add_argument("--min-slab-size", type=float, default=None,
                   help="surface.min_slab_size, Å")
    p.add_argument("--no-plot", action="store_true", help="no figure")
    add_sweep_args(p, "benchmark_out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.evaluation.benchmark import benchmark

    report = benchmark(args.reference, args.model, args.config, output_dir=args.output,
                       executor=args.executor, device=args.device,
                       progress=not args.no_progress, system=args.system,
                       plot=not args.no_plot,
                       **{"surface.min_slab_size": args.min_slab_size})
    print(report.to_markdown())
    print(f"\nratio = model / reference; (nc) = relaxation/NEB not converged; "
          f"tasks: {report.computed} computed, {report.reused} reused from {args.output}/tasks")
    failed = report.failures()
    if failed:
        print(f"{len(failed)} row(s) failed: " + "; ".join(
            f"{r['model']} {r['system']} {r['label']}: {r['error']}" for r in failed[:5]))
    print(f"results: {args.output}/benchmark.csv, benchmark.md, benchmark.json, benchmark.png")
    return 1 if failed else 0
