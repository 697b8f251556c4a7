"""Physics and interface checks of the CHGNet and MACE adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _models import chgnet_adapter, tiny_mace
from ase.build import bulk, fcc111
from scipy.spatial.transform import Rotation


def _slab(symbols=("Cu",), size=(2, 2, 3), seed=0):
    a = fcc111("Cu", size, vacuum=6.0)
    rng = np.random.default_rng(seed)
    if "Au" in symbols:
        a.symbols[rng.choice(len(a), 2, replace=False)] = "Au"
    a.rattle(0.08, seed=seed)
    return a


@pytest.fixture(scope="module")
def chg():
    return chgnet_adapter()


@pytest.fixture(scope="module")
def mace():
    return tiny_mace(heads=("pt_head", "surface"))


def _energy(ad, atoms, head=None):
    return float(ad.predict([atoms], head).energy[0])


@pytest.mark.slow
@pytest.mark.parametrize("which,h,tol", [("mace", 1e-4, 1e-6), ("chgnet", 5e-3, 2e-2)])
def test_forces_are_minus_energy_gradient(which, h, tol, chg, mace):
    """Central finite differences of E reproduce F (float64 MACE tightly, float32 CHGNet)."""
    ad = mace if which == "mace" else chg
    atoms = _slab(("Cu", "Au") if which == "mace" else ("Cu",), seed=3)
    forces = ad.predict([atoms]).forces[0]
    for i, k in [(0, 0), (3, 2), (7, 1), (len(atoms) - 1, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        fd = -(_energy(ad, plus) - _energy(ad, minus)) / (2 * h)
        assert fd == pytest.approx(forces[i, k], abs=tol), (i, k)


@pytest.mark.parametrize("which", ["mace", "chgnet"])
def test_rotation_translation_invariance(which, chg, mace):
    ad = mace if which == "mace" else chg
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    rot = Rotation.from_euler("xyz", [20, 35, -50], degrees=True).as_matrix()
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
    moved.positions += np.array([0.3, -1.2, 2.5])
    moved.wrap()
    p0, p1 = ad.predict([atoms]), ad.predict([moved])
    tol = 1e-8 if which == "mace" else 1e-3
    assert p1.energy[0] == pytest.approx(p0.energy[0], abs=tol * len(atoms))
    np.testing.assert_allclose(p1.forces[0], p0.forces[0] @ rot.T, atol=10 * tol)


def test_blocks_cover_every_parameter_once(chg, mace):
    for ad in (chg, mace):
        names = [n for b in ad.blocks() for n in b.parameter_names]
        assert len(names) == len(set(names))
        assert set(names) == {n for n, _ in ad.model.named_parameters()}
        bl = [b.name for b in ad.blocks()]
        assert bl[0] == "embedding" and bl[-1] == "readout"
        assert any(b.startswith("interaction_") for b in bl)


def test_metadata(chg, mace):
    assert chg.heads == ["foundation"] and chg.r_max == pytest.approx(6.0)
    assert "Cu" in chg.elements and len(chg.elements) == 94
    assert chg.dtype == torch.float32
    assert mace.heads == ["pt_head", "surface"]
    assert mace.elements == ["Cu", "Au"] and mace.dtype == torch.float64
    d = mace.describe()
    assert d["backend"] == "mace" and d["n_params"] == mace.n_params


def test_batched_forward_equals_single(chg, mace):
    structs = [_slab(seed=s) for s in range(3)] + [bulk("Cu", cubic=True)]
    for ad in (chg, mace):
        batched = ad.predict(structs, batch_size=3, compute_stress=True)
        for i, a in enumerate(structs):
            single = ad.predict([a], compute_stress=True)
            assert batched.energy[i] == pytest.approx(single.energy[0], abs=1e-4)
            np.testing.assert_allclose(batched.forces[i], single.forces[0], atol=1e-4)
            np.testing.assert_allclose(batched.stress[i], single.stress[0], atol=1e-5)


def test_mace_collate_equals_mace_batching(mace):
    """The per-key collate gives exactly mace's Batch.from_data_list dictionary."""
    from ase_surftune.models.backends.mace import _import_mace, collate_atomic_data

    structs = [_slab(("Cu", "Au"), seed=s) for s in range(2)] + [
        bulk("Cu", cubic=True), fcc111("Au", (2, 2, 3), vacuum=5.0), bulk("Au")]
    graphs = [mace.featurize(a) for a in structs]
    ref = _import_mace()[1].Batch.from_data_list(graphs).to_dict()
    ours = collate_atomic_data(graphs)
    assert sorted(ours) == sorted(ref)
    for key, value in ref.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    # edge indices point into the right graph: offset by the preceding node counts
    ptr = ours["ptr"]
    src_graph = ours["batch"][ours["edge_index"][0]]
    dst_graph = ours["batch"][ours["edge_index"][1]]
    assert torch.equal(src_graph, dst_graph) and int(ptr[-1]) == sum(map(len, structs))


