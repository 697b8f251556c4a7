"""Fine-tuning engine: one training loop, six strategies, every backend.

Layout: ``config`` (validated settings) → ``datasets`` / ``scoring`` (data, shifts,
errors) → ``strategies`` (+ ``multihead``, ``replay``, ``distill``; ``registry``) →
``loop`` (only trains; ``losses``, ``ema``) with ``callbacks`` (checkpoints, metrics
files, plot, progress) → ``stages`` (the named steps of ``finetune``) → ``api``.

>>> from ase_surftune.training import finetune
>>> result = finetune("examples/finetune_frozen_chgnet.yaml")   # doctest: +SKIP
>>> result.bundle_path, result.metrics["finetuned"]["valid"]["forces_mae"]  # doctest: +SKIP
"""

from ase_surftune.training import distill as _distill  # noqa: F401,E402  (registers "distill")
from ase_surftune.training import env_strategy as _env  # noqa: F401,E402  (registers "env")
from ase_surftune.training import multihead as _multihead  # noqa: F401,E402  (registers "multihead")
from ase_surftune.training.api import FinetuneResult, featurize_samples, finetune
from ase_surftune.training.callbacks import Callback
from ase_surftune.training.config import FinetuneConfig, load_config
from ase_surftune.training.loop import TrainingInterrupted, train_loop
from ase_surftune.training.strategies import STRATEGIES, Strategy, register_strategy

__all__ = ["finetune", "FinetuneConfig", "FinetuneResult", "load_config", "train_loop",
           "TrainingInterrupted", "Strategy", "STRATEGIES", "register_strategy",
           "featurize_samples", "Callback"]
