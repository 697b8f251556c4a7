"""Runnable tour of the property workflows with EMT (seconds on a laptop).

    .venv/bin/python examples/properties/run_all.py [outdir]

Swap ``EMT()`` for ``SurfTuneCalculator("chgnet")`` (or any ASE calculator) to
measure a model with exactly the same code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ase.build import bulk, fcc100
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from ase_surftune.properties import (
    adatom_hop,
    frequency_softening_ratio,
    phonons,
    relax,
    run_md,
    surface_energies,
    vacancy_migration,
)

out = Path(sys.argv[1] if len(sys.argv) > 1 else "properties_out")
out.mkdir(exist_ok=True)
calc = EMT()
cu = bulk("Cu", "fcc", a=3.7, cubic=True)

r = relax(cu, calc, relax_cell=True)
print(f"relax: a = {r.atoms.cell.lengths()[0]:.3f} Å, converged={r.converged}")
r.to_json(out / "relax.json")

s = surface_energies(cu, calc, [(1, 1, 1), (1, 0, 0)], min_slab_size=8, min_vacuum_size=12,
                     wulff=True, plot_dir=out)
print("surface:", {k: round(v, 3) for k, v in s.gamma.items()}, "J/m²")
s.to_json(out / "surface.json")

slab = fcc100("Al", size=(2, 2, 3))
slab.set_constraint(FixAtoms(mask=[a.tag > 1 for a in slab]))
n = adatom_hop(slab, "Au", calc, site="hollow", height=1.7, vacuum=4.0, n_images=3,
               plot=out / "au_al100_neb.png")
print(f"Au/Al(100) hop: {n.barrier_forward:.3f} eV (ASE tutorial ≈ 0.37 eV)")
v = vacancy_migration(r.atoms, calc, supercell=2, n_images=3, plot=out / "cu_vac_neb.png")
print(f"Cu vacancy hop: {v.barrier_forward:.3f} eV")

p = phonons(bulk("Cu", "fcc", a=3.59), calc, supercell=3, plot=out / "cu_phonons.png",
            phonopy_params=out / "cu_phonopy_params.yaml")
print(f"phonons: min freq {p.min_frequency:.3f} THz, imaginary={p.has_imaginary}")
ratio = frequency_softening_ratio(None, calc, out / "cu_phonopy_params.yaml")
print(f"softening ratio vs itself: {ratio.ratio:.6f}")

m = run_md(r.atoms.repeat(2), calc, "nvt_langevin", steps=200, timestep=2.0, temperature=300,
           trajectory=out / "md.extxyz", plot=out / "md.png")
print(f"MD: <T> = {m.mean_temperature:.0f} K, completed={m.completed}")
