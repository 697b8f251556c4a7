"""A cheap committee: bootstrap readout heads on the current model's shared trunk.

Member *m* is the current model with every block but the readout frozen, its readout
weights perturbed (each weight w by Gaussian noise of std ``committee.noise`` × |w|,
seeded per member) and then re-trained for a few epochs (the ``frozen`` strategy of
:func:`~ase_surftune.training.finetune`) on a bootstrap resample of the labels. The data
pull the members together where they constrain the readout; elsewhere the perturbations
survive, so the members disagree most on structures unlike the labels (a bootstrap alone,
started from one set of weights, would agree there). Members share the trunk, so
one committee costs ``size`` short readout fits. The uncertainty of a structure is the
spread of the members' predictions:

* energy: standard deviation of E/N over members (eV/atom);
* forces: sqrt(mean over atoms of Σ_xyz var_members F) (eV/Å), and its max over atoms.

Calibration (:mod:`~ase_surftune.active.calibration`, re-exported here) compares these
spreads with the *true* errors of the current model on structures it was not trained on
(the next batch of labels, or a held-out set): Spearman rank correlation, and a fitted
scale factor k per quantity (the raw spread ranks but is not the error's size).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_surftune.active.calibration import calibration, force_errors, spearman
from ase_surftune.active.config import ActiveConfig

__all__ = [
    "Uncertainty",
    "calibration",
    "force_errors",
    "predict_uncertainty",
    "spearman",
    "train_committee",
]

log = logging.getLogger(__name__)


def train_committee(model: str, labels: Sequence[Atoms], cfg: ActiveConfig, out_dir: Path,
                    seed: int) -> list[Path]:
    """Fit ``cfg.committee.size`` bootstrap readout heads on ``model`` (a bundle path or
    spec); returns the member bundles (``out_dir/member_MM/model.stbundle``). A member
    already written is reused (resumable)."""
    from ase_surftune.models.backends import load_model
    from ase_surftune.training.api import BUNDLE_NAME, finetune

    n_blocks = len(load_model(model, device=cfg.device).adapter.blocks())
    labels = list(labels)
    paths = []
    for m in range(cfg.committee.size):
        folder = out_dir / f"member_{m:02d}"
        done = folder / BUNDLE_NAME
        if done.is_file() and (folder / "metrics.json").is_file():
            paths.append(done)
            continue
        rng = np.random.default_rng([seed, m])
        boot = rng.integers(0, len(labels), size=len(labels))
        train = [labels[i] for i in boot]
        start = _perturbed_start(model, folder / "start.stbundle", cfg, [seed, m])
        fcfg = cfg.finetune_config(folder, model=str(start), seed=seed * 97 + m,
                                   strategy="frozen", freeze={"k": n_blocks - 1},
                                   strategy_options={}, epochs=cfg.committee.epochs,
                                   min_steps=None,  # committee.epochs, not the fine-tunes
                                   optimizer={"lr": cfg.committee.lr}, patience=None,
                                   forgetting={"enabled": False})
        res = finetune(fcfg, train=train)
        paths.append(res.bundle_path)
    return paths


def _perturbed_start(model: str, path: Path, cfg: ActiveConfig, seed: list[int]) -> Path:
    """``model`` with its readout block perturbed, saved as a bundle at ``path``."""
    import torch

    from ase_surftune.models.backends import load_model

    if path.is_file():
        return path
    bundle = load_model(model, device=cfg.device)
    gen = torch.Generator().manual_seed(int(np.random.default_rng(seed).integers(2**31)))
    readout = bundle.adapter.blocks()[-1]
    with torch.no_grad():
        for _, p in readout.parameters:
            # relative to each weight, not to the tensor's std: CHGNet's readout norm has
            # std 0.15 but median |w| 0.01, and std-sized noise there made one member of a
            # committee start with force errors of ~20 eV/Å that training never undid
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.add_((cfg.committee.noise * p.detach().abs().double() * noise).to(p.dtype))
    path.parent.mkdir(parents=True, exist_ok=True)
    return bundle.save(path)


@dataclass
class Uncertainty:
    """Per-structure committee spread (see the module docstring for the definitions)."""

    energy: np.ndarray       # eV/atom
    forces: np.ndarray       # eV/Å, RMS over atoms of the per-atom spread
    forces_max: np.ndarray   # eV/Å, largest per-atom spread

    def score(self) -> np.ndarray:
        """Selection score in [0, 1]: the mean percentile rank of the energy and force
        spreads (γ and barriers are energy differences; softening is in the forces)."""
        from scipy.stats import rankdata

        n = len(self.forces)
        if n == 0:
            return np.zeros(0)
        return (rankdata(self.energy) + rankdata(self.forces)) / (2.0 * n)

    def to_dict(self) -> dict[str, list[float]]:
        return {"energy": self.energy.tolist(), "forces": self.forces.tolist(),
                "forces_max": self.forces_max.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Uncertainty:
        return cls(*(np.asarray(d[k], dtype=float) for k in ("energy", "forces",
                                                             "forces_max")))


def _predict(model: Any, configs: Sequence[Atoms], device: str):
    from ase_surftune.models.calculator import SurfTuneCalculator
    from ase_surftune.models.predict import predict_with

    return predict_with(SurfTuneCalculator(str(model), device=device), configs)


def predict_uncertainty(members: Sequence[Path], configs: Sequence[Atoms],
                        device: str = "cpu") -> Uncertainty:
    """The committee's energy and force spread on ``configs``."""
    n_at = np.array([len(a) for a in configs], dtype=float)
    preds = [_predict(m, configs, device) for m in members]
    e = np.stack([p.energy for p in preds]) / n_at  # (members, structures)
    f_rms, f_max = [], []
    for i in range(len(configs)):
        fi = np.stack([np.asarray(p.forces[i]) for p in preds])  # (members, atoms, 3)
        var = fi.var(axis=0).sum(axis=1)  # per atom
        f_rms.append(math.sqrt(float(var.mean())))
        f_max.append(math.sqrt(float(var.max())))
    return Uncertainty(e.std(axis=0), np.array(f_rms), np.array(f_max))
