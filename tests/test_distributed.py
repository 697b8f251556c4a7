"""Data-parallel fine-tuning: 2 gloo ranks on CPU match one process with the same batch."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from ase.io import write

from ase_surftune.core.errors import ConfigError
from ase_surftune.models.bundle import Bundle
from ase_surftune.training import finetune


def _config(tmp_path, emt_slabs, tiny_mace_model):
    from conftest import save_tiny_mace

    model_path = save_tiny_mace(tmp_path / "tiny.stbundle", tiny_mace_model(seed=3))
    write(tmp_path / "train.xyz", emt_slabs[:8])   # equal-size slabs: exact batch split
    write(tmp_path / "valid.xyz", emt_slabs[8:10])
    cfg = {"model": f"mace:{model_path}", "strategy": "full", "train_file": "train.xyz",
           "valid_file": "valid.xyz", "epochs": 2, "batch_size": 4, "dtype": "float64",
           "seed": 7, "scheduler": {"name": "none"}, "optimizer": {"lr": 5e-3},
           "progress": False, "plot": False, "forgetting": {"enabled": False},
           "num_threads": 1}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_two_gloo_ranks_match_single_process(tmp_path, emt_slabs, tiny_mace_model):
    cfg = _config(tmp_path, emt_slabs, tiny_mace_model)
    single = finetune(cfg, output_dir=str(tmp_path / "single"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "ase_surftune", "finetune", str(cfg), "--distributed",
           "--output-dir", str(tmp_path / "ddp"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = Bundle.load(single.bundle_path).adapter.model.state_dict()
    b = Bundle.load(tmp_path / "ddp" / single.bundle_path.name).adapter.model.state_dict()
    for k in a:
        np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-7, atol=1e-9,
                                   err_msg=k)
    # metrics are reduced over ranks: the per-epoch training error is the global one
    import json

    h1 = json.loads((tmp_path / "single" / "metrics.json").read_text())["epochs"]
    h2 = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["epochs"]
    for r1, r2 in zip(h1, h2):
        assert r2["train_forces_mae"] == pytest.approx(r1["train_forces_mae"], rel=1e-7)
        assert r2["valid_loss"] == pytest.approx(r1["valid_loss"], rel=1e-7)
    assert not (tmp_path / "ddp" / "checkpoint.pt.tmp").exists()


@pytest.mark.slow
def test_distributed_outside_torchrun_is_a_clear_error(tmp_path, emt_slabs, tiny_mace_model,
                                                       monkeypatch):
    cfg = _config(tmp_path, emt_slabs, tiny_mace_model)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        finetune(cfg, distributed=True, output_dir=str(tmp_path / "x"))
