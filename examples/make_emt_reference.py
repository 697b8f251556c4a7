"""Write ``examples/emt_reference.csv``: EMT values of Cu, Ag and Au through the public
property API with ``surftune benchmark``'s default settings.

EMT run through ``surftune benchmark examples/emt_reference.csv -m emt`` must then give
ratio 1.000 on every row (the README shows it); any other model's ratios are its
softening relative to EMT. A published table is read the same way (see the schema in
``ase_surftune.evaluation.reference_sets``).

    python examples/make_emt_reference.py [OUT.csv]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from ase.build import bulk
from ase.calculators.emt import EMT

from ase_surftune.evaluation.benchmark import load_benchmark_config
from ase_surftune.properties import relax, surface_energies, vacancy_migration
from ase_surftune.properties.bulk import conventional_lattice, equation_of_state, vacancy_formation


def main(out: Path) -> None:
    cfg = load_benchmark_config()
    lat, s, n, v, e = cfg.lattice, cfg.surface, cfg.neb, cfg.vacancy, cfg.eos
    rows = []
    for el in ("Cu", "Ag", "Au"):
        calc = EMT()
        r = relax(bulk(el, "fcc", cubic=True), calc, relax_cell=True, fmax=lat.fmax,
                  steps=lat.steps, optimizer=lat.optimizer)
        res = surface_energies(r.atoms, calc, ["111", "100"], min_slab_size=s.min_slab_size,
                               min_vacuum_size=s.min_vacuum_size, relax_bulk=False,
                               relax_slabs=s.relax, fmax=s.fmax, steps=s.steps)
        src = "EMT (ase.calculators.emt), examples/make_emt_reference.py"
        rows += [[f"{el}111", "gamma", res.gamma["1,1,1"], "J/m^2", "fcc", src],
                 [f"{el}100", "gamma", res.gamma["1,0,0"], "J/m^2", "fcc", src],
                 [el, "a", conventional_lattice(r.atoms)[0], "Å", "fcc", src],
                 [el, "B", equation_of_state(r.atoms, calc, npoints=e.npoints,
                                             eps=e.eps).bulk_modulus, "GPa", "fcc", src],
                 [el, "E_vac", vacancy_formation(r.atoms, calc, supercell=v.supercell,
                                                 relax=v.relax, fmax=v.fmax,
                                                 steps=v.steps).formation_energy, "eV",
                  "fcc", src],
                 [el, "barrier", vacancy_migration(
                     r.atoms, calc, supercell=n.supercell, relax_bulk=False,
                     n_images=n.n_images, fmax=n.fmax, steps=n.steps, climb=n.climb,
                     relax_endpoints=n.relax_endpoints).barrier_forward, "eV", "fcc", src]]
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["system", "property", "value", "units", "cell", "source"])
        w.writerows([[*r[:2], f"{r[2]:.6f}", *r[3:]] for r in rows])
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name(
        "emt_reference.csv"))
