"""Property workflows on any ASE calculator (reference code, EMT, uMLIP, fine-tuned bundle).

Each workflow returns a dataclass with ``to_dict()``/``to_json(path)``:

* :func:`relax` → :class:`RelaxResult`; :func:`relaxation_vs_reference` →
  :class:`RelaxationComparison` (ΔE_relax and RMSD against a DFT trajectory)
* :func:`surface_energies` → :class:`SurfaceResult` (γ in J/m² and eV/Å²)
* :func:`neb_barrier`, :func:`vacancy_migration`, :func:`adatom_hop` → :class:`NEBResult`
* :func:`phonons` → :class:`PhononResult`; :func:`frequency_softening_ratio`;
  phonopy files: :func:`load_phonopy`, :func:`phonons_from_phonopy`
* :func:`run_md` → :class:`MDResult`

The same workflows as :class:`~ase_surftune.properties.protocol.PropertyCalc` classes,
by name: :func:`get_property`, :func:`available_properties` (``compare`` and
``benchmark`` loop over this registry); their defaults live in
:mod:`ase_surftune.properties.settings`.
"""

from __future__ import annotations

from ase_surftune.properties import calcs  # noqa: F401  (registers the built-in properties)
from ase_surftune.properties._base import ForceCallCounter, PropertyResult
from ase_surftune.properties.md import ENSEMBLES, MDResult, run_md
from ase_surftune.properties.neb import NEBResult, adatom_hop, neb_barrier, vacancy_migration
from ase_surftune.properties.phonons import (
    PhononResult,
    SofteningResult,
    SupercellSizeWarning,
    check_supercell_size,
    frequency_softening_ratio,
    load_phonopy,
    parse_supercell,
    phonons,
    phonons_from_phonopy,
    produce_force_constants,
)
from ase_surftune.properties.protocol import PropertyCalc, PropertyValue
from ase_surftune.properties.registry import available_properties, get_property, register
from ase_surftune.properties.relax import (
    NotConvergedWarning,
    RelaxationComparison,
    RelaxResult,
    relax,
    relaxation_vs_reference,
)
from ase_surftune.properties.surface import (
    SlabEnergy,
    SurfaceEntry,
    SurfaceResult,
    parse_facet,
    parse_facets,
    parse_miller,
    slab_surface_energy,
    surface_energies,
    wulff_shape,
)

__all__ = [
    "ENSEMBLES", "ForceCallCounter", "MDResult", "NEBResult", "NotConvergedWarning",
    "PhononResult", "PropertyResult", "RelaxResult", "RelaxationComparison", "SlabEnergy",
    "SofteningResult",
    "SurfaceEntry", "SurfaceResult", "adatom_hop", "frequency_softening_ratio", "neb_barrier",
    "parse_facet", "parse_facets", "parse_miller", "parse_supercell", "phonons", "relax",
    "relaxation_vs_reference", "run_md", "slab_surface_energy",
    "surface_energies", "vacancy_migration", "wulff_shape",
]
# phonopy data as phonopy users hold them (issue 14)
__all__ += ["SupercellSizeWarning", "check_supercell_size", "load_phonopy",
            "phonons_from_phonopy", "produce_force_constants"]
# one protocol, a registry (issue 15)
__all__ += ["PropertyCalc", "PropertyValue", "available_properties", "get_property",
            "register"]
