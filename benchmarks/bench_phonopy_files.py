"""Measurements for phonopy data (issue 14): what symmetrisation and two-sided NAC change.

1. CHGNet MgO (rocksalt, a = 4.21 Å, 3×3×3 primitive supercell, 54 atoms): acoustic
   frequencies at Γ, number of imaginary modes on the q-mesh and the force-constant drift,
   with the raw force constants and with phonopy's drift removal + symmetrisation.
2. The LO–TO correction one-sided vs both sides: MgO reference data written by phonopy
   (phonopy_disp.yaml + FORCE_SETS from CHGNet forces, BORN with Z* = ±1.96 and
   ε∞ = 3.0, typical PBE values); model = the same CHGNet. NAC on both sides gives 1 by
   construction; the old behaviour (a BORN reaching the reference only) is emulated by
   dropping NAC from the model's Phonopy object.
3. Wall time of ``surftune phonons phonopy_disp.yaml --reference-forces FORCE_SETS`` for
   CHGNet against an EMT-made Cu set (3×3×3 primitive supercell, 1 displacement), and its
   ratio, from another folder; the figure is kept next to the data (``--keep DIR``).

Run::

    /work/main/.venv/bin/python benchmarks/bench_phonopy_files.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _write_set(folder: Path, atoms, n: int, calc, born=None) -> Path:
    from phonopy.file_IO import write_BORN, write_FORCE_SETS

    from ase_surftune.properties.phonons import _new_phonopy, compute_forces

    folder.mkdir(parents=True, exist_ok=True)
    ph = _new_phonopy(atoms, np.eye(3, dtype=int) * n, "auto", 1e-5)
    ph.generate_displacements(distance=0.01)
    ph.save(str(folder / "phonopy_disp.yaml"), settings={"force_sets": False,
                                                        "force_constants": False})
    ph.forces = compute_forces(ph, calc)
    write_FORCE_SETS(ph.dataset, filename=str(folder / "FORCE_SETS"))
    if born is not None:
        write_BORN(ph.primitive, np.array([z * np.eye(3) for z in born[0]]),
                   born[1] * np.eye(3), filename=str(folder / "BORN"))
    return folder


def main() -> None:
    import torch
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.properties import frequency_softening_ratio, phonons
    from ase_surftune.properties.phonons import SupercellSizeWarning

    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", default=None, help="folder for the data sets and figure")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", SupercellSizeWarning)
    root = Path(args.keep or tempfile.mkdtemp())
    calc = SurfTuneCalculator("chgnet")
    mgo = bulk("MgO", "rocksalt", a=4.21)

    print("## 1. CHGNet MgO, 3x3x3 primitive supercell, mesh 8")
    for sym in (False, True):
        t = time.perf_counter()
        r = phonons(mgo, calc, supercell=3, mesh=8, bands=False, dos=False,
                    symmetrize_fc=sym)
        r.phonon.run_qpoints([[0, 0, 0]])
        g = r.phonon.qpoints.frequencies[0][:3]
        n_imag = sum(1 for m in r.imaginary_modes if m["source"] == "mesh")
        print(f"symmetrize_fc={sym}: acoustic at Γ {np.round(g, 4).tolist()} THz, "
              f"min {r.min_frequency:.4f} THz, {n_imag} imaginary mesh modes, "
              f"fc drift {r.fc_drift:.2e} eV/Å², {time.perf_counter() - t:.1f} s")

    print("## 2. LO-TO on both sides vs reference only (MgO, CHGNet vs itself, mesh 8)")
    d = _write_set(root / "MgO", mgo, 3, calc, born=((1.96, -1.96), 3.0))
    both = frequency_softening_ratio(None, calc, d / "phonopy_disp.yaml",
                                     force_sets=d / "FORCE_SETS", born=d / "BORN", mesh=8)
    m = both.model_phonon
    m.nac_params = None  # the old behaviour: BORN on the reference only
    m.run_mesh([8, 8, 8], is_gamma_center=True)
    fr, fm = both.reference_phonon.mesh.frequencies, m.mesh.frequencies
    w = np.broadcast_to(both.reference_phonon.mesh.weights[:, None], fr.shape)
    mask = np.abs(fr) > both.freq_cutoff
    one_sided = float((fm[mask] / fr[mask] * w[mask]).sum() / w[mask].sum())
    print(f"both sides: ratio {both.ratio:.4f} (nac={both.nac}); reference only: "
          f"{one_sided:.4f}")

    print("## 3. CLI, CHGNet vs an EMT-made Cu phonopy set, from another folder")
    cu = _write_set(root / "Cu", bulk("Cu", "fcc", a=3.59), 3, EMT())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cwd = root / "elsewhere"
    cwd.mkdir(exist_ok=True)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ase_surftune", "phonons",
                          str(cu / "phonopy_disp.yaml"), "--reference-forces",
                          str(cu / "FORCE_SETS"), "-m", "chgnet", "--mesh", "12",
                          "-o", str(cwd / "cu_chgnet.json")], cwd=cwd, env=env,
                         capture_output=True, text=True, check=True)
    print(out.stdout.strip())
    print(f"wall time {time.perf_counter() - t:.1f} s (includes Python + CHGNet start-up); "
          f"figure {cu / 'phonopy_disp_phonons.png'}")


if __name__ == "__main__":
    main()
