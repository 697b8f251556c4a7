"""The residual basis of the environment-aware correction (see
:mod:`ase_surftune.models.env_correction` for E′), with forces (eV/Å) and stresses (eV/Å³)
from automatic differentiation of one energy expression (float64), so every term is
energy-consistent by construction.

With x_ij = 1 − r_ij/rc (zero value and slope at the cutoff ``rc``) and unit bond vectors
u_ij, the terms are, in this order:

* pair        φ_k = Σ_{i<j} x_ij^(k+3),                         k = 0 … n_pair−1
* embedding   Σ_i ρ_i^p,   ρ_i = Σ_j x_ij³,                     p in ``embed_powers``
* moment l=1  Σ_i |Σ_j x_ij³ u_ij|²                              (l = 1 in ``moments``)
* moment l=2  Σ_i ‖Σ_j x_ij³ (u_ij u_ijᵀ − I/3)‖²                (l = 2 in ``moments``)
* well        Σ_{i<j} (1 − exp(−(r_ij − r0)²/2w²)) x_ij²         (w in ``wells``, Å)

With a ``gate`` (width δn, in neighbours) every one of these terms comes twice: as above,
then weighted atom by atom by how bulk-like the atom is,

* gated copy  Σ_i φ_i e_i,   φ_i = exp(−(n_i − n0)²/2δn²),   n_i = Σ_j s(r_ij)

where e_i is atom i's share of the term (half of each pair's value, its own ρ_i^p or
moment), n_i a smooth count of first-shell neighbours (s = 1 below ``gate_r`` − 0.15 Å,
0 above ``gate_r`` + 0.15 Å, a cosine step between) and ``gate_n0`` the count of an atom
in the ideal bulk (12 in fcc). A fully coordinated atom has φ = 1 whatever its
distortion; an atom next to a vacancy (n = 11) φ = e^(−1/2δn²), at a surface φ ≈ 0. The
gated copies let the correction stiffen the bulk more than defects and surfaces, whose
atoms universal potentials soften less.

The moments vanish, with zero gradient, in any ideal cubic crystal at any volume (its
neighbour shells have no l = 1 or l = 2 component), so they add stiffness against
distortions of an atom's environment — rattles, phonons, surfaces — without touching the
equation of state of the ideal bulk. The well is zero, with zero force, at bond length
``r0`` (the bulk nearest-neighbour distance) and saturates within ≈ w of it: curvature near
equilibrium, where the softening of universal potentials is largest, and little force for
large distortions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from ase.neighborlist import neighbor_list

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from ase import Atoms

__all__ = ["BasisSpec", "BasisValues", "basis_terms", "spec_terms", "basis_residual",
           "MOMENT_ORDERS", "GATE_STEP", "first_shell_counts"]

MOMENT_ORDERS = (1, 2)
#: half-width (Å) of the gate's cosine step from "first shell" to "beyond it"
GATE_STEP = 0.15


@dataclass(frozen=True)
class BasisSpec:
    """Which residual terms, in the order of the module docstring.

    Attributes:
        rc: cutoff in Å.
        n_pair: number of pair functions.
        embed_powers: powers of the embedding functions.
        moments: orders l (1 and/or 2) of the moment terms.
        wells: widths w (Å) of the well terms.
        r0: the wells' centre (Å), the bulk nearest-neighbour distance; needed with wells.
        gate: width δn (neighbours) of the bulk-likeness gate; None: no gated copies.
        gate_r: the first shell's outer edge (Å), between the first and second shells;
            needed with a gate.
        gate_n0: first-shell neighbours of an ideal bulk atom; needed with a gate.
    """

    rc: float
    n_pair: int = 0
    embed_powers: tuple[float, ...] = ()
    moments: tuple[int, ...] = ()
    wells: tuple[float, ...] = ()
    r0: float | None = None
    gate: float | None = None
    gate_r: float | None = None
    gate_n0: float | None = None

    def __post_init__(self) -> None:
        bad = [m for m in self.moments if m not in MOMENT_ORDERS]
        if bad:
            raise ValueError(f"moment orders must be in {MOMENT_ORDERS}, got {bad}")
        if self.wells and (self.r0 is None or not 0 < self.r0 < self.rc):
            raise ValueError(f"well terms need 0 < r0 < rc = {self.rc} Å, got r0 = {self.r0}")
        if any(w <= 0 for w in self.wells):
            raise ValueError(f"well widths must be > 0 Å, got {self.wells}")
        if self.gate is not None:
            if self.gate <= 0:
                raise ValueError(f"the gate width must be > 0 neighbours, got {self.gate}")
            if self.gate_r is None or not GATE_STEP < self.gate_r <= self.rc - GATE_STEP:
                raise ValueError(f"a gate needs {GATE_STEP} Å < gate_r ≤ rc − {GATE_STEP} Å "
                                 f"= {self.rc - GATE_STEP:.3f} Å, got gate_r = {self.gate_r}")
            if self.gate_n0 is None or self.gate_n0 <= 0:
                raise ValueError(f"a gate needs gate_n0 > 0 neighbours, got {self.gate_n0}")

    def describe(self) -> str:
        """The terms in words, e.g. "2 pair + 1 embedding + moments l=1,2 + well w=0.05 Å
        about r0 = 2.567 Å"."""
        parts = [f"{self.n_pair} pair", f"{len(self.embed_powers)} embedding"]
        if self.moments:
            parts.append("moments l=" + ",".join(map(str, self.moments)))
        if self.wells:
            parts.append("well w=" + ",".join(f"{w:g}" for w in self.wells)
                         + f" Å about r0 = {self.r0:.3f} Å")
        text = " + ".join(parts) + " terms"
        if self.gate is not None:
            text += (f", each also gated by bulk-likeness (n0 = {self.gate_n0:g} neighbours "
                     f"within {self.gate_r:.3f} Å, width {self.gate:g})")
        return text

    @property
    def n_plain(self) -> int:
        """Terms without the gate."""
        return self.n_pair + len(self.embed_powers) + len(self.moments) + len(self.wells)

    @property
    def n_terms(self) -> int:
        return self.n_plain * (1 if self.gate is None else 2)


