"""Build small MACE models from scratch.

Used for the from-scratch baseline, for distilled student models and for offline
tests (the MACE-MP weights cannot be downloaded everywhere). The construction
follows mace-torch's own tests (``tests/test_foundations.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase.data import atomic_numbers as _Z


def build_mace(elements: Sequence[str], *, r_max: float = 5.0, channels: int = 16,
               max_L: int = 0, num_interactions: int = 2, correlation: int = 2,
               max_ell: int = 2, num_bessel: int = 8, heads: Sequence[str] = ("Default",),
               atomic_energies: dict[str, float] | None = None, avg_num_neighbors: float = 12.0,
               scale: float = 1.0, shift: float = 0.0, seed: int = 0,
               dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A randomly initialised ``ScaleShiftMACE``.

    Args:
        elements: chemical symbols the model covers.
        r_max: cutoff in Å.
        channels: number of feature channels (hidden irreps ``{channels}x0e`` (+ ``1o``)).
        max_L: 0 for scalar-only (fastest) or 1 for equivariant vector features.
        heads: readout head names; several give a multi-head model.
        atomic_energies: isolated-atom reference energies E0 in eV per element (default 0).
        scale, shift: per-atom interaction energy scale and shift (eV).
        seed: torch seed for the weights.
    """
    from ase_surftune.models.backends.mace import import_mace

    import_mace()  # (must precede e3nn under torch 2.13; keeps torch's safe load default)
    from e3nn import o3
    from mace import modules

    zs = sorted(_Z[s] for s in set(elements))
    e0 = np.array([(atomic_energies or {}).get(s, 0.0) for s in
                   sorted(set(elements), key=lambda s: _Z[s])], dtype=float)
    heads = list(heads)
    hidden = f"{channels}x0e" if max_L == 0 else f"{channels}x0e + {channels}x1o"
    multi = len(heads) > 1
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        model = modules.ScaleShiftMACE(
            r_max=r_max, num_bessel=num_bessel, num_polynomial_cutoff=5, max_ell=max_ell,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes[
                "RealAgnosticResidualInteractionBlock"],
            num_interactions=num_interactions, num_elements=len(zs),
            hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps("16x0e"),
            gate=torch.nn.functional.silu,
            atomic_energies=np.stack([e0] * len(heads)) if multi else e0,
            avg_num_neighbors=avg_num_neighbors, atomic_numbers=zs, correlation=correlation,
            radial_type="bessel",
            atomic_inter_scale=[scale] * len(heads) if multi else scale,
            atomic_inter_shift=[shift] * len(heads) if multi else shift,
            heads=heads,
        )
    finally:
        torch.set_default_dtype(prev)
    return model
