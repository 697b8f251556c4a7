"""Nudged-elastic-band migration barriers with any ASE calculator.

Why one module of ~470 lines: the band (``neb_barrier``) and the two migrations built
on it (vacancy hop, adatom hop) share the endpoint checks and unwrapping, and
``ase_surftune.properties.neb.<name>`` has been the public import path since v1.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from ase_surftune.core.errors import ConfigError, InvalidStructureError
from ase_surftune.core.threads import single_threaded_numpy
from ase_surftune.properties._base import (
    MAX_ATOMS,
    CalculatorLike,
    PropertyResult,
    attach_calc,
    check_atoms,
    check_int,
    check_positive,
    check_size,
    is_calculator,
    resolve_calc,
)
from ase_surftune.properties.relax import NotConvergedWarning, get_optimizer, relax
from ase_surftune.properties.settings import NEB

logger = logging.getLogger(__name__)

NEB_METHODS = ("improvedtangent", "aseneb", "eb", "spline", "string")


@dataclass
class NEBResult(PropertyResult):
    """Outcome of :func:`neb_barrier`. Energies in eV, reaction coordinate in Å.

    ``energies`` are image energies relative to the (relaxed) initial state;
    ``barrier_forward`` = max(E) − E_initial, ``barrier_reverse`` = max(E) − E_final.
    ``converged`` is False if the band or an end-point relaxation hit its step limit.
    """

    barrier_forward: float
    barrier_reverse: float
    reaction_energy: float
    barrier_fit: float
    reaction_coordinate: list[float]
    energies: list[float]
    fit_coordinate: list[float]
    fit_energies: list[float]
    energy_initial: float
    energy_final: float
    n_images: int
    climb: bool
    method: str
    interpolation: str
    converged: bool
    steps: int
    max_force: float
    endpoints_converged: bool | None = None
    images: list[Atoms] = field(default_factory=list, metadata={"json": False})
    plot: str | None = None
    info: dict = field(default_factory=dict)


#: End points whose atoms all move less than this (Å) count as identical.
MIN_ENDPOINT_DISPLACEMENT = 1e-3


def check_endpoints(initial: Atoms, final: Atoms) -> None:
    """Raise :class:`InvalidStructureError` unless both end points describe the same atoms."""
    check_atoms(initial, name="initial")
    check_atoms(final, name="final")
    fi, ff = initial.get_chemical_formula(), final.get_chemical_formula()
    if fi != ff:
        raise InvalidStructureError(
            f"NEB end points differ in composition: initial {fi} vs final {ff}")
    si, sf = initial.get_chemical_symbols(), final.get_chemical_symbols()
    if si != sf:
        bad = next(i for i, (a, b) in enumerate(zip(si, sf)) if a != b)
        raise InvalidStructureError(
            f"NEB end points have a different atom order: index {bad} is {si[bad]} in "
            f"initial but {sf[bad]} in final")
    if not np.array_equal(initial.pbc, final.pbc):
        raise InvalidStructureError(f"NEB end points differ in pbc: {initial.pbc.tolist()} "
                                    f"vs {final.pbc.tolist()}")
    if not np.allclose(np.asarray(initial.cell), np.asarray(final.cell), atol=1e-3):
        raise InvalidStructureError("NEB end points have different cells (fixed-cell NEB)")



def check_distinct_endpoints(initial: Atoms, final: Atoms, when: str = "") -> None:
    """Raise :class:`InvalidStructureError` if no atom moves between the end points."""
    from ase.geometry import find_mic

    d = initial.get_positions() - final.get_positions()
    if initial.pbc.any():
        d = find_mic(d, initial.cell, initial.pbc)[0]
    if float(np.abs(d).max()) < MIN_ENDPOINT_DISPLACEMENT:
        raise InvalidStructureError(
            f"NEB end points are identical{when} (no atom moves more than "
            f"{MIN_ENDPOINT_DISPLACEMENT} Å): there is no path to interpolate; give a final "
            f"state in which the migrating atom has moved")


def _freeze(atoms: Atoms, positions: np.ndarray | None = None) -> Atoms:
    """Replace the calculator by a single point with the current energy and forces.

    ``positions``: move the atoms there first (only a lattice translation of atoms, as
    from :func:`unwrap_to`, which leaves energy and forces unchanged).
    """
    e = atoms.get_potential_energy()
    f = atoms.get_forces(apply_constraint=False)
    if positions is not None:
        atoms.positions = positions  # direct: a lattice translation, no constraint applies
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
    return atoms


def unwrap_to(atoms: Atoms, reference: Atoms) -> np.ndarray:
    """Positions of ``atoms`` moved by lattice vectors to the minimum image nearest
    ``reference`` (Å): consecutive NEB images then differ by small displacements only,
    never by a jump across the cell (which ASE's ``fit_raw`` tangents do not undo)."""
    from ase.geometry import find_mic

    ref = reference.get_positions()
    if not reference.pbc.any():
        return atoms.get_positions()
    d = find_mic(atoms.get_positions() - ref, reference.cell, reference.pbc)[0]
    return ref + d


@single_threaded_numpy
def neb_barrier(initial: Atoms, final: Atoms, calc: CalculatorLike, *,
                n_images: int = NEB.n_images,
                interpolation: str | Sequence[Atoms] = NEB.interpolation,
                climb: bool = NEB.climb, method: str = NEB.method, k: float = NEB.k,
                fmax: float = NEB.fmax, steps: int = NEB.steps,
                optimizer: str = NEB.optimizer, relax_endpoints: bool = NEB.relax_endpoints,
                endpoint_fmax: float | None = None, mic: bool = True,
                trajectory: str | Path | None = None, plot: str | Path | None = None,
                ) -> NEBResult:
    """Minimum-energy path and migration barrier (eV) between two states.

    Args:
        initial, final: end points with the same atoms in the same order and cell.
        calc: an ASE calculator shared by all images (safe for serial NEB: every
            image triggers its own evaluation), or a zero-argument factory giving a
            fresh calculator per image.
        n_images: number of intermediate images.
        interpolation: ``"idpp"`` (default), ``"linear"``, or a user band given as
            the list of intermediate images (``n_images`` is then ignored).
        climb: climbing image (default on).
        method: NEB tangent; ``"improvedtangent"`` by default (ASE's default
            ``"aseneb"`` gives wrong barriers, see matcalc#134).
        k: spring constant in eV/Å².
        fmax: band convergence in eV/Å; steps and optimizer as in :func:`relax`.
        relax_endpoints: relax both end points first (positions; constraints kept).
        endpoint_fmax: eV/Å for the end points (default ``fmax``).
        mic: minimum-image convention when interpolating.
        trajectory: optional ``.traj`` for the band optimisation.
        plot: optional PNG path for the minimum-energy path.

    Why this is over 80 lines: it is a public API function whose docstring
    documents every keyword argument with its unit; the code is 63 lines.
    """
    from ase.mep import NEB

    check_endpoints(initial, final)
    fmax = check_positive("fmax", fmax)
    k = check_positive("k", k)
    steps = check_int("steps", steps)
    if method not in NEB_METHODS:
        raise ConfigError(f"Unknown NEB method {method!r}; choose from {NEB_METHODS}")
    opt_cls = get_optimizer(optimizer)
    factory: Callable[[], BaseCalculator] | None = None
    if not is_calculator(calc):
        if not callable(calc):
            raise ConfigError(f"calc must be a calculator or a factory, got {type(calc).__name__}")
        factory = calc  # type: ignore[assignment]
    if isinstance(interpolation, str) and interpolation not in ("idpp", "linear"):
        raise ConfigError(f"interpolation must be 'idpp', 'linear' or a list of images, "
                          f"got {interpolation!r}")
    check_distinct_endpoints(initial, final)
    shared = None if factory else calc

    def new_calc() -> BaseCalculator:
        return resolve_calc(factory) if factory else shared  # type: ignore[return-value]

    ep_fmax = fmax if endpoint_fmax is None else check_positive("endpoint_fmax", endpoint_fmax)
    ends = []
    ends_ok: bool | None = None
    for atoms in (initial, final):
        a = atoms.copy()
        if relax_endpoints:
            r = relax(a, new_calc(), fmax=ep_fmax, steps=steps, optimizer=optimizer, copy=False)
            ends_ok = r.converged if ends_ok is None else (ends_ok and r.converged)
        else:
            attach_calc(a, new_calc())
        ends.append(_freeze(a))  # now: a shared calculator moves on to the next structure
    a0, a1 = ends
    check_distinct_endpoints(a0, a1, " after relaxing them (both relaxed to one minimum)")

    a1, middle, n_images, interp_name = _initial_band(a0, a1, interpolation, n_images, mic)
    images = [a0] + middle + [a1]
    neb = NEB(images, k=k, climb=climb, method=method, allow_shared_calculator=factory is None)
    if interp_name != "user":
        neb.interpolate(method=interp_name, mic=mic, apply_constraint=False)
    for m in middle:
        attach_calc(m, new_calc()) if factory else setattr(m, "calc", shared)
    opt = opt_cls(neb, logfile=None, trajectory=str(trajectory) if trajectory else None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    try:
        resid = float(neb.get_residual())
    except ValueError:  # ASE keeps no residual for a lone climbing image
        resid = float(np.sqrt((neb.get_forces() ** 2).sum(axis=1)).max())
    if not converged:
        warnings.warn(f"NEB did not converge in {steps} steps (residual {resid:.3g} eV/Å > "
                      f"{fmax})", NotConvergedWarning, stacklevel=2)
    result = _band_result(neb, images, converged, resid, opt.nsteps, ends_ok, n_images,
                          climb, method, interp_name)
    if plot is not None:
        from ase_surftune.properties._plot import plot_mep

        result.plot = plot_mep(plot, result.reaction_coordinate, result.energies,
                               result.fit_coordinate, result.fit_energies,
                               title=f"{a0.get_chemical_formula()}: "
                                     f"Ea = {result.barrier_forward:.3f} eV")
    return result


def _initial_band(a0: Atoms, a1: Atoms, interpolation: Any, n_images: int, mic: bool
                  ) -> tuple[Atoms, list[Atoms], int, str]:
    """``(final, intermediate images, n_images, interpolation name)`` of the start band:
    copies of the initial state to interpolate (idpp/linear), or the user's images, each
    the minimum image nearest its predecessor so that the band stays unwrapped."""
    if isinstance(interpolation, str):
        if interpolation not in ("idpp", "linear"):
            raise ConfigError(f"interpolation must be 'idpp', 'linear' or a list of images, "
                              f"got {interpolation!r}")
        n_images = check_int("n_images", n_images, minimum=1)
        interp_name = interpolation
        middle: list[Atoms] = []
    else:
        middle = [m.copy() for m in interpolation]
        if not middle:
            raise ConfigError("user band has no intermediate images")
        for i, m in enumerate(middle):
            try:
                check_endpoints(a0, m)
            except InvalidStructureError as exc:
                raise InvalidStructureError(f"user band image {i + 1}: {exc}") from None
        n_images = len(middle)
        interp_name = "user"
    # keep the band unwrapped: each image is the minimum image nearest its predecessor
    prev = a0
    for m in middle:
        if mic:
            m.positions = unwrap_to(m, prev)
        prev = m
    if mic:
        a1 = _freeze(a1, unwrap_to(a1, prev))
    if interp_name != "user":
        middle = [a0.copy() for _ in range(n_images)]
    for m in middle:
        m.calc = None
    return a1, middle, n_images, interp_name


def _band_result(neb: Any, images: list[Atoms], converged: bool, resid: float, nsteps: int,
                 ends_ok: bool | None, n_images: int, climb: bool, method: str,
                 interp_name: str) -> NEBResult:
    """The :class:`NEBResult` of an optimised band: energies relative to the initial state
    (eV), ASE's force-based spline fit, and the images frozen as single points."""
    from ase.utils.forcecurve import fit_raw

    a0, a1, middle = images[0], images[-1], images[1:-1]
    energies = np.array(neb.energies, dtype=float)
    # end points are frozen single points; ASE leaves them unset for "aseneb"
    energies[0] = a0.get_potential_energy()
    energies[-1] = a1.get_potential_energy()
    forces = np.array(neb.real_forces)
    forces[0] = a0.get_forces(apply_constraint=False)
    forces[-1] = a1.get_forces(apply_constraint=False)
    fit = fit_raw(energies, forces, [im.get_positions() for im in images], a0.cell, a0.pbc)
    e_rel = energies - energies[0]
    emax = float(e_rel.max())
    # freeze intermediate images so callers can inspect them without re-evaluation
    for i, im in enumerate(middle, start=1):
        im.calc = SinglePointCalculator(im, energy=float(energies[i]), forces=forces[i])
    result = NEBResult(
        barrier_forward=emax, barrier_reverse=emax - float(e_rel[-1]),
        reaction_energy=float(e_rel[-1]), barrier_fit=float(np.max(fit.fit_energies)),
        reaction_coordinate=[float(x) for x in fit.path],
        energies=[float(x) for x in e_rel],
        fit_coordinate=[float(x) for x in fit.fit_path],
        fit_energies=[float(x) for x in fit.fit_energies],
        energy_initial=float(energies[0]), energy_final=float(energies[-1]),
        n_images=n_images, climb=climb, method=method, interpolation=interp_name,
        converged=converged and ends_ok is not False, steps=int(nsteps), max_force=resid,
        endpoints_converged=ends_ok, images=images)
    return result


def _nearest_neighbour(atoms: Atoms, index: int, tol: float = 1e-3) -> int:
    """The lowest-index atom within ``tol`` (Å) of the shortest distance to ``index``.

    A crystal has several nearest neighbours at the same distance; ``argmin`` would pick
    among them by rounding noise."""
    d = atoms.get_distances(index, range(len(atoms)), mic=True)
    d[index] = np.inf
    return int(np.flatnonzero(d <= d.min() + tol)[0])


def _supercell_matrix(supercell) -> np.ndarray:
    from ase_surftune.properties.phonons import parse_supercell

    return parse_supercell(supercell)


@single_threaded_numpy
def vacancy_migration(bulk: Atoms, calc: CalculatorLike, *, supercell=(2, 2, 2),
                      vacancy_index: int = 0, neighbour_index: int | None = None,
                      relax_bulk: bool = True, max_atoms: int | None = MAX_ATOMS,
                      **neb_kwargs) -> NEBResult:
    """Barrier (eV) of a nearest-neighbour vacancy hop in a bulk supercell.

    The supercell of ``bulk`` (3 ints or a 3×3 integer matrix) loses atom
    ``vacancy_index``; its nearest neighbour (or ``neighbour_index``, indices in
    the supercell) hops into the vacant site by its minimum-image displacement, so the
    band is never wrapped across the cell. The neighbour is chosen on the *given* bulk's
    supercell (ties: the lowest index), so every calculator measures the same hop. Extra
    keywords go to :func:`neb_barrier`.
    ``relax_bulk`` (default on) relaxes the perfect cell (cell + positions) first, so the
    barrier is that of the model's own lattice; ``False`` keeps the given cell. ``max_atoms``
    refuses larger supercells (:class:`~ase_surftune.core.errors.SizeLimitError` with an
    estimate; ``None``: no limit).
    """
    from ase.build import make_supercell

    check_atoms(bulk, name="bulk", need_cell=True)
    P = _supercell_matrix(supercell)
    check_size(len(bulk) * round(abs(np.linalg.det(P))), f"vacancy supercell {P.tolist()}",
               max_atoms, force_calls=200)
    # the hopping atom is chosen on the given geometry, never on a calculator's relaxed
    # one: in a non-cubic supercell such as 2×2×1 the nearest-neighbour hops are not
    # equivalent, and the relaxed cell's rounding noise chose a different hop for each
    # calculator (Cu: EMT an out-of-plane hop, a fine-tuned CHGNet an in-plane one)
    given = make_supercell(bulk, P)
    prim = bulk.copy()
    if relax_bulk:
        prim = relax(prim, resolve_calc(calc), relax_cell=True,
                     fmax=neb_kwargs.get("fmax", 0.05)).atoms
    sc = make_supercell(prim, P)
    sc.calc = None
    n = len(sc)
    vacancy_index = check_int("vacancy_index", vacancy_index)
    if vacancy_index >= n:
        raise ConfigError(f"vacancy_index {vacancy_index} out of range for {n} atoms")
    j = _nearest_neighbour(given, vacancy_index) if neighbour_index is None else \
        check_int("neighbour_index", neighbour_index)
    if j >= n or j == vacancy_index:
        raise ConfigError(f"neighbour_index {neighbour_index} invalid for {n} atoms")
    hop_vec = sc.get_distance(j, vacancy_index, mic=True, vector=True)
    hop = float(np.linalg.norm(hop_vec))
    sc.wrap()
    initial = sc.copy()
    del initial[vacancy_index]
    jj = j - 1 if j > vacancy_index else j
    final = initial.copy()
    final.positions[jj] += hop_vec  # minimum image: no jump across the cell
    res = neb_barrier(initial, final, calc, **neb_kwargs)
    res.info.update({"system": "vacancy", "supercell": P.tolist(), "n_atoms": len(initial),
                     "hopping_atom": jj, "hop_distance": hop})
    return res


def _shortest_surface_vector(slab: Atoms, top: Sequence[int]) -> np.ndarray:
    """Shortest in-plane translation between top-layer atoms (Å), with the a, b vectors."""
    cell = np.asarray(slab.get_cell())
    cands = [cell[0], cell[1]]
    p = slab.positions
    from ase.geometry import find_mic

    for i in top[1:]:
        v, _ = find_mic(p[i] - p[top[0]], slab.cell, pbc=[True, True, False])
        cands.append(v)
    cands = [np.array([c[0], c[1], 0.0]) for c in cands if np.linalg.norm(c[:2]) > 0.5]
    return min(cands, key=np.linalg.norm)


@single_threaded_numpy
def adatom_hop(slab: Atoms, adsorbate: str, calc: CalculatorLike, *,
               site: str | tuple[float, float] = "hollow", height: float = 1.7,
               hop: tuple[float, float] | None = None, vacuum: float | None = None,
               fix_bottom_layers: int | None = None, layer_tol: float = 0.3,
               **neb_kwargs) -> NEBResult:
    """Barrier (eV) of an adatom hopping between equivalent sites on a surface.

    Args:
        slab: clean slab (surface normal along z); existing constraints are kept.
        adsorbate: chemical symbol of the adatom.
        site: an ``ase.build`` site name (needs a slab from ``ase.build.fcc100`` etc.)
            or an (x, y) position in Å.
        height: adatom height above the top layer, Å.
        hop: in-plane hop vector (Å); default: the shortest surface lattice
            translation between top-layer atoms (hollow → neighbouring hollow).
        vacuum: if given, re-centre along z with this vacuum (Å) on each side.
        fix_bottom_layers: fix this many bottom layers (None: keep constraints as given).
        neb_kwargs: passed to :func:`neb_barrier`.
    """
    from ase.build import add_adsorbate

    from ase_surftune.properties.surface import check_slab

    check_atoms(slab, name="slab")
    height = check_positive("height", height)
    initial = slab.copy()
    initial.calc = None
    if fix_bottom_layers is not None:
        from ase_surftune.properties._base import layer_indices

        layers = layer_indices(initial, tol=layer_tol)
        nfix = check_int("fix_bottom_layers", fix_bottom_layers)
        if nfix >= len(layers):
            raise ConfigError(f"fix_bottom_layers={nfix} leaves no free layer of {len(layers)}")
        idx = sorted(i for layer in layers[:nfix] for i in layer)
        initial.set_constraint(list(initial.constraints) + [FixAtoms(indices=idx)])
    from ase_surftune.properties._base import layer_indices

    top = layer_indices(initial, tol=layer_tol)[-1]
    if isinstance(site, str):
        if "adsorbate_info" not in initial.info:
            raise ConfigError(f"site {site!r} by name needs a slab from ase.build (fcc100, "
                              f"fcc111...); give site as an (x, y) position in Å instead")
    add_adsorbate(initial, adsorbate, height, position=site)
    if vacuum is not None:
        initial.center(axis=2, vacuum=check_positive("vacuum", vacuum))
    check_slab(initial)
    vec = np.array([*hop, 0.0]) if hop is not None else _shortest_surface_vector(initial, top)
    final = initial.copy()
    final.positions[-1] += vec
    res = neb_barrier(initial, final, calc, **neb_kwargs)
    res.info.update({"system": "adatom", "adsorbate": adsorbate,
                     "hop_vector": vec.tolist(), "hop_distance": float(np.linalg.norm(vec))})
    return res


def migration_barrier(structures: Sequence[Atoms], calc: CalculatorLike, *,
                      vacancy: bool = False, supercell: Any = None,
                      vacancy_index: int | None = None, relax_bulk: bool | None = None,
                      plot: str | Path | None = None, **neb_kwargs: Any) -> NEBResult:
    """The barrier (eV) of what ``structures`` describe, as ``surftune neb`` reads them.

    * one bulk with ``vacancy=True``: a nearest-neighbour vacancy hop
      (:func:`vacancy_migration`; ``supercell``, ``vacancy_index``, ``relax_bulk``);
    * two structures: initial and final states (:func:`neb_barrier`);
    * three or more: a band, its first and last frames the end points and the frames
      between them the initial images.

    Raises:
        ConfigError: a combination that fits none of these.
    """
    n = len(structures)
    if vacancy:
        if n != 1:
            raise ConfigError(f"a vacancy hop takes one bulk structure, got {n}")
        extra = {k: v for k, v in (("supercell", supercell), ("vacancy_index", vacancy_index),
                                   ("relax_bulk", relax_bulk)) if v is not None}
        return vacancy_migration(structures[0], calc, plot=plot, **extra, **neb_kwargs)
    if relax_bulk is not None:  # a YAML shared with vacancy runs may keep it
        raise ConfigError("relax_bulk (--relax-bulk/--no-relax-bulk) applies to vacancy hops only")
    if n == 2:
        return neb_barrier(structures[0], structures[1], calc, plot=plot, **neb_kwargs)
    if n >= 3:
        neb_kwargs["interpolation"] = list(structures[1:-1])
        return neb_barrier(structures[0], structures[-1], calc, plot=plot, **neb_kwargs)
    raise ConfigError(f"a barrier needs 2 end points or a band of >= 3 frames, got {n} "
                      f"structure(s); give initial and final files instead")
