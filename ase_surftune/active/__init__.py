"""Active learning: the fewest reference (DFT) labels to converged target properties.

``active_learn(config)`` (CLI ``surftune active-learn CONFIG.yaml``) explores with the
current model through the property workflows of the targets, ranks the candidates by a
bootstrap committee's uncertainty, picks a diverse batch, labels it with the reference,
fine-tunes with a warm start, re-measures the targets and stops when every target changes
by less than the tolerance, or at the label budget. See :mod:`ase_surftune.active.loop`.
"""

from ase_surftune.active.config import ActiveConfig, load_active_config
from ase_surftune.active.loop import ActiveLearningInterrupted, ActiveResult, active_learn

__all__ = [
           "ActiveConfig",
           "ActiveLearningInterrupted",
           "ActiveResult",
           "active_learn",
           "load_active_config",
]
