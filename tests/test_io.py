"""The atomic-write, lock and temp-file helpers of ase_surftune.core.io."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ase_surftune.core.errors import LockedError
from ase_surftune.core.io import (
    atomic_write_json,
    atomic_write_text,
    atomic_writer,
    clean_orphan_temps,
    exclusive_lock,
    move_aside,
)


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    p = tmp_path / "metrics.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_writer(p, "w") as fh:
            fh.write('{"a": 2, "torn')
            raise RuntimeError("killed mid-write")
    assert p.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(x.name for x in tmp_path.iterdir()) == ["metrics.json"]  # no temp left


def test_temp_names_are_unique_so_two_writers_do_not_collide(tmp_path):
    p = tmp_path / "x.txt"
    with atomic_writer(p) as a, atomic_writer(p) as b:
        assert a.name != b.name
        a.write("first")
        b.write("second")
    assert p.read_text() == "first"  # the last rename wins; neither write failed


def test_clean_orphan_temps_only_removes_ours(tmp_path):
    (tmp_path / "metrics.csv").write_text("x")
    ours = [tmp_path / ".metrics.csv.ab12CD_9.tmp", tmp_path / "metrics.csv.tmp"]
    keep = [tmp_path / "notes.tmp", tmp_path / "data.xyz"]
    for p in ours + keep:
        p.write_text("x")
    removed = clean_orphan_temps(tmp_path)
    assert sorted(removed) == sorted(ours)
    assert all(p.exists() for p in keep)
    (tmp_path / ".labels.xyz.ab12CD_9.tmp").write_text("x")
    (tmp_path / ".other.xyz.ab12CD_9.tmp").write_text("x")
    assert [p.name for p in clean_orphan_temps(tmp_path, names=["labels.xyz"])] == [
        ".labels.xyz.ab12CD_9.tmp"]


def test_lock_names_the_holder_and_is_released_by_death(tmp_path):
    lock = tmp_path / ".surftune.lock"
    code = ("import sys\nfrom ase_surftune.core.io import exclusive_lock\n"
            f"with exclusive_lock({str(lock)!r}, 'folder'):\n"
            "    print('locked', flush=True)\n    sys.stdin.read()\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=rf"in use by PID {proc.pid}"):
            with exclusive_lock(lock, "folder"):
                pass
    finally:
        proc.kill()  # SIGKILL: the kernel drops the flock
        proc.wait()
    with exclusive_lock(lock, "folder"):
        assert lock.read_text().strip() == str(os.getpid())


def test_move_aside(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    atomic_write_text(d / "a.txt", "old")
    new = move_aside(d)
    assert not d.exists() and new.name.startswith("run.old-") and (new / "a.txt").exists()
    d.mkdir()
    assert move_aside(d) != new  # a second move in the same second gets its own name


def test_finetune_overwrite_moves_the_old_run_aside(tmp_path):
    from ase_surftune.training.api import _claim_output_dir, load_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.stbundle").write_bytes(b"old result")
    (run / ".model.stbundle.ab12CD_9.tmp").write_bytes(b"orphan")
    import contextlib

    cfg = load_config({"model": "chgnet", "output_dir": str(run), "overwrite": True})
    with contextlib.ExitStack() as stack:
        run_id, ck = _claim_output_dir(cfg, run, stack)
    assert ck is None and len(run_id) == 32
    old = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(old) == 1 and (old[0] / "model.stbundle").read_bytes() == b"old result"
    assert not (old[0] / ".model.stbundle.ab12CD_9.tmp").exists()  # cleaned under the lock
    assert sorted(p.name for p in run.iterdir()) == [".surftune.lock", "run.json"]


def test_to_jsonable_gives_valid_json_for_what_results_hold():
    """One sanitiser: NaN/inf -> null (json.dumps would write bare NaN), numpy, paths,
    dataclasses (json=False fields left out), to_dict objects, Atoms, MSONable, sets."""
    import dataclasses
    import json
    from pathlib import Path

    import numpy as np
    from ase.build import bulk

    from ase_surftune.core.io import to_jsonable

    @dataclasses.dataclass
    class Result:
        gamma: float
        cache: object = dataclasses.field(default=None, metadata={"json": False})

        def summary(self) -> str:  # not to_dict: fields are used
            return ""

    class Explicit:
        def to_dict(self):
            return {"x": np.float32(0.5)}

    data = {"e": np.float64("nan"), "f": np.array([[1.0, np.inf], [-np.inf, 2.0]]),
            "n": np.int64(3), "ok": np.bool_(True), "p": Path("/tmp/x"), 7: (1, 2.5),
            "s": {3, 1}, "r": Result(np.float64(1.25), cache=object()), "x": Explicit(),
            "atoms": bulk("Cu", "fcc", a=3.6)}
    out = to_jsonable(data)
    text = json.dumps(out, allow_nan=False)  # raises on any NaN/inf left
    back = json.loads(text)
    assert back["e"] is None and back["f"] == [[1.0, None], [None, 2.0]]
    assert back["n"] == 3 and back["ok"] is True and back["p"] == "/tmp/x"
    assert back["7"] == [1, 2.5] and back["s"] == [1, 3]
    assert back["r"] == {"gamma": 1.25} and back["x"] == {"x": 0.5}
    assert back["atoms"]["symbols"] == ["Cu"] and back["atoms"]["pbc"] == [True] * 3
    np.testing.assert_allclose(back["atoms"]["cell"], bulk("Cu", "fcc", a=3.6).cell.array)
    assert to_jsonable(object()) is not None  # lenient: returned unchanged
    with pytest.raises(TypeError, match="has no JSON form"):
        to_jsonable({"a": [object()]}, strict=True)


def test_to_jsonable_passes_pymatgen_objects_through_monty():
    import json

    pytest.importorskip("pymatgen")
    from pymatgen.core import Lattice

    from ase_surftune.core.io import to_jsonable

    d = json.loads(json.dumps(to_jsonable(Lattice.cubic(3.6)), allow_nan=False))
    assert d["@class"] == "Lattice" and d["matrix"][0][0] == 3.6
