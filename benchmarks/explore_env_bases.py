"""Exploration (issue 12, not part of the package): which residual basis can restore
CHGNet's force slope on every kind of Cu structure?

Two questions per candidate basis, on the PBE labels of ``dft_cu_set.py``:

* **capacity**: fitted on *every* labelled frame (in-sample), can the basis put every
  group's slope s within 0.9–1.1 at all? A basis that cannot, in-sample, cannot from three
  structures either.
* **transfer**: fitted on the study's three structures (``FIT_NAMES``), scored on the
  rest, as in ``bench_dft_softening.py``.

E′ = a·E_m + Σ_k c_k B_k(R) (+ a constant per atom); forces −∇E′ by autograd (float64).
CHGNet's predictions are cached in memory once.

    PYTHONPATH=. python benchmarks/explore_env_bases.py --cache DIR [DIR ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dft_softening import FIT_NAMES, GROUPS, MIN_FORCE_RMS, properties, read_sets  # noqa: E402

torch.set_num_threads(1)
RC = 3.1  # Å, first-neighbour shell of Cu
R0 = 3.63 / np.sqrt(2)  # Å, nearest-neighbour distance of the set's lattice


class Graph:
    """Ordered neighbour pairs of one structure, differentiable in the positions."""

    def __init__(self, atoms: Atoms, rc: float | None = None) -> None:
        rc = RC if rc is None else rc
        i, j, S = neighbor_list("ijS", atoms, rc)
        self.n = len(atoms)
        self.i = torch.tensor(i)
        self.j = torch.tensor(j)
        self.shift = torch.tensor(S, dtype=torch.float64) @ torch.tensor(
            atoms.cell.array, dtype=torch.float64)
        self.pos = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)

    def vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.pos[self.j] - self.pos[self.i] + self.shift
        r = d.norm(dim=1)
        return r, d / r[:, None]

    def per_atom(self, values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.n, dtype=torch.float64).index_add(0, self.i, values)

    def per_atom_vec(self, values: torch.Tensor) -> torch.Tensor:
        return torch.zeros((self.n, values.shape[1]), dtype=torch.float64).index_add(
            0, self.i, values)


def fc(r: torch.Tensor, p: int = 3, rc: float | None = None) -> torch.Tensor:
    rc = RC if rc is None else rc
    return torch.clamp(1 - r / rc, min=0) ** p


# ----------------------------------------------------------------------------- bases
# each: Graph -> scalar energy (per unit coefficient, eV)

def pair(p: int) -> Callable[[Graph], torch.Tensor]:
    def f(g: Graph) -> torch.Tensor:
        r, _ = g.vectors()
        return 0.5 * fc(r, p).sum()
    return f


def embed(power: float) -> Callable[[Graph], torch.Tensor]:
    def f(g: Graph) -> torch.Tensor:
        r, _ = g.vectors()
        return (g.per_atom(fc(r, 3)) ** power).sum()
    return f


def well(w: float) -> Callable[[Graph], torch.Tensor]:
    """Zero at r0 (and zero force), saturating beyond |r − r0| ≈ w."""
    def f(g: Graph) -> torch.Tensor:
        r, _ = g.vectors()
        return 0.5 * ((1 - torch.exp(-(r - R0) ** 2 / (2 * w * w))) * fc(r, 2)).sum()
    return f


def moment(l: int, p: int = 3) -> Callable[[Graph], torch.Tensor]:
    """Σ_i |Σ_j g(r_ij) Y_l(r̂_ij)|² for l = 1 (vector) or 2 (traceless tensor): zero,
    with zero gradient, in any ideal cubic bulk; quadratic in small distortions."""
    def f(g: Graph) -> torch.Tensor:
        r, u = g.vectors()
        w = fc(r, p)
        if l == 1:
            v = g.per_atom_vec(w[:, None] * u)
            return (v ** 2).sum()
        t = w[:, None, None] * (u[:, :, None] * u[:, None, :]
                                - torch.eye(3, dtype=torch.float64) / 3)
        q = g.per_atom_vec(t.reshape(-1, 9))
        return (q ** 2).sum()
    return f


def moment_rho(l: int, power: float = 1.0) -> Callable[[Graph], torch.Tensor]:
    """Σ_i ρ_i^power |M_l,i|²: a moment term weighted by the atom's coordination, so it
    stiffens distortions of fully coordinated atoms more than of undercoordinated ones."""
    def f(g: Graph) -> torch.Tensor:
        r, u = g.vectors()
        w = fc(r, 3)
        rho = g.per_atom(w)
        if l == 1:
            m2 = (g.per_atom_vec(w[:, None] * u) ** 2).sum(dim=1)
        else:
            t = w[:, None, None] * (u[:, :, None] * u[:, None, :]
                                    - torch.eye(3, dtype=torch.float64) / 3)
            m2 = (g.per_atom_vec(t.reshape(-1, 9)) ** 2).sum(dim=1)
        return (rho ** power * m2).sum()
    return f


BASES: dict[str, Callable[[Graph], torch.Tensor]] = {
    "m1r": moment_rho(1), "m2r": moment_rho(2), "m1r2": moment_rho(1, 2.0),
    "m2r2": moment_rho(2, 2.0),
    "p3": pair(3), "p4": pair(4), "p5": pair(5), "e2": embed(2.0), "e3": embed(3.0),
    "w05": well(0.05), "w10": well(0.10), "w20": well(0.20),
    "m1": moment(1), "m2": moment(2), "m1b": moment(1, 6), "m2b": moment(2, 6),
}


def basis_values(atoms: Atoms, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Energies (K,) and forces (3N, K) of the named bases."""
    E, F = [], []
    g = Graph(atoms)
    for name in names:
        e = BASES[name](g)
        grad, = torch.autograd.grad(e, g.pos, allow_unused=True)
        E.append(float(e))
        F.append(np.zeros(3 * len(atoms)) if grad is None else -grad.numpy().reshape(-1))
    return np.array(E), np.array(F).T


