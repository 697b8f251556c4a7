"""The overlapping-atom check agrees with ase.neighborlist on random cells."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

from ase_surftune.core.errors import DataError
from ase_surftune.data import MIN_INTERATOMIC_DISTANCE, _closest_pair_below, check_min_distance


@pytest.mark.parametrize("seed", range(4))
def test_closest_pair_matches_neighbor_list(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):  # skewed, thin (fallback path) and thick cells, mixed pbc
        cell = np.diag(rng.uniform(1.2, 6, 3)) + rng.uniform(-0.5, 0.5, (3, 3))
        nat = int(rng.integers(1, 8))
        a = Atoms(f"H{nat}", scaled_positions=rng.uniform(-0.2, 1.2, (nat, 3)), cell=cell,
                  pbc=rng.integers(0, 2, 3).astype(bool))
        d = neighbor_list("d", a, 0.9, self_interaction=False)
        got = _closest_pair_below(a, 0.9)
        if len(d) == 0:
            assert got is None
        else:
            assert got is not None and got[2] == pytest.approx(float(d.min()), abs=1e-9)


def test_periodic_image_overlap_is_caught():
    a = Atoms("Cu2", positions=[[0.05, 0, 0], [5.9, 0, 0]], cell=[6, 6, 6], pbc=True)
    with pytest.raises(DataError, match=r"0\.150 Å apart"):
        check_min_distance(a, "x")
    a.pbc = False  # 5.85 Å apart without the image
    check_min_distance(a, "x")
    assert MIN_INTERATOMIC_DISTANCE == 0.5
