"""Heads in the backends' own formats (issue 15): native MACE multi-head layout, migration
of old block-layout bundles, export of any head to a plain MACE ``.model`` / CHGNet state
that the backends' own loaders and calculators read, and the scoped chgnet patch."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from _models import chgnet_adapter, tiny_mace
from ase.build import bulk, fcc111

from ase_surftune.core.errors import HeadError
from ase_surftune.models.backends.mace import MACEAdapter
from ase_surftune.models.bundle import Bundle
from ase_surftune.models.correction import LinearCorrection
from ase_surftune.models.export import export_head

DATA = Path(__file__).parent / "data"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _probe():
    """The structures of tests/data/legacy_grown_mace.json (same construction)."""
    probe = [fcc111("Cu", (2, 2, 3), vacuum=5.0), bulk("Au", "fcc", a=4.1, cubic=True)]
    probe[0].rattle(0.05, seed=1)
    probe[1].rattle(0.05, seed=2)
    return probe


@pytest.fixture(scope="module")
def grown():
    """A tiny L=1 MACE grown to two heads, the new head's readouts changed."""
    ad = tiny_mace()
    ad.add_head("surf")
    with torch.no_grad():
        ad.model.readouts[-1].linear_2.weight[-4:] += 0.3
        ad.model.readouts[0].linear.weight[-3:] -= 0.2
    return ad


def _mace_calculator(path, monkeypatch, **kw):
    from mace.calculators import MACECalculator

    # mace's calculator unpickles its (here: our own, trusted) file only with this set
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    return MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64", **kw)


@pytest.mark.slow
def test_grown_heads_are_mace_native(grown):
    """mace's own tools read a grown model: its config rebuilds it (strict state dict)
    and remove_pt_head extracts each head with the same numbers."""
    from mace import modules
    from mace.tools.scripts_utils import extract_config_mace_model, remove_pt_head

    m = grown.model
    assert not any(getattr(x, "_surftune_blocks", False) for x in m.modules())
    assert str(m.readouts[0].linear.irreps_out) == "2x0e"
    assert str(m.readouts[-1].linear_2.irreps_out) == "2x0e"
    assert m.readouts[-1].num_heads == 2
    rebuilt = modules.ScaleShiftMACE(**extract_config_mace_model(m))
    rebuilt.load_state_dict(m.state_dict(), strict=True)
    probe = _probe()
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # remove_pt_head builds in the default dtype
    try:
        singles = {h: MACEAdapter(remove_pt_head(copy.deepcopy(m), h)) for h in grown.heads}
    finally:
        torch.set_default_dtype(prev)
    for h, single in singles.items():
        p, q = single.predict(probe), grown.predict(probe, h)
        np.testing.assert_allclose(p.energy, q.energy, rtol=0, atol=1e-10)
        for a, b in zip(p.forces, q.forces):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_old_block_layout_bundle_migrates_on_load(caplog, tmp_path):
    """tests/data/legacy_grown_mace.stbundle was written by the previous release (heads
    in ase_surftune's per-head block layout) with its own predictions next to it; it
    loads in the native layout, says so, and predicts the same numbers."""
    expected = json.loads((DATA / "legacy_grown_mace.json").read_text())
    with caplog.at_level(logging.WARNING):
        b = Bundle.load(DATA / "legacy_grown_mace.stbundle")
    assert "old per-head block readout layout" in caplog.text
    assert b.heads == ["Default", "surf"]
    probe = _probe()
    for h in b.heads:
        p = b.adapter.predict(probe, h)
        np.testing.assert_allclose(p.energy, expected[h]["energy"], rtol=0, atol=1e-10)
        for a, f in zip(p.forces, expected[h]["forces"]):
            np.testing.assert_allclose(a, f, rtol=0, atol=1e-10)
    # re-saved, it is a native payload
    again = Bundle.load(b.save(tmp_path / "native.stbundle"))
    assert again.adapter.to_payload()["grown"] is False
    np.testing.assert_allclose(again.adapter.predict(probe, "surf").energy,
                               expected["surf"]["energy"], rtol=0, atol=1e-10)


