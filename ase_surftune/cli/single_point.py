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
    from ase_surftune.cli._properties import (
        calculator_spec,
        make_calculator,
        outputs,
        read_frames,
    )
    from ase_surftune.properties.single_point import default_slab, single_point

    if args.structure is None:
        images = [default_slab()]
        label = "Cu(111) 3x3x4 slab"
    else:
        images = read_frames(args.structure, args.index)
        label = str(Path(args.structure))
    out = outputs(args, args.structure, default_stem="cu111").json("single_point")
    spec = calculator_spec(args)
    calc = make_calculator(args)
    results = single_point(images, calc, stress=args.stress)
    for row in results:
        e = row["energy_eV"]
        print(f"{label} [{row['index']}] {row['formula']}: E = {e:.6f} eV "
              f"({row['energy_per_atom_eV']:.6f} eV/atom), max |F| = "
              f"{row['fmax_eV_per_A']:.4f} eV/Å")
    head = getattr(calc, "head", None)
    write_json({"model": spec, "head": head, "structures": results}, out)
    print(f"wrote {out}")
    return 0
