"""Loading never executes code (issue 13).

Every crafted file below holds a pickle whose ``__reduce__`` writes a marker file when
it is unpickled. Each test asserts that a clear error is raised and that no marker
exists: through the API (``Bundle.load``, ``load_model``, ``SurfTuneCalculator``,
``load_checkpoint``, ``finetune(resume=True)``), the CLI (``heads``, ``evaluate``,
``relax``, ``finetune --check``), with mace imported (conftest imports it) and in a
child process.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import conftest
import pytest
import torch
from ase.build import fcc111
from ase.io import write
from conftest import make_emt_slabs, save_tiny_mace

from ase_surftune.cli import main
from ase_surftune.core.errors import BundleError, ConfigError, UnsafeLoadError
from ase_surftune.models.bundle import BUNDLE_FORMAT, Bundle
from ase_surftune.models.calculator import SurfTuneCalculator
from ase_surftune.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint

ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
ROOT = Path(__file__).resolve().parents[1]


class _Evil:
    """Unpickling this writes ``marker`` (the proof that code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _pickle_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "MARKER"
    yield m
    assert not m.exists(), "a crafted file executed code"


def _legacy_bundle(path: Path, marker: Path) -> Path:
    """A version-1 (pickled) bundle with a valid checksum whose payload runs code."""
    payload = _pickle_bytes({"adapter": {"backend": "mace", "model": _Evil(marker)}})
    torch.save({"format": BUNDLE_FORMAT, "format_version": 1, "backend": "mace",
                "heads": ["Default"], "sha256": hashlib.sha256(payload).hexdigest(),
                "payload": payload, "outer": _Evil(marker)}, path)
    return path


def _rewrite_member(src: Path, dst: Path, member: str, data: bytes, *,
                    fix_manifest: bool) -> Path:
    """Copy bundle ``src`` to ``dst`` with ``member`` replaced by ``data``; with
    ``fix_manifest`` the manifest's checksum is recomputed (a deliberate forgery)."""
    with zipfile.ZipFile(src) as zin:
        items = {n: zin.read(n) for n in zin.namelist()}
    items[member] = data
    if fix_manifest:
        man = json.loads(items["manifest.json"])
        man["members"][member] = hashlib.sha256(data).hexdigest()
        items["manifest.json"] = json.dumps(man).encode()
    with zipfile.ZipFile(dst, "w") as zout:
        for n, b in items.items():
            zout.writestr(n, b)
    return dst


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    return Path(save_tiny_mace(tmp_path_factory.mktemp("good") / "good.stbundle"))


def _crafted(tmp_path: Path, good: Path, marker: Path) -> dict[str, Path]:
    evil = _pickle_bytes({"x": _Evil(marker)})
    return {
        "legacy": _legacy_bundle(tmp_path / "legacy.stbundle", marker),
        "tampered": _rewrite_member(good, tmp_path / "tampered.stbundle",
                                    "tensors.safetensors", evil, fix_manifest=False),
        "forged": _rewrite_member(good, tmp_path / "forged.stbundle",
                                  "tensors.safetensors", evil, fix_manifest=True),
        "forged_meta": _rewrite_member(good, tmp_path / "forged_meta.stbundle",
                                       "meta.json", evil, fix_manifest=True),
    }


# --------------------------------------------------------------------------- API


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["legacy", "tampered", "forged", "forged_meta"])
def test_crafted_bundle_api(kind, tmp_path, good_bundle, marker):
    from ase_surftune.models.backends import load_model

    path = _crafted(tmp_path, good_bundle, marker)[kind]
    expected = {"legacy": "--trust-pickle", "tampered": "checksum",
                "forged": "corrupt", "forged_meta": "corrupt"}[kind]
    with pytest.raises(BundleError, match=expected):
        Bundle.load(path)
    with pytest.raises(BundleError, match=expected):
        load_model(str(path))
    with pytest.raises(BundleError, match=expected):
        SurfTuneCalculator(str(path))
    if kind == "legacy":
        with pytest.raises(UnsafeLoadError, match="trust=True"):
            load_model(f"mace:{path}")


