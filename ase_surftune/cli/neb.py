"""``surftune neb``: migration barrier between two structures, along a band, or a vacancy hop."""

from __future__ import annotations

import argparse

OPTIONS = [
    ("n_images", int, "intermediate images (default 5)"),
    ("interpolation", str, "idpp or linear (default idpp)"),
    ("climb", "bool", "climbing image (default on)"),
    ("method", str, "NEB tangent method (default improvedtangent)"),
    ("k", float, "spring constant, eV/Å² (default 0.1)"),
    ("fmax", float, "force threshold, eV/Å (default 0.05)"),
    ("steps", int, "maximum optimizer steps (default 500)"),
    ("optimizer", str, "FIRE, BFGS or LBFGS"),
    ("relax_endpoints", "bool", "relax the end points first (default on)"),
    ("vacancy", "bool", "one bulk file: nearest-neighbour vacancy hop in a supercell"),
    ("supercell", "ints", "vacancy supercell: 1, 3 or 9 integers (default 2 2 2)"),
    ("vacancy_index", int, "atom removed for the vacancy (default 0)"),
    ("relax_bulk", "bool", "with --vacancy: relax the bulk cell first (default on; "
                           "--no-relax-bulk keeps the given cell)"),
]
NEB_KEYS = ("n_images", "interpolation", "climb", "method", "k", "fmax", "steps", "optimizer",
            "relax_endpoints")


def register(subparsers: argparse._SubParsersAction) -> None:
    from ase_surftune.cli._properties import register_command

    register_command(subparsers, "neb", "NEB migration barrier", OPTIONS, run,
                     structure_help=("initial and final files; or one multi-frame band "
                                     "file (--index selects its frames, default all); or "
                                     "one bulk file with --vacancy"),
                     many_structures=True)


def run(args: argparse.Namespace) -> int:
    from ase_surftune.cli._common import load_yaml, write_json
    from ase_surftune.cli._properties import (
        ints_to_supercell,
        make_calculator,
        merge_options,
        outputs,
        read_frames,
        read_structure,
        write_structures,
    )
    from ase_surftune.core.errors import ConfigError
    from ase_surftune.properties import neb_barrier, vacancy_migration

    opts = merge_options(args, load_yaml(args.config), [o[0] for o in OPTIONS], "neb")
    first = args.structures[0]
    out = outputs(args, first)
    plot = out.path("neb", ".png")
    neb_opts = {k: v for k, v in opts.items() if k in NEB_KEYS}
    calc = make_calculator(args)
    if opts.get("vacancy"):
        if len(args.structures) != 1:
            raise ConfigError(f"--vacancy takes one bulk file, got {args.structures}")
        extra = {}
        if "supercell" in opts:
            extra["supercell"] = ints_to_supercell(opts["supercell"])
        for key in ("vacancy_index", "relax_bulk"):
            if key in opts:
                extra[key] = opts[key]
        res = vacancy_migration(read_structure(first, args.index), calc, plot=plot, **extra,
                                **neb_opts)
    elif args.relax_bulk is not None:  # a YAML shared with --vacancy runs may keep it
        raise ConfigError("--relax-bulk/--no-relax-bulk applies to --vacancy only")
    elif len(args.structures) == 2:
        res = neb_barrier(read_structure(first, args.index),
                          read_structure(args.structures[1], args.index), calc, plot=plot,
                          **neb_opts)
    elif len(args.structures) == 1:
        band = read_frames(first, ":" if args.index is None else args.index)
        if len(band) < 3:
            raise ConfigError(f"band file {first!r} needs >= 3 frames, has {len(band)}; "
                              f"give initial and final files instead")
        neb_opts["interpolation"] = band[1:-1]
        res = neb_barrier(band[0], band[-1], calc, plot=plot, **neb_opts)
    else:
        raise ConfigError(f"neb takes 1 or 2 structure files, got {len(args.structures)}")
    images = write_structures(out.path("neb_images", ".extxyz"), res.images)
    data = res.to_dict()
    data["images_file"] = str(images)
    path = write_json(data, out.json("neb"))
    print(f"barrier forward {res.barrier_forward:.4f} eV, reverse {res.barrier_reverse:.4f} eV "
          f"({'converged' if res.converged else 'NOT CONVERGED'}); results in {path}, "
          f"band in {images}")
    return 0 if res.converged else 1
