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
        return (g.per_atom(fc(r, 3)) ** power * _m2(g, r, u, l)).sum()
    return f


def moment_sat(l: int, mu: float) -> Callable[[Graph], torch.Tensor]:
    """Σ_i [1 − exp(−|M_l,i|² / 2μ²)]: a moment term that saturates once an atom's
    environment is far (|M| ≫ μ) from ideal bulk, so it stiffens small distortions of
    fully coordinated atoms but hardly acts on atoms next to a vacancy or a surface,
    whose moments are large already."""
    def f(g: Graph) -> torch.Tensor:
        m2 = _m2(g, *g.vectors(), l)
        return (mu * mu * (1 - torch.exp(-m2 / (2 * mu * mu)))).sum()
    return f


BASES: dict[str, Callable[[Graph], torch.Tensor]] = {
    **{f"s{l}m{int(mu * 1000):03d}": moment_sat(l, mu) for l in (1, 2)
       for mu in (0.005, 0.01, 0.02, 0.03, 0.05)},
    "w02": well(0.02), "w03": well(0.03),
    "m1r": moment_rho(1), "m2r": moment_rho(2), "m1r2": moment_rho(1, 2.0),
    "m2r2": moment_rho(2, 2.0),
    "p3": pair(3), "p4": pair(4), "p5": pair(5), "e2": embed(2.0), "e3": embed(3.0),
    "w05": well(0.05), "w10": well(0.10), "w20": well(0.20),
    "q3": lambda g: ATOM["q3"](g, *g.vectors()).sum(),
    "q4": lambda g: ATOM["q4"](g, *g.vectors()).sum(),
    "q6": lambda g: ATOM["q6"](g, *g.vectors()).sum(),
    "m1": moment(1), "m2": moment(2), "m1b": moment(1, 6), "m2b": moment(2, 6),
}


# ----------------------------------------------------------------------------- gated
# per-atom energies, multiplied by a "bulk-likeness" gate φ_i ∈ (0, 1]: 1 for an atom in
# ideal bulk at a0, → 0 as its environment departs from it (coordination or dipole)

def _m2(g: Graph, r: torch.Tensor, u: torch.Tensor, l: int) -> torch.Tensor:
    w = fc(r, 3)
    if l == 1:
        return (g.per_atom_vec(w[:, None] * u) ** 2).sum(dim=1)
    t = w[:, None, None] * (u[:, :, None] * u[:, None, :] - torch.eye(3, dtype=torch.float64) / 3)
    return (g.per_atom_vec(t.reshape(-1, 9)) ** 2).sum(dim=1)


def _steinhardt(g: Graph, r: torch.Tensor, u: torch.Tensor, l: int) -> torch.Tensor:
    """Σ_{j,k} g_j g_k P_l(u_j·u_k) per atom (∝ Σ_m |Σ_j g_j Y_lm(u_j)|²), first and second
    shells weighted by g = fc³."""
    w = fc(r, 3)
    out = []
    for a in range(g.n):
        sel = g.i == a
        ua, wa = u[sel], w[sel]
        c = ua @ ua.T
        if l == 4:
            p = (35 * c ** 4 - 30 * c ** 2 + 3) / 8
        elif l == 6:
            p = (231 * c ** 6 - 315 * c ** 4 + 105 * c ** 2 - 5) / 16
        else:
            p = (5 * c ** 3 - 3 * c) / 2
        out.append(wa @ p @ wa)
    return torch.stack(out)


