"""The loss-curve figure draws a validation curve only when there is a validation set."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from ase_surftune.training.loop import plot_history  # noqa: E402


def _history(valid: bool) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "train_forces_mae": 0.1 / e,
             "valid_loss": 1.2 / e if valid else None,
             "valid_forces_mae": 0.12 / e if valid else None} for e in (1, 2, 3)]


def _lines_after_plot(history, tmp_path, monkeypatch):
    figs = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    assert plot_history(history, tmp_path / "loss.png").stat().st_size > 0
    real_close("all")
    ax1, ax2 = figs[0].axes
    return [ln.get_label() for ln in ax1.get_lines()], ax2.get_ylabel()


def test_no_validation_set_draws_no_valid_curve(tmp_path, monkeypatch):
    labels, ylabel = _lines_after_plot(_history(False), tmp_path, monkeypatch)
    assert labels == ["train"] and ylabel.startswith("train force MAE")


def test_with_validation_set_both_curves(tmp_path, monkeypatch):
    labels, ylabel = _lines_after_plot(_history(True), tmp_path, monkeypatch)
    assert labels == ["train", "valid"] and ylabel.startswith("valid force MAE")
