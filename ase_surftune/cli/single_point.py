"""``surftune single-point``: energy, forces and stress of structures with a model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ase_surftune.cli._common import add_model_args, write_json


def register(sub: argparse._SubParsersAction) -> None:
    from ase_surftune.cli._properties import add_output_arg

    p = sub.add_parser("single-point", help="energy/forces/stress of a structure file "
                       "(default: a built-in Cu(111) slab)")
    p.add_argument("structure", nargs="?", default=None,
                   help="any file ase.io reads; omitted: a 3x3x4 Cu(111) slab, 8 Å vacuum")
    p.add_argument("--index", default="-1", help="frame(s) to read, ase.io syntax (default "
                   "-1, the last frame; ':' for all)")
    p.add_argument("--stress", action="store_true", help="also compute the stress")
    add_output_arg(p)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from ase.build import fcc111

    from ase_surftune.cli._properties import (
        calculator_spec,
        make_calculator,
        outputs,
        read_frames,
    )

    if args.structure is None:
        images = [fcc111("Cu", (3, 3, 4), vacuum=8.0)]
        label = "Cu(111) 3x3x4 slab"
    else:
        images = read_frames(args.structure, args.index)
        label = str(Path(args.structure))
    out = outputs(args, args.structure, default_stem="cu111").json("single_point")
    spec = calculator_spec(args)
    calc = make_calculator(args)
    results = []
    for i, atoms in enumerate(images):
        atoms.calc = calc
        e = atoms.get_potential_energy()
        f = atoms.get_forces()
        row = {"index": i, "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms),
               "energy_eV": e, "energy_per_atom_eV": e / len(atoms),
               "fmax_eV_per_A": float(np.linalg.norm(f, axis=1).max()), "forces_eV_per_A": f}
        if args.stress:
            row["stress_eV_per_A3"] = atoms.get_stress()
        results.append(row)
        print(f"{label} [{i}] {row['formula']}: E = {e:.6f} eV "
              f"({e / len(atoms):.6f} eV/atom), max |F| = {row['fmax_eV_per_A']:.4f} eV/Å")
    head = getattr(calc, "head", None)
    write_json({"model": spec, "head": head, "structures": results}, out)
    print(f"wrote {out}")
    return 0
