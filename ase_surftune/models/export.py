"""Export one head of a model to the backend's own single-head file format.

* MACE: a plain single-head ``.model`` file (mace's ``remove_pt_head``), loaded by
  mace's ``MACECalculator(model_paths=...)`` and mace's other tools;
* CHGNet: ``{"model": {"model_args", "state_dict"}}``, read by ``CHGNet.from_file``
  (and ``CHGNet.from_dict(d["model"])``).

A bundle head's per-element alignment shifts are folded into the exported model's
reference energies, so the file gives the bundle head's energies and forces. A linear
softening correction cannot be expressed in these formats; such a head is refused
unless ``drop_correction=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ase_surftune.core.errors import HeadError
from ase_surftune.models.loading import load_model

__all__ = ["export_head"]


def export_head(model: Any, head: str | None, path: str | Path, *,
                drop_correction: bool = False, trust: bool | None = None) -> Path:
    """Write ``head`` of ``model`` (a spec, bundle path or Bundle) as a single-head file.

    Args:
        model: anything :func:`~ase_surftune.models.loading.load_model` accepts.
        head: head name (``None``: the bundle's default head).
        path: output file, written atomically.
        drop_correction: export a head that carries a linear correction without it.
        trust: as in :func:`load_model` (pickle-based inputs).

    Returns:
        The written path.

    Raises:
        HeadError: unknown head, a head with a linear correction (unless
            ``drop_correction``), or a backend without a single-head format (M3GNet).
    """
    bundle = load_model(model, trust=trust)
    name = bundle.resolve_head(head)
    if name in bundle.corrections and not drop_correction:
        raise HeadError(f"head {name!r} carries a softening correction, which a plain "
                        f"{bundle.adapter.backend} model file cannot hold; pass "
                        f"drop_correction=True (CLI --drop-correction) to export it without")
    shifts = bundle.reference_energies.get(name) or None
    return bundle.adapter.export_head(name, path, energy_shifts=shifts)
