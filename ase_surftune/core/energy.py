"""Per-element energy references: the one place where Σ_i e_{Z_i} is computed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ase.data import chemical_symbols


def per_element_sum(values: Mapping[str, float] | None, numbers: Iterable[int]) -> float:
    """Σ_i values[symbol(Z_i)] over the atoms' atomic numbers (eV when values are eV/atom).

    Elements missing from ``values`` contribute 0; ``None`` or ``{}`` gives 0.0.
    """
    if not values:
        return 0.0
    return float(sum(values.get(chemical_symbols[int(z)], 0.0) for z in numbers))
