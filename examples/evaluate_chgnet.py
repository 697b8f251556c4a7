"""Errors and softening scale of zero-shot CHGNet against EMT labels (runs anywhere).

    python examples/evaluate_chgnet.py        # writes evaluate_out/

The same from the command line, on a labelled file:

    surftune evaluate data.xyz -m chgnet -m runs/frozen_chgnet/model.stbundle -o evaluate_out
"""

import numpy as np
from ase.build import fcc100, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ase_surftune.evaluation import evaluate

rng = np.random.default_rng(0)
configs = []
for kind, builder in (("Cu(111)", fcc111), ("Cu(100)", fcc100)):
    for _ in range(3):
        slab = builder("Cu", (2, 2, 4), vacuum=6.0, periodic=True)
        slab.positions += rng.normal(scale=0.1, size=slab.positions.shape)
        slab.calc = EMT()
        slab.calc = SinglePointCalculator(slab, energy=slab.get_potential_energy(),
                                          forces=slab.get_forces(), stress=slab.get_stress())
        slab.info["config_type"] = kind
        configs.append(slab)

report = evaluate(["chgnet"], configs)      # specs: "chgnet", "x.stbundle@head", "emt", ...
report.write("evaluate_out")                # evaluation.json/.csv/.md + parity_chgnet.png
print(report.to_markdown())