@pytest.mark.slow
def test_export_mace_head_loads_in_mace_calculator(grown, tmp_path, monkeypatch):
    """Any head, with the bundle's alignment shifts folded into E0, exported to a plain
    single-head .model that mace's MACECalculator loads: same energy, forces, stress."""
    shifts = {"Cu": 0.37, "Au": -0.21}
    bundle = Bundle(grown, reference_energies={"surf": shifts})
    path = export_head(bundle, "surf", tmp_path / "surf.model")
    calc = _mace_calculator(path, monkeypatch)
    assert len(calc.models[0].heads) == 1
    from ase_surftune.models.calculator import SurfTuneCalculator

    ours = SurfTuneCalculator(bundle, head="surf")
    for atoms in _probe():
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = calc, ours
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-10)
        if atoms.pbc.all():
            np.testing.assert_allclose(a.get_stress(), b.get_stress(), rtol=0, atol=1e-10)
    # the first head exports too (and differs from 'surf')
    p0 = export_head(bundle, "Default", tmp_path / "default.model")
    a = _probe()[1]
    a.calc = _mace_calculator(p0, monkeypatch)
    assert a.get_potential_energy() == pytest.approx(
        float(grown.predict([a], "Default").energy[0]), abs=1e-9)


@pytest.mark.slow
def test_export_refuses_corrected_heads_and_m3gnet_style_backends(grown, tmp_path):
    bundle = Bundle(grown, corrections={"surf": LinearCorrection(scale=1.1)})
    with pytest.raises(HeadError, match="drop_correction"):
        export_head(bundle, "surf", tmp_path / "x.model")
    assert not (tmp_path / "x.model").exists()
    with pytest.raises(HeadError, match="valid heads"):
        export_head(bundle, "nope", tmp_path / "y.model")
    assert export_head(bundle, "surf", tmp_path / "z.model", drop_correction=True).is_file()


@pytest.mark.slow
def test_export_chgnet_head_loads_with_chgnet(tmp_path):
    """A grown CHGNet head (changed readout, alignment shifts) exported as a plain CHGNet
    state: CHGNet.from_file reads it, and CHGNet's own calculator gives the bundle head's
    energy and forces."""
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    from ase_surftune.models.calculator import SurfTuneCalculator

    ad = chgnet_adapter()
    ad.add_head("surface")
    with torch.no_grad():
        ad.model.extra_readouts["surface"]["mlp"].layers[-1].bias += 0.05
    bundle = Bundle(ad, reference_energies={"surface": {"Cu": 0.12}})
    path = export_head(bundle, "surface", tmp_path / "surface.pt")
    assert set(torch.load(path, weights_only=True)) == {"model"}  # plain tensors/values
    model = CHGNet.from_file(str(path))
    atoms = fcc111("Cu", (2, 2, 3), vacuum=6.0, periodic=True)
    atoms.rattle(0.03, seed=4)
    a, b = atoms.copy(), atoms.copy()
    a.calc = CHGNetCalculator(model=model, use_device="cpu")
    b.calc = SurfTuneCalculator(bundle, head="surface")
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=2e-4)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=2e-5)
    foundation = b.calc.bundle.adapter.predict([atoms], "foundation").energy[0]
    assert abs(a.get_potential_energy() - foundation) > 0.1  # the head, not the foundation


def test_chgnet_patch_is_scoped_to_adapter_calls():
    """chgnet.model.model.torch is the real torch module before and after a prediction,
    and the adapter's inference forces equal chgnet's own (create_graph) ones."""
    import chgnet.model.model as chgnet_model

    ad = chgnet_adapter()
    assert chgnet_model.torch is torch
    atoms = fcc111("Cu", (2, 2, 3), vacuum=6.0, periodic=True)
    atoms.rattle(0.03, seed=4)
    p = ad.predict([atoms], compute_stress=True)
    assert chgnet_model.torch is torch
    graph = ad.featurize(atoms)
    ref = ad.chgnet([graph], task="ef")  # outside the adapter: chgnet's own path
    np.testing.assert_allclose(p.forces[0], ref["f"][0].detach().numpy(), rtol=0, atol=2e-5)


@pytest.mark.slow
def test_cli_heads_export(grown, tmp_path, monkeypatch):
    """`surftune heads export BUNDLE --head H -o FILE` mirrors export_head; a bad head is
    a one-line error and writes nothing; `surftune heads BUNDLE` still lists heads."""
    from ase_surftune.cli import main

    src = Bundle(grown).save(tmp_path / "two.stbundle")
    out = tmp_path / "surf.model"
    assert main(["heads", "export", str(src), "--head", "surf", "-o", str(out)]) == 0
    a = _probe()[1]
    a.calc = _mace_calculator(out, monkeypatch)
    assert a.get_potential_energy() == pytest.approx(
        float(grown.predict([a], "surf").energy[0]), abs=1e-9)
    assert main(["heads", "export", str(src), "--head", "nope", "-o",
                 str(tmp_path / "bad.model")]) != 0
    assert not (tmp_path / "bad.model").exists()
    assert main(["heads", str(src)]) == 0