@dataclass
class BasisValues:
    """Basis energies (K,) eV, forces (K, n, 3) eV/Å and stresses (K, 6) eV/Å³."""

    energies: np.ndarray
    forces: np.ndarray
    stresses: np.ndarray | None


def _term_energies(atoms: Atoms, spec: BasisSpec
                   ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Every term's energy as a differentiable function of positions and a strain."""
    import torch

    f64 = torch.float64
    i, j, shifts = neighbor_list("ijS", atoms, spec.rc)
    n = len(atoms)
    pos = torch.tensor(atoms.positions, dtype=f64, requires_grad=True)
    strain = torch.zeros((3, 3), dtype=f64, requires_grad=True)
    deform = torch.eye(3, dtype=f64) + 0.5 * (strain + strain.T)
    it, jt = torch.as_tensor(i), torch.as_tensor(j)
    offsets = torch.as_tensor(shifts, dtype=f64) @ torch.as_tensor(atoms.cell.array, dtype=f64)
    vec = (pos[jt] - pos[it] + offsets) @ deform  # ordered pairs, r_j − r_i
    r = torch.linalg.norm(vec, dim=1)
    x = 1.0 - r / spec.rc
    unit = vec / r[:, None]
    g = x ** 3

    def per_atom(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((n, *values.shape[1:]), dtype=f64)
        return out.index_add(0, it, values)

    shares = [0.5 * per_atom(x ** (k + 3)) for k in range(spec.n_pair)]  # e_i per term
    if spec.embed_powers:
        rho = per_atom(g)
        shares += [rho ** p for p in spec.embed_powers]
    for order in spec.moments:
        if order == 1:
            shares.append((per_atom(g[:, None] * unit) ** 2).sum(dim=1))
        else:
            outer = unit[:, :, None] * unit[:, None, :] - torch.eye(3, dtype=f64) / 3.0
            shares.append((per_atom((g[:, None, None] * outer).reshape(-1, 9)) ** 2)
                          .sum(dim=1))
    for width in spec.wells:
        dip = 1.0 - torch.exp(-((r - spec.r0) ** 2) / (2.0 * width * width))
        shares.append(0.5 * per_atom(dip * x ** 2))
    terms = [e.sum() for e in shares]
    if spec.gate is not None:
        phi = _bulk_likeness(r, per_atom, spec)
        terms += [(phi * e).sum() for e in shares]
    return terms, pos, strain


def _shell_weight(r: torch.Tensor, gate_r: float) -> torch.Tensor:
    """Each bond's share of a first-shell count: 1 below ``gate_r`` − GATE_STEP, 0 above
    ``gate_r`` + GATE_STEP, a cosine step between."""
    import torch

    t = torch.clamp((r - (gate_r - GATE_STEP)) / (2.0 * GATE_STEP), 0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(torch.pi * t))


def _bulk_likeness(r: torch.Tensor, per_atom: Callable[[torch.Tensor], torch.Tensor],
                   spec: BasisSpec) -> torch.Tensor:
    """φ_i = exp(−(n_i − n0)²/2δn²) with n_i the smooth first-shell count (module
    docstring)."""
    import torch

    count = per_atom(_shell_weight(r, spec.gate_r))
    return torch.exp(-((count - spec.gate_n0) ** 2) / (2.0 * spec.gate ** 2))


def first_shell_counts(atoms: Atoms, gate_r: float) -> np.ndarray:
    """The smooth first-shell neighbour count n_i of every atom (the gate's, with edge
    ``gate_r`` Å)."""
    import torch

    i, d = neighbor_list("id", atoms, gate_r + GATE_STEP)
    weights = _shell_weight(torch.as_tensor(d, dtype=torch.float64), gate_r).numpy()
    return np.bincount(i, weights=weights, minlength=len(atoms))


def _values(atoms: Atoms, energy: torch.Tensor, pos: torch.Tensor, strain: torch.Tensor
            ) -> tuple[float, np.ndarray, np.ndarray | None]:
    """(E eV, F eV/Å, Voigt σ eV/Å³ or None without a 3-D cell) of one energy tensor."""
    import torch

    if not energy.requires_grad:  # no term, or no pair within rc: a constant zero
        return 0.0, np.zeros((len(atoms), 3)), np.zeros(6) if atoms.cell.rank == 3 else None
    d_pos, d_strain = torch.autograd.grad(energy, (pos, strain), retain_graph=True)
    stress = None
    if atoms.cell.rank == 3:
        full = d_strain.detach().numpy() / atoms.get_volume()
        stress = np.array([full[0, 0], full[1, 1], full[2, 2], full[1, 2], full[0, 2],
                           full[0, 1]])
    return float(energy.detach()), -d_pos.detach().numpy(), stress


def basis_terms(atoms: Atoms, rc: float, n_pair: int, embed_powers: Sequence[float],
                moments: Sequence[int] = (), wells: Sequence[float] = (),
                r0: float | None = None) -> BasisValues:
    """Values of every residual basis function for one structure (for fitting).

    Forces are −∇ of each basis energy; stresses are (1/V) ∂E/∂ε in Voigt order (xx, yy,
    zz, yz, xz, xy), ``None`` without a 3-D cell.

    Args:
        atoms: the structure (positions in Å).
        rc: cutoff radius in Å.
        n_pair: number of pair functions.
        embed_powers: powers p of the embedding functions (e.g. (2, 3)).
        moments: moment orders (1, 2).
        wells: well widths in Å.
        r0: the wells' centre in Å.
    """
    return spec_terms(atoms, BasisSpec(float(rc), int(n_pair),
                                       tuple(float(p) for p in embed_powers),
                                       tuple(int(m) for m in moments),
                                       tuple(float(w) for w in wells), r0))


def spec_terms(atoms: Atoms, spec: BasisSpec) -> BasisValues:
    """:func:`basis_terms` for the terms of ``spec``."""
    terms, pos, strain = _term_energies(atoms, spec)
    n = len(atoms)
    energies = np.zeros(spec.n_terms)
    forces = np.zeros((spec.n_terms, n, 3))
    stresses = np.zeros((spec.n_terms, 6)) if atoms.cell.rank == 3 else None
    for k, term in enumerate(terms):
        energies[k], forces[k], st = _values(atoms, term, pos, strain)
        if stresses is not None:
            stresses[k] = st
    return BasisValues(energies, forces, stresses)


def basis_residual(atoms: Atoms, spec: BasisSpec, coefficients: Sequence[float]
                   ) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Σ_k c_k (E_k, F_k, σ_k) with one backward pass (for applying a correction)."""
    c = np.asarray(coefficients, dtype=float)
    if c.size != spec.n_terms:
        raise ValueError(f"{c.size} coefficients for {spec.n_terms} basis functions")
    import torch

    terms, pos, strain = _term_energies(atoms, spec)
    total = sum((float(ck) * t for ck, t in zip(c, terms)), torch.zeros((), dtype=torch.float64))
    return _values(atoms, total, pos, strain)
