"""``surftune relax``: relax a structure with a model or a reference calculator; with
``--reference TRAJ``, relax a DFT trajectory's initial frame and compare with its own."""

from __future__ import annotations

import argparse


def options() -> list:
    """The command's workflow options, generated from its settings model (imported
    on first use so that ``surftune --help`` stays fast)."""
    from ase_surftune.cli._options import option_specs
    from ase_surftune.properties.settings import RelaxSettings

    return option_specs(RelaxSettings) + [
        ("trajectory", "bool", "also write the optimisation as <prefix>_relax.traj in -o"),
    ]


def register(subparsers: argparse._SubParsersAction) -> None:
    from ase_surftune.cli._properties import register_command

    p = register_command(
        subparsers, "relax", "relax positions (and cell) of a structure; --reference TRAJ "
        "compares with a DFT relaxation trajectory", options, run,
        structure_help="structure file readable by ase.io (may be omitted with "
                       "--reference TRAJ: its initial frame is relaxed)")
    for action in p._actions:  # the structure is optional when a trajectory is the input
        if action.dest == "structure":
            action.nargs, action.default = "?", None
        if action.dest == "reference":
            action.metavar = "NAME|TRAJ"
            action.help = ("a reference calculator instead of a model (emt, gpaw), or a DFT "
                           "relaxation trajectory (a file with energies): relax its initial "
                           "frame (--index, default 0) with the model and report ΔE_relax "
                           "and the RMSD of free atoms to its final frame")
    p.add_argument("--reference-index", default=-1, type=int,
                   help="with --reference TRAJ: the frame compared with (default -1, the "
                        "trajectory's final frame)")


def _split_reference(args: argparse.Namespace) -> str | None:
    """``--reference`` naming a file is a trajectory to compare with; take it off args."""
    from pathlib import Path

    from ase_surftune.models.references import REFERENCE_NAMES

    ref = args.reference
    if ref is None or ref.lower() in REFERENCE_NAMES:
        return None
    if not Path(ref).is_file():
        raise FileNotFoundError(f"--reference {ref!r} is neither a reference calculator "
                                f"({', '.join(REFERENCE_NAMES)}) nor an existing trajectory file")
    args.reference = None
    return ref


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ase_surftune.cli._common import load_yaml, write_json
    from ase_surftune.cli._properties import (
        make_calculator,
        merge_options,
        outputs,
        parse_index,
        read_structure,
        write_structures,
    )
    from ase_surftune.core.errors import ConfigError
    from ase_surftune.properties import relax, relaxation_vs_reference

    opts = merge_options(args, load_yaml(args.config), [o[0] for o in options()], "relax")
    traj = _split_reference(args)
    source = traj or args.structure
    if source is None:
        raise ConfigError("give a structure file (or --reference TRAJ)")
    if traj is not None and args.structure is not None and \
            Path(args.structure).resolve() != Path(traj).resolve():
        raise ConfigError(f"with --reference TRAJ the trajectory is the input; got a second "
                          f"structure {args.structure!r} (omit it)")
    out = outputs(args, source)
    if opts.pop("trajectory", False):
        opts["trajectory"] = out.path("relax", ".traj")
    calc = make_calculator(args)
    if traj is not None:
        if opts.get("relax_cell"):
            raise ConfigError("--relax-cell does not apply to a trajectory comparison "
                              "(the reference relaxation keeps its cell)")
        opts.pop("relax_cell", None)
        opts["trajectory_out"] = opts.pop("trajectory", None)
        start = 0 if args.index is None else parse_index(args.index)
        if not isinstance(start, int):
            raise ConfigError(f"--index must name one frame, got {args.index!r}")
        cmp = relaxation_vs_reference(traj, calc, initial_index=start,
                                      reference_index=args.reference_index, **opts)
        out_struct = write_structures(out.path("relaxed", ".extxyz"), cmp.relax.atoms)
        data = cmp.to_dict()
        data.update({"relaxed_structure": str(out_struct), "reference_trajectory": traj})
        path = write_json(data, out.json("relax"))
        ads = ("" if cmp.rmsd_adsorbate is None else
               f", adsorbate {cmp.rmsd_adsorbate:.3f} Å ({cmp.n_adsorbate} atoms)")
        status = "converged" if cmp.relax.converged else "NOT CONVERGED"
        print(f"relax {status} in {cmp.relax.steps} steps: ΔE_relax model "
              f"{cmp.delta_e_model:.4f} eV vs reference {cmp.delta_e_reference:.4f} eV "
              f"(error {cmp.delta_e_error:+.4f} eV); RMSD of {cmp.n_free} free atoms to "
              f"frame {cmp.reference_index}: {cmp.rmsd_free:.3f} Å{ads}; results in {path}")
        return 0 if cmp.relax.converged else 1
    atoms = read_structure(args.structure, args.index)
    res = relax(atoms, calc, **opts)
    out_struct = write_structures(out.path("relaxed", ".extxyz"), res.atoms)
    data = res.to_dict()
    data["relaxed_structure"] = str(out_struct)
    path = write_json(data, out.json("relax"))
    status = "converged" if res.converged else "NOT CONVERGED"
    print(f"relax {status} in {res.steps} steps: E = {res.energy:.6f} eV "
          f"(from {res.energy_initial:.6f}); results in {path}")
    return 0 if res.converged else 1
