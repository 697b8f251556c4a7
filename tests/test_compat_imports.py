"""Old module paths (before the layered layout) still import the same module, with a warning."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ase_surftune import _compat


@pytest.mark.slow
def test_old_paths_are_the_new_modules_and_warn():
    """In a fresh process: each old path warns naming the new one, and is the same module."""
    code = (
        "import importlib, warnings\n"
        "from ase_surftune import _compat\n"
        "for old, new in _compat.MOVED.items():\n"
        "    mod = importlib.import_module(new)\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        assert importlib.import_module(old) is mod, old\n"
        "    msgs = [str(w.message) for w in caught if w.category is DeprecationWarning]\n"
        "    assert any(new in m for m in msgs), (old, msgs)\n"
        "    assert mod.__spec__.name == new, (old, mod.__spec__.name)\n"
        "print('ok', len(_compat.MOVED))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["ok", str(len(_compat.MOVED))]


def test_old_submodule_and_from_import():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ase_surftune.finetune.api import finetune as old

        from ase_surftune.training.api import finetune as new
    assert old is new
    assert sys.modules["ase_surftune.finetune.api"] is sys.modules["ase_surftune.training.api"]


def test_new_name_table():
    assert _compat.new_name("ase_surftune.finetune.loop") == "ase_surftune.training.loop"
    assert _compat.new_name("ase_surftune.backends.mace") == "ase_surftune.models.backends.mace"
    assert _compat.new_name("ase_surftune.properties.surface") is None
    assert _compat.new_name("ase_surftune.errorsx") is None
