"""Kill tests (issue 13): no lost work under SIGKILL, corrupt frames and concurrent runs.

* a SIGKILL while labelling loses no completed frame (the resumed run recomputes only
  what was not written);
* a corrupt frame in the middle of a label file loses none of the frames after it;
* two ``finetune`` runs into one folder: the second is refused ("in use by PID"), the
  first finishes intact.

(The bit-exact resume after a mid-epoch kill is in test_finetune.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import fcc111
from ase.calculators.emt import EMT
from conftest import make_emt_slabs, save_tiny_mace

from ase_surftune.core import errors as E
from ase_surftune.data import label

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _structures(n: int) -> list:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        a = fcc111("Cu", (2, 2, 2), vacuum=5.0)
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        out.append(a)
    return out


class CountingEMT(EMT):
    calls = 0

    def calculate(self, *args, **kwargs):
        type(self).calls += 1
        super().calculate(*args, **kwargs)


def _n_frames_text(path: Path) -> int:
    return path.read_text().count("Lattice=") if path.exists() else 0


@pytest.mark.slow
def test_sigkill_during_labelling_loses_no_frame(tmp_path):
    ase.io.write(tmp_path / "in.xyz", _structures(12), format="extxyz")
    structs = ase.io.read(tmp_path / "in.xyz", ":")  # exactly what the killed run read
    out = tmp_path / "labels.xyz"
    script = textwrap.dedent(f"""
        import time, ase.io
        from ase.calculators.emt import EMT
        from ase_surftune.data import label

        class SlowEMT(EMT):
            def calculate(self, *a, **k):
                time.sleep(0.3)
                super().calculate(*a, **k)

        label(ase.io.read({str(tmp_path / 'in.xyz')!r}, ':'), SlowEMT(), {str(out)!r},
              progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env())
    try:
        deadline = time.time() + 120
        while _n_frames_text(out) < 4 and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    written = ase.io.read(out, ":")  # every complete frame the killed run wrote
    assert 4 <= len(written) < 12
    CountingEMT.calls = 0
    done = label(structs, CountingEMT(), out, progress=False)
    assert len(done) == 12
    # only the frames that were not written are recomputed: none of them was lost
    assert CountingEMT.calls == 12 - len(written)
    for frame in written:
        i = frame.info["label_index"]
        assert done[i].get_potential_energy() == pytest.approx(frame.get_potential_energy(),
                                                              abs=1e-12)
        np.testing.assert_allclose(done[i].get_forces(), frame.get_forces(), atol=1e-12)


def test_corrupt_middle_frame_loses_no_later_frame(tmp_path):
    structs = _structures(10)
    out = tmp_path / "labels.xyz"
    first = label(structs, EMT(), out, progress=False)
    lines = out.read_text().splitlines(keepends=True)
    nat = len(structs[0])
    start = 3 * (nat + 2)  # frame 3: corrupt one coordinate line
    lines[start + 2] = "Cu garbage not-a-number\n"
    out.write_text("".join(lines))
    CountingEMT.calls = 0
    done = label(structs, CountingEMT(), out, progress=False)
    assert CountingEMT.calls == 1  # only the corrupt frame is recomputed
    assert len(done) == 10 and len(ase.io.read(out, ":")) == 10
    for a, b in zip(first, done):
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-12)


def test_torn_final_frame_is_cut_and_relabelled(tmp_path):
    structs = _structures(4)
    out = tmp_path / "labels.xyz"
    label(structs, EMT(), out, progress=False)
    text = out.read_text()
    out.write_text(text[:-40])  # a write cut off by a kill
    CountingEMT.calls = 0
    done = label(structs, CountingEMT(), out, progress=False)
    assert CountingEMT.calls == 1 and len(done) == 4


def test_restart_keeps_a_backup(tmp_path):
    structs = _structures(2)
    out = tmp_path / "labels.xyz"
    label(structs, EMT(), out, progress=False)
    before = out.read_bytes()
    label(structs, EMT(), out, resume=False, progress=False)
    backups = list(tmp_path.glob("labels.xyz.old-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == before


@pytest.mark.slow
def test_two_finetune_runs_into_one_folder(tmp_path):
    model = save_tiny_mace(tmp_path / "tiny.stbundle")
    ase.io.write(tmp_path / "train.xyz", make_emt_slabs(4, size=(1, 1, 3)))
    cfg = {"model": f"mace:{model}", "train_file": str(tmp_path / "train.xyz"),
           "epochs": 1, "batch_size": 2, "valid_fraction": 0.0, "progress": False,
           "plot": False, "output_dir": str(tmp_path / "run"),
           "forgetting": {"enabled": False}}
    import yaml

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    first = subprocess.Popen([sys.executable, "-m", "ase_surftune", "finetune",
                              str(tmp_path / "cfg.yaml"), "--no-progress"], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "run" / ".surftune.lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.02)
    from ase_surftune.training import finetune

    try:
        with pytest.raises(E.LockedError, match=rf"in use by PID {first.pid}"):
            finetune(cfg)
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "best model:" in out
    from ase_surftune.models.bundle import Bundle

    b = Bundle.load(tmp_path / "run" / "model.stbundle")
    assert b.metrics["epochs_run"] == 1
    assert not list((tmp_path / "run").glob(".*.tmp"))
    # the folder now holds a run: a third, non-resume run is refused, --overwrite moves it
    with pytest.raises(E.OutputExistsError):
        finetune(cfg)
    assert (tmp_path / "run" / "model.stbundle").exists()