# ----------------------------------------------------------------------------- fit


def fit(frames: list[Atoms], pred: dict, names: list[str], weighting: str, ridge: float,
        energy_weight: float, fixed_scale: float | None = None) -> np.ndarray:
    """x = [a, c_1..c_K, b] from forces (+ per-atom energies)."""
    if fixed_scale is not None:  # fit the residual to F_ref − a·F_m, a fixed
        shifted = {}
        for n, (e, f) in pred.items():
            shifted[n] = (e, f)
        sub = {n: (0.0 * e, 0.0 * f) for n, (e, f) in pred.items()}
        frames2 = []
        for at in frames:
            b = at.copy()
            e_m, f_m = pred[at.info["name"]]
            from ase.calculators.singlepoint import SinglePointCalculator
            b.calc = SinglePointCalculator(b, energy=at.get_potential_energy() - fixed_scale * e_m,
                                           forces=at.get_forces() - fixed_scale * f_m)
            b.info["_rms"] = float(np.sqrt(np.mean(at.get_forces() ** 2)))
            frames2.append(b)
        x = fit(frames2, sub, names, weighting, ridge, energy_weight)
        x[0] = fixed_scale
        return x
    rows, ys = [], []
    k = len(names)
    for at in frames:
        e_m, f_m = pred[at.info["name"]]
        e_b, f_b = cache_basis(at, names)
        f_ref = at.get_forces().reshape(-1)
        w = 1.0
        if weighting == "frame":  # every frame counts as much, relative to its signal
            rms = at.info.get("_rms", np.sqrt(np.mean(f_ref ** 2)))
            w = 1.0 / max(rms, 0.02) / np.sqrt(f_ref.size)
        elif weighting == "component":
            w = 1.0
        rows.append(w * np.column_stack([f_m.reshape(-1), f_b, np.zeros(f_ref.size)]))
        ys.append(w * f_ref)
        if energy_weight:
            n = len(at)
            we = np.sqrt(energy_weight) / n
            rows.append(we * np.concatenate([[e_m], e_b, [n]])[None, :])
            ys.append(np.array([we * at.get_potential_energy()]))
    A, y = np.vstack(rows), np.concatenate(ys)
    nrm = np.linalg.norm(A, axis=0)
    nrm[nrm == 0] = 1
    An = A / nrm
    reg = np.zeros((k, A.shape[1]))
    reg[np.arange(k), 1 + np.arange(k)] = np.sqrt(ridge)
    sol, *_ = np.linalg.lstsq(np.vstack([An, reg]), np.concatenate([y, np.zeros(k)]),
                              rcond=None)
    return sol / nrm


_BASIS_CACHE: dict = {}


