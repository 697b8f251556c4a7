"""Exploration (issue 12, not part of the package): the third candidate correction.

A scale a plus a Gaussian-well pair term around the bulk nearest-neighbour distance r0,
    E_w = c Σ_{i<j} (1 − exp(−(r_ij − r0)²/2w²)) (1 − r_ij/rc)²,
zero (with zero force) at the ideal lattice and saturating for large distortions — a
term whose strength depends on how far each bond is from its relaxed bulk length. Fitted
to the forces of the study's three fit structures (linear least squares with the model's
forces as a column for a), scored per held-out group as in bench_dft_softening.py.
Forces by autograd (torch); a prototype to decide whether the term is worth building.

    PYTHONPATH=. python benchmarks/explore_well_pair.py [--cache DIR]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from ase.neighborlist import neighbor_list

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dft_softening import FIT_NAMES, read_sets  # noqa: E402

from ase_surftune.models.calculator import SurfTuneCalculator  # noqa: E402

torch.set_num_threads(1)
RC = 3.1  # Å, first-neighbour shell
R0 = 3.63 / np.sqrt(2)  # Å, nearest-neighbour distance of the study's lattice
def basis(a, widths, embed=True, pairs=(4,)):
    i, j, S = neighbor_list("ijS", a, RC)
    pos = torch.tensor(a.positions, dtype=torch.float64, requires_grad=True)
    cell = torch.tensor(a.cell.array, dtype=torch.float64)
    d = pos[j] - pos[i] + torch.tensor(S, dtype=torch.float64) @ cell
    r = d.norm(dim=1)
    fc = (1 - r / RC) ** 3
    cols = []
    for w in widths:
        cols.append(0.5 * ((1 - torch.exp(-(r - R0) ** 2 / (2 * w * w))) * ((1 - r / RC) ** 2)).sum())
    for p in pairs:
        cols.append(0.5 * ((1 - r / RC) ** p).sum())
    if embed:
        rho = torch.zeros(len(a), dtype=torch.float64).index_add(0, torch.tensor(i), fc)
        cols.append((rho ** 2).sum())
    E, F = [], []
    for c in cols:
        g, = torch.autograd.grad(c, pos, retain_graph=True)
        E.append(float(c)); F.append(-g.numpy().reshape(-1))
    return np.array(E), np.array(F).T  # (k,), (3N, k)

calc = SurfTuneCalculator("chgnet")

_p = argparse.ArgumentParser()
_p.add_argument("--cache", type=Path, default=Path(__file__).resolve().parents[2] / "dft_cache" / "cu_pbe_k4")
frames = read_sets([_p.parse_args().cache])
pred = {}
for a in frames:
    b = a.copy(); b.calc = calc
    pred[a.info["name"]] = (b.get_potential_energy(), b.get_forces().reshape(-1))
fit = [a for a in frames if a.info["name"] in FIT_NAMES]
def run(widths, embed, pairs, ridge=1e-8):
    rows, ys = [], []
    for a in fit:
        E, F = basis(a, widths, embed, pairs)
        fm = pred[a.info["name"]][1]
        rows.append(np.column_stack([fm, F])); ys.append(a.get_forces().reshape(-1))
    A = np.vstack(rows); y = np.concatenate(ys)
    sc = np.linalg.norm(A, axis=0) + 1e-30
    x = np.linalg.solve((A / sc).T @ (A / sc) + ridge * np.eye(A.shape[1]), (A / sc).T @ y) / sc
    out = {}
    for g in sorted({a.info["config_type"] for a in frames}):
        fr_all, fp_all, fz_all = [], [], []
        for a in frames:
            if a.info["config_type"] != g or a.info["name"] in FIT_NAMES: continue
            E, F = basis(a, widths, embed, pairs)
            fm = pred[a.info["name"]][1]
            fr_all.append(a.get_forces().reshape(-1)); fz_all.append(fm)
            fp_all.append(np.column_stack([fm, F]) @ x)
        fr, fp, fz = map(np.concatenate, (fr_all, fp_all, fz_all))
        out[g] = (fp @ fr / (fr @ fr), np.abs(fz - fr).mean(), np.abs(fp - fr).mean())
    print(f"w={widths} embed={embed} pairs={pairs} a={x[0]:.2f} coef={np.round(x[1:],3)}")
    print("   " + "  ".join(f"{g}: s {v[0]:.2f} MAE {v[1]:.3f}->{v[2]:.3f}" for g, v in out.items()))
for cfg in [((0.05,), False, ()), ((0.1,), False, ())]:
    run(*cfg)
