"""Fine-tuning strategies: which parameters train and how the starting model is built.

A strategy is a small class registered under a name. The training loop never looks at
the strategy's name: it asks the strategy for the adapter to train, the head, the
trainable parameters and (optionally) an extra loss term. New strategies (multi-head
replay, distillation, ...) subclass :class:`Strategy` and decorate with
:func:`register_strategy` (the registry lives in :mod:`ase_surftune.training.registry`,
so the config can validate against it without importing this module); nothing in the
loop changes. A strategy with options declares their pydantic model as
``options_model``; ``FinetuneConfig`` validates ``strategy_options`` against it (errors
keyed ``strategy_options.<key>``) and the strategy reads them typed as ``self.options``.

Built in:

* ``full``    — every parameter trains.
* ``frozen``  — the first k blocks (or blocks/parameters matching name patterns) are
  frozen (``requires_grad=False``, never handed to the optimiser, so they stay
  bit-identical); the rest trains. Default k (:data:`DEFAULT_FROZEN_K`): all but the
  last interaction block and the readout — CHGNet 4 (embedding + interaction_0..2 of
  its 6 blocks), MACE 2 (embedding + interaction_0 of a 2-interaction model's 4).
* ``scratch`` — the same architecture, randomly initialised with the run's seed: the
  baseline that shows what pre-training is worth.
* ``linear``  — no gradient training: the PES scale a and per-element shifts b_Z of
  :class:`~ase_surftune.models.correction.LinearCorrection` (E' = a·(E − Σe_Z^model) +
  Σe_Z^model + Σb_Z, F' = a·F; default fit a = ΣF_ref²/ΣF_ref·F) are fitted and stored
  as the bundle's correction, so it appears in the same tables as the others.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ValidationError

from ase_surftune.core.config import format_validation_error
from ase_surftune.core.errors import ConfigError
from ase_surftune.training.config import FinetuneConfig, FreezeConfig, LinearConfig
from ase_surftune.training.registry import STRATEGIES, get_strategy, register_strategy

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.models.backends.base import ModelAdapter

__all__ = ["Strategy", "STRATEGIES", "register_strategy", "get_strategy",
           "FullStrategy", "FrozenStrategy", "ScratchStrategy", "LinearStrategy",
           "parameter_counts", "DEFAULT_FROZEN_K", "default_frozen_k"]

log = logging.getLogger(__name__)

#: added to the config seed for the scratch initialisation
SCRATCH_SEED_OFFSET = 104_729
#: documented default ``freeze.k`` per backend (all but the last interaction and readout)
DEFAULT_FROZEN_K: dict[str, int] = {"chgnet": 4, "mace": 2}


def default_frozen_k(backend: str, n_blocks: int) -> int:
    """:data:`DEFAULT_FROZEN_K` for ``backend``; other backends: ``n_blocks - 2``."""
    return max(1, DEFAULT_FROZEN_K.get(backend, n_blocks - 2))


def parameter_counts(adapter: ModelAdapter) -> dict[str, int]:
    """``{"trainable": n, "frozen": n, "total": n}`` scalar parameter counts."""
    train = sum(p.numel() for p in adapter.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in adapter.model.parameters())
    return {"trainable": int(train), "frozen": int(total - train), "total": int(total)}


def copy_adapter(adapter: ModelAdapter) -> ModelAdapter:
    """An independent copy through the adapter's payload.

    (``ModelAdapter.clone()`` deep-copies the adapter object, which fails for MACE
    adapters because they hold module references; the payload route works for all.)
    """
    return type(adapter).from_payload(adapter.to_payload(), device=str(adapter.device),
                                      dtype=adapter.dtype)


class Strategy:
    """Base class. Override what differs; the defaults describe full fine-tuning.

    Attributes:
        name: registry key (the config's ``strategy``).
        trains: False for strategies without gradient training (``linear``, ``env``);
            those return the head's correction from :meth:`fit_correction`.
        backends: backends the strategy supports.
    """

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    backends: ClassVar[tuple[str, ...]] = ("chgnet", "mace", "m3gnet")
    #: the starting weights are the base model's (so the zero-shot reference-energy
    #: alignment applies unchanged); False for ``scratch``.
    keeps_base_weights: ClassVar[bool] = True
    #: the pydantic model of the strategy's ``strategy_options`` (None: it takes none).
    #: ``FinetuneConfig`` validates the options against it, errors keyed
    #: ``strategy_options.<key>``; the strategy reads them typed from :attr:`options`.
    options_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self, config: FinetuneConfig | None = None) -> None:
        self.config = config
        self.options = self.parse_options(config.strategy_options if config else {})

    @classmethod
    def parse_options(cls, raw: dict[str, Any] | None) -> Any:
        """``raw`` validated by :attr:`options_model` (None when the strategy has none);
        ConfigError in the house format (keys ``strategy_options.*``)."""
        if cls.options_model is None:
            return None
        try:
            return cls.options_model.model_validate(raw or {})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(
                exc, "fine-tuning", "(strategy_options)",
                example="examples/finetune_*.yaml")) from None

    # ---------------------------------------------------------------- validation
    @classmethod
    def check_config(cls, config: FinetuneConfig, backend: str) -> list[str]:
        """Problems with ``config`` for this strategy on ``backend`` (before any work)."""
        if backend not in cls.backends:
            return [f"strategy {cls.name!r} does not support the {backend} backend "
                    f"(supports {list(cls.backends)})"]
        if config.freeze is not None and cls.name != "frozen":
            return [f"freeze: only used by strategy 'frozen' (strategy is {cls.name!r})"]
        if config.strategy_options and cls.options_model is None:
            return [f"strategy_options: strategy {cls.name!r} takes no options "
                    f"(got {sorted(config.strategy_options)})"]
        return []

    # ---------------------------------------------------------------- data
    def bind_data(self, train: Any, valid: Any = (), test: Any = ()) -> None:
        """Called with the run's structures before :meth:`prepare` (e.g. so that a
        strategy can build replay data for the elements of the training set)."""

    def head_pairs(self) -> dict[str, str]:
        """``{trained model head: base model head it started from}`` (forgetting report)."""
        return {}

    def head_info(self) -> dict[str, dict[str, Any]]:
        """Extra ``Bundle.head_info`` entries for heads other than the trained one."""
        return {}

    def fit_correction(self, spec: Any, setup: Any, data: Any, feats: Any,
                       align: Any) -> Any:
        """The head's fitted correction, for strategies without gradient training
        (``trains = False``); the training stages call it instead of the loop."""
        raise ConfigError(f"strategy {self.name!r} trains by gradient steps; it fits no "
                          f"correction")

    # ---------------------------------------------------------------- model
    def prepare(self, adapter: ModelAdapter, head: str) -> ModelAdapter:
        """The adapter to train (a copy; ``adapter`` itself stays the zero-shot model)."""
        return copy_adapter(adapter)

    def train_head(self, adapter: ModelAdapter, head: str) -> str:
        """The head whose readout is trained and evaluated."""
        return head

    def trainable_parameters(self, adapter: ModelAdapter) -> list[tuple[str, torch.nn.Parameter]]:
        """Set ``requires_grad`` and return the parameters handed to the optimiser."""
        for p in adapter.model.parameters():
            p.requires_grad_(True)
        return list(adapter.model.named_parameters())

    def extra_loss(self) -> Callable[..., torch.Tensor | None] | None:
        """Optional ``f(adapter, samples, outputs) -> tensor`` added to the loss."""
        return None

    def report(self, adapter: ModelAdapter) -> dict[str, Any]:
        """Strategy facts for the metrics (parameter counts, frozen blocks...)."""
        return {"strategy": self.name, "parameters": parameter_counts(adapter)}


@register_strategy
class FullStrategy(Strategy):
    name = "full"


@register_strategy
class FrozenStrategy(Strategy):
    """Options (:class:`~ase_surftune.training.config.FreezeConfig`: ``k``, ``patterns``)
    come from ``strategy_options`` or, equivalently, the ``freeze`` section (not both)."""

    name = "frozen"
    options_model = FreezeConfig

    @classmethod
    def check_config(cls, config: FinetuneConfig, backend: str) -> list[str]:
        problems = []
        if backend not in cls.backends:
            problems.append(f"strategy 'frozen' does not support the {backend} backend")
        if config.strategy_options and config.freeze is not None:
            problems.append("strategy_options: give the frozen options either here or in "
                            "'freeze', not both")
        return problems

    def _frozen_names(self, adapter: ModelAdapter) -> tuple[list[str], set[str]]:
        assert self.config is not None
        fz = self.config.freeze or self.options
        blocks = adapter.blocks()
        names = [b.name for b in blocks]
        k = fz.k
        if k is None and not fz.patterns:
            k = default_frozen_k(adapter.backend, len(blocks))
            log.info("frozen: default k = %d for %s (blocks %s frozen)", k, adapter.backend,
                     names[:k])
        if k is not None and k >= len(blocks):
            raise ConfigError(
                f"freeze.k = {k} would freeze every block of {adapter.name!r}, which has "
                f"{len(blocks)} blocks {names}; use k <= {len(blocks) - 1}")
        self._k = k
        frozen_blocks = set(names[:k] if k else [])
        frozen_params: set[str] = set()
        for pat in fz.patterns or []:
            hit_blocks = [n for n in names if fnmatch.fnmatchcase(n, pat)]
            hit_params = [n for n, _ in adapter.model.named_parameters()
                          if fnmatch.fnmatchcase(n, pat)]
            if not hit_blocks and not hit_params:
                raise ConfigError(
                    f"freeze.patterns: {pat!r} matches no block and no parameter of "
                    f"{adapter.name!r}; blocks are {names}")
            frozen_blocks.update(hit_blocks)
            frozen_params.update(hit_params)
        for b in blocks:
            if b.name in frozen_blocks:
                frozen_params.update(b.parameter_names)
        return [n for n in names if n in frozen_blocks], frozen_params

    def trainable_parameters(self, adapter: ModelAdapter) -> list[tuple[str, torch.nn.Parameter]]:
        frozen_blocks, frozen = self._frozen_names(adapter)
        out = []
        for n, p in adapter.model.named_parameters():
            p.requires_grad_(n not in frozen)
            if n not in frozen:
                out.append((n, p))
        if not out:
            raise ConfigError(f"freeze settings freeze every parameter of {adapter.name!r}; "
                              f"nothing would train")
        self._frozen_blocks = frozen_blocks
        return out

    def report(self, adapter: ModelAdapter) -> dict[str, Any]:
        rep = super().report(adapter)
        rep["frozen_blocks"] = list(getattr(self, "_frozen_blocks", []))
        rep["freeze_k"] = getattr(self, "_k", None)
        rep["blocks"] = [{"name": b.name, "n_params": b.n_params,
                          "frozen": not any(p.requires_grad for _, p in b.parameters)}
                         for b in adapter.blocks()]
        return rep


@register_strategy
class ScratchStrategy(Strategy):
    """Same architecture, fresh random weights (seeded by the config's ``seed``).

    Data statistics that are buffers rather than learned weights (MACE's isolated-atom
    energies E0, scale/shift, average neighbour count) are kept from the base model.
    """

    name = "scratch"
    keeps_base_weights = False

    def prepare(self, adapter: ModelAdapter, head: str) -> ModelAdapter:
        seed = self.config.seed if self.config is not None else 0
        rng_state = torch.get_rng_state()
        try:
            # offset so that seed 0 does not reproduce a base model built with seed 0
            torch.manual_seed(SCRATCH_SEED_OFFSET + seed)
            if adapter.backend == "chgnet":
                return _scratch_chgnet(adapter)
            if adapter.backend == "mace":
                return _scratch_mace(adapter)
            if adapter.backend == "m3gnet":
                return adapter.reinitialized()
        finally:
            torch.set_rng_state(rng_state)
        raise ConfigError(f"strategy 'scratch' does not support backend {adapter.backend!r}")


def _scratch_chgnet(adapter: ModelAdapter) -> ModelAdapter:
    from chgnet.model import CHGNet

    from ase_surftune.models.backends.chgnet import CHGNetAdapter, CHGNetHeads

    with contextlib.redirect_stdout(io.StringIO()):
        chgnet = CHGNet(**adapter.chgnet.model_args)
    heads = adapter.heads
    wrapper = CHGNetHeads(chgnet, heads=heads[:1])
    for h in heads[1:]:
        wrapper.add_head(h, heads[0])
    return CHGNetAdapter(wrapper, name=f"{adapter.name}-scratch", device=str(adapter.device),
                         dtype=adapter.dtype)


def _scratch_mace(adapter: ModelAdapter) -> ModelAdapter:
    from ase_surftune.models.backends.mace import MACEAdapter, import_mace

    import_mace()  # (before e3nn; keeps torch's safe load default)
    from mace.tools.scripts_utils import extract_config_mace_model

    model = adapter.model
    cfg = extract_config_mace_model(model)
    if "error" in cfg:
        raise ConfigError(f"strategy 'scratch': cannot rebuild {adapter.name!r}: {cfg['error']}")
    prev = torch.get_default_dtype()
    torch.set_default_dtype(adapter.dtype)
    try:
        new = type(model)(**cfg)
    finally:
        torch.set_default_dtype(prev)
    # keep the buffers that hold data statistics (E0, scale/shift), not learned weights
    new_buffers = dict(new.named_buffers())
    for n, b in model.named_buffers():
        if n in new_buffers and new_buffers[n].shape == b.shape:
            new_buffers[n].copy_(b)
    return MACEAdapter(new.to(adapter.dtype), name=f"{adapter.name}-scratch",
                       device=str(adapter.device), dtype=adapter.dtype)


@register_strategy
class LinearStrategy(Strategy):
    """PES scale + per-element shifts (:func:`~ase_surftune.models.correction.fit_linear_correction`);
    no gradient steps. Options (:class:`~ase_surftune.training.config.LinearConfig`) come
    from ``strategy_options`` or, equivalently, the ``linear`` section (not both)."""

    name = "linear"
    trains = False
    options_model = LinearConfig

    @classmethod
    def check_config(cls, config: FinetuneConfig, backend: str) -> list[str]:
        problems = super().check_config(config, backend)
        if config.ema_decay is not None:
            problems.append("ema_decay: strategy 'linear' does no gradient training")
        if config.strategy_options and config.linear != LinearConfig():
            problems.append("strategy_options: give the linear options either here or in "
                            "'linear', not both")
        return problems

    def fit_options(self) -> LinearConfig:
        """The fit's options: ``strategy_options`` if given, else the ``linear`` section."""
        assert self.config is not None
        return self.options if self.config.strategy_options else self.config.linear

    def fit_correction(self, spec: Any, setup: Any, data: Any, feats: Any,
                       align: Any) -> Any:
        """PES scale and per-element shifts on the aligned base model (fitted on the
        training frames), checked on the validation frames the fit never saw."""
        import numpy as np

        from ase_surftune.core.energy import per_element_sum
        from ase_surftune.models.correction import assess_correction, fit_linear_correction
        from ase_surftune.training.losses import predict_samples
        from ase_surftune.training.scoring import labels

        def aligned(energies: Any, configs: list) -> list[float]:
            return [e + per_element_sum(align.shifts, a.numbers)
                    for e, a in zip(energies, configs)]

        lc = self.fit_options()
        lab = [labels(a) for a in data.train]
        corr = fit_linear_correction(
            [x[0] for x in lab], [x[1] for x in lab],
            np.array(aligned(align.base_train_energies, data.train)),
            align.base_train_forces, [a.numbers for a in data.train],
            energy_weight=lc.energy_weight, fit_shifts=lc.fit_shifts,
            use_energies=lc.use_energies, fit=lc.fit)
        warnings = list(corr.info.get("warnings", []))
        if data.valid:
            e_v, f_v = predict_samples(setup.base, setup.base_head, feats.base_valid,
                                       spec.vbs)
            lab_v = [labels(a) for a in data.valid]
            check = assess_correction(
                corr, [x[1] for x in lab_v], f_v, [x[0] for x in lab_v],
                aligned(e_v, data.valid), [a.numbers for a in data.valid],
                prefix="valid_", name="validation data")
            corr.info["warnings"] = warnings + check.pop("warnings")
            corr.info.update(check)
        else:
            corr.info["warnings"] = warnings + [
                "no validation data: the correction's effect on unseen frames is unchecked"]
        log.info("%s", corr.summary())
        for w in corr.info["warnings"]:
            log.warning("linear correction: %s", w)
        return corr

    def trainable_parameters(self, adapter: ModelAdapter) -> list[tuple[str, torch.nn.Parameter]]:
        for p in adapter.model.parameters():
            p.requires_grad_(False)
        return []

    def prepare(self, adapter: ModelAdapter, head: str) -> ModelAdapter:
        return adapter  # weights are not touched