@pytest.mark.slow
def test_trusted_legacy_bundle_loads_and_converts(tmp_path, marker):
    """A genuine v1 bundle loads with trust=True and re-saves in the safe format."""
    from _models import tiny_mace

    ad = tiny_mace()
    legacy_inner = {"adapter": {"backend": "mace", "name": "old", "model": ad.model},
                    "reference_energies": {"Default": {"Cu": 0.25}}, "corrections": {},
                    "default_head": None, "head_info": {}, "train_config": {},
                    "metrics": {}, "provenance": {}}
    payload = _pickle_bytes(legacy_inner)
    old = tmp_path / "old.stbundle"
    torch.save({"format": BUNDLE_FORMAT, "format_version": 1, "backend": "mace",
                "heads": ad.heads, "sha256": hashlib.sha256(payload).hexdigest(),
                "payload": payload}, old)
    with pytest.raises(UnsafeLoadError, match="legacy"):
        Bundle.load(old)
    new = Bundle.load(old, trust=True).save(tmp_path / "new.stbundle")
    b2 = Bundle.load(new)
    assert b2.reference_energies == {"Default": {"Cu": 0.25}}
    sd1, sd2 = ad.model.state_dict(), b2.adapter.model.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_mace_model_file_needs_trust(tmp_path, marker):
    from ase_surftune.models.backends import load_model

    evil = tmp_path / "evil.model"
    torch.save({"x": _Evil(marker)}, evil)
    for spec in (str(evil), f"mace:{evil}"):
        with pytest.raises(UnsafeLoadError, match="--trust-pickle"):
            load_model(spec)
        with pytest.raises(UnsafeLoadError, match="trust=True"):
            SurfTuneCalculator(spec)


def test_crafted_checkpoint(tmp_path, tiny_mace_file, marker):
    from ase_surftune.training import finetune

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "model": _Evil(marker)}, out / "checkpoint.pt")
    with pytest.raises(ConfigError, match="not unpickled"):
        load_checkpoint(out / "checkpoint.pt")
    with pytest.raises(ConfigError, match="not unpickled"):
        finetune({"model": f"mace:{tiny_mace_file}", "output_dir": str(out), "resume": True,
                  "epochs": 1, "progress": False, "plot": False},
                 train=make_emt_slabs(4))


def test_torch_default_stays_safe_after_importing_mace(tmp_path, marker):
    """conftest imported mace: torch.load's default (weights_only=True) still holds."""
    assert os.environ.get(ENV) == conftest.ENV_BEFORE_MACE
    if conftest.ENV_BEFORE_MACE is not None:
        pytest.skip(f"{ENV} was set before the tests started")
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Evil(marker)}, evil)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        torch.load(evil)


# --------------------------------------------------------------------------- CLI


def test_crafted_files_cli(tmp_path, good_bundle, marker, capsys):
    crafted = _crafted(tmp_path, good_bundle, marker)
    slab = fcc111("Cu", (2, 2, 2), vacuum=5.0, periodic=True)
    xyz = tmp_path / "slab.xyz"
    write(xyz, slab)
    labelled = tmp_path / "lab.xyz"
    write(labelled, make_emt_slabs(2, symbols=("Cu",)))
    evil_model = tmp_path / "evil.model"
    torch.save({"x": _Evil(marker)}, evil_model)
    specs = [*map(str, crafted.values()), str(evil_model), f"mace:{evil_model}"]
    for spec in specs:
        for argv in (["heads", spec],
                     ["evaluate", str(labelled), "-m", spec, "--no-plots", "--no-progress",
                      "-o", str(tmp_path / "ev")],
                     ["relax", str(xyz), "-m", spec]):
            capsys.readouterr()
            assert main(argv) == 2, (argv, capsys.readouterr())
            err = capsys.readouterr().err
            assert err.startswith(f"surftune {argv[0]}: error:") and spec.split(":")[-1] in err
    # the legacy bundle and the .model file name the way out
    main(["heads", str(crafted["legacy"])])
    assert "--trust-pickle" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["legacy_bundle", "pickle_pt", "dot_model", "mace_prefix"])
