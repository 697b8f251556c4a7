"""The calculator's model cache follows the file, and heads work from several threads.

Issue 13: the cache was keyed on the path string (re-training into the same path in
one process returned the old weights) and CHGNet head selection swapped submodules on
the shared cached model (two heads used from two threads raced).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from _models import chgnet_adapter, tiny_mace
from ase.build import bulk, fcc111

from ase_surftune.models import calculator as calc_mod
from ase_surftune.models.bundle import Bundle
from ase_surftune.models.calculator import SurfTuneCalculator


def _slab():
    s = fcc111("Cu", (2, 2, 2), vacuum=5.0, periodic=True)
    s[0].symbol = "Au"
    s.rattle(0.05, seed=1)
    return s


def _energy(model, **kw) -> float:
    a = _slab()
    a.calc = SurfTuneCalculator(model, **kw)
    return a.get_potential_energy()


@pytest.mark.slow
def test_retraining_into_same_path_gives_new_weights(tmp_path):
    path = tmp_path / "model.stbundle"
    Bundle(tiny_mace(seed=0)).save(path)
    e_old = _energy(str(path))
    assert _energy(str(path)) == e_old  # cached: same model
    new = Bundle(tiny_mace(seed=1))
    new.save(path)  # same path, same size, new weights
    e_new = _energy(str(path))
    assert e_new != e_old
    assert e_new == pytest.approx(new.predict([_slab()]).energy[0], abs=1e-10)


@pytest.mark.slow
def test_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(calc_mod, "CACHE_SIZE", 2)
    monkeypatch.setattr(calc_mod, "_CACHE", type(calc_mod._CACHE)())
    paths = [Bundle(tiny_mace(seed=i)).save(tmp_path / f"m{i}.stbundle") for i in range(3)]
    calcs = [SurfTuneCalculator(str(p)) for p in paths]
    assert len(calc_mod._CACHE) == 2
    # the least recently used model was dropped; the live calculator keeps working
    assert calcs[0].bundle is not SurfTuneCalculator(str(paths[0])).bundle
    assert SurfTuneCalculator(str(paths[2])).bundle is calcs[2].bundle


@pytest.fixture(scope="module")
def two_head_chgnet(tmp_path_factory):
    ad = chgnet_adapter()
    ad.add_head("surface")
    with torch.no_grad():
        ad.model.extra_readouts["surface"]["mlp"].layers[-1].bias += 0.37
    return Bundle(ad).save(tmp_path_factory.mktemp("ch") / "two.stbundle")


def test_chgnet_head_selection_does_not_mutate_shared_model(two_head_chgnet):
    c = SurfTuneCalculator(str(two_head_chgnet), head="surface")
    chg = c.adapter.chgnet
    mlp, comp = chg.mlp, chg.composition_model
    with c.adapter.model.selected("surface") as view:
        assert view is not chg and view.mlp is not mlp
        assert chg.mlp is mlp and chg.composition_model is comp  # untouched meanwhile
        assert view.atom_embedding is chg.atom_embedding  # backbone shared


@pytest.mark.slow
def test_two_heads_from_two_threads(two_head_chgnet):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    structs = []
    for i in range(3):
        a = cu.copy()
        a.rattle(0.05, seed=i)
        structs.append(a)
    calcs = {h: SurfTuneCalculator(str(two_head_chgnet), head=h)
             for h in ("foundation", "surface")}
    assert calcs["foundation"].adapter is calcs["surface"].adapter  # one shared model
    ref = {h: [calcs[h].bundle.predict([a], h).energy[0] for a in structs] for h in calcs}
    assert all(abs(f - s) > 0.1 for f, s in zip(ref["foundation"], ref["surface"]))

    def work(head: str) -> list[float]:
        out = []
        for _ in range(4):
            for a in structs:
                b = a.copy()
                b.calc = SurfTuneCalculator(str(two_head_chgnet), head=head)
                out.append(b.get_potential_energy())
        return out

    with ThreadPoolExecutor(2) as pool:
        futs = {h: pool.submit(work, h) for h in ("foundation", "surface")}
        got = {h: f.result() for h, f in futs.items()}
    for h in got:
        np.testing.assert_allclose(got[h], ref[h] * 4, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_mace_loads_are_independent_copies(tmp_path):
    """Bundle loads reuse a built template for speed but never share weights with it."""
    path = Bundle(tiny_mace(seed=4)).save(tmp_path / "m.stbundle")
    a, b = Bundle.load(path).adapter, Bundle.load(path).adapter
    pa, pb = next(a.model.parameters()), next(b.model.parameters())
    assert a.model is not b.model and pa.data_ptr() != pb.data_ptr()
    e_b = b.predict([_slab()]).energy[0]
    with torch.no_grad():
        pa.add_(1.0)
    assert b.predict([_slab()]).energy[0] == e_b
    assert Bundle.load(path).adapter.predict([_slab()]).energy[0] == e_b
