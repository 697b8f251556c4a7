"""Default settings of every property: one settings model per property, one source.

The API functions take their keyword defaults from these models, ``compare`` and the
benchmark sweeps validate their per-property config sections with them (or with a
subclass that says which default it changes and why), and the property CLI commands
build their options and help text from them (:func:`ase_surftune.cli._options.option_specs`).
Change a value per call (keyword arguments, YAML, CLI flags), not here.

Each field is ``Field(default, description="... (unit)")``; the module-level instances
(:data:`SURFACE`, :data:`RELAX`, ...) are frozen, so nobody changes a default for the
whole process by accident.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from ase_surftune.core.config import StrictModel
from ase_surftune.properties.facets import parse_facets

__all__ = ["PropertySettings", "RelaxSettings", "LatticeSettings", "EOSSettings",
           "SurfaceSettings", "NEBSettings", "BarrierSettings", "VacancyFormationSettings",
           "PhononSettings", "PhononTableSettings", "MDSettings", "BARRIER",
           "VACANCY_FORMATION",
           "SURFACE", "RELAX", "LATTICE", "EOS", "NEB", "PHONONS", "MD", "SurfaceDefaults"]


class PropertySettings(StrictModel):
    """Base of the property settings: strict (unknown keys refused), frozen instances."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def kwargs(self, *exclude: str) -> dict[str, Any]:
        """The fields as keyword arguments (minus ``exclude``)."""
        return {k: getattr(self, k) for k in type(self).model_fields if k not in exclude}


Optimizer = str  # FIRE, BFGS or LBFGS, case-insensitive (relax.get_optimizer checks it)


class RelaxSettings(PropertySettings):
    """:func:`~ase_surftune.properties.relax` and ``surftune relax``."""

    fmax: float = Field(0.05, gt=0, description="force threshold (eV/Å)")
    steps: int = Field(500, ge=1, description="maximum optimizer steps")
    optimizer: Optimizer = Field("FIRE", description="FIRE, BFGS or LBFGS")
    relax_cell: bool = Field(False, description="also relax the cell (FrechetCellFilter)")


class LatticeSettings(PropertySettings):
    """The ``lattice`` property: a tight cell + positions relaxation of the bulk; its
    relaxed bulk is the input of every other property of ``compare``."""

    fmax: float = Field(0.01, gt=0, description="force threshold of the bulk relaxation "
                        "(eV/Å); tight, the lattice constant is the result")
    steps: int = Field(300, ge=1, description="maximum optimizer steps")
    optimizer: Literal["FIRE", "BFGS", "LBFGS"] = Field("BFGS", description="optimizer")


class EOSSettings(PropertySettings):
    """:func:`~ase_surftune.properties.bulk.equation_of_state` (V0, E0, B)."""

    npoints: int = Field(7, ge=5, description="number of volumes")
    eps: float = Field(0.04, gt=0, lt=0.5, description="volume range ±eps (fraction)")
    eos: str = Field("birchmurnaghan", description="ase.eos equation of state")


def _facets(v: Any) -> Any:
    try:
        return parse_facets(v)
    except Exception as exc:  # parse_facets raises ConfigError
        raise ValueError(str(exc)) from None


