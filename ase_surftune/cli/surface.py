"""``surftune surface``: surface energies (J/m²) for Miller indices from a bulk file."""

from __future__ import annotations

import argparse


def options() -> list:
    """The command's workflow options, generated from its settings model (imported
    on first use so that ``surftune --help`` stays fast)."""
    from ase_surftune.cli._options import option_specs
    from ase_surftune.properties.settings import SurfaceSettings

    return option_specs(SurfaceSettings, exclude=("recommended_layers",))


def register(subparsers: argparse._SubParsersAction) -> None:
    from ase_surftune.cli._properties import register_command

    register_command(subparsers, "surface", "surface energies from a bulk structure",
                     options, run,
                     structure_help="bulk structure file readable by ase.io")


def run(args: argparse.Namespace) -> int:
    from ase_surftune.cli._common import write_json
    from ase_surftune.cli._properties import command_inputs, write_structures
    from ase_surftune.properties import surface_energies
    from ase_surftune.properties.surface import facet_key

    opts, bulk, out, calc = command_inputs(args, options(), "surface")
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