ATOM: dict[str, Callable[[Graph, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "q3": lambda g, r, u: _steinhardt(g, r, u, 3),
    "q4": lambda g, r, u: _steinhardt(g, r, u, 4),
    "q6": lambda g, r, u: _steinhardt(g, r, u, 6),
    "p3": lambda g, r, u: 0.5 * g.per_atom(fc(r, 3)),
    "p4": lambda g, r, u: 0.5 * g.per_atom(fc(r, 4)),
    "e2": lambda g, r, u: g.per_atom(fc(r, 3)) ** 2,
    "m1": lambda g, r, u: _m2(g, r, u, 1),
    "m2": lambda g, r, u: _m2(g, r, u, 2),
    "w10": lambda g, r, u: 0.5 * g.per_atom(
        (1 - torch.exp(-(r - R0) ** 2 / (2 * 0.10 ** 2))) * fc(r, 2)),
    "w20": lambda g, r, u: 0.5 * g.per_atom(
        (1 - torch.exp(-(r - R0) ** 2 / (2 * 0.20 ** 2))) * fc(r, 2)),
    "w05": lambda g, r, u: 0.5 * g.per_atom(
        (1 - torch.exp(-(r - R0) ** 2 / (2 * 0.05 ** 2))) * fc(r, 2)),
}
_RHO0: list[float] = []


def rho_bulk() -> float:
    if not _RHO0:
        from ase.build import bulk as _bulk
        g = Graph(_bulk("Cu", "fcc", a=3.63, cubic=True))
        r, _ = g.vectors()
        _RHO0.append(float(g.per_atom(fc(r, 3))[0]))
    return _RHO0[0]


def gate(g: Graph, r: torch.Tensor, u: torch.Tensor, kind: str, width: float) -> torch.Tensor:
    if kind == "r":
        return torch.exp(-(g.per_atom(fc(r, 3)) - rho_bulk()) ** 2 / (2 * width ** 2))
    if kind == "m":
        return torch.exp(-_m2(g, r, u, 1) / (2 * width ** 2))
    if kind.isdigit() or kind == "b":  # a count gate centred on 7, 8, 9 or (b) 11 neighbours
        n1 = g.per_atom(torch.sigmoid((3.05 - r) / 0.05))
        centre = 11 if kind == "b" else int(kind)
        return torch.exp(-(n1 - centre) ** 2 / (2 * width ** 2))
    if kind == "l":  # linear in the first-shell count deficit: (12 − n)/width, 0 in bulk
        n1 = g.per_atom(torch.sigmoid((3.05 - r) / 0.05))
        return (12 - n1) / width
    if kind in "cC":  # smooth neighbour counts: first shell (and second shell for C)
        n1 = g.per_atom(torch.sigmoid((3.05 - r) / 0.05))
        d2 = (n1 - 12) ** 2
        if kind == "C":
            n2 = g.per_atom(torch.sigmoid((r - 3.05) / 0.05) * torch.sigmoid((4.05 - r) / 0.05))
            d2 = d2 + (n2 - 6) ** 2
        return torch.exp(-d2 / (2 * width ** 2))
    if kind == "d":  # both
        d2 = (g.per_atom(fc(r, 3)) - rho_bulk()) ** 2 + _m2(g, r, u, 1)
        return torch.exp(-d2 / (2 * width ** 2))
    raise ValueError(kind)


def gated(name: str) -> Callable[[Graph], torch.Tensor]:
    """"g<kind><width in 1e-3>.<term>", e.g. gr030.p3: Σ_i φ_i e_i with the ρ gate, δ 0.03;
    "h..." the complement, Σ_i (1 − φ_i) e_i."""
    head, term = name.split(".")
    kind, width = head[1], int(head[2:]) / 1000

    def f(g: Graph) -> torch.Tensor:
        r, u = g.vectors()
        phi = gate(g, r, u, kind, width)
        if head[0] == "h":
            phi = 1 - phi
        return (phi * ATOM[term](g, r, u)).sum()
    return f


def basis_values(atoms: Atoms, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Energies (K,) and forces (3N, K) of the named bases."""
    E, F = [], []
    g = Graph(atoms)
    for name in names:
        e = (gated(name) if "." in name else BASES[name])(g)
        grad, = torch.autograd.grad(e, g.pos, allow_unused=True)
        E.append(float(e))
        F.append(np.zeros(3 * len(atoms)) if grad is None else -grad.numpy().reshape(-1))
    return np.array(E), np.array(F).T


# ----------------------------------------------------------------------------- fit


def fit(frames: list[Atoms], pred: dict, names: list[str], weighting: str, ridge: float,
        energy_weight: float, fixed_scale: float | None = None,
        slope_frames: bool = False) -> np.ndarray:
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
    An, y = np.vstack([An, reg]), np.concatenate([y, np.zeros(k)])
    if not slope_frames:
        sol, *_ = np.linalg.lstsq(An, y, rcond=None)
        return sol / nrm
    C = []  # s_frame = F_ref·F′ / F_ref·F_ref = 1 for every fit frame
    for at in frames:
        e_m, f_m = pred[at.info["name"]]
        _, f_b = cache_basis(at, names)
        f_ref = at.get_forces().reshape(-1)
        blk = np.column_stack([f_m.reshape(-1), f_b, np.zeros(f_ref.size)])
        C.append(f_ref @ blk / (f_ref @ f_ref))
    C = np.array(C) / nrm
    d = np.ones(len(C))
    n, m = An.shape[1], len(d)
    kkt = np.block([[An.T @ An, C.T], [C, np.zeros((m, m))]])
    sol, *_ = np.linalg.lstsq(kkt, np.concatenate([An.T @ y, d]), rcond=None)
    return sol[:n] / nrm


_BASIS_CACHE: dict = {}
#: "pkg" in a basis set: the package's own terms (ase_surftune.models.env_basis), e.g. the
#: gated basis exactly as fit_env_correction builds it
PKG_SPEC: list = []


def expand(names: list[str]) -> list[str]:
    if "pkg" not in names:
        return names
    k = names.index("pkg")
    return names[:k] + [f"pkg{q}" for q in range(PKG_SPEC[0].n_terms)] + names[k + 1:]


def _pkg_values(at: Atoms) -> dict:
    from ase_surftune.models.env_basis import spec_terms

    v = spec_terms(at, PKG_SPEC[0])
    return {f"pkg{q}": (v.energies[q], v.forces[q].reshape(-1))
            for q in range(PKG_SPEC[0].n_terms)}


def cache_basis(at: Atoms, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    key = at.info["name"]
    have = _BASIS_CACHE.setdefault(key, {})
    if any(n.startswith("pkg") and n not in have for n in names):
        have.update(_pkg_values(at))
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
    for tag, g in [(t, g) for t in ("", "c_", "t_") for g in GROUPS]:
        sel = [a for a in frames if a.info["config_type"] == g
               and a.info["name"].startswith(tag)
               and (tag or not a.info["name"][:2] in ("c_", "t_"))
               and (held_out is None or a.info["name"] in held_out)]
        if not sel:
            continue
        fr = np.concatenate([a.get_forces().reshape(-1) for a in sel])
        fp = np.concatenate([vals[a.info["name"]][1] for a in sel])
        f0 = np.concatenate([pred[a.info["name"]][1].reshape(-1) for a in sel])
        ok = np.sqrt(np.mean(fr ** 2)) >= MIN_FORCE_RMS
        out[tag + g] = (fp @ fr / (fr @ fr) if ok else None, np.abs(f0 - fr).mean(),
                  np.abs(fp - fr).mean())
    by_name = {a.info["name"]: a for a in frames}
    props = properties({n: (v[0], v[1].reshape(-1, 3)) for n, v in vals.items()}, by_name)
    return {"groups": out, "props": props}


def per_frame(frames: list[Atoms], pred: dict, names: list[str], x: np.ndarray) -> None:
    for at in frames:
        fr = at.get_forces().reshape(-1)
        if np.sqrt(np.mean(fr ** 2)) < MIN_FORCE_RMS:
            continue
        e_m, f_m = pred[at.info["name"]]
        _, f_b = cache_basis(at, names)
        fp = x[0] * f_m.reshape(-1) + f_b @ x[1:1 + len(names)]
        f0 = f_m.reshape(-1)
        print(f"    {at.info['name']:22s} rms {np.sqrt(np.mean(fr ** 2)):.3f}  "
              f"s {f0 @ fr / (fr @ fr):.2f} -> {fp @ fr / (fr @ fr):.2f}  "
              f"mae {np.abs(f0 - fr).mean():.3f} -> {np.abs(fp - fr).mean():.3f}")


def slopes_only(frames: list[Atoms], pred: dict, names: list[str], x: np.ndarray,
                held_out: set[str]) -> dict[str, tuple[float | None, float, float]]:
    """Per (set, group): s, zero-shot MAE, corrected MAE on the held-out frames."""
    out = {}
    for tag, g in [(t, g) for t in ("", "c_", "t_") for g in GROUPS]:
        sel = [a for a in frames if a.info["config_type"] == g and a.info["name"] in held_out
               and (a.info["name"].startswith(tag) if tag
                    else a.info["name"][:2] not in ("c_", "t_"))]
        if not sel:
            continue
        fr = np.concatenate([a.get_forces().reshape(-1) for a in sel])
        f0 = np.concatenate([pred[a.info["name"]][1].reshape(-1) for a in sel])
        fp = np.concatenate([x[0] * pred[a.info["name"]][1].reshape(-1)
                             + cache_basis(a, names)[1] @ x[1:1 + len(names)] for a in sel])
        ok = np.sqrt(np.mean(fr ** 2)) >= MIN_FORCE_RMS
        out[tag + g] = (fp @ fr / (fr @ fr) if ok else None, np.abs(f0 - fr).mean(),
                        np.abs(fp - fr).mean())
    return out


TOP = 0
PER_KIND = 1


def triples(frames: list[Atoms], pred: dict, sets: list[str], weighting: str, ridge: float,
            energy_weight: float, pools: dict[str, list[str]],
            test: set[str] | None = None) -> None:
    """Every fit triple (one frame from each pool): how many held-out groups fall outside
    0.9–1.1 and how many get a larger force MAE, per basis set."""
    import itertools

    combos = list(itertools.product(*pools.values()))
    if PER_KIND > 1:  # PER_KIND frames of each kind, a random sample of such sets
        rng = np.random.default_rng(0)
        combos = [tuple(n for pool in pools.values()
                        for n in rng.choice(pool, PER_KIND, replace=False))
                  for _ in range(200)]
    for s in sets:
        names = expand([n for n in s.split("+") if n])
        outs, ups, worst = [], [], []
        for combo in combos:
            fit_frames = [a for a in frames if a.info["name"] in combo]
            held = (test if test is not None
                    else {a.info["name"] for a in frames} - set(combo))
            x = fit(fit_frames, pred, names, weighting, ridge, energy_weight)
            res = slopes_only(frames, pred, names, x, held)
            ss = [v[0] for v in res.values() if v[0] is not None]
            outs.append(sum(1 for v in ss if not 0.9 <= v <= 1.1))
            ups.append(sum(1 for v in res.values() if v[2] > v[1]))
            worst.append(max(abs(np.log(v)) for v in ss))
        outs, ups = np.array(outs), np.array(ups)
        best = int(np.argmin(outs * 10 + ups))
        if TOP:
            order = np.argsort(outs * 10 + ups, kind="stable")[:TOP]
            for q in order:
                print(f"      {outs[q]} {ups[q]} {worst[q]:.3f} {combos[q]}")
        print(f"{s or 'scale':36s} n={len(combos)} out: median {np.median(outs):.0f} "
              f"mean {outs.mean():.2f} zero {np.mean(outs == 0):.2f} | up: mean "
              f"{ups.mean():.2f} | all-ok {np.mean((outs == 0) & (ups == 0)):.2f} | worst "
              f"|ln s| median {np.median(worst):.3f} | best {combos[best]} "
              f"({outs[best]}, {ups[best]})")


def line(tag: str, res: dict, ref_props: dict, x: np.ndarray) -> str:
    cells = []
    for g, (s, m0, m1) in res["groups"].items():
        st = "n/a " if s is None else f"{s:4.2f}"
        flag = "" if s is None or 0.9 <= s <= 1.1 else "!"
        up = "^" if m1 > m0 else ""
        short = g.replace("bulk_compressed", "compr").replace("bulk_eq", "bulk")
        cells.append(f"{short[:9]:9s} {st}{flag:1s} {m1:.3f}{up:1s}")
    pr = " ".join(f"{k}={res['props'][k] / ref_props[k]:.2f}" for k in
                  ("gamma_111", "gamma_100", "barrier", "B") if k in res["props"])
    bad = sum(1 for v in res["groups"].values() if v[0] is not None and not 0.9 <= v[0] <= 1.1)
    up = sum(1 for v in res["groups"].values() if v[2] > v[1])
    return (f"{tag:34s} a={x[0]:.2f} out={bad} up={up} | " + " | ".join(cells)
            + f" | {pr}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cache", type=Path, nargs="+", required=True)
    p.add_argument("--fit", nargs="+", default=list(FIT_NAMES))
    p.add_argument("--sets", nargs="+", default=None, help="basis sets, '+'-joined names")
    p.add_argument("--weighting", nargs="+", default=["component", "frame"])
    p.add_argument("--ridge", type=float, default=1e-3)
    p.add_argument("--energy-weight", type=float, default=1.0)
    p.add_argument("--rc", type=float, default=3.1)
    p.add_argument("--no-capacity", action="store_true")
    p.add_argument("--test-cache", type=Path, nargs="*", default=[],
                   help="with --triples: score every fit triple (drawn from --cache) on "
                        "these frames only (e.g. the third set), all held out")
    p.add_argument("--pkg-gate", type=float, default=None,
                   help="'pkg' in a set: the package's 2 pair + ρ² + l=2 moment + 0.10 Å "
                        "well basis with this gate width (n0 12, r0 of the lattice)")
    p.add_argument("--per-kind", type=int, default=1,
                   help="with --triples: fit frames of each kind (random sets if > 1)")
    p.add_argument("--top", type=int, default=0, help="with --triples: list the best N")
    p.add_argument("--triples", action="store_true",
                   help="fit on every triple (bulk rattle, vacancy rattle, slab rattle) of "
                        "the loaded sets and summarise the held-out groups")
    p.add_argument("--slope-frames", action="store_true",
                   help="constrain each fit frame's slope s to 1 exactly")
    p.add_argument("--per-frame", action="store_true",
                   help="also print each held-out frame's s (zero-shot → transfer)")
    p.add_argument("--fixed-scale", type=float, default=None)
    args = p.parse_args()
    global RC
    RC = args.rc
    from ase_surftune.models.calculator import SurfTuneCalculator

    frames = read_sets(args.cache)
    test_frames = read_sets(args.test_cache) if args.test_cache else []
    frames = frames + test_frames
    calc = SurfTuneCalculator("chgnet")
    pred = {}
    for a in frames:
        b = a.copy()
        b.calc = calc
        pred[a.info["name"]] = (b.get_potential_energy(), b.get_forces())
    ref_props = properties({a.info["name"]: (a.get_potential_energy(), a.get_forces())
                            for a in frames}, {a.info["name"]: a for a in frames})
    global TOP, PER_KIND
    TOP, PER_KIND = args.top, args.per_kind
    if args.pkg_gate is not None:
        from ase_surftune.models.env_basis import BasisSpec
        from ase_surftune.models.env_fit import GATE_R_PER_R0
        PKG_SPEC.append(BasisSpec(args.rc, 2, (2.0,), (2,), (0.10,), R0, args.pkg_gate,
                                  GATE_R_PER_R0 * R0, 12.0))
    if args.triples:
        test = {a.info["name"] for a in test_frames} or None
        names_all = [a.info["name"] for a in frames if np.any(a.get_forces())
                     and (test is None or a.info["name"] not in test)]
        pools = {"bulk": [n for n in names_all if "bulk_rattle" in n],
                 "vac": [n for n in names_all if "vac_rattle" in n],
                 "slab": [n for n in names_all if "slab" in n and "rattle" in n]}
        for weighting in args.weighting:
            print(f"-- {weighting}")
            triples(frames, pred, args.sets or [""], weighting, args.ridge,
                    args.energy_weight, pools, test)
        return
    fit_frames = [a for a in frames if a.info["name"] in args.fit]
    held = {a.info["name"] for a in frames} - set(args.fit)
    sets = args.sets or ["", "p4", "p3+p4+e2", "w05", "w10", "m1", "m2", "m1+m2", "m2+p4+e2",
                         "m1+m2+p4+e2", "w05+p4+e2", "m2b", "m1b+m2b+p4+e2"]
    zero = np.array([1.0, 0.0])
    print(line("zero-shot (held out)", score(frames, pred, [], zero, held), ref_props, zero))
    for weighting in args.weighting:
        for s in sets:
            names = expand([n for n in s.split("+") if n])
            x = fit(fit_frames, pred, names, weighting, args.ridge, args.energy_weight,
                    args.fixed_scale, args.slope_frames)
            print(line(f"transfer {weighting[:4]} {s or 'scale'}",
                       score(frames, pred, names, x, held), ref_props, x))
            if args.per_frame:
                per_frame(frames, pred, names, x)
            if args.no_capacity:
                continue
            xa = fit([a for a in frames if np.any(a.get_forces())], pred, names, weighting,
                     args.ridge, args.energy_weight, args.fixed_scale)
            print(line(f"capacity {weighting[:4]} {s or 'scale'}",
                       score(frames, pred, names, xa, None), ref_props, xa))


if __name__ == "__main__":
    main()
