"""Content hashes of structures and data sets (resume keys, bundle provenance)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
from ase import Atoms

from ase_surftune.data.labels import energy_weight


def _hash_arrays(h: Any, *arrays: Any) -> None:
    for a in arrays:
        arr = np.ascontiguousarray(np.asarray(a))
        h.update(str(arr.dtype.str).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())


def structure_hash(atoms: Atoms) -> str:
    """sha256 hex digest of atomic numbers, positions (Å), cell (Å) and pbc (no labels)."""
    h = hashlib.sha256()
    _hash_arrays(h, atoms.numbers.astype(np.int64), atoms.positions.astype(np.float64),
                 atoms.cell.array.astype(np.float64), atoms.pbc.astype(bool))
    return h.hexdigest()


def dataset_hash(configs: Iterable[Atoms]) -> str:
    """sha256 over every structure and its labels, in order (for bundle provenance).

    Covers atomic numbers, positions, cell, pbc, energy, forces and stress (if any), and
    an energy weight other than 1 (``info["config_energy_weight"]``: it changes what a
    fine-tune fits); ignores the rest of ``info`` (groups, sources) and constraints.
    """
    h = hashlib.sha256()
    n = 0
    for atoms in configs:
        n += 1
        _hash_arrays(h, atoms.numbers.astype(np.int64), atoms.positions.astype(np.float64),
                     atoms.cell.array.astype(np.float64), atoms.pbc.astype(bool))
        results = getattr(atoms.calc, "results", None) or {}
        for key in ("energy", "forces", "stress"):
            if results.get(key) is not None:
                h.update(key.encode())
                _hash_arrays(h, np.asarray(results[key], dtype=np.float64))
        w = energy_weight(atoms)
        if w != 1.0:
            h.update(f"energy_weight={w!r}".encode())
    h.update(f"n={n}".encode())
    return h.hexdigest()
