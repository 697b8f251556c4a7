"""Walk-through: from DFT data to a fine-tuned calculator in an NEB.

    .venv/bin/python examples/walkthrough_dft_to_neb.py [--data my_dft.extxyz] [--out walkthrough_out]

Steps (each one is a single call of the public API):

1. read labelled DFT data (extxyz/traj/db/OUTCAR/vasprun.xml; labels from the attached
   single-point calculator or from named keys such as ``energy_key="dft_energy"``).
   Without ``--data`` the script makes a small Cu data set labelled by EMT, standing in
   for your DFT code (swap ``EMT()`` for ``GPAW(...)``/``Vasp(...)`` to do it for real);
2. measure how soft zero-shot CHGNet is on it (softening scale, force MAE);
3. fine-tune CHGNet with the first blocks frozen (Radova et al.) and write a bundle;
4. load the bundle as an ordinary ASE calculator and compute a vacancy-migration barrier
   with NEB, next to the zero-shot model and the reference.

Runs in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT

from ase_surftune import SurfTuneCalculator
from ase_surftune.data import label, read_labelled
from ase_surftune.evaluation import evaluate
from ase_surftune.properties import vacancy_migration
from ase_surftune.training import finetune


def make_reference_data(path: Path, n: int = 16, seed: int = 0) -> Path:
    """Rattled Cu slabs, surfaces with a vacancy and bulk cells labelled by the reference."""
    rng = np.random.default_rng(seed)
    structures = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            a = fcc111("Cu", (2, 2, 4), vacuum=6.0)
        elif kind == 1:
            a = fcc100("Cu", (2, 2, 4), vacuum=6.0)
        elif kind == 2:
            a = fcc111("Cu", (3, 3, 3), vacuum=6.0)
            del a[int(rng.integers(len(a) - 9, len(a)))]  # surface vacancy
        else:
            a = bulk("Cu", "fcc", a=3.61 * (1 + rng.uniform(-0.02, 0.02)), cubic=True) * (2, 1, 1)
        a.rattle(0.05 + 0.05 * rng.random(), seed=seed + i)
        a.info["config_type"] = ["Surfaces/111", "Surfaces/100", "Defects/vacancy", "Bulk"][kind]
        structures.append(a)
    # label() writes every result as it goes and resumes an interrupted run
    label(structures, EMT(), path, resume=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=None, help="your labelled DFT data (any ase.io format)")
    ap.add_argument("--energy-key", default=None, help="info key of the DFT energy, if not in a calculator")
    ap.add_argument("--forces-key", default=None, help="arrays key of the DFT forces")
    ap.add_argument("--out", default="walkthrough_out")
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. data
    data_path = Path(args.data) if args.data else make_reference_data(out / "reference.extxyz")
    configs = read_labelled(data_path, energy_key=args.energy_key, forces_key=args.forces_key)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(configs))
    train = [configs[i] for i in order[: int(0.75 * len(configs))]]
    test = [configs[i] for i in order[int(0.75 * len(configs)):]]
    print(f"{len(configs)} labelled structures: {len(train)} train, {len(test)} test")

    # 2. how soft is the foundation model?
    # (energy reference fitted on the training frames, never on the scored test frames)
    zero = evaluate(["chgnet"], test, align_on=train, progress=False)
    zero.write(out / "zero_shot")  # JSON, CSV, Markdown and parity plots
    print(zero.to_markdown())

    # 3. frozen transfer learning (CHGNet's default k = 4 blocks frozen), energies aligned
    #    to your DFT code
    res = finetune({"model": "chgnet", "strategy": "frozen",
                    "epochs": args.epochs, "batch_size": 4, "output_dir": str(out / "frozen"),
                    "optimizer": {"lr": 5e-4}, "forgetting": {"enabled": False}},
                   train=train, valid=test)
    print(f"fine-tuned bundle: {res.bundle_path}")
    print(evaluate([str(res.bundle_path)], test, progress=False).to_markdown())

    # 4. the bundle is an ASE calculator: run an NEB with it, the zero-shot model and the reference
    cu = bulk("Cu", "fcc", a=3.61)
    neb_kw = {"supercell": (2, 2, 2), "n_images": 3, "fmax": 0.1, "steps": 150}
    for name, calc in [("reference (EMT)", EMT()), ("zero-shot CHGNet", SurfTuneCalculator("chgnet")),
                       ("fine-tuned CHGNet", SurfTuneCalculator(str(res.bundle_path)))]:
        r = vacancy_migration(cu, calc, **neb_kw)
        flag = "" if r.converged else "  (NOT converged)"
        print(f"{name:20s} vacancy migration barrier {r.barrier_forward:.3f} eV{flag}")


if __name__ == "__main__":
    main()
