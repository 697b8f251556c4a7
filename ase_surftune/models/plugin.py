"""ASE plugin entry point (group ``ase.plugins``).

ASE's plugin collection (``ase._4.plugins``) imports this module and reads
``__ase_plugins__``. Importing it also registers the class with
``ase.calculators.calculator.get_calculator_class("surftune")``.
"""

from __future__ import annotations

from ase._4.plugins.plugin import CalculatorPlugin

__ase_plugins__ = {
    CalculatorPlugin(
        "surftune",
        citation="ase_surftune: fine-tuned universal interatomic potentials for surfaces",
        implementation="ase_surftune.models.calculator.SurfTuneCalculator",
    ),
}

from ase_surftune.models.calculator import _register_with_ase  # noqa: E402

_register_with_ase()