def test_finetune_check_does_not_unpickle(kind, tmp_path, marker, capsys):
    evil_pt = tmp_path / "evil.pt"
    torch.save({"backend": "mace", "x": _Evil(marker)}, evil_pt)
    evil_model = tmp_path / "evil.model"
    torch.save({"x": _Evil(marker)}, evil_model)
    model = {"legacy_bundle": str(_legacy_bundle(tmp_path / "l.stbundle", marker)),
             "pickle_pt": str(evil_pt), "dot_model": str(evil_model),
             "mace_prefix": f"mace:{evil_model}"}[kind]
    write(tmp_path / "train.xyz", make_emt_slabs(2))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: {model}\ntrain_file: train.xyz\noutput_dir: out\n")
    rc = main(["finetune", str(cfg), "--check"])
    err = capsys.readouterr().err
    if kind in ("legacy_bundle", "pickle_pt"):  # cannot be inspected without unpickling
        assert rc == 2 and "model" in err
    else:  # a .model file is recognised by name; --check reads nothing of it
        assert rc == 0, err


# --------------------------------------------------------------------------- child process


def _child(code: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                       e.get("PYTHONPATH", "")])
    e.pop(ENV, None)
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=e, timeout=300, cwd=str(ROOT))


@pytest.mark.parametrize("before", [None, "0"])
@pytest.mark.slow
def test_importing_mace_restores_env_in_process_and_children(before):
    code = (
        "import os, subprocess, sys\n"
        "from ase_surftune.models.backends.mace import import_mace\n"
        "from ase_surftune.models.backends.mace_builders import build_mace\n"
        "import_mace(); build_mace(['Cu'], channels=4)\n"
        "import mace, mace.calculators\n"  # already imported: no effect
        f"print('self', os.environ.get({ENV!r}))\n"
        f"inner = {f'import os; print(os.environ.get({ENV!r}))'!r}\n"
        "out = subprocess.run([sys.executable, '-c', inner], capture_output=True, text=True)\n"
        "print('child', out.stdout.strip())\n")
    res = _child(code, {ENV: before})
    assert res.returncode == 0, res.stderr
    assert f"self {before}" in res.stdout and f"child {before}" in res.stdout


@pytest.mark.slow
def test_crafted_files_in_child_process_with_mace_imported(tmp_path, good_bundle, marker):
    crafted = _crafted(tmp_path, good_bundle, marker)
    ck = tmp_path / "checkpoint.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": _Evil(marker)}, ck)
    code = (
        "import sys, torch\n"
        "from ase_surftune.models.backends.mace import import_mace\n"
        "import_mace()\n"
        "from ase_surftune.models.backends import load_model\n"
        "from ase_surftune.core.errors import SurfTuneError\n"
        "from ase_surftune.training.checkpoint import load_checkpoint\n"
        "n = 0\n"
        f"for p in {[str(p) for p in crafted.values()]!r}:\n"
        "    try:\n"
        "        load_model(p)\n"
        "    except SurfTuneError as e:\n"
        "        n += 1\n"
        "try:\n"
        f"    load_checkpoint({str(ck)!r})\n"
        "except SurfTuneError:\n"
        "    n += 1\n"
        "try:\n"
        f"    torch.load({str(ck)!r})\n"  # torch's own default, after importing mace
        "except Exception:\n"
        "    n += 1\n"
        "print('refused', n)\n")
    res = _child(code)
    assert res.returncode == 0, res.stderr
    assert f"refused {len(crafted) + 2}" in res.stdout
