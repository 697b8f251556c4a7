"""Checks that a configuration is usable: finite, no overlapping atoms, sane labels, known elements."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from ase import Atoms

from ase_surftune.core.errors import DataError, UnsupportedElementError
from ase_surftune.data.labels import (
    DataReport,
    OnError,
    _as_voigt,
    _check_on_error,
    energy_weight,
)

log = logging.getLogger(__name__)

#: Smallest interatomic distance (Å) accepted anywhere (training data, model inputs).
#: The shortest physical bond (H2) is 0.74 Å; closer pairs are overlapping atoms (a
#: duplicated atom, a unit error) on which models return NaN or meaningless numbers.
MIN_INTERATOMIC_DISTANCE = 0.5


def check_min_distance(atoms: Atoms, where: str, error: type[Exception] = DataError,
                       min_distance: float = MIN_INTERATOMIC_DISTANCE) -> None:
    """Raise ``error`` if two atoms (periodic images included) are closer than
    ``min_distance`` Å; the message names the pair and the distance."""
    if len(atoms) < 2 and not atoms.pbc.any():
        return
    pair = _closest_pair_below(atoms, min_distance)
    if pair is not None:
        i, j, d = pair
        raise error(f"{where}: atoms {i} and {j} are {d:.3f} Å apart (closer than the "
                    f"minimum {min_distance} Å): overlapping atoms; remove the duplicate or "
                    f"fix the positions (Å)")


def _closest_pair_below(atoms: Atoms, r: float) -> tuple[int, int, float] | None:
    """The closest pair (i, j, distance Å) of atoms closer than ``r``, images included.

    A KD-tree over the atoms plus the periodic images of those within ``r`` of a cell
    face (about 1 ms for 2000 atoms, where ``ase.neighborlist`` took ~0.5 s: it runs on
    every calculator call). Cells thinner than ``2 r`` fall back to ``neighbor_list``.
    """
    import itertools

    from scipy.spatial import cKDTree

    pbc = np.asarray(atoms.pbc, dtype=bool)
    n = len(atoms)
    if pbc.any():
        cell = atoms.cell.array
        if atoms.cell.rank < 3:
            heights = np.zeros(3)
        else:
            vol = abs(np.linalg.det(cell))
            heights = np.array([vol / np.linalg.norm(np.cross(cell[(k + 1) % 3],
                                                               cell[(k + 2) % 3]))
                                for k in range(3)])
        if np.any(heights[pbc] < 2 * r):
            from ase.neighborlist import neighbor_list

            i, j, d = neighbor_list("ijd", atoms, r, self_interaction=False)
            if not len(d):
                return None
            k = int(np.argmin(d))
            return int(i[k]), int(j[k]), float(d[k])
        frac = atoms.cell.scaled_positions(atoms.positions)
        frac[:, pbc] %= 1.0
        pos = frac @ cell
        low, high = frac * heights < r, (1.0 - frac) * heights < r
        pts, idx = [pos], [np.arange(n)]
        ranges = [(-1, 0, 1) if p else (0,) for p in pbc]
        for shift in itertools.product(*ranges):
            if shift == (0, 0, 0):
                continue
            m = np.ones(n, dtype=bool)
            for ax, s_ax in enumerate(shift):
                if s_ax == 1:
                    m &= low[:, ax]
                elif s_ax == -1:
                    m &= high[:, ax]
            if m.any():
                pts.append(pos[m] + np.asarray(shift, dtype=float) @ cell)
                idx.append(np.nonzero(m)[0])
        pts_a, idx_a = np.concatenate(pts), np.concatenate(idx)
    else:
        pts_a, idx_a = atoms.positions, np.arange(n)
    pairs = cKDTree(pts_a).query_pairs(r, output_type="ndarray")
    if not len(pairs):
        return None
    pairs = pairs[(pairs[:, 0] < n) | (pairs[:, 1] < n)]
    if not len(pairs):
        return None
    d = np.linalg.norm(pts_a[pairs[:, 0]] - pts_a[pairs[:, 1]], axis=1)
    k = int(np.argmin(d))
    return int(idx_a[pairs[k, 0]]), int(idx_a[pairs[k, 1]]), float(d[k])


def validate_config(atoms: Atoms, require_forces: bool = True, where: str | None = None) -> None:
    """Check that one configuration is usable as training data.

    Checks: at least one atom; finite positions (Å) and cell; no two atoms closer than
    :data:`MIN_INTERATOMIC_DISTANCE`; an energy label (eV) that is
    finite; forces (eV/Å) of shape ``(n_atoms, 3)`` and finite (required unless
    ``require_forces=False``); stress (eV/Å³), if present, of Voigt/3x3 shape and finite;
    an energy weight (``info["config_energy_weight"]``), if present, a number ≥ 0.

    Args:
        atoms: the configuration, labels in ``atoms.calc.results``.
        require_forces: fail when forces are missing.
        where: text naming the configuration in error messages (file and frame).

    Raises:
        DataError: with a message naming ``where`` and the problem.
    """
    where = where or atoms.get_chemical_formula() or "<empty Atoms>"
    n = len(atoms)
    if n == 0:
        raise DataError(f"{where}: configuration has no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise DataError(f"{where}: non-finite (NaN/inf) positions")
    if not np.all(np.isfinite(atoms.cell.array)):
        raise DataError(f"{where}: non-finite (NaN/inf) cell")
    check_min_distance(atoms, where)
    results = getattr(atoms.calc, "results", None) or {}
    e = results.get("energy", results.get("free_energy"))
    if e is None:
        raise DataError(f"{where}: missing energy label")
    e_arr = np.asarray(e, dtype=float)
    if e_arr.size != 1:
        raise DataError(f"{where}: energy label has {e_arr.size} values; expected one")
    if not np.isfinite(e_arr).all():
        raise DataError(f"{where}: energy label is {float(e_arr.reshape(()))} (NaN/inf)")
    forces = results.get("forces")
    if forces is None:
        if require_forces:
            raise DataError(f"{where}: missing forces label")
    else:
        f = np.asarray(forces, dtype=float)
        if f.shape != (n, 3):
            raise DataError(f"{where}: forces have shape {f.shape} but the structure has "
                            f"{n} atoms; expected ({n}, 3)")
        if not np.all(np.isfinite(f)):
            bad = int(np.count_nonzero(~np.isfinite(f).all(axis=1)))
            raise DataError(f"{where}: forces contain NaN/inf on {bad} atom(s)")
    stress = results.get("stress")
    if stress is not None:
        s = _as_voigt(stress, where)
        if not np.all(np.isfinite(s)):
            raise DataError(f"{where}: stress contains NaN/inf")
    energy_weight(atoms, where)



def check_elements(configs: Sequence[Atoms], allowed_symbols: Iterable[str],
                   model_name: str = "the model", on_error: OnError = "raise",
                   report: DataReport | None = None) -> list[Atoms]:
    """Ensure every configuration has only elements the model supports.

    Returns the configurations that pass (all of them with ``on_error="raise"``).

    Raises:
        UnsupportedElementError: naming the missing elements, how many configurations
            contain them, and the model (``on_error="raise"``).
    """
    _check_on_error(on_error)
    allowed = set(allowed_symbols)
    bad: dict[str, int] = {}
    kept: list[Atoms] = []
    for i, atoms in enumerate(configs):
        missing = sorted(set(atoms.get_chemical_symbols()) - allowed)
        if not missing:
            kept.append(atoms)
            continue
        for s in missing:
            bad[s] = bad.get(s, 0) + 1
        if report is not None and on_error == "skip":
            report.add_skip(str(atoms.info.get("source", f"configs[{i}]")), i,
                            f"element(s) {missing} not supported by {model_name}")
        elif on_error == "skip":
            log.warning("skipped configs[%d]: element(s) %s not supported by %s",
                        i, missing, model_name)
    if bad and on_error == "raise":
        detail = ", ".join(f"{s} (in {n} configuration(s))" for s, n in sorted(bad.items()))
        raise UnsupportedElementError(f"{model_name} does not support element(s): {detail}")
    return kept
