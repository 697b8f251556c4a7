"""Replay data for multi-head fine-tuning (MHFT).

The foundation head of a multi-head model is anchored to *replay* data while the new
head learns the target data. Two sources:

* a user file (e.g. an MPtrj subset as extxyz) with its own labels, or relabelled by
  the frozen original model (``relabel=True``);
* **pseudo-labelled new structures** (``pseudolabel_new``, on by default): the training
  structures themselves (slabs, defects — the kind of structure the foundation head has
  to keep predicting as before while the shared trunk moves), with their labels replaced
  by the frozen original model's (:func:`pseudolabel_new_structures`);
* **pseudo-label replay** (the offline default): bulk configurations of the elements in
  the target data — ground-state crystals from :func:`ase.build.bulk` (plus ordered
  B2 alloys of element pairs), isotropically and shear strained and rattled — labelled
  by the *frozen original model*. No download is needed and the foundation head is
  anchored to its own potential-energy surface.

From a candidate pool (``pool_factor`` × ``n``) ``n`` structures are selected at
random or by farthest-point sampling in a cheap descriptor space (composition, volume
per atom and a smeared pair-distance histogram).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers
from pydantic import Field

from ase_surftune.core.config import StrictModel
from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.errors import ConfigError, UnsupportedElementError

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.models.backends.base import ModelAdapter

__all__ = ["ReplayOptions", "ground_state_bulk", "bulk_candidates", "eos_ladder",
           "select_configs",
           "structure_descriptor", "pseudo_label", "build_replay", "load_replay_file",
           "pseudolabel_new_structures"]

log = logging.getLogger(__name__)


class ReplayOptions(StrictModel):
    """How replay data are obtained (``strategy_options.replay`` of ``multihead``)."""

    file: str | None = None
    relabel: bool = False
    n: int = Field(32, ge=1)
    selection: Literal["random", "fps"] = "fps"
    pool_factor: int = Field(3, ge=1)
    strain: float = Field(0.04, ge=0, lt=0.5)
    shear: float = Field(0.02, ge=0, lt=0.5)
    rattle: float = Field(0.05, ge=0, lt=1.0)
    min_atoms: int = Field(4, ge=1)
    max_atoms: int = Field(32, ge=1)
    include_alloys: bool = True
    seed: int | None = None
    batch_size: int | None = Field(None, ge=1)
    #: also replay the *new* kinds of structure (the training slabs, defects...),
    #: pseudo-labelled by the frozen original model (mace's ``--pseudolabel_replay``)
    pseudolabel_new: bool = True
    #: at most this many of them (farthest-point/random selection); None: ``n``
    n_new: int | None = Field(None, ge=1)
    #: an EOS ladder added to the bulk replay: per bulk crystal, this many unrattled,
    #: isotropically strained cells with volumes spread evenly over ±``eos_range``
    #: (fraction of the volume), so the replayed energies and stresses pin E(V) and its
    #: curvature (B) over the window the forgetting report measures; 0 (default) turns it
    #: off: with stress replay it did not help (bench_multihead.py --forgetting: ΔB −0.0
    #: vs +0.2 % at lr 3e-4, −5.5 vs −5.0 % at lr 1e-3, one seed), and without it neither
    eos_points: int = Field(0, ge=0)
    eos_range: float = Field(0.06, gt=0, lt=0.5)


# --------------------------------------------------------------------------- structures


#: ASE reference-state symmetries of elements that have no meaningful bulk crystal
MOLECULAR_STATES = ("diatom", "atom")


def has_bulk_state(symbol: str) -> bool:
    """False for elements whose standard state is molecular or atomic (H, N, O, F, Cl,
    noble gases...): a "bulk crystal" of them at bonding distances is unphysical and, with
    a 5–6 Å cutoff, makes graphs with thousands of neighbours per atom."""
    from ase.data import reference_states

    state = reference_states[atomic_numbers[symbol]]
    return state is not None and state.get("symmetry") not in MOLECULAR_STATES


def bulk_elements(elements: Sequence[str]) -> list[str]:
    """The elements of ``elements`` that have a bulk crystal (see :func:`has_bulk_state`)."""
    keep = [s for s in elements if has_bulk_state(s)]
    skipped = sorted(set(elements) - set(keep))
    if skipped:
        log.info("no bulk crystal for %s (molecular/atomic standard state): left out of the "
                 "bulk replay/forgetting sets", skipped)
    return keep


def ground_state_bulk(symbol: str) -> Atoms:
    """The ground-state crystal of an element from ASE's reference states.

    Elements whose reference structure needs a basis ASE does not build (Ga, Te...) get
    an fcc cell at 2.2 × the covalent radius nearest-neighbour distance.

    Raises:
        ConfigError: the element has no bulk crystal (molecular or atomic standard state).
    """
    if not has_bulk_state(symbol):
        raise ConfigError(f"{symbol} has no bulk crystal (molecular/atomic standard state); "
                          f"it cannot be used for bulk replay, EOS or bulk sampling")
    try:
        return bulk(symbol)
    except (ValueError, KeyError, RuntimeError, TypeError, AssertionError):
        from ase.data import covalent_radii

        z = atomic_numbers[symbol]
        a = 2 * covalent_radii[z] * np.sqrt(2) * 1.1
        return bulk(symbol, "fcc", a=a)


def _b2_alloy(a_sym: str, b_sym: str) -> Atoms:
    """Ordered CsCl (B2) alloy of two elements at their mean atomic volume."""
    vols = []
    for s in (a_sym, b_sym):
        g = ground_state_bulk(s)
        vols.append(g.get_volume() / len(g))
    a = (2 * float(np.mean(vols))) ** (1 / 3)
    return Atoms([a_sym, b_sym], scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]],
                 cell=np.eye(3) * a, pbc=True)


def _supercell(atoms: Atoms, min_atoms: int, max_atoms: int) -> Atoms:
    reps = [1, 1, 1]
    while len(atoms) * int(np.prod(reps)) < min_atoms:
        lengths = atoms.cell.lengths() * reps
        reps[int(np.argmin(lengths))] += 1
        if len(atoms) * int(np.prod(reps)) > max_atoms:
            reps[int(np.argmin(lengths))] -= 1
            break
    return atoms.repeat(reps)


def bulk_candidates(elements: Sequence[str], n: int, *, strain: float = 0.04,
                    shear: float = 0.02, rattle: float = 0.05, min_atoms: int = 4,
                    max_atoms: int = 32, include_alloys: bool = True,
                    seed: int = 0) -> list[Atoms]:
    """``n`` strained and rattled bulk structures of ``elements`` (round-robin over the
    elemental ground states and, with several elements, their B2 alloys)."""
    requested = sorted(set(elements), key=lambda s: atomic_numbers[s])
    elements = bulk_elements(requested)
    if not elements:
        raise ConfigError(f"replay: none of {requested} has a bulk crystal (molecular or "
                          f"atomic standard states); pass a replay file instead")
    bases = [(s, _supercell(ground_state_bulk(s), min_atoms, max_atoms)) for s in elements]
    if include_alloys:
        for i, a in enumerate(elements):
            for b in elements[i + 1:]:
                bases.append((f"{a}{b}-B2", _supercell(_b2_alloy(a, b), min_atoms, max_atoms)))
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        label, base = bases[k % len(bases)]
        at = base.copy()
        eps = np.eye(3) * (1 + rng.uniform(-strain, strain))
        if shear > 0:
            s = rng.uniform(-shear, shear, size=(3, 3))
            eps = eps + (s + s.T) / 2 - np.diag(np.diag(s))
        at.set_cell(at.cell.array @ eps, scale_atoms=True)
        if rattle > 0:
            at.positions += rng.normal(scale=rattle, size=at.positions.shape)
        at.info["config_type"] = f"replay/{label}"
        out.append(at)
    return out


# --------------------------------------------------------------------------- selection


def eos_ladder(elements: Sequence[str], points: int, volume_range: float = 0.06,
               min_atoms: int = 4, max_atoms: int = 32) -> list[Atoms]:
    """Unrattled, isotropically strained ground-state crystals of ``elements``: ``points``
    volumes per element spread evenly over V0·(1 ± ``volume_range``) (V0: ASE's reference
    lattice, not the model's minimum; the window only has to bracket it)."""
    out = []
    for s in bulk_elements(sorted(set(elements), key=lambda e: atomic_numbers[e])):
        base = _supercell(ground_state_bulk(s), min_atoms, max_atoms)
        for f in np.linspace(1 - volume_range, 1 + volume_range, points):
            at = base.copy()
            at.set_cell(at.cell.array * f ** (1 / 3), scale_atoms=True)
            at.info["config_type"] = f"replay/{s}-eos"
            out.append(at)
    return out


def structure_descriptor(atoms: Atoms, elements: Sequence[str], r_max: float = 6.0,
                         n_bins: int = 24) -> np.ndarray:
    """Composition, volume per atom and a Gaussian-smeared pair-distance histogram
    (per atom): a cheap, model-independent descriptor for farthest-point sampling."""
    from ase.neighborlist import neighbor_list

    comp = np.array([np.mean(atoms.numbers == atomic_numbers[s]) for s in elements])
    vpa = atoms.get_volume() / len(atoms) if atoms.cell.rank == 3 else 0.0
    d = neighbor_list("d", atoms, r_max)
    centers = np.linspace(1.0, r_max, n_bins)
    width = (r_max - 1.0) / n_bins
    hist = np.exp(-((d[:, None] - centers[None, :]) / width) ** 2).sum(0) / len(atoms)
    return np.concatenate([comp * 4.0, [vpa / 10.0], hist / 10.0])


def select_configs(configs: Sequence[Atoms], n: int, method: str = "fps", seed: int = 0,
                   elements: Sequence[str] | None = None) -> list[int]:
    """Indices of ``n`` structures chosen at ``random`` or by farthest-point sampling."""
    m = len(configs)
    if n >= m:
        return list(range(m))
    rng = np.random.default_rng(seed)
    if method == "random":
        return sorted(rng.choice(m, size=n, replace=False).tolist())
    if method != "fps":
        raise ConfigError(f"replay.selection: unknown method {method!r}; use 'random' or 'fps'")
    if elements is None:
        elements = sorted({s for a in configs for s in a.get_chemical_symbols()})
    x = np.stack([structure_descriptor(a, elements) for a in configs])
    chosen = [int(rng.integers(m))]
    dist = np.linalg.norm(x - x[chosen[0]], axis=1)
    while len(chosen) < n:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(x - x[i], axis=1))
    return sorted(chosen)


