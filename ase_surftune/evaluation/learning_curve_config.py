"""The learning-curve config: one pydantic model for the API, the YAML file and the CLI.

Field descriptions (with units) are the help of ``surftune learning-curve``'s options
(:func:`ase_surftune.cli._options.option_specs`), so names, defaults and help live here
only. List fields also take a comma-separated string (``"1,2,5"``, ``"linear,full"``),
the form a command-line override gives them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from ase_surftune.core.config import StrictModel, validate_model
from ase_surftune.core.errors import ConfigError

__all__ = ["LearningCurveConfig", "load_learning_curve_config"]

#: the keys the driver sets for every run; a ``finetune:`` entry may not hold them
DRIVER_KEYS = frozenset({"train_file", "valid_file", "test_file", "output_dir", "strategy",
                         "seed", "model", "resume"})


def _comma_list(v: Any) -> Any:
    """``"1, 2,5"`` -> ``["1", "2", "5"]``; anything else unchanged (pydantic types it)."""
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return v


class LearningCurveConfig(StrictModel):
    """Settings of a learning curve (see ``examples/learning_curve_chgnet.yaml``).

    ``finetune`` holds fine-tuning keys shared by every run (epochs, optimizer, loss,
    batch_size...; see :class:`~ase_surftune.training.FinetuneConfig`);
    ``strategy_options`` per-strategy overrides, e.g. ``{"frozen": {"freeze": {"k": 3}}}``.
    """

    model: str = Field("chgnet", description="base model spec every run starts from")
    strategies: list[str] = Field(["linear", "full"],
                                  description="fine-tuning strategies, comma-separated")
    n_train: list[int] = Field([1, 2, 5, 10, 20, 50],
                               description="training-set sizes N (structures), "
                                           "comma-separated, e.g. 1,2,5,10")
    seeds: list[int] = Field([0], description="seeds of the N-structure subsets and runs")
    train_file: Path | list[Path] | None = Field(None, description="labelled training pool")
    test_file: Path | list[Path] | None = Field(None, description="fixed labelled test set")
    valid_file: Path | list[Path] | None = Field(
        None, description="fixed validation set for early stopping (default: none; each "
                          "run trains every epoch and keeps the last)")
    finetune: dict[str, Any] = Field(default_factory=dict,
                                     description="fine-tuning keys shared by every run")
    strategy_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-strategy fine-tuning overrides")
    zero_shot: bool = Field(True, description="score the base model as the N = 0 point")
    high_force_quantile: float = Field(
        0.9, ge=0, lt=1, description="quantile of |F_ref| defining the high-force subset")
    max_force: float | None = Field(
        None, gt=0, description="drop pool/valid/test frames whose largest reference atomic "
                                "force exceeds this (eV/Å); each one is named")
    output_dir: Path = Field(Path("learning_curve_out"),
                             description="folder of results, runs and plots")
    progress: bool = Field(True, description="progress bars")

    @field_validator("n_train", "strategies", "seeds", mode="before")
    @classmethod
    def _split_commas(cls, v: Any) -> Any:
        return _comma_list(v)

    @field_validator("n_train")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(n < 1 for n in v):
            raise ValueError(f"n_train must be a non-empty list of integers >= 1, got {v}")
        return sorted(set(v))

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from ase_surftune.training.strategies import STRATEGIES

        unknown = [s for s in v if s not in STRATEGIES]
        if not v or unknown:
            raise ValueError(f"unknown strategies {unknown}; known: {sorted(STRATEGIES)}")
        return list(dict.fromkeys(v))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one seed")
        return list(dict.fromkeys(v))

    @field_validator("finetune")
    @classmethod
    def _no_data_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(v) & DRIVER_KEYS)
        if bad:
            raise ValueError(f"keys {bad} are set by the learning-curve driver; put them at "
                             f"the top level (model, strategies, seeds, *_file, output_dir)")
        return v

    def run_config(self, strategy: str, seed: int, output_dir: Path) -> dict[str, Any]:
        """The fine-tuning config dict of one run."""
        # the forgetting report (issue 4) costs more than a small run itself; learning
        # curves measure test errors, so it is off unless finetune: {forgetting: ...} asks
        d: dict[str, Any] = {"valid_fraction": 0.0, "plot": False,
                             "forgetting": {"enabled": False}}
        d.update(self.finetune)
        d.update(self.strategy_options.get(strategy, {}))
        d.update({"model": self.model, "strategy": strategy, "seed": seed,
                  "output_dir": str(output_dir), "resume": "auto",
                  "progress": self.progress and d.get("progress", True)})
        return d


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make the YAML's relative file paths (and a model file) relative to its folder."""
    for key in ("train_file", "test_file", "valid_file", "output_dir"):
        v = data.get(key)
        if isinstance(v, str) and not Path(v).is_absolute():
            data[key] = str(base / v)
        elif isinstance(v, list):
            data[key] = [str(base / x) if isinstance(x, str) and not Path(x).is_absolute()
                         else x for x in v]
    if isinstance(data.get("model"), str) and data["model"].strip():
        from ase_surftune.core.specs import rebase_spec

        data["model"] = rebase_spec(data["model"], base)


def load_learning_curve_config(config: LearningCurveConfig | dict | str | Path,
                               **overrides: Any) -> LearningCurveConfig:
    """Validate a config (object, dict or YAML path; file paths relative to the YAML).

    Every fine-tuning run's configuration is validated too, so a bad ``finetune`` or
    ``strategy_options`` entry fails here, before any training.

    Raises:
        ConfigError: every problem at once, in the house format of
            :func:`ase_surftune.core.config.format_validation_error`.
    """
    source = "(dict)"
    if isinstance(config, LearningCurveConfig):
        data = config.model_dump()
    elif isinstance(config, dict):
        data = dict(config)
    else:
        from ase_surftune.core.io import load_yaml

        data = load_yaml(config)
        source = repr(str(config))
        _resolve_paths(data, Path(config).resolve().parent)
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = validate_model(LearningCurveConfig, data, "learning-curve", source,
                         example="examples/learning_curve_chgnet.yaml")
    from ase_surftune.training import load_config

    for strat in cfg.strategies:
        try:
            load_config(cfg.run_config(strat, cfg.seeds[0], cfg.output_dir / "check"))
        except ConfigError as exc:
            raise ConfigError(f"learning curve, strategy {strat!r}: {exc}") from None
    return cfg