class SurfaceSettings(PropertySettings):
    """:func:`~ase_surftune.properties.surface_energies`, ``surftune surface`` and the
    ``surface`` section of ``compare``: the same facet gets the same slab everywhere."""

    miller_indices: list[tuple[int, int, int]] = Field(
        [(1, 1, 1)], description="facets: 111, 1,1,1, (1-10), -110, Cu111, or "
        "Miller-Bravais 0001, 10-10, 11-20 (repeatable)")
    min_slab_size: float = Field(10.0, gt=0, description="minimum slab thickness (Å)")
    min_vacuum_size: float = Field(15.0, ge=3.0, description="minimum vacuum between "
                                   "periodic slab images (Å)")
    min_layers: int = Field(4, ge=1, description="minimum number of atomic layers; thinner "
                            "slabs are thickened plane by plane (10 Å alone gives K, Rb, Ba "
                            "and Sr 3 layers)")
    recommended_layers: int = Field(4, ge=1, description="fewer atomic layers than this "
                                    "warn (ThinSlabWarning): no bulk-like centre layer")
    relax_bulk: bool = Field(True, description="relax the bulk cell and positions first")
    relax_slabs: bool = Field(True, description="relax slab positions")
    fix_bottom_layers: int = Field(0, ge=0, description="fix this many bottom layers "
                                   "(0: both sides free)")
    fmax: float = Field(0.05, gt=0, description="force threshold of bulk and slab "
                        "relaxations (eV/Å)")
    steps: int = Field(500, ge=1, description="maximum optimizer steps")
    optimizer: Optimizer = Field("FIRE", description="FIRE, BFGS or LBFGS")
    symmetric_only: bool = Field(True, description="only symmetric terminations")
    converge_thickness: bool = Field(False, description="add planes until γ converges")
    thickness_tol: float = Field(0.01, gt=0, description="γ tolerance for thickness "
                                 "convergence (J/m²)")
    max_extra_layers: int = Field(8, ge=0, description="at most this many added planes")
    wulff: bool = Field(False, description="Wulff shape and area-weighted γ")
    max_atoms: int | None = Field(400, ge=1, description="refuse facets estimated above "
                                  "this many atoms")

    _miller = field_validator("miller_indices", mode="before")(classmethod(
        lambda cls, v: _facets(v)))


class NEBSettings(PropertySettings):
    """:func:`~ase_surftune.properties.neb_barrier` (and the vacancy / adatom hops)."""

    n_images: int = Field(5, ge=1, description="intermediate images")
    interpolation: Literal["idpp", "linear"] = Field("idpp", description="initial band")
    climb: bool = Field(True, description="climbing image")
    method: str = Field("improvedtangent", description="NEB tangent method (ASE's "
                        "default aseneb gives wrong barriers, matcalc#134)")
    k: float = Field(0.1, gt=0, description="spring constant (eV/Å²)")
    fmax: float = Field(0.05, gt=0, description="force threshold (eV/Å)")
    steps: int = Field(500, ge=1, description="maximum optimizer steps")
    optimizer: Optimizer = Field("FIRE", description="FIRE, BFGS or LBFGS")
    relax_endpoints: bool = Field(True, description="relax the end points first")


class BarrierSettings(NEBSettings):
    """The ``neb`` property: migration barriers on a (relaxed) bulk."""

    migrations: list[Literal["vacancy", "adatom-100"]] = Field(
        ["vacancy"], description="vacancy (bulk nearest-neighbour hop) and/or adatom-100 "
        "(adatom hollow to hollow on fcc(100))")
    #: of the bulk cell: three ints, or a 3x3 integer matrix, e.g.
    #: [[0,1,1],[1,0,1],[1,1,0]] for the 8-site fcc cell (2x2x2 primitive cells)
    supercell: tuple[int, int, int] | tuple[tuple[int, int, int], tuple[int, int, int],
                                             tuple[int, int, int]] = Field(
        (2, 2, 2), description="vacancy supercell of the bulk cell: 3 integers or a 3x3 "
        "matrix")
    vacancy_index: int = Field(0, ge=0, description="atom removed for the vacancy")
    slab_size: tuple[int, int, int] = Field((3, 3, 3), description="fcc(100) slab of the "
                                            "adatom hop, in surface cells and layers")


class VacancyFormationSettings(PropertySettings):
    """:func:`~ase_surftune.properties.bulk.vacancy_formation`."""

    supercell: tuple[int, ...] = Field((2, 2, 2), description="1, 3 or 9 integers")
    vacancy_index: int = Field(0, ge=0, description="atom removed")
    relax: bool = Field(True, description="relax the defect cell's positions")
    fmax: float = Field(0.05, gt=0, description="force threshold (eV/Å)")
    steps: int = Field(200, ge=1, description="maximum optimizer steps")
    optimizer: Optimizer = Field("BFGS", description="FIRE, BFGS or LBFGS")


