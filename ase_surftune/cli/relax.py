"""``surftune relax``: relax a structure with a model or a reference calculator."""

from __future__ import annotations

import argparse

OPTIONS = [
    ("fmax", float, "force threshold, eV/Å (default 0.05)"),
    ("steps", int, "maximum optimizer steps (default 500)"),
    ("optimizer", str, "FIRE, BFGS or LBFGS (default FIRE)"),
    ("relax_cell", "bool", "also relax the cell (FrechetCellFilter)"),
    ("trajectory", str, "optional .traj file of the optimisation"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    from ase_surftune.properties._cli import register_command

    register_command(subparsers, "relax", "relax positions (and cell) of a structure", OPTIONS, run)


def run(args: argparse.Namespace) -> int:
    from ase.io import write

    from ase_surftune.cli._common import load_yaml, write_json
    from ase_surftune.properties import relax
    from ase_surftune.properties._cli import (
        make_calculator,
        merge_options,
        output_path,
        read_structure,
    )

    opts = merge_options(args, load_yaml(args.config), [o[0] for o in OPTIONS], "relax")
    atoms = read_structure(args.structure)
    calc = make_calculator(args)
    res = relax(atoms, calc, **opts)
    out_struct = output_path(args.structure, "relaxed", ".extxyz")
    write(str(out_struct), res.atoms, format="extxyz")
    data = res.to_dict()
    data["relaxed_structure"] = str(out_struct)
    path = write_json(data, output_path(args.structure, "relax", ".json", args.output))
    status = "converged" if res.converged else "NOT CONVERGED"
    print(f"relax {status} in {res.steps} steps: E = {res.energy:.6f} eV "
          f"(from {res.energy_initial:.6f}); results in {path}")
    return 0 if res.converged else 1