# --------------------------------------------------------------------------- labelling


def pseudo_label(adapter: ModelAdapter, configs: Sequence[Atoms], head: str | None = None,
                 batch_size: int = 8, shifts: dict[str, float] | None = None) -> list[Atoms]:
    """Copies of ``configs`` labelled (energy, forces, stress) by ``adapter``'s ``head``.

    Energies are the model's raw energies plus the optional per-element ``shifts``
    (eV/atom), i.e. in the frame the head is trained in.
    """
    from ase.stress import full_3x3_to_voigt_6_stress

    head = adapter.resolve_head(head)
    configs = list(configs)
    need_stress = all(a.cell.rank == 3 for a in configs)
    pred = adapter.predict(configs, head, batch_size=batch_size, compute_stress=need_stress)
    out = []
    for i, a in enumerate(configs):
        b = a.copy()
        e = float(pred.energy[i]) + per_element_sum(shifts, a.numbers)
        kw: dict[str, Any] = {"energy": e, "forces": np.array(pred.forces[i])}
        if pred.stress is not None:
            kw["stress"] = full_3x3_to_voigt_6_stress(pred.stress[i])
        b.calc = SinglePointCalculator(b, **kw)
        b.info["label_source"] = f"pseudo:{adapter.name}:{head}"
        out.append(b)
    return out


