"""The residual basis of the environment-aware correction (see
:mod:`ase_surftune.models.env_correction` for E′): smooth pair functions
φ_k(r) = (1 − r/rc)^(k+3) and embedding functions Σ_i ρ_i^p with ρ_i = Σ_j (1 − r_ij/rc)^3,
with their analytic forces (eV/Å per unit coefficient) and stresses (eV/Å³).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from ase.neighborlist import neighbor_list

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

__all__ = ["BasisValues", "basis_terms"]


@dataclass
class BasisValues:
    """Basis energies (K,) eV, forces (K, n, 3) eV/Å and stresses (K, 6) eV/Å³."""

    energies: np.ndarray
    forces: np.ndarray
    stresses: np.ndarray | None


def basis_terms(atoms: Atoms, rc: float, n_pair: int,
                embed_powers: Sequence[float]) -> BasisValues:
    """Values of every residual basis function for one structure.

    Order: the ``n_pair`` pair functions φ_k, then one embedding function Σ_i ρ_i^p per
    power in ``embed_powers``. Forces are −∇ of each basis energy; stresses are
    (1/V) ∂E/∂ε in Voigt order (xx, yy, zz, yz, xz, xy), ``None`` without a 3-D cell.

    Args:
        atoms: the structure (positions in Å).
        rc: cutoff radius in Å.
        n_pair: number of pair functions.
        embed_powers: powers p of the embedding functions (e.g. (2, 3)).
    """
    n = len(atoms)
    k_tot = n_pair + len(embed_powers)
    energies = np.zeros(k_tot)
    forces = np.zeros((k_tot, n, 3))
    virial = np.zeros((k_tot, 3, 3))
    i, j, d, vec = neighbor_list("ijdD", atoms, rc)  # ordered pairs, vec = r_j − r_i
    if len(i):
        x = 1.0 - d / rc
        unit = vec / d[:, None]
        outer = vec[:, :, None] * unit[:, None, :]  # D_a D_b / d
        for k in range(n_pair):
            p = k + 3
            energies[k] = 0.5 * float(np.sum(x ** p))
            dphi = -p * x ** (p - 1) / rc  # dφ/dr
            w = dphi[:, None] * unit  # force on i from pair (i, j): φ'(d) D/d
            for c in range(3):
                forces[k, :, c] = np.bincount(i, weights=w[:, c], minlength=n)
            virial[k] = 0.5 * np.einsum("p,pab->ab", dphi, outer)
        g = x ** 3
        dg = -3.0 * x ** 2 / rc
        rho = np.bincount(i, weights=g, minlength=n)
        for m, power in enumerate(embed_powers):
            k = n_pair + m
            energies[k] = float(np.sum(rho ** power))
            dF = power * rho ** (power - 1)  # F′(ρ_i)
            coef = dF[i] * dg  # per ordered pair
            w = coef[:, None] * unit
            for c in range(3):
                forces[k, :, c] = (np.bincount(i, weights=w[:, c], minlength=n)
                                   - np.bincount(j, weights=w[:, c], minlength=n))
            virial[k] = np.einsum("p,pab->ab", coef, outer)
    stresses = None
    if atoms.cell.rank == 3:
        vol = atoms.get_volume()
        full = virial / vol
        stresses = np.stack([full[:, 0, 0], full[:, 1, 1], full[:, 2, 2],
                             full[:, 1, 2], full[:, 0, 2], full[:, 0, 1]], axis=1)
    return BasisValues(energies, forces, stresses)
