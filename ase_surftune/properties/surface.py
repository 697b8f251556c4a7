"""Surface energies from slabs built with pymatgen's SlabGenerator, any ASE calculator."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.constraints import FixAtoms

from ase_surftune.core.errors import ConfigError, InvalidStructureError
from ase_surftune.core.threads import single_threaded_numpy
from ase_surftune.properties._base import (
    EV_PER_A2_TO_J_PER_M2,
    PropertyResult,
    attach_calc,
    check_atoms,
    check_int,
    check_positive,
    layer_indices,
    vacuum_size,
)
from ase_surftune.properties.facets import (  # noqa: F401  (re-exported)
    Miller,
    _facet_error,
    _is_single_facet,
    facet_key,
    parse_facet,
    parse_facets,
    parse_miller,
    parse_miller_list,
)
from ase_surftune.properties.relax import RelaxResult, relax
from ase_surftune.properties.settings import SURFACE
from ase_surftune.properties.slabs import (  # noqa: F401  (re-exported)
    MAX_SLAB_CELL_ATOMS,
    SYMPREC_STEPS,
    BulkSymmetryWarning,
    _center_along_c,
    _check_facet_sizes,
    _generate,
    _generate_layers,
    _plane_spacing,
    _to_atoms,
    _to_structure,
    conventional_cell,
    estimate_facet_atoms,
)
from ase_surftune.properties.wulff import wulff_shape, wulff_title  # noqa: F401

logger = logging.getLogger(__name__)

#: Smallest vacuum (Å) a slab may have before it is refused as "no vacuum".
MIN_SLAB_VACUUM = 3.0


class ThinSlabWarning(UserWarning):
    """A slab has fewer atomic layers than ``SURFACE.recommended_layers`` (4)."""



def surface_normal(atoms: Atoms) -> np.ndarray:
    """Unit normal to the plane of cell vectors a and b."""
    cell = np.asarray(atoms.get_cell())
    n = np.cross(cell[0], cell[1])
    return n / np.linalg.norm(n)


def surface_area(atoms: Atoms) -> float:
    """Area (Å²) of one face of the slab: |a × b|."""
    cell = np.asarray(atoms.get_cell())
    return float(np.linalg.norm(np.cross(cell[0], cell[1])))


def slab_layers(atoms: Atoms, tol: float = 0.3) -> list[list[int]]:
    """Atom indices grouped in layers along the surface normal, bottom first (tol in Å);
    :func:`~ase_surftune.properties._base.layer_indices` along c."""
    return layer_indices(atoms, tol=tol, axis=2)


def check_slab(slab: Atoms, min_vacuum: float = MIN_SLAB_VACUUM) -> float:
    """Raise :class:`InvalidStructureError` unless ``slab`` has vacuum along c; returns it (Å)."""
    check_atoms(slab, name="slab")
    if np.linalg.norm(np.asarray(slab.get_cell())[:2], axis=1).min() < 1e-8:
        raise InvalidStructureError("slab needs in-plane cell vectors a and b")
    vac = vacuum_size(slab, axis=2)
    if vac < min_vacuum:
        raise InvalidStructureError(
            f"slab {slab.get_chemical_formula()} has no vacuum along c: gap {vac:.2f} Å "
            f"< {min_vacuum} Å (is it a bulk cell?)")
    return vac


@dataclass
class SlabEnergy(PropertyResult):
    """Surface energy of one slab: γ in J/m² and eV/Å², unrelaxed and relaxed.

    ``gamma_relaxed`` is None when the slab was not relaxed; ``relax_converged``
    False means the relaxed value comes from a relaxation that hit its step limit.
    """

    miller: Miller | None
    shift: float | None
    formula: str
    n_atoms: int
    n_layers: int
    area: float
    vacuum: float
    fixed_layers: int
    energy_unrelaxed: float
    gamma_unrelaxed: float
    gamma_unrelaxed_ev_a2: float
    energy_relaxed: float | None = None
    gamma_relaxed: float | None = None
    gamma_relaxed_ev_a2: float | None = None
    relax_converged: bool | None = None
    relax_steps: int | None = None
    slab: Atoms | None = field(default=None, metadata={"json": False})

    @property
    def gamma(self) -> float:
        """Best available γ in J/m² (relaxed if computed, else unrelaxed)."""
        return self.gamma_relaxed if self.gamma_relaxed is not None else self.gamma_unrelaxed


@single_threaded_numpy
def slab_surface_energy(slab: Atoms, calc: BaseCalculator, bulk_energy_per_atom: float, *,
                        relax_slab: bool = True, fix_bottom_layers: int = 0,
                        fmax: float = 0.05, steps: int = 500, optimizer: str = "FIRE",
                        layer_tol: float = 0.3, miller: Miller | None = None,
                        shift: float | None = None) -> SlabEnergy:
    """γ of a slab whose two faces are equivalent when unrelaxed.

    γ_unrelaxed = (E_slab − N·e_bulk) / (2A). With both sides free,
    γ_relaxed = (E_relaxed − N·e_bulk) / (2A). With the bottom ``fix_bottom_layers``
    layers fixed (bulk-like), only the top relaxes and
    γ_relaxed = (E_relaxed − N·e_bulk) / A − γ_unrelaxed.

    Args:
        slab: slab with vacuum along c (a, b in-plane); existing constraints are kept.
        bulk_energy_per_atom: e_bulk in eV/atom from the same calculator.
        fix_bottom_layers: number of bottom layers to fix (0: both faces free).
        fmax: eV/Å; steps/optimizer as in :func:`relax`.
    """
    vac = check_slab(slab)
    fix_bottom_layers = check_int("fix_bottom_layers", fix_bottom_layers)
    layers = slab_layers(slab, tol=layer_tol)
    if fix_bottom_layers >= len(layers):
        raise ConfigError(f"fix_bottom_layers={fix_bottom_layers} leaves no free layer "
                          f"in a slab of {len(layers)} layers")
    work = slab.copy()
    if fix_bottom_layers:
        idx = sorted(i for layer in layers[:fix_bottom_layers] for i in layer)
        work.set_constraint(list(work.constraints) + [FixAtoms(indices=idx)])
    area = surface_area(work)
    n = len(work)
    attach_calc(work, calc)
    e_unrel = float(work.get_potential_energy())
    g_unrel = (e_unrel - n * bulk_energy_per_atom) / (2 * area)
    res = SlabEnergy(miller=miller, shift=shift, formula=work.get_chemical_formula(),
                     n_atoms=n, n_layers=len(layers), area=area, vacuum=vac,
                     fixed_layers=fix_bottom_layers, energy_unrelaxed=e_unrel,
                     gamma_unrelaxed=g_unrel * EV_PER_A2_TO_J_PER_M2,
                     gamma_unrelaxed_ev_a2=g_unrel, slab=work)
    if relax_slab:
        r: RelaxResult = relax(work, calc, fmax=fmax, steps=steps, optimizer=optimizer,
                               copy=False)
        if fix_bottom_layers:
            g_rel = (r.energy - n * bulk_energy_per_atom) / area - g_unrel
        else:
            g_rel = (r.energy - n * bulk_energy_per_atom) / (2 * area)
        res.energy_relaxed = r.energy
        res.gamma_relaxed = g_rel * EV_PER_A2_TO_J_PER_M2
        res.gamma_relaxed_ev_a2 = g_rel
        res.relax_converged = r.converged
        res.relax_steps = r.steps
    return res


@dataclass
class SurfaceEntry(PropertyResult):
    """One (Miller index, termination): the final slab and its thickness series."""

    miller: Miller
    shift: float
    termination: int
    result: SlabEnergy
    thickness_series: list[SlabEnergy] = field(default_factory=list)
    thickness_converged: bool | None = None

    @property
    def gamma(self) -> float:
        return self.result.gamma


@dataclass
class SurfaceResult(PropertyResult):
    """Outcome of :func:`surface_energies`. γ in J/m² unless the name says eV/Å².

    ``gamma`` maps "h,k,l" to the lowest γ (J/m²) over the symmetric terminations.
    ``converged`` is False if any relaxation hit its step limit or a requested
    thickness series did not converge.
    """

    bulk_formula: str
    bulk_energy_per_atom: float
    bulk_lattice: list[list[float]]
    bulk_relaxed: bool
    bulk_relax_converged: bool | None
    entries: list[SurfaceEntry]
    gamma: dict[str, float]
    converged: bool
    wulff: dict[str, Any] | None = None
    plots: list[str] = field(default_factory=list)


def _warn_thin(res: SlabEnergy, recommended: int) -> None:
    if res.n_layers < recommended:
        warnings.warn(f"{res.formula} {res.miller}: slab has {res.n_layers} atomic layers "
                      f"(< {recommended}, the documented minimum): both surfaces interact "
                      f"and γ is biased; raise min_layers or min_slab_size",
                      ThinSlabWarning, stacklevel=3)


#: symmetry tolerances (Å) tried in turn for the bulk the slabs are cut from
def _bulk_energy_per_atom(relaxed: Atoms, relaxed_energy: float | None, conv,
                          calc: BaseCalculator, tol: float = 1e-5) -> float:
    """Bulk energy per atom (eV) on exactly the lattice the slabs are cut from.

    The conventional standard cell is the relaxed bulk symmetrised by spglib. When it has
    the same atom count and lattice parameters (within ``tol`` relative) the relaxed
    energy is that lattice's energy up to second order in a strain below ``tol``, and
    no extra calculation is made; otherwise the conventional cell is evaluated.
    """
    if relaxed_energy is not None and len(conv) == len(relaxed):
        mine = np.asarray(relaxed.cell.cellpar())
        theirs = np.asarray(conv.lattice.parameters)
        if np.all(np.abs(mine - theirs) <= tol * np.maximum(np.abs(theirs), 1.0)):
            return float(relaxed_energy) / len(relaxed)
    conv_atoms = _to_atoms(conv)
    attach_calc(conv_atoms, calc)
    return float(conv_atoms.get_potential_energy()) / len(conv_atoms)


#: Default limit on the estimated atoms of a facet's oriented cell / slab (see
#: :func:`surface_energies`). Measured here (Cu, 2 cores): pymatgen's SlabGenerator took
#: 2.3 s for (3,2,1) (36-atom oriented cell) and 15 s for (5,4,3) (100 atoms), roughly
#: quadratic; (9,8,7) (about 780 atoms) would take of the order of 15 minutes.
def _collect(work: Atoms, e_bulk: float, conv: Any, relax_bulk: bool,
             bulk_conv_ok: bool | None, entries: list[SurfaceEntry]) -> SurfaceResult:
    """The :class:`SurfaceResult`: the lowest γ of each facet over its terminations;
    converged when the bulk, every slab and every thickness series converged."""
    gamma: dict[str, float] = {}
    for e in entries:
        key = facet_key(e.miller)
        gamma[key] = min(gamma.get(key, math.inf), e.gamma)
    converged = (bulk_conv_ok is not False) and all(
        (e.result.relax_converged is not False) and (e.thickness_converged is not False)
        and all(s.relax_converged is not False for s in e.thickness_series)
        for e in entries)
    return SurfaceResult(bulk_formula=work.get_chemical_formula(), bulk_energy_per_atom=e_bulk,
                         bulk_lattice=conv.lattice.matrix.tolist(), bulk_relaxed=relax_bulk,
                         bulk_relax_converged=bulk_conv_ok, entries=entries, gamma=gamma,
                         converged=converged)


def _converge_thickness(entry: SurfaceEntry, compute: Any, conv: Any, size0: float,
                        min_vacuum_size: float, symmetric_only: bool, lll_reduce: bool,
                        thickness_tol: float, max_extra_layers: int) -> None:
    """Add one plane (d_hkl) at a time to ``entry``'s slab until γ changes by less than
    ``thickness_tol`` (J/m²), at most ``max_extra_layers`` times; fills
    ``entry.thickness_series`` and sets ``entry.result`` to the thickest slab."""
    miller, shift = entry.miller, entry.shift
    entry.thickness_series.append(entry.result)
    entry.thickness_converged = False
    d = _plane_spacing(conv, miller)
    size = size0
    for _ in range(max_extra_layers):
        size += d
        cands = _generate(conv, miller, size, min_vacuum_size, symmetric_only, lll_reduce)
        if not cands:
            break
        new = compute(min(cands, key=lambda s: abs(s.shift - shift)))
        if new.n_atoms == entry.thickness_series[-1].n_atoms:
            continue  # plane count unchanged; grow further
        entry.thickness_series.append(new)
        if abs(new.gamma - entry.thickness_series[-2].gamma) < thickness_tol:
            entry.thickness_converged = True
            break
    entry.result = entry.thickness_series[-1]
    _warn_thin(entry.result, SURFACE.recommended_layers)
    if not entry.thickness_converged:
        warnings.warn(f"{miller} γ not converged within {thickness_tol} J/m² "
                      f"after {max_extra_layers} extra planes", stacklevel=3)


@single_threaded_numpy
def surface_energies(bulk: Atoms, calc: BaseCalculator,
                     miller_indices: Sequence[Any] = tuple(SURFACE.miller_indices), *,
                     min_slab_size: float = SURFACE.min_slab_size,
                     min_vacuum_size: float = SURFACE.min_vacuum_size,
                     min_layers: int = SURFACE.min_layers,
                     relax_bulk: bool = SURFACE.relax_bulk,
                     relax_slabs: bool = SURFACE.relax_slabs,
                     fix_bottom_layers: int = SURFACE.fix_bottom_layers,
                     fmax: float = SURFACE.fmax, steps: int = SURFACE.steps,
                     optimizer: str = SURFACE.optimizer,
                     symmetric_only: bool = SURFACE.symmetric_only,
                     lll_reduce: bool = False,
                     converge_thickness: bool = SURFACE.converge_thickness,
                     thickness_tol: float = SURFACE.thickness_tol,
                     max_extra_layers: int = SURFACE.max_extra_layers,
                     wulff: bool = SURFACE.wulff, plot_dir: str | Path | None = None,
                     plot_name: str | None = None,
                     max_atoms: int | None = SURFACE.max_atoms,
                     ) -> SurfaceResult:
    """Surface energies γ (J/m² and eV/Å²) for Miller indices and all symmetric terminations.

    Steps: relax the bulk (cell + positions) with ``calc``; take the conventional
    standard cell (pymatgen); build slabs with ``SlabGenerator``; relax each slab;
    γ = (E_slab − N·E_bulk/atom)/(2A), or the asymmetric formula when the bottom
    layers are fixed (see :func:`slab_surface_energy`).

    Args:
        bulk: 3D periodic bulk (elemental metal or simple compound).
        calc: any ASE calculator.
        miller_indices: facets in any notation :func:`parse_facet` reads: (h, k, l),
            Miller–Bravais (h, k, i, l), ``"111"``, ``"10-10"``, ``"0001"``, ``"Cu111"``.
        min_slab_size: minimum slab thickness in Å (defaults: :data:`SURFACE`).
        min_layers: minimum number of atomic layers; thinner slabs are thickened plane by
            plane. Slabs below ``SURFACE.recommended_layers`` (4) warn
            (:class:`ThinSlabWarning`).
        min_vacuum_size: minimum vacuum in Å.
        relax_bulk: relax cell and positions of the bulk first.
        relax_slabs: relax slab positions (γ_relaxed); γ_unrelaxed is always given.
        fix_bottom_layers: 0 = both faces free; k > 0 fixes the k bottom layers.
        fmax: eV/Å for bulk and slabs; steps, optimizer as in :func:`relax`.
        symmetric_only: keep only terminations whose two faces are equivalent.
        converge_thickness: add one plane (d_hkl) at a time until γ changes by
            less than ``thickness_tol`` (J/m²), at most ``max_extra_layers`` times.
        wulff: compute the Wulff shape (needs ≥ 1 index) and area-weighted γ.
        plot_dir: where to save the Wulff plot (if ``wulff``).
        plot_name: file stem of the Wulff plot (``<plot_name>_wulff.png``; default the
            bulk formula).
        max_atoms: refuse a facet whose oriented cell or slab is estimated above this
            many atoms (:class:`~ase_surftune.core.errors.SizeLimitError` with the estimate;
            high-index facets such as (9,8,7) would run for many minutes); ``None``
            for no limit.

    Why this is over 80 lines: it is a public API function whose docstring
    documents every keyword argument with its unit; the code is 60 lines.
    """
    check_atoms(bulk, name="bulk", need_cell=True)
    millers = parse_facets(miller_indices)
    min_slab_size = check_positive("min_slab_size", min_slab_size)
    min_layers = check_int("min_layers", min_layers, minimum=1)
    _check_facet_sizes(bulk, millers, min_slab_size, max_atoms)
    min_vacuum_size = check_positive("min_vacuum_size", min_vacuum_size)
    if min_vacuum_size < MIN_SLAB_VACUUM:
        raise ConfigError(f"min_vacuum_size must be >= {MIN_SLAB_VACUUM} Å, got {min_vacuum_size}")
    thickness_tol = check_positive("thickness_tol", thickness_tol)
    max_extra_layers = check_int("max_extra_layers", max_extra_layers)
    fix_bottom_layers = check_int("fix_bottom_layers", fix_bottom_layers)

    bulk_conv_ok: bool | None = None
    work = bulk.copy()
    e_relaxed: float | None = None
    if relax_bulk:
        rb = relax(work, calc, fmax=fmax, steps=steps, optimizer=optimizer, relax_cell=True)
        work = rb.atoms
        bulk_conv_ok = rb.converged
        e_relaxed = rb.energy
    conv = conventional_cell(work)
    e_bulk = _bulk_energy_per_atom(work, e_relaxed, conv, calc)

    entries: list[SurfaceEntry] = []
    for miller in millers:
        slabs, size0 = _generate_layers(conv, miller, min_slab_size, min_vacuum_size,
                                        symmetric_only, lll_reduce, min_layers)
        if not slabs:
            raise InvalidStructureError(
                f"no {'symmetric ' if symmetric_only else ''}stoichiometric termination of "
                f"{conv.composition.reduced_formula} {miller}; try symmetric_only=False "
                f"with fix_bottom_layers > 0 or another Miller index")
        for term, pslab in enumerate(slabs):
            shift = float(pslab.shift)

            def compute(ps, shift=shift, miller=miller) -> SlabEnergy:
                return slab_surface_energy(
                    _center_along_c(_to_atoms(ps)), calc, e_bulk, relax_slab=relax_slabs,
                    fix_bottom_layers=fix_bottom_layers, fmax=fmax, steps=steps,
                    optimizer=optimizer, miller=miller, shift=shift)

            res = compute(pslab)
            if not converge_thickness:
                _warn_thin(res, SURFACE.recommended_layers)
            entry = SurfaceEntry(miller=miller, shift=shift, termination=term, result=res)
            if converge_thickness:
                _converge_thickness(entry, compute, conv, size0, min_vacuum_size,
                                    symmetric_only, lll_reduce, thickness_tol,
                                    max_extra_layers)
            entries.append(entry)

    result = _collect(work, e_bulk, conv, relax_bulk, bulk_conv_ok, entries)
    gamma = result.gamma
    if wulff:
        result.wulff = wulff_shape(conv.lattice, gamma, plot_dir=plot_dir,
                                   name=plot_name or work.get_chemical_formula(),
                                   title=conv.composition.reduced_formula)
        if result.wulff.get("plot"):
            result.plots.append(result.wulff["plot"])
    return result
