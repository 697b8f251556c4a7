"""Slabs for surface energies: the conventional bulk cell (symmetrised), pymatgen
SlabGenerator terminations thickened to a minimum layer count, and the size guard."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from ase import Atoms

from ase_surftune.properties._base import (
    layer_indices,
)
from ase_surftune.properties.facets import Miller
from ase_surftune.properties.settings import SURFACE

logger = logging.getLogger(__name__)


def _to_structure(atoms: Atoms):
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms)


def _to_atoms(structure) -> Atoms:
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.info = {}
    for key in list(atoms.arrays):
        if key not in ("numbers", "positions"):
            del atoms.arrays[key]
    atoms.set_constraint()
    return atoms


def _center_along_c(atoms: Atoms) -> Atoms:
    """Make the slab contiguous across the periodic c boundary and centre it in its vacuum.

    Replaces pymatgen's ``center_slab``, which runs a neighbour search per slab and
    was most of the cost of a small surface-energy run.
    """
    frac = atoms.get_scaled_positions(wrap=True)
    fs = np.sort(frac[:, 2])
    gaps = np.diff(np.concatenate([fs, [fs[0] + 1.0]]))
    i = int(np.argmax(gaps))
    bottom = fs[(i + 1) % len(fs)]  # first atom above the largest gap
    c = (frac[:, 2] - bottom) % 1.0
    extent = c.max()
    frac[:, 2] = c + (1.0 - extent) / 2.0
    atoms.set_scaled_positions(frac)
    return atoms


def _generate(conv, miller: Miller, min_slab_size: float, min_vacuum_size: float,
              symmetric_only: bool, lll_reduce: bool) -> list:
    """Stoichiometric (and, if asked, symmetric) terminations from pymatgen's SlabGenerator.

    The c vector is left as SlabGenerator's shortest lattice vector out of the plane
    (not searched to be normal): the slab then has the fewest planes that reach
    ``min_slab_size``, and every geometric quantity here projects on the plane normal.
    """
    from pymatgen.core.surface import SlabGenerator

    gen = SlabGenerator(conv, miller, min_slab_size, min_vacuum_size, lll_reduce=lll_reduce,
                        center_slab=False, primitive=True, reorient_lattice=True)
    slabs = gen.get_slabs()
    if symmetric_only:
        slabs = [s for s in slabs if s.is_symmetric()]
    bulk_comp = conv.composition.reduced_composition
    stoich = [s for s in slabs if s.composition.reduced_composition == bulk_comp]
    if len(stoich) < len(slabs):
        logger.warning("%s: skipped %d non-stoichiometric termination(s)", miller,
                       len(slabs) - len(stoich))
    return stoich


def _generate_layers(conv, miller: Miller, min_slab_size: float, min_vacuum_size: float,
                     symmetric_only: bool, lll_reduce: bool, min_layers: int,
                     layer_tol: float = 0.3, max_tries: int = 6) -> tuple[list, float]:
    """:func:`_generate` thickened until every slab has ``min_layers`` atomic layers.

    Returns the slabs and the thickness (Å) asked of ``SlabGenerator`` for them.
    """
    size = min_slab_size
    slabs = _generate(conv, miller, size, min_vacuum_size, symmetric_only, lll_reduce)
    for _ in range(max_tries):
        if not slabs or min_layers <= 1:
            break
        counts = [len(layer_indices(_to_atoms(s), tol=layer_tol)) for s in slabs]
        if min(counts) >= min_layers:
            break
        # grow by the missing layers at the measured layer spacing (at least one plane)
        spacing = min(_plane_spacing(conv, miller), size / max(min(counts), 1))
        size += max(min_layers - min(counts), 1) * max(spacing, 0.5)
        slabs = _generate(conv, miller, size, min_vacuum_size, symmetric_only, lll_reduce)
    return slabs, size


SYMPREC_STEPS = (0.01, 0.1)


class BulkSymmetryWarning(UserWarning):
    """The relaxed bulk is only symmetric at a looser tolerance; its symmetrised cell is used."""


def conventional_cell(bulk: Atoms):
    """The conventional standard cell (pymatgen ``Structure``) that Miller indices refer to.

    spglib finds the space group at ``symprec`` 0.01 Å first. A bulk relaxed to a loose
    ``fmax`` from a rattled start can miss its symmetry at 0.01 Å; the "conventional" cell
    is then a low-symmetry (e.g. triclinic) cell and "111" silently names another plane
    (EMT Cu: γ(111) 1.29 instead of 1.04 J/m²). When 0.1 Å finds a higher-symmetry group,
    that symmetrised cell is used and a :class:`BulkSymmetryWarning` says so (the bulk
    energy is then evaluated on it, so slabs and bulk share one lattice).
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = _to_structure(bulk)
    best = None
    for symprec in SYMPREC_STEPS:
        sga = SpacegroupAnalyzer(structure, symprec=symprec)
        number = sga.get_space_group_number()
        if best is None or number > best[0]:
            best = (number, symprec, sga)
    number, symprec, sga = best
    if symprec != SYMPREC_STEPS[0]:
        first = SpacegroupAnalyzer(structure, symprec=SYMPREC_STEPS[0]).get_space_group_symbol()
        warnings.warn(
            f"{bulk.get_chemical_formula()}: the bulk has space group {first} at symprec "
            f"{SYMPREC_STEPS[0]} Å but {sga.get_space_group_symbol()} at {symprec} Å (a loose "
            f"relaxation of a distorted cell?); Miller indices refer to the symmetrised "
            f"{sga.get_space_group_symbol()} conventional cell",
            BulkSymmetryWarning, stacklevel=3)
    return sga.get_conventional_standard_structure()


MAX_SLAB_CELL_ATOMS = SURFACE.max_atoms


def estimate_facet_atoms(conv, miller: Miller, min_slab_size: float) -> int:
    """Rough upper estimate of the atoms of the oriented unit cell / slab of ``miller``.

    ``N_conv·(L/d)²`` (oriented cell; L = V^(1/3) of the conventional cell, d = d_hkl)
    or ``N_conv·t/d`` (slab of thickness t), whichever is larger.
    """
    d = _plane_spacing(conv, miller)
    n, L = len(conv), conv.lattice.volume ** (1 / 3)
    return int(round(max(n * (L / d) ** 2, n * min_slab_size / d)))


def _check_facet_sizes(bulk: Atoms, millers: list[Miller], min_slab_size: float,
                       max_atoms: int | None) -> None:
    if max_atoms is None:
        return
    from ase_surftune.core.errors import SizeLimitError

    with warnings.catch_warnings():  # said once, by surface_energies
        warnings.simplefilter("ignore", BulkSymmetryWarning)
        conv = conventional_cell(bulk)
    for m in millers:
        n = estimate_facet_atoms(conv, m, min_slab_size)
        if n > max_atoms:
            t = 15.0 * (n / 100) ** 2
            raise SizeLimitError(
                f"facet {m}: its slab/oriented cell has about {n} atoms (limit "
                f"max_atoms={max_atoms}); building its terminations alone takes about "
                f"{t / 60:.0f} min, each relaxation far longer. Use a lower-index facet, "
                f"or raise max_atoms if this is intended")


def _plane_spacing(conv, miller: Miller) -> float:
    return float(conv.lattice.d_hkl(miller))


