"""``surftune neb``: migration barrier between two structures, along a band, or a vacancy hop."""

from __future__ import annotations

import argparse

from ase_surftune.cli._options import option_specs
from ase_surftune.properties.settings import NEBSettings, VacancyFormationSettings

NEB_KEYS = tuple(NEBSettings.model_fields)
OPTIONS = option_specs(NEBSettings) + [
    ("vacancy", "bool", "one bulk file: nearest-neighbour vacancy hop in a supercell"),
    *option_specs(VacancyFormationSettings, only=("supercell", "vacancy_index")),
    ("relax_bulk", "bool", "with --vacancy: relax the bulk cell first (default on; "
                           "--no-relax-bulk keeps the given cell)"),
]


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
