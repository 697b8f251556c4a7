"""Benchmark: ase_surftune property workflows vs matcalc, same CHGNet calculator.

Runs side by side in one process, with one shared calculator instance:

* Cu(111) surface energy (bulk + slab relaxation, BFGS, fmax 0.1 eV/Å)
* Cu phonons, 2×2×2 supercell of the primitive cell, 0.015 Å displacement, on matcalc's
  q-mesh: thermal properties only, then also band structure and DOS (same work both sides)
* Cu vacancy nearest-neighbour hop, 2×2×1 conventional supercell (15 atoms),
  3 images, climbing image, improved tangent, BFGS, fmax 0.1 eV/Å, unrelaxed
  end points for both (so both solve exactly the same band problem)

and records the median wall time over ``--repeats`` rounds (alternating which side goes
first), the number of force calls (``calc.calculate`` invocations) and the results. Target: wall-time ratio ours/matcalc ≤ 0.8, results within tolerance.

Our relaxation, surface and NEB workflows limit numpy's bundled OpenBLAS to one thread
while they run (:mod:`ase_surftune.core.threads`); matcalc does not. To see how much of the
ratio that accounts for, run once more with ``OPENBLAS_NUM_THREADS=1`` in the environment,
which gives both sides one BLAS thread (the header prints the thread counts in force).

matcalc is a benchmark-only dependency (the ``bench`` extra in setup.cfg). Install
it with the torch pin so it cannot pull another torch::

    .venv/bin/pip install -c constraints.txt matcalc

(matcalc 0.7.0 needs no matgl/dgl; it added only scikit-learn, huggingface_hub and
small HTTP helpers, leaving torch 2.13.0, chgnet and mace-torch unchanged.)

Run::

    .venv/bin/python benchmarks/bench_properties.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings

import numpy as np
import torch
from ase.build import bulk

from ase_surftune.properties import (
    ForceCallCounter,
    phonons,
    surface_energies,
    vacancy_migration,
)

#: 2×2×1 conventional cells: 16 sites, 15 atoms with the vacancy (kept small because the
#: shared 2-core machine makes CHGNet NEB on 31 atoms take tens of minutes)
NEB_SUPERCELL = (2, 2, 1)


def make_calc():
    try:
        from ase_surftune.models.calculator import SurfTuneCalculator

        calc = SurfTuneCalculator(model="chgnet")
        a = bulk("Cu")
        a.calc = calc
        a.get_potential_energy()
        return calc, "SurfTuneCalculator(model='chgnet')"
    except Exception as exc:  # pragma: no cover - fallback while the backend is in flux
        warnings.warn(f"SurfTuneCalculator unusable ({exc}); using CHGNetCalculator")
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=CHGNet.load(), use_device="cpu"), "CHGNetCalculator"


def timed(calc, fn, label=""):
    with ForceCallCounter(calc) as fc:
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
    print(f"[{label}] {dt:.2f} s, {fc.count} force calls", flush=True)
    return out, dt, fc.count


def paired(calc, ours_fn, theirs_fn, label: str, repeats: int):
    """Median wall time of both sides over ``repeats`` rounds, alternating who goes first
    so that neither side always runs on a warmer (or busier) machine."""
    t_o, t_m = [], []
    out_o = out_m = None
    n_o = n_m = 0
    for r in range(repeats):
        order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
        for side in order:
            if side == "ours":
                out_o, dt, n_o = timed(calc, ours_fn, f"ours {label}")
                t_o.append(dt)
            else:
                out_m, dt, n_m = timed(calc, theirs_fn, f"matcalc {label}")
                t_m.append(dt)
    return out_o, statistics.median(t_o), n_o, out_m, statistics.median(t_m), n_m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds per case (medians; the order alternates)")
    args = ap.parse_args()
    from matcalc import NEBCalc, PhononCalc, SurfaceCalc
    from pymatgen.io.ase import AseAtomsAdaptor

    calc, calc_name = make_calc()
    cu_conv = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu_prim = bulk("Cu", "fcc", a=3.6)
    rows = []
    # warm-up outside the timings: the first forward passes of a torch model are slow,
    # and without this whichever side runs first pays for it
    for a in (cu_conv.copy(), cu_prim.copy()):
        a.calc = calc
        a.get_forces()

    # --- surface energy Cu(111)
    mc_surf = SurfaceCalc(calc, relax_bulk=True, relax_slab=True, fmax=0.1, optimizer="BFGS")
    ours, t_o, n_o, theirs, t_m, n_m = paired(
        calc,
        lambda: surface_energies(cu_conv, calc, [(1, 1, 1)], min_slab_size=10.0,
                                 min_vacuum_size=20.0, fmax=0.1, optimizer="BFGS"),
        lambda: mc_surf.calc_slabs(AseAtomsAdaptor.get_structure(cu_conv), (1, 1, 1),
                                   min_slab_size=10.0, min_vacuum_size=20.0),
        "surface", args.repeats)
    g_ours = ours.gamma["1,1,1"]
    g_mc = min(r["surface_energy"] for r in theirs) * 16.021766208  # eV/Å² → J/m²
    rows.append(("Cu(111) surface energy (J/m²)", t_o, n_o, t_m, n_m, g_ours, g_mc))

    # --- phonons 2×2×2, the same work on both sides. matcalc's PhononCalc computes thermal
    # properties on phonopy's default q-mesh (length 100 → 48×48×48 for Cu) and, when asked,
    # writes the band structure (101 points per segment) and total DOS to files, its only
    # way to give them. Row 1: thermal properties only; row 2: also bands and DOS.
    cu_prim_pmg = AseAtomsAdaptor.get_structure(cu_prim)
    mc_ph = PhononCalc(calc, supercell_matrix=np.diag([2, 2, 2]), atom_disp=0.015,
                       relax_structure=False, write_phonon=False, min_length=None)
    mc_mesh = [int(n) for n in mc_ph.calc(cu_prim_pmg)["phonon"].mesh.mesh_numbers]

    def cv300(temps, cv) -> float:
        return float(np.asarray(cv)[list(np.asarray(temps)).index(300.0)])

    ours, t_o, n_o, theirs, t_m, n_m = paired(
        calc,
        lambda: phonons(cu_prim, calc, supercell=2, displacement=0.015, mesh=mc_mesh,
                        bands=False, dos=False),
        lambda: mc_ph.calc(cu_prim_pmg),
        "phonons", args.repeats)
    tp = theirs["thermal_properties"]
    rows.append((f"Cu phonons 2×2×2, thermal only, mesh {mc_mesh[0]}³: Cv(300 K) (J/K/mol)",
                 t_o, n_o, t_m, n_m,
                 cv300(ours.thermal["temperature"], ours.thermal["heat_capacity"]),
                 cv300(tp["temperatures"], tp["heat_capacity"])))

    with tempfile.TemporaryDirectory() as tmp:
        mc_ph_full = PhononCalc(calc, supercell_matrix=np.diag([2, 2, 2]), atom_disp=0.015,
                                relax_structure=False, write_phonon=False, min_length=None,
                                write_band_structure=f"{tmp}/band.yaml",
                                write_total_dos=f"{tmp}/dos.dat")
        ours, t_o, n_o, theirs, t_m, n_m = paired(
            calc,
            lambda: phonons(cu_prim, calc, supercell=2, displacement=0.015, mesh=mc_mesh,
                            band_npoints=101),
            lambda: mc_ph_full.calc(cu_prim_pmg),
            "phonons+bands+dos", args.repeats)
        tp = theirs["thermal_properties"]
        rows.append(("  … + bands (101 pts/segment) + DOS: Cv(300 K)", t_o, n_o, t_m, n_m,
                     cv300(ours.thermal["temperature"], ours.thermal["heat_capacity"]),
                     cv300(tp["temperatures"], tp["heat_capacity"])))

    # --- vacancy hop: matcalc gets exactly our (unrelaxed) end points
    ref = vacancy_migration(cu_conv, calc, supercell=NEB_SUPERCELL, n_images=3, fmax=0.1,
                            optimizer="BFGS", relax_endpoints=False, interpolation="linear",
                            steps=0)
    init, fin = ref.images[0], ref.images[-1]
    mc_neb = NEBCalc(calc, optimizer="BFGS", fmax=0.1, climb=True, method="improvedtangent")
    ad = AseAtomsAdaptor
    ours, t_o, n_o, theirs, t_m, n_m = paired(
        calc,
        lambda: vacancy_migration(cu_conv, calc, supercell=NEB_SUPERCELL, n_images=3, fmax=0.1,
                                  optimizer="BFGS", relax_endpoints=False,
                                  interpolation="linear"),
        lambda: mc_neb.calc_images(ad.get_structure(init), ad.get_structure(fin), n_images=3),
        "NEB", args.repeats)
    rows.append(("Cu vacancy hop barrier (eV)", t_o, n_o, t_m, n_m, ours.barrier_forward,
                 float(theirs["barrier"])))

    from threadpoolctl import threadpool_info

    blas = sorted({i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"})
    out = {"calculator": calc_name, "numpy_openblas_threads_outside_workflows": blas,
           "torch_threads": torch.get_num_threads(), "rows": []}
    print(f"calculator: {calc_name}; numpy OpenBLAS threads outside our workflows: {blas}; "
          f"torch threads: {torch.get_num_threads()}")
    print(f"{'case':62s} {'ours s':>8s} {'calls':>6s} {'matcalc s':>9s} {'calls':>6s} "
          f"{'ratio':>6s} {'ours':>9s} {'matcalc':>9s}")
    for name, t_o, n_o, t_m, n_m, v_o, v_m in rows:
        print(f"{name:62s} {t_o:8.2f} {n_o:6d} {t_m:9.2f} {n_m:6d} {t_o / t_m:6.2f} "
              f"{v_o:9.4f} {v_m:9.4f}")
        out["rows"].append({"case": name, "ours_s": t_o, "ours_calls": n_o, "matcalc_s": t_m,
                            "matcalc_calls": n_m, "ratio": t_o / t_m, "ours": v_o,
                            "matcalc": v_m})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
