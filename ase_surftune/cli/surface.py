"""``surftune surface``: surface energies (J/m²) for Miller indices from a bulk file."""

from __future__ import annotations

import argparse

OPTIONS = [
    ("miller_indices", "append", "facet: 111, 1,1,1, (1-10), -110, Cu111, or Miller-Bravais "
                                 "0001, 10-10, 11-20 (repeatable; default 111)"),
    ("min_slab_size", float, "minimum slab thickness, Å (default 10)"),
    ("min_layers", int, "minimum number of atomic layers (default 4; fewer warns)"),
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
    from ase_surftune.cli._properties import register_command

    register_command(subparsers, "surface", "surface energies from a bulk structure", OPTIONS, run,
                     structure_help="bulk structure file readable by ase.io")


def run(args: argparse.Namespace) -> int:
    from ase_surftune.cli._common import load_yaml, write_json
    from ase_surftune.cli._properties import (
        make_calculator,
        merge_options,
        outputs,
        read_structure,
        write_structures,
    )
    from ase_surftune.properties import surface_energies
    from ase_surftune.properties.surface import facet_key

    opts = merge_options(args, load_yaml(args.config), [o[0] for o in OPTIONS], "surface")
    bulk = read_structure(args.structure, args.index)
    out = outputs(args, args.structure)
    calc = make_calculator(args)
    res = surface_energies(bulk, calc, plot_dir=out.folder, plot_name=out.prefix, **opts)
    data = res.to_dict()
    slabs = []
    for e in res.entries:
        for j, s in enumerate(e.thickness_series or [e.result]):
            if s.slab is None:
                continue
            what = f"slab_{facet_key(e.miller).replace(',', '_')}_t{e.termination}"
            if e.thickness_series:
                what += f"_{s.n_layers}layers"
            slab = s.slab.copy()  # no calculator: a shared one may hold another slab's results
            slab.info.update({"facet": "(" + "".join(map(str, e.miller)) + ")", "termination": e.termination,
                              "gamma_J_m2": s.gamma, "relaxed": s.gamma_relaxed is not None})
            slabs.append(str(write_structures(out.path(what, ".extxyz"), slab)))
    data["slabs"] = slabs
    path = write_json(data, out.json("surface"))
    for key, g in res.gamma.items():
        print(f"gamma({key}) = {g:.4f} J/m^2")
    print(f"{'converged' if res.converged else 'NOT CONVERGED'}; results in {path} "
          f"({len(slabs)} slab file(s) in {out.folder})")
    return 0 if res.converged else 1
