"""``surftune neb``: migration barrier between two structures, along a band, or a vacancy hop."""

from __future__ import annotations

import argparse


def options() -> list:
    """The command's workflow options, generated from its settings model (imported
    on first use so that ``surftune --help`` stays fast)."""
    from ase_surftune.cli._options import option_specs
    from ase_surftune.properties.settings import NEBSettings, VacancyFormationSettings

    return option_specs(NEBSettings) + [
        ("vacancy", "bool", "one bulk file: nearest-neighbour vacancy hop in a supercell"),
        *option_specs(VacancyFormationSettings, only=("supercell", "vacancy_index")),
        ("relax_bulk", "bool", "with --vacancy: relax the bulk cell first (default on; "
                               "--no-relax-bulk keeps the given cell)"),
    ]


def register(subparsers: argparse._SubParsersAction) -> None:
    from ase_surftune.cli._properties import register_command

    register_command(subparsers, "neb", "NEB migration barrier", options, run,
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
    from ase_surftune.properties.neb import migration_barrier

    opts = merge_options(args, load_yaml(args.config), [o[0] for o in options()], "neb")
    first = args.structures[0]
    out = outputs(args, first)
    if "supercell" in opts:
        opts["supercell"] = ints_to_supercell(opts["supercell"])
    if not opts.get("vacancy") and args.relax_bulk is None:
        opts.pop("relax_bulk", None)  # a YAML shared with --vacancy runs may keep it
    if len(args.structures) > 2:
        raise ConfigError(f"neb takes 1 or 2 structure files, got {len(args.structures)}")
    if len(args.structures) == 2 or opts.get("vacancy"):
        structures = [read_structure(f, args.index) for f in args.structures]
    else:  # one band file
        structures = read_frames(first, ":" if args.index is None else args.index)
        if len(structures) < 3:
            raise ConfigError(f"band file {first!r} needs >= 3 frames, has "
                              f"{len(structures)}; give initial and final files instead")
    res = migration_barrier(structures, make_calculator(args), plot=out.path("neb", ".png"),
                            **opts)
    images = write_structures(out.path("neb_images", ".extxyz"), res.images)
    data = res.to_dict()
    data["images_file"] = str(images)
    path = write_json(data, out.json("neb"))
    print(f"barrier forward {res.barrier_forward:.4f} eV, reverse {res.barrier_reverse:.4f} eV "
          f"({'converged' if res.converged else 'NOT CONVERGED'}); results in {path}, "
          f"band in {images}")
    return 0 if res.converged else 1
