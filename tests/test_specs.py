"""One model-spec parser (issue 15): ase_surftune.core.specs and the loaders built on it."""

from __future__ import annotations

import pytest

from ase_surftune.core.errors import ConfigError, ModelLoadError
from ase_surftune.core.specs import parse_model_spec, rebase_spec, split_head


@pytest.mark.parametrize("spec, kind, backend, source", [
    ("chgnet", "chgnet", "chgnet", "0.3.0"),
    ("chgnet-0.2.0", "chgnet", "chgnet", "0.2.0"),
    ("chgnet:0.2.0", "chgnet", "chgnet", "0.2.0"),
    ("CHGNet-r2scan", "chgnet", "chgnet", "r2scan"),
    ("mace:/no/such.model", "mace_file", "mace", "/no/such.model"),
    ("mace-mp-0-medium", "mace_foundation", "mace", "mace-mp-0-medium"),
    ("mace-mp:small", "mace_foundation", "mace", "mace-mp:small"),
    ("m3gnet:/some/folder", "m3gnet_folder", "m3gnet", "/some/folder"),
    ("M3GNet-MatPES-PBE", "m3gnet_named", "m3gnet", "m3gnet-matpes-pbe"),
])
def test_named_and_prefixed_specs(spec, kind, backend, source):
    p = parse_model_spec(spec)
    assert (p.kind, p.backend, p.source, p.head) == (kind, backend, source, None)


def test_files_heads_and_errors(tmp_path):
    model = tmp_path / "x.model"
    model.write_bytes(b"")
    bundle = tmp_path / "run@2" / "model.stbundle"  # '@' inside a path is not a head
    bundle.parent.mkdir()
    bundle.write_bytes(b"")
    assert parse_model_spec(str(model)).kind == "mace_file"
    p = parse_model_spec(f"{bundle}@surface")
    assert (p.kind, p.backend, p.head, p.path) == ("bundle", None, "surface", bundle)
    assert parse_model_spec(str(bundle)).head is None
    assert parse_model_spec("chgnet@foundation").head == "foundation"
    with pytest.raises(ModelLoadError, match="unknown model 'chgnet@foundation'"):
        parse_model_spec("chgnet@foundation", with_head=False)  # load_model: no heads
    assert split_head("x@y/z.stbundle") == ("x@y/z.stbundle", None)
    with pytest.raises(ModelLoadError, match="Known names.*chgnet"):
        parse_model_spec("no-such-model")
    with pytest.raises(ModelLoadError):
        parse_model_spec("  ")
    with pytest.raises(ConfigError):
        split_head("")


def test_rebase_spec_makes_config_relative_paths_absolute(tmp_path):
    (tmp_path / "m.model").write_bytes(b"")
    (tmp_path / "b.stbundle").write_bytes(b"")
    (tmp_path / "m3g").mkdir()
    assert rebase_spec("mace:m.model", tmp_path) == f"mace:{tmp_path / 'm.model'}"
    assert rebase_spec("b.stbundle@surf", tmp_path) == f"{tmp_path / 'b.stbundle'}@surf"
    assert rebase_spec("m3gnet:m3g", tmp_path) == f"m3gnet:{tmp_path / 'm3g'}"
    assert rebase_spec("chgnet", tmp_path) == "chgnet"
    assert rebase_spec("mace:missing.model", tmp_path) == "mace:missing.model"


def test_infer_backend_uses_the_one_parser(tmp_path, tiny_mace_file):
    from ase_surftune.training.config import infer_backend

    assert infer_backend("chgnet:0.2.0") == "chgnet"
    assert infer_backend("mace-mp-0-small") == "mace"
    assert infer_backend(tiny_mace_file) == "mace"  # from the bundle's manifest only
    with pytest.raises(ValueError, match="MACE model file not found"):
        infer_backend("mace:/no/such.model")
    with pytest.raises(ValueError, match="no model.json"):
        infer_backend(f"m3gnet:{tmp_path}")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="neither a MACE"):
        infer_backend(str(junk))
