"""``surftune surface``: surface energies (J/m²) for Miller indices from a bulk file."""

from __future__ import annotations

import argparse

OPTIONS = [
    ("miller_indices", "append", "Miller index, e.g. 1,1,1 or 111 (repeatable; default 1,1,1)"),
    ("min_slab_size", float, "minimum slab thickness, Å (default 10)"),
    ("min_vacuum_size", float, "minimum vacuum, Å (default 15)"),
    ("relax_bulk", "bool", "relax the bulk cell and positions first (default on)"),
    ("relax_slabs", "bool", "relax slab positions (default on)"),
    ("fix_bottom_layers", int, "fix this many bottom layers (default 0: both sides free)"),
    ("fmax", float, "force threshold, eV/Å (default 0.05)"),
    ("steps", int, "maximum optimizer steps (default 500)"),
    ("optimizer", str, "FIRE, BFGS or LBFGS"),
    ("symmetric_only", "bool", "only symmetric terminations (default on)"),
    ("converge_thickness", "bool", "add planes until γ converges"),
    ("thickness_tol", float, "γ tolerance for thickness convergence, J/m² (default 0.01)"),
    ("max_extra_layers", int, "at most this many added planes (default 8)"),
    ("wulff", "bool", "Wulff shape and area-weighted γ"),
    ("max_atoms", int, "refuse facets estimated above this many atoms (default 400)"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    from ase_surftune.properties._cli import register_command

    register_command(subparsers, "surface", "surface energies from a bulk structure", OPTIONS, run,
                     structure_help="bulk structure file readable by ase.io")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ase_surftune.cli._common import load_yaml, write_json
    from ase_surftune.properties import surface_energies
    from ase_surftune.properties._cli import (
        make_calculator,
        merge_options,
        output_path,
        read_structure,
    )
    from ase_surftune.properties.surface import parse_miller, parse_miller_list

    opts = merge_options(args, load_yaml(args.config), [o[0] for o in OPTIONS], "surface")
    if "miller_indices" in opts:
        mi = opts["miller_indices"]
        opts["miller_indices"] = ([parse_miller(m) for m in mi]
                                  if isinstance(mi, list) and mi and isinstance(mi[0], str)
                                  else parse_miller_list(mi))
    bulk = read_structure(args.structure)
    calc = make_calculator(args)
    res = surface_energies(bulk, calc, plot_dir=Path(args.structure).parent, **opts)
    path = write_json(res.to_dict(), output_path(args.structure, "surface", ".json",
                                                 args.output))
    for key, g in res.gamma.items():
        print(f"gamma({key}) = {g:.4f} J/m^2")
    print(f"{'converged' if res.converged else 'NOT CONVERGED'}; results in {path}")
    return 0 if res.converged else 1