def test_mace_heads_differ_and_select(mace):
    atoms = _slab(("Cu", "Au"))
    e_pt = mace.predict([atoms], "pt_head").energy[0]
    e_s0 = mace.predict([atoms], "surface").energy[0]
    mace.model.scale_shift.shift.data[1] += 0.1  # change only head 1's per-atom shift
    try:
        e_s = mace.predict([atoms], "surface").energy[0]
        assert mace.predict([atoms], "pt_head").energy[0] == e_pt
        assert e_s - e_s0 == pytest.approx(0.1 * len(atoms), rel=1e-6)
    finally:
        mace.model.scale_shift.shift.data[1] -= 0.1


def test_chgnet_added_head_is_a_copy_then_independent():
    ad = chgnet_adapter()
    atoms = _slab()
    e0 = ad.predict([atoms]).energy[0]
    ad.add_head("surface")
    assert ad.heads == ["foundation", "surface"]
    assert ad.predict([atoms], "surface").energy[0] == e0
    with torch.no_grad():
        ad.model.extra_readouts["surface"]["mlp"].layers[-1].bias += 0.05
    assert ad.predict([atoms], "foundation").energy[0] == e0  # bit-identical foundation
    assert ad.predict([atoms], "surface").energy[0] != e0


def test_chgnet_matches_bare_chgnet_calculator(chg):
    from chgnet.model.dynamics import CHGNetCalculator

    atoms = _slab(seed=5)
    ref = atoms.copy()
    ref.calc = CHGNetCalculator(model=chg.chgnet, task="ef") if "task" in \
        CHGNetCalculator.__init__.__code__.co_varnames else CHGNetCalculator(model=chg.chgnet)
    p = chg.predict([atoms])
    assert p.energy[0] == pytest.approx(ref.get_potential_energy(), abs=1e-4)
    np.testing.assert_allclose(p.forces[0], ref.get_forces(), atol=1e-5)


def test_mace_matches_mace_calculator(mace, tmp_path, monkeypatch):
    from mace.calculators import MACECalculator

    # mace's calculator unpickles its (here: our own, trusted) file only with this set;
    # ase_surftune no longer leaves it set process-wide after importing mace
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "tiny.model"
    torch.save(mace.model, path)
    atoms = _slab(("Cu", "Au"), seed=2)
    ref = atoms.copy()
    ref.calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64",
                              head="surface")
    p = mace.predict([atoms], "surface", compute_stress=True)
    assert p.energy[0] == pytest.approx(ref.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(p.forces[0], ref.get_forces(), atol=1e-8)


def test_auto_batches_respect_atom_budget_and_back_off_on_oom(mace, monkeypatch):
    structs = [_slab(("Cu", "Au"), size=(2, 2, n), seed=n) for n in (2, 3, 4, 3, 2)]
    plan = mace.plan_batches(structs, "auto", max_atoms=24)
    assert sorted(i for b in plan for i in b) == list(range(5))
    assert all(sum(len(structs[i]) for i in b) <= 24 for b in plan)
    ref = mace.predict(structs, batch_size=1)
    tried, done = [], []
    real_forward = type(mace).forward

    def flaky(self, graphs, head=None, **kw):  # pretend batches > 2 structures don't fit
        tried.append(len(graphs))
        if len(graphs) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        done.append(len(graphs))
        return real_forward(self, graphs, head, **kw)

    monkeypatch.setattr(type(mace), "forward", flaky)
    got = mace.predict(structs, batch_size=5)
    assert tried[0] == 5 and max(done) <= 2 and sum(done) == 5
    np.testing.assert_allclose(got.energy, ref.energy, atol=1e-10)
    with pytest.raises(ValueError, match="batch_size"):
        mace.predict(structs, batch_size=0)


def test_clone_is_independent(chg, mace):
    atoms = _slab(("Cu", "Au"))
    for ad in (chg, mace):
        twin = ad.clone()
        e = ad.predict([atoms]).energy[0]
        assert twin.predict([atoms]).energy[0] == e
        with torch.no_grad():
            next(twin.model.parameters()).add_(0.1)
        assert ad.predict([atoms]).energy[0] == e