class PhononSettings(PropertySettings):
    """:func:`~ase_surftune.properties.phonons` and ``surftune phonons``."""

    supercell: tuple[int, ...] = Field((2, 2, 2), description="1, 3 or 9 integers (a "
                                       "phonopy yaml brings its own)")
    displacement: float = Field(0.01, gt=0, description="finite displacement (Å); a "
                                "reference brings its own displacements")
    mesh: tuple[int, ...] = Field((20, 20, 20), description="q-mesh: 1 or 3 integers")
    band_npoints: int = Field(51, ge=2, description="q-points per band segment")
    t_min: float = Field(0.0, ge=0, description="lowest temperature (K)")
    t_max: float = Field(1000.0, ge=0, description="highest temperature (K)")
    t_step: float = Field(10.0, gt=0, description="temperature step (K)")
    imaginary_tol: float = Field(0.05, ge=0, description="below -tol a mode is imaginary "
                                 "(THz)")
    bands: bool = Field(True, description="band structure along seekpath's path")
    dos: bool = Field(True, description="total DOS on the q-mesh")
    symmetrize_fc: bool = Field(True, description="remove drift and symmetrise the force "
                                "constants")
    fc_calculator: str | None = Field(None, description="phonopy force-constants solver: "
                                      "traditional (none), symfc, alm")
    min_supercell_width: float | None = Field(None, gt=0, description="warn when the "
                                              "supercell is narrower (Å); none: 2 x model "
                                              "cutoff, else 10")
    max_atoms: int | None = Field(1000, ge=1, description="refuse supercells above this "
                                  "many atoms")


class PhononTableSettings(PhononSettings):
    """The ``phonons`` property of comparisons: mean and max frequency over the mesh."""

    freq_cutoff: float = Field(0.5, gt=0, description="modes with |ω| below this are left "
                               "out of the mean frequency (THz)")


class MDSettings(PropertySettings):
    """:func:`~ase_surftune.properties.run_md` and ``surftune md``."""

    ensemble: Literal["nve", "nvt_langevin", "nvt_bussi", "nvt_nose_hoover",
                      "npt_isotropic", "npt_mtk"] | str = Field(
        "nvt_langevin", description="thermostat / barostat ensemble (aliases such as "
        "langevin, npt are read too)")
    steps: int = Field(1000, ge=0, description="MD steps")
    timestep: float = Field(1.0, gt=0, description="time step (fs)")
    temperature: float = Field(300.0, ge=0, description="target temperature (K)")
    temperature_end: float | None = Field(None, ge=0, description="ramp the target "
                                          "linearly to this (K)")
    friction: float = Field(0.01, ge=0, description="Langevin friction (1/fs)")
    taut: float = Field(100.0, gt=0, description="thermostat time constant (fs)")
    pressure: float = Field(0.0, description="pressure, NPT (GPa)")
    taup: float = Field(1000.0, gt=0, description="barostat time constant (fs)")
    seed: int | None = Field(42, description="random seed")
    loginterval: int = Field(10, ge=1, description="log every n steps")
    traj_interval: int = Field(100, ge=1, description="trajectory frame every m steps")
    max_force: float | None = Field(50.0, gt=0, description="guard: largest force (eV/Å)")
    min_distance: float | None = Field(0.5, gt=0, description="guard: shortest distance (Å)")
    max_energy_drift: float | None = Field(0.05, gt=0, description="guard (NVE): energy "
                                           "drift (eV/atom)")
    escape_distance: float | None = Field(5.0, gt=0, description="guard (slabs): atom "
                                          "above the slab (Å)")
    guard_interval: int = Field(10, ge=1, description="check distance/drift/escape every "
                                "n steps")
    progress: bool = Field(True, description="progress bar")


#: The surface defaults used by :func:`~ase_surftune.properties.surface_energies`,
#: ``surftune surface`` and ``surftune compare``.
SURFACE = SurfaceSettings()
RELAX = RelaxSettings()
LATTICE = LatticeSettings()
EOS = EOSSettings()
NEB = NEBSettings()
PHONONS = PhononSettings()
MD = MDSettings()
BARRIER = BarrierSettings()
VACANCY_FORMATION = VacancyFormationSettings()

#: The old name of :class:`SurfaceSettings` (issue 14).
SurfaceDefaults = SurfaceSettings
