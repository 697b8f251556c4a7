"""Shared offline fixtures: EMT-labelled rattled Cu/Au slabs and a tiny MACE model.

Reusable by every test module:

* ``make_emt_slabs(n, seed=0, size=(2, 2, 3))`` — plain function: ``n`` rattled
  Cu(111)/Au(111) slabs (alternating) labelled with EMT (energy eV, forces eV/Å,
  stress eV/Å³) in a SinglePointCalculator, ``info["config_type"]`` = element.
* ``emt_slabs`` — session fixture: ``make_emt_slabs(12)`` (copy before mutating).
* ``tiny_mace_model`` — factory fixture: ``tiny_mace_model(seed=0, dtype=torch.float64)``
  returns a fresh 8-channel, L=0, 2-interaction ScaleShiftMACE for Cu and Au.
* ``tiny_mace_file`` — session fixture: that model saved as a (safe) bundle file, usable
  as ``"mace:<path>"`` or ``"<path>"``; :func:`save_tiny_mace` writes one.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ase_surftune.models.backends.mace import import_mace

#: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD as the test run found it (test_security checks that
#: importing mace leaves it so)
ENV_BEFORE_MACE = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
import_mace()  # before e3nn under torch 2.13; keeps torch's safe load default


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.dft`` tests run real GPAW (minutes each on 2 cores): opt in with
    ``SURFTUNE_RUN_DFT=1``; the default suite (and CI, which has no GPAW) skips them."""
    if os.environ.get("SURFTUNE_RUN_DFT") == "1":
        return
    skip = pytest.mark.skip(reason="real DFT: set SURFTUNE_RUN_DFT=1 to run")
    for item in items:
        if "dft" in item.keywords:
            item.add_marker(skip)


def make_emt_slabs(n: int = 12, seed: int = 0, size=(2, 2, 3), rattle: float = 0.08,
                   symbols=("Cu", "Au")) -> list[Atoms]:
    """``n`` rattled fcc(111) slabs with EMT labels (alternating elements)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sym = symbols[i % len(symbols)]
        a = {"Cu": 3.61, "Au": 4.08}.get(sym, 3.9) * (1 + rng.uniform(-0.02, 0.02))
        slab = fcc111(sym, size=size, a=a, vacuum=5.0, periodic=True)
        slab.positions += rng.normal(scale=rattle, size=slab.positions.shape)
        slab.calc = EMT()
        e, f, s = slab.get_potential_energy(), slab.get_forces(), slab.get_stress()
        slab.calc = SinglePointCalculator(slab, energy=e, forces=f, stress=s)
        slab.info["config_type"] = sym
        out.append(slab)
    return out


@pytest.fixture(scope="session")
def emt_slabs() -> list[Atoms]:
    return make_emt_slabs(12)


def build_tiny_mace(seed: int = 0, dtype: torch.dtype = torch.float64):
    from ase_surftune.models.backends.mace_builders import build_mace

    return build_mace(["Cu", "Au"], channels=8, max_L=0, num_interactions=2, r_max=4.5,
                      atomic_energies={"Cu": -3.0, "Au": -3.2}, scale=0.5, seed=seed,
                      dtype=dtype)


@pytest.fixture
def tiny_mace_model():
    return build_tiny_mace


def save_tiny_mace(path, model=None, **kwargs) -> str:
    """Save ``model`` (default: ``build_tiny_mace(**kwargs)``) as a safe bundle file."""
    from ase_surftune.models.backends.mace import MACEAdapter
    from ase_surftune.models.bundle import Bundle

    model = build_tiny_mace(**kwargs) if model is None else model
    return str(Bundle(MACEAdapter(model, name="tiny-mace")).save(path))


@pytest.fixture(scope="session")
def tiny_mace_file(tmp_path_factory) -> str:
    return save_tiny_mace(tmp_path_factory.mktemp("models") / "tiny.stbundle")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (2 shared cores: one thread is several times faster
    than two here); the previous count is restored afterwards. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
