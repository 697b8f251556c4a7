"""``surftune phonons``: phonopy bands, DOS, thermal properties; optional softening ratio.

The structure may be a phonopy yaml (``phonopy_disp.yaml``, ``phonopy_params.yaml``):
its unit cell and supercell matrix are used, and its forces (or those of
``--reference-forces FORCE_SETS``) are the reference for the softening ratio and the
reference bands drawn under the model's.
"""

from __future__ import annotations

import argparse


def options() -> list:
    """The command's workflow options, generated from its settings model (imported
    on first use so that ``surftune --help`` stays fast)."""
    from ase_surftune.cli._options import option_specs
    from ase_surftune.properties.settings import PhononSettings

    return option_specs(PhononSettings) + [
        ("reference_forces", str, "reference FORCE_SETS (for a structure file or a "
                                  "phonopy_disp.yaml) or phonopy_params.yaml: also compute the "
                                  "frequency softening ratio and draw the reference bands"),
        ("born", str, "BORN file: LO-TO correction on reference and model alike"),
        ("nac", "bool", "LO-TO correction from --born or the yaml's nac_params (default: on "
                        "when given); --no-nac: on neither side"),
    ]



def register(subparsers: argparse._SubParsersAction) -> None:
    from ase_surftune.cli._properties import register_command

    register_command(subparsers, "phonons", "phonons with phonopy", options, run,
                     structure_help="(relaxed) unit cell readable by ase.io, or a phonopy "
                                    "yaml (phonopy_disp.yaml, phonopy_params.yaml)")


def _model_label(args: argparse.Namespace) -> str:
    if args.reference:
        return str(args.reference)
    return str(args.model) + (f"@{args.head}" if getattr(args, "head", None) else "")


def run(args: argparse.Namespace) -> int:
    """Run the command; warnings (e.g. a supercell too small for the cutoff) are printed
    as one ``warning: ...`` line each on stderr, and recorded in the JSON."""
    import sys
    import warnings

    from ase_surftune.properties import SupercellSizeWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SupercellSizeWarning)
        try:
            return _run(args)
        finally:
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from ase_surftune.cli._common import load_yaml, write_json
    from ase_surftune.cli._properties import (
        ints_to_supercell,
        make_calculator,
        merge_options,
        outputs,
        read_structure,
    )
    from ase_surftune.core.errors import ConfigError
    from ase_surftune.properties import parse_supercell, phonons
    from ase_surftune.properties._plot import plot_phonons
    from ase_surftune.properties.phonons import (
        _is_phonopy_yaml,
        phonons_vs_reference,
        read_phonopy_structure,
    )

    opts = merge_options(args, load_yaml(args.config), [o[0] for o in options()], "phonons")
    ref = opts.pop("reference_forces", None)
    born, nac = opts.pop("born", None), opts.pop("nac", None)
    if "supercell" in opts:
        opts["supercell"] = ints_to_supercell(opts["supercell"])
    if isinstance(opts.get("mesh"), list) and len(opts["mesh"]) == 1:
        opts["mesh"] = opts["mesh"][0]
    out = outputs(args, args.structure)
    force_sets = None
    if _is_phonopy_yaml(args.structure):
        atoms, P, _ = read_phonopy_structure(args.structure)
        if "supercell" in opts and not np.array_equal(
                parse_supercell(opts["supercell"]), P):
            raise ConfigError(f"--supercell {opts['supercell']} differs from the supercell "
                              f"{P.tolist()} of {args.structure}, whose displacements fix it")
        opts["supercell"] = P.tolist()
        ref, force_sets = args.structure, ref
    else:
        atoms = read_structure(args.structure, args.index)
        if ref is not None and _is_phonopy_yaml(ref):
            ref_atoms = read_phonopy_structure(ref)[0]
            if sorted(ref_atoms.symbols) != sorted(atoms.get_chemical_symbols()):
                raise ConfigError(f"{args.structure} ({atoms.get_chemical_formula()}) is not "
                                  f"the cell of the reference {ref} "
                                  f"({ref_atoms.get_chemical_formula()})")
    calc = make_calculator(args)
    label = _model_label(args)
    want_plot = opts.get("bands", True) and opts.get("dos", True)
    png = out.path("phonons", ".png") if want_plot else None
    params = out.path("phonopy_params", ".yaml")
    if ref is None:
        if nac is True and born is None:
            raise ConfigError("--nac needs --born (or a phonopy yaml with nac_params)")
        res = phonons(atoms, calc, plot=png, phonopy_params=params,
                      born=None if nac is False else born, label=label, **opts)
        data = res.to_dict()
    else:
        if "displacement" in opts:
            raise ConfigError("--displacement does not apply with a reference: its own "
                              "displacements are used")
        res, ref_res, soft = phonons_vs_reference(
            atoms, calc, ref, force_sets=force_sets, born=born, nac=nac, label=label,
            phonopy_params=params, **opts)
        ref_label = ref_res.label
        if png is not None:
            res.plot = plot_phonons(png, [(ref_label, ref_res), (label, res)])
        data = res.to_dict()
        data["softening"] = soft.to_dict()
        data["reference_phonons"] = {k: v for k, v in ref_res.to_dict().items()
                                     if k not in ("thermal",)}
        print(f"frequency softening ratio = {soft.ratio:.4f} (mesh "
              f"{'x'.join(map(str, soft.mesh))}, NAC {'on' if soft.nac else 'off'}"
              f"{f' from {soft.nac_source}' if soft.nac else ''})")
    path = write_json(data, out.json("phonons"))
    print(f"min frequency {res.min_frequency:.3f} THz, imaginary modes: "
          f"{'yes' if res.has_imaginary else 'no'}; results in {path}")
    return 0

