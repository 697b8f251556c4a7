"""``surftune phonons``: phonopy bands, DOS, thermal properties; optional softening ratio."""

from __future__ import annotations

import argparse

OPTIONS = [
    ("supercell", "ints", "1, 3 or 9 integers (default 2 2 2)"),
    ("displacement", float, "finite displacement, Å (default 0.01)"),
    ("mesh", "ints", "q-mesh: 1 or 3 integers (default 20 20 20)"),
    ("band_npoints", int, "q-points per band segment (default 51)"),
    ("t_min", float, "K (default 0)"),
    ("t_max", float, "K (default 1000)"),
    ("t_step", float, "K (default 10)"),
    ("imaginary_tol", float, "THz; below -tol a mode is imaginary (default 0.05)"),
    ("bands", "bool", "band structure along seekpath's path (default on)"),
    ("max_atoms", int, "refuse supercells above this many atoms (default 1000)"),
    ("dos", "bool", "total DOS on the q-mesh (default on); the plot needs bands and DOS"),
    ("reference_forces", str, "FORCE_SETS or phonopy_params.yaml of a reference: also "
                              "compute the frequency softening ratio"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    from ase_surftune.properties._cli import register_command

    register_command(subparsers, "phonons", "phonons with phonopy", OPTIONS, run,
                     structure_help="(relaxed) unit cell readable by ase.io")


def run(args: argparse.Namespace) -> int:
    from ase_surftune.cli._common import load_yaml, write_json
    from ase_surftune.properties import frequency_softening_ratio, phonons
    from ase_surftune.properties._cli import (
        ints_to_supercell,
        make_calculator,
        merge_options,
        outputs,
        read_structure,
    )

    opts = merge_options(args, load_yaml(args.config), [o[0] for o in OPTIONS], "phonons")
    ref = opts.pop("reference_forces", None)
    if "supercell" in opts:
        opts["supercell"] = ints_to_supercell(opts["supercell"])
    if isinstance(opts.get("mesh"), list) and len(opts["mesh"]) == 1:
        opts["mesh"] = opts["mesh"][0]
    atoms = read_structure(args.structure, args.index)
    out = outputs(args, args.structure)
    calc = make_calculator(args)
    want_plot = opts.get("bands", True) and opts.get("dos", True)
    res = phonons(atoms, calc,
                  plot=out.path("phonons", ".png") if want_plot else None,
                  phonopy_params=out.path("phonopy_params", ".yaml"),
                  **opts)
    data = res.to_dict()
    if ref is not None:
        soft = frequency_softening_ratio(atoms, calc, ref,
                                         supercell=opts.get("supercell", (2, 2, 2)),
                                         displacement=opts.get("displacement", 0.01))
        data["softening"] = soft.to_dict()
        print(f"frequency softening ratio = {soft.ratio:.4f}")
    path = write_json(data, out.json("phonons"))
    print(f"min frequency {res.min_frequency:.3f} THz, imaginary modes: "
          f"{'yes' if res.has_imaginary else 'no'}; results in {path}")
    return 0
