"""Default settings shared by the API, ``compare``, the benchmark sweeps and the CLI.

One frozen object per property, so that the same facet gets the same slab whichever
command builds it. Change a value per call (keyword arguments, YAML, CLI flags), not here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SurfaceDefaults:
    """Slab geometry and relaxation defaults of the surface-energy workflow.

    Attributes:
        min_slab_size: minimum slab thickness, Å.
        min_vacuum_size: minimum vacuum between periodic slab images, Å.
        min_layers: minimum number of atomic layers; a slab thinner than this in layers
            is thickened plane by plane (10 Å alone gives K, Rb, Ba and Sr 3 layers).
        recommended_layers: slabs with fewer atomic layers than this get a
            :class:`~ase_surftune.properties.surface.ThinSlabWarning` (a 3-layer slab has
            no bulk-like centre layer, so both surfaces interact).
        fmax: force threshold of bulk and slab relaxations, eV/Å.
    """

    min_slab_size: float = 10.0
    min_vacuum_size: float = 15.0
    min_layers: int = 4
    recommended_layers: int = 4
    fmax: float = 0.05


#: The surface defaults used by :func:`~ase_surftune.properties.surface_energies`,
#: ``surftune surface`` and ``surftune compare``.
SURFACE = SurfaceDefaults()