def load_replay_file(path: str, adapter: ModelAdapter, relabel: bool = False,
                     head: str | None = None) -> list[Atoms]:
    """Read a replay file; check its elements; optionally relabel with ``adapter``.

    Raises:
        UnsupportedElementError: the file has elements the model does not cover.
    """
    from ase.io import read

    from ase_surftune.data import read_labelled

    configs = (list(read(path, ":")) if relabel else read_labelled(path))
    allowed = set(adapter.elements)
    bad = sorted({s for a in configs for s in a.get_chemical_symbols()} - allowed)
    if bad:
        raise UnsupportedElementError(
            f"replay data {path!r} contains element(s) {bad} outside model "
            f"{adapter.name!r} (it covers {len(allowed)} elements); remove those "
            f"structures or use a model that covers them")
    if relabel:
        configs = pseudo_label(adapter, configs, head)
    return configs


def build_replay(adapter: ModelAdapter, elements: Sequence[str], options: ReplayOptions,
                 head: str | None = None, seed: int = 0,
                 shifts: dict[str, float] | None = None) -> list[Atoms]:
    """Replay structures for ``adapter``'s ``head`` (see the module docstring)."""
    seed = options.seed if options.seed is not None else seed
    if options.file:
        configs = load_replay_file(options.file, adapter, options.relabel, head)
        idx = select_configs(configs, options.n, options.selection, seed)
        return [configs[i] for i in idx]
    bad = sorted(set(elements) - set(adapter.elements))
    if bad:
        raise UnsupportedElementError(f"replay: element(s) {bad} outside model {adapter.name!r}")
    pool = bulk_candidates(elements, options.n * options.pool_factor, strain=options.strain,
                           shear=options.shear, rattle=options.rattle,
                           min_atoms=options.min_atoms, max_atoms=options.max_atoms,
                           include_alloys=options.include_alloys, seed=seed)
    idx = select_configs(pool, options.n, options.selection, seed, elements=sorted(set(elements)))
    chosen = [pool[i] for i in idx]
    ladder = (eos_ladder(elements, options.eos_points, options.eos_range, options.min_atoms,
                         options.max_atoms) if options.eos_points else [])
    log.info("replay: %d pseudo-labelled bulk structures (%s selection from %d candidates) "
             "+ %d EOS-ladder cells", len(chosen), options.selection, len(pool), len(ladder))
    chosen += ladder
    return pseudo_label(adapter, chosen, head, shifts=shifts)


def pseudolabel_new_structures(adapter: ModelAdapter, train: Sequence[Atoms],
                               options: ReplayOptions, head: str | None = None,
                               seed: int = 0) -> list[Atoms]:
    """Up to ``options.n_new`` (default ``options.n``) training structures relabelled by
    ``adapter``'s ``head`` (raw energies, the frame replay targets are in).

    Their own labels (DFT of the new head's target) are dropped: the foundation head
    must keep its original answer on exactly the kind of structure the trunk now learns.
    """
    if not options.pseudolabel_new or not train:
        return []
    seed = options.seed if options.seed is not None else seed
    n = options.n_new or options.n
    idx = select_configs(train, n, options.selection, seed + 1)
    chosen = []
    for i in idx:
        a = train[i].copy()
        a.calc = None
        a.info["config_type"] = f"replay-new/{train[i].info.get('config_type', 'default')}"
        chosen.append(a)
    log.info("replay: %d training structures pseudo-labelled by the original model "
             "(%s selection from %d)", len(chosen), options.selection, len(train))
    return pseudo_label(adapter, chosen, head, batch_size=options.batch_size or 8)
