"""Issue 15 training layer: streaming metrics, torch_ema checkpoints, loop callbacks and
typed strategy options (offline: tiny MACE, EMT slabs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_emt_slabs

from ase_surftune.core.errors import ConfigError
from ase_surftune.core.metrics import ErrorAccumulator, mae_rmse
from ase_surftune.training import load_config
from ase_surftune.training.callbacks import Callback, TrainingInterrupted
from ase_surftune.training.checkpoint import load_checkpoint, save_checkpoint
from ase_surftune.training.ema import ema_state, load_ema_state, make_ema


def test_streaming_accumulator_equals_mae_rmse():
    rng = np.random.default_rng(3)
    chunks = [rng.normal(size=n) for n in (5, 0, 17, 1)]
    acc = ErrorAccumulator()
    for c in chunks:
        acc.add("f", c)
    mae, rmse = mae_rmse(np.concatenate(chunks))
    assert acc.mae("f") == pytest.approx(mae, rel=1e-14)
    assert acc.rmse("f") == pytest.approx(rmse, rel=1e-14)
    acc.add_mean("loss", 1.0, 3)
    acc.add_mean("loss", 5.0, 1)
    assert acc.mean("loss") == 2.0  # (3·1 + 1·5) / 4
    assert acc.mae("missing") is None and ErrorAccumulator(acc.sums).sums == acc.sums


def test_torch_ema_matches_formula_and_round_trips_bit_exactly(tmp_path):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    ema = make_ema([("w", w), ("b", b)], 0.9)
    expect = w.detach().clone()
    for _ in range(5):
        with torch.no_grad():
            w.add_(torch.randn_like(w))
        ema.update()
        expect = 0.9 * expect + 0.1 * w.detach()
    assert torch.allclose(ema.shadow_params[0], expect, rtol=0, atol=1e-14)
    with ema.average_parameters():  # the validation swap puts the average in ...
        assert torch.equal(w.detach(), ema.shadow_params[0])
    assert not torch.equal(w.detach(), ema.shadow_params[0])  # ... and takes it out
    save_checkpoint(tmp_path / "ck.pt", {"ema": ema_state(ema)})
    state = load_checkpoint(tmp_path / "ck.pt")["ema"]  # weights_only=True
    assert set(state["shadow"]) == {"w", "b"} and state["decay"] == 0.9
    fresh = make_ema([("w", w), ("b", b)], 0.9)
    load_ema_state(fresh, state)
    assert all(torch.equal(x, y) for x, y in zip(fresh.shadow_params, ema.shadow_params))
    assert make_ema([("w", w)], None) is None


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_train_start(self, ctx):
        self.calls.append("train_start")

    def on_epoch_start(self, ctx):
        self.calls.append(f"epoch_start{ctx.state['epoch']}")

    def on_step_end(self, ctx):
        self.calls.append(f"step{ctx.state['global_step']}")

    def on_epoch_end(self, ctx, row):
        assert ctx.state["history"][-1] is row
        self.calls.append(f"epoch_end{row['epoch']}")

    def on_train_end(self, ctx):
        self.calls.append("train_end")

    def on_exit(self, ctx):
        self.calls.append("exit")


@pytest.fixture(scope="module")
def loop_parts(tiny_mace_file, tmp_path_factory):
    from ase_surftune.models.bundle import Bundle
    from ase_surftune.training.scoring import featurize_samples

    adapter = Bundle.load(tiny_mace_file).adapter
    slabs = make_emt_slabs(5)
    return adapter, featurize_samples(adapter, slabs[:3]), featurize_samples(adapter, slabs[3:])


def _cfg(tiny_mace_file, out, **kw):
    return load_config({"model": tiny_mace_file, "epochs": 2, "batch_size": 2,
                        "progress": False, "plot": False, "output_dir": str(out),
                        "scheduler": {"name": "none"}, **kw})


@pytest.mark.slow
def test_loop_calls_callbacks_in_order_and_writes_files(tiny_mace_file, loop_parts, tmp_path):
    from ase_surftune.training.loop import train_loop

    adapter, train, valid = loop_parts
    rec = Recorder()
    res = train_loop(adapter, adapter.heads[0], list(adapter.model.named_parameters()), train,
                     valid, _cfg(tiny_mace_file, tmp_path), tmp_path, callbacks=[rec])
    assert rec.calls == ["train_start", "epoch_start0", "step1", "step2", "epoch_end1",
                         "epoch_start1", "step3", "step4", "epoch_end2", "train_end", "exit"]
    assert res.n_steps == 4 and len(res.history) == 2
    assert {"checkpoint.pt", "metrics.csv", "metrics.json"} <= {p.name for p in tmp_path.iterdir()}
    assert not (tmp_path / "loss_curve.png").exists()  # plot: false


def test_stop_after_step_checkpoints_first_and_exits(tiny_mace_file, loop_parts, tmp_path):
    from ase_surftune.training.loop import train_loop

    adapter, train, valid = loop_parts
    rec = Recorder()
    cfg = _cfg(tiny_mace_file, tmp_path, checkpoint_every_steps=1)
    with pytest.raises(TrainingInterrupted):
        train_loop(adapter, adapter.heads[0], list(adapter.model.named_parameters()), train,
                   valid, cfg, tmp_path, stop_after_step=1, callbacks=[rec])
    assert rec.calls == ["train_start", "epoch_start0", "exit"]  # default stop runs first
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["loop"]["global_step"] == 1 and ck["loop"]["step_in_epoch"] == 1
    assert set(ck["loop"]["acc"]) >= {"forces_abs", "forces_sq", "forces_n", "loss_sum"}


def test_strategy_options_are_typed_with_dotted_errors(tiny_mace_file):
    cfg = load_config({"model": tiny_mace_file, "strategy": "frozen",
                       "strategy_options": {"k": 1}})
    assert cfg.options.k == 1 and cfg.options.patterns is None
    mh = load_config({"model": tiny_mace_file, "strategy": "multihead",
                      "strategy_options": {"new_head": "surf", "replay": {"n": 3}}})
    assert mh.options.new_head == "surf" and mh.options.replay.n == 3
    assert mh.strategy_options == {"new_head": "surf", "replay": {"n": 3}}  # stored as given
    assert load_config({"model": tiny_mace_file}).options is None  # full: no options
    with pytest.raises(ConfigError) as e:
        load_config({"model": tiny_mace_file, "strategy": "frozen",
                     "strategy_options": {"k": 0, "kk": 1}, "epocs": 2})
    msg = str(e.value)
    assert msg.startswith("Invalid fine-tuning config (dict) (3 problems)")
    assert "  strategy_options.k: Input should be greater than or equal to 1" in msg
    assert "  strategy_options.kk: unknown key" in msg and "  epocs: unknown key" in msg
    with pytest.raises(ConfigError, match="strategy_options.replay.size: unknown key"):
        load_config({"model": tiny_mace_file, "strategy": "multihead",
                     "strategy_options": {"replay": {"size": 3}}})
    with pytest.raises(ConfigError, match="not both"):
        load_config({"model": tiny_mace_file, "strategy": "frozen",
                     "strategy_options": {"k": 1}, "freeze": {"k": 1}})


@pytest.mark.slow
def test_linear_options_from_strategy_options_equal_linear_section(tiny_mace_file, tmp_path):
    from ase_surftune.training import finetune

    slabs = make_emt_slabs(6)
    base = {"model": tiny_mace_file, "strategy": "linear", "progress": False, "plot": False,
            "forgetting": {"enabled": False}}
    runs = {}
    for name, kw in (("options", {"strategy_options": {"fit": "mse"}}),
                     ("section", {"linear": {"fit": "mse"}}), ("default", {})):
        runs[name] = finetune({**base, **kw, "output_dir": str(tmp_path / name)},
                              train=slabs[:4], valid=slabs[4:]).metrics["linear_correction"]
    assert runs["options"] == runs["section"]
    assert runs["options"]["info"]["fit"] == "mse" != runs["default"]["info"]["fit"]
