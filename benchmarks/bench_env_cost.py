"""Cost of the environment-aware correction next to the model call it corrects (issue 12).

Side by side in one run, on a rattled 108-atom Cu cell, 1 torch thread: bundled CHGNet
(energy, forces, stress) and the correction's residual (energy, forces, stress) for the
first-shell pair + embedding terms, for the study's moment + well terms
(``ENV_MOMENTS`` in ``bench_dft_softening.py``, rc = 4.36 Å) and for the gated terms
(``ENV_GATED``: every term twice, the second weighted by bulk-likeness).

    PYTHONPATH=. python benchmarks/bench_env_cost.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dft_softening import RC, RC2  # noqa: E402

from ase_surftune.models.env_basis import BasisSpec, basis_residual  # noqa: E402
from ase_surftune.models.env_fit import GATE_R_PER_R0  # noqa: E402


def best_of(fn: Callable[[], object], repeats: int = 5, number: int = 3) -> float:
    """Best mean wall time of ``number`` calls over ``repeats`` rounds, in ms."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return 1e3 * min(times)


def main() -> None:
    torch.set_num_threads(1)
    from ase_surftune.models.calculator import SurfTuneCalculator

    atoms = bulk("Cu", cubic=True).repeat(3)
    atoms.rattle(0.05, seed=0)
    calc = SurfTuneCalculator("chgnet")

    rng = np.random.default_rng(1)

    def model() -> None:  # moved a little each call: the calculator must not reuse results
        work = atoms.copy()
        work.positions += 1e-4 * rng.standard_normal(work.positions.shape)
        work.calc = calc
        work.get_forces()
        work.get_stress()

    first = BasisSpec(RC, 2, (2.0,))
    r0 = 3.63 / np.sqrt(2)
    moments = BasisSpec(RC2, 2, (2.0,), (1, 2), (0.05,), r0)
    gated = BasisSpec(RC2, 2, (2.0,), (2,), (0.10,), r0, 0.5, GATE_R_PER_R0 * r0, 12.0)
    t_model = best_of(model)
    rows = [("CHGNet energy+forces+stress", t_model),
            ("env residual, pair+embedding (rc 3.1 Å)",
             best_of(lambda: basis_residual(atoms, first, [0.1] * first.n_terms))),
            ("env residual, + moments + well (rc 4.36 Å)",
             best_of(lambda: basis_residual(atoms, moments, [0.1] * moments.n_terms))),
            ("env residual, gated (rc 4.36 Å)",
             best_of(lambda: basis_residual(atoms, gated, [0.1] * gated.n_terms)))]
    print(f"{len(atoms)} Cu atoms, 1 thread")
    for name, ms in rows:
        print(f"{name:45s} {ms:8.1f} ms   {ms / t_model:6.3f}× the model call")


if __name__ == "__main__":
    main()
