"""Small model factories shared by the foundation tests (offline, fast)."""

from __future__ import annotations

import functools

from ase_surftune.models.backends.chgnet import CHGNetAdapter
from ase_surftune.models.backends.mace import MACEAdapter
from ase_surftune.models.backends.mace_builders import build_mace


@functools.lru_cache(maxsize=1)
def _chgnet() -> CHGNetAdapter:
    return CHGNetAdapter.load("0.3.0")


def chgnet_adapter() -> CHGNetAdapter:
    """Bundled CHGNet 0.3.0 (a fresh deep copy, safe to mutate)."""
    return _chgnet().clone()


def tiny_mace(heads=("Default",), elements=("Cu", "Au"), seed=0) -> MACEAdapter:
    """A random 2-interaction, 8-channel, L=1 ScaleShiftMACE in float64."""
    model = build_mace(list(elements), channels=8, max_L=1, heads=list(heads), r_max=4.5,
                       atomic_energies={"Cu": -3.5, "Au": -3.0}, scale=0.5, seed=seed)
    return MACEAdapter(model, name="tiny-mace")