def cache_basis(at: Atoms, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    key = at.info["name"]
    have = _BASIS_CACHE.setdefault(key, {})
    missing = [n for n in names if n not in have]
    if missing:
        e, f = basis_values(at, missing)
        for q, n in enumerate(missing):
            have[n] = (e[q], f[:, q])
    return (np.array([have[n][0] for n in names]),
            np.column_stack([have[n][1] for n in names]) if names else np.zeros((3 * len(at), 0)))


def score(frames: list[Atoms], pred: dict, names: list[str], x: np.ndarray,
          held_out: set[str] | None) -> dict:
    vals = {}
    for at in frames:
        e_m, f_m = pred[at.info["name"]]
        e_b, f_b = cache_basis(at, names)
        vals[at.info["name"]] = (x[0] * e_m + e_b @ x[1:1 + len(names)] + x[-1] * len(at),
                                 (x[0] * f_m.reshape(-1) + f_b @ x[1:1 + len(names)]))
    out = {}
    for g in GROUPS:
        sel = [a for a in frames if a.info["config_type"] == g
               and (held_out is None or a.info["name"] in held_out)]
        if not sel:
            continue
        fr = np.concatenate([a.get_forces().reshape(-1) for a in sel])
        fp = np.concatenate([vals[a.info["name"]][1] for a in sel])
        f0 = np.concatenate([pred[a.info["name"]][1].reshape(-1) for a in sel])
        ok = np.sqrt(np.mean(fr ** 2)) >= MIN_FORCE_RMS
        out[g] = (fp @ fr / (fr @ fr) if ok else None, np.abs(f0 - fr).mean(),
                  np.abs(fp - fr).mean())
    by_name = {a.info["name"]: a for a in frames}
    props = properties({n: (v[0], v[1].reshape(-1, 3)) for n, v in vals.items()}, by_name)
    return {"groups": out, "props": props}


def line(tag: str, res: dict, ref_props: dict, x: np.ndarray) -> str:
    cells = []
    for g, (s, m0, m1) in res["groups"].items():
        st = "n/a " if s is None else f"{s:4.2f}"
        flag = "" if s is None or 0.9 <= s <= 1.1 else "!"
        up = "^" if m1 > m0 else ""
        cells.append(f"{g[:7]:7s} {st}{flag:1s} {m1:.3f}{up:1s}")
    pr = " ".join(f"{k}={res['props'][k] / ref_props[k]:.2f}" for k in
                  ("gamma_111", "gamma_100", "barrier", "B") if k in res["props"])
    return f"{tag:34s} a={x[0]:.2f} | " + " | ".join(cells) + f" | {pr}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cache", type=Path, nargs="+", required=True)
    p.add_argument("--fit", nargs="+", default=list(FIT_NAMES))
    p.add_argument("--sets", nargs="+", default=None, help="basis sets, '+'-joined names")
    p.add_argument("--weighting", nargs="+", default=["component", "frame"])
    p.add_argument("--ridge", type=float, default=1e-3)
    p.add_argument("--energy-weight", type=float, default=1.0)
    p.add_argument("--rc", type=float, default=3.1)
    p.add_argument("--fixed-scale", type=float, default=None)
    args = p.parse_args()
    global RC
    RC = args.rc
    from ase_surftune.models.calculator import SurfTuneCalculator

    frames = read_sets(args.cache)
    calc = SurfTuneCalculator("chgnet")
    pred = {}
    for a in frames:
        b = a.copy()
        b.calc = calc
        pred[a.info["name"]] = (b.get_potential_energy(), b.get_forces())
    ref_props = properties({a.info["name"]: (a.get_potential_energy(), a.get_forces())
                            for a in frames}, {a.info["name"]: a for a in frames})
    fit_frames = [a for a in frames if a.info["name"] in args.fit]
    held = {a.info["name"] for a in frames} - set(args.fit)
    sets = args.sets or ["", "p4", "p3+p4+e2", "w05", "w10", "m1", "m2", "m1+m2", "m2+p4+e2",
                         "m1+m2+p4+e2", "w05+p4+e2", "m2b", "m1b+m2b+p4+e2"]
    zero = np.array([1.0, 0.0])
    print(line("zero-shot (held out)", score(frames, pred, [], zero, held), ref_props, zero))
    for weighting in args.weighting:
        for s in sets:
            names = [n for n in s.split("+") if n]
            x = fit(fit_frames, pred, names, weighting, args.ridge, args.energy_weight,
                    args.fixed_scale)
            print(line(f"transfer {weighting[:4]} {s or 'scale'}",
                       score(frames, pred, names, x, held), ref_props, x))
            xa = fit([a for a in frames if np.any(a.get_forces())], pred, names, weighting,
                     args.ridge, args.energy_weight, args.fixed_scale)
            print(line(f"capacity {weighting[:4]} {s or 'scale'}",
                       score(frames, pred, names, xa, None), ref_props, xa))


if __name__ == "__main__":
    main()
