"""Exploration (issue 12, not part of the package): the first candidate correction.

A scale that depends smoothly on a local descriptor, applied to the model's per-atom
energies ε_i (CHGNet's site energies):

    E′ = Σ_i [a_∞ + α·exp(−q_i/q0)]·(ε_i − ε_bulk) + const,
    q_i = Σ_j (1 − r_ij/rc)²·(r_ij − r0)² / (1 − r0/rc)²      (Å²)

q_i is 0 when every bond of atom i has its ideal bulk length r0 and grows with the
distortion of its environment, so the scale is a_∞ + α near equilibrium and a_∞ far
from it (the softening the study measured is largest near equilibrium). ε_bulk (eV/atom)
is the model's own site energy in the ideal bulk cell (a model evaluation, no label).
Forces −∇E′ by central finite differences of the site energies (h = 2e-3 Å; checked
against the model's own forces); a_∞ and α by linear least squares on the forces of the
study's three fit structures, q0 by the lowest fit-set loss on a grid. Scored per held-out
group as in bench_dft_softening.py. A prototype to decide whether the term is worth
building into the backends (it needs ∂ε_i/∂R from each model).

    PYTHONPATH=. python benchmarks/explore_peratom_scale.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from ase.neighborlist import neighbor_list

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dft_softening import FIT_NAMES, GROUPS, read_sets  # noqa: E402

torch.set_num_threads(1)
RC = 3.1  # Å, first-neighbour shell
R0 = 3.63 / np.sqrt(2)  # Å, nearest-neighbour distance of the study's lattice
H = 2e-3  # Å, finite-difference step
Q0_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)  # Å²


def site_energies(model, atoms) -> np.ndarray:
    from pymatgen.io.ase import AseAtomsAdaptor

    r = model.predict_structure(AseAtomsAdaptor.get_structure(atoms), task="e",
                                return_site_energies=True)
    return np.asarray(r["site_energies"], dtype=float)


def displaced_site_energies(model, atoms) -> np.ndarray:
    """Site energies (eV) at every ±H displacement: shape (n, 3, 2, n)."""
    n = len(atoms)
    out = np.zeros((n, 3, 2, n))
    for i in range(n):
        for k in range(3):
            for s, sign in enumerate((1, -1)):
                b = atoms.copy()
                b.positions[i, k] += sign * H
                out[i, k, s] = site_energies(model, b)
    return out


def distortion(atoms, positions: np.ndarray) -> np.ndarray:
    """q_i (Å²) of every atom at ``positions``."""
    b = atoms.copy()
    b.positions = positions
    i, _, d = neighbor_list("ijd", b, RC)
    w = (1 - d / RC) ** 2 * (d - R0) ** 2
    return np.bincount(i, weights=w, minlength=len(b)) / (1 - R0 / RC) ** 2


def scaled_force_column(atoms, disp: np.ndarray, eps_bulk: float, q0: float) -> np.ndarray:
    """−∇ Σ_i exp(−q_i/q0)(ε_i − ε_bulk), flattened (eV/Å), by central differences."""
    n = len(atoms)
    g = np.zeros((n, 3))
    for i in range(n):
        for k in range(3):
            vals = []
            for s, sign in enumerate((1, -1)):
                p = atoms.positions.copy()
                p[i, k] += sign * H
                vals.append(np.sum(np.exp(-distortion(atoms, p) / q0)
                                   * (disp[i, k, s] - eps_bulk)))
            g[i, k] = (vals[0] - vals[1]) / (2 * H)
    return -g.reshape(-1)


def main() -> None:
    from chgnet.model import CHGNet

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(__file__).resolve().parents[2]
                    / "dft_cache" / "cu_pbe_k4")
    frames = read_sets([ap.parse_args().cache])
    model = CHGNet.load(verbose=False)
    by = {a.info["name"]: a for a in frames}
    eps_bulk = float(site_energies(model, by["eos_+0.00"]).mean())
    disp = {n: displaced_site_energies(model, a) for n, a in by.items()}
    f_model = {n: -(d[:, :, 0].sum(-1) - d[:, :, 1].sum(-1)).reshape(-1) / (2 * H)
               for n, d in disp.items()}
    best = None
    for q0 in Q0_GRID:
        cols = {n: np.column_stack([f_model[n], scaled_force_column(by[n], disp[n],
                                                                    eps_bulk, q0)])
                for n in by}
        a_mat = np.vstack([cols[n] for n in FIT_NAMES])
        y = np.concatenate([by[n].get_forces().reshape(-1) for n in FIT_NAMES])
        x, *_ = np.linalg.lstsq(a_mat, y, rcond=None)
        loss = float(np.mean((a_mat @ x - y) ** 2))
        groups = {}
        for g in GROUPS:
            names = [n for n, a in by.items()
                     if a.info["config_type"] == g and n not in FIT_NAMES]
            fr = np.concatenate([by[n].get_forces().reshape(-1) for n in names])
            fz = np.concatenate([f_model[n] for n in names])
            fp = np.concatenate([cols[n] @ x for n in names])
            groups[g] = (fp @ fr / (fr @ fr), np.abs(fz - fr).mean(), np.abs(fp - fr).mean())
        print(f"q0 = {q0} Å²: a_inf = {x[0]:.3f}, alpha = {x[1]:.3f}, fit loss "
              f"{loss:.3e} (eV/Å)²")
        print("  held-out s (force MAE before -> after, eV/Å): " + "; ".join(
            f"{g} {v[0]:.2f} ({v[1]:.3f} -> {v[2]:.3f})" for g, v in groups.items()))
        if best is None or loss < best[0]:
            best = (loss, q0)
    print(f"q0 chosen by the fit-set loss: {best[1]} Å²")


if __name__ == "__main__":
    main()
