"""The one prediction path: energies, forces and stresses of any model on many structures.

:func:`predict_with` takes a :class:`~ase_surftune.models.calculator.SurfTuneCalculator`,
a :class:`~ase_surftune.models.bundle.Bundle` or any other ASE calculator, and picks the
path by type: batched forward passes for the first two, one structure at a time for the
rest. It imports nothing of the package (the type checks look the classes up only once
their modules are loaded), so the corrections below the bundle can use it too. Everything
that scores, labels or compares models (evaluation, the active-learning committee,
forgetting checks, distillation, corrections) calls it, so a model is evaluated the same
way everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

__all__ = ["Predicted", "predict_with"]


class Predicted(NamedTuple):
    """What :func:`predict_with` returns (unpacks as ``energy, forces, stress``).

    Attributes:
        energy: (n,) total energies, eV.
        forces: one (n_i, 3) array per structure, eV/Å (raw: constraints not applied).
        stress: one Voigt 6-vector per structure, eV/Å³ (ASE sign convention), or None
            where it was not asked for.
    """

    energy: np.ndarray
    forces: list[np.ndarray]
    stress: list[np.ndarray | None]


def _is(obj: Any, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)`` without importing ``module`` (torch) needlessly:
    an instance of a class can only exist once its module has been imported."""
    mod = sys.modules.get(module)
    return mod is not None and isinstance(obj, getattr(mod, name))


def predict_with(calc: Any, configs: Sequence[Atoms], *,
                 compute_stress: Sequence[bool] | bool = False, progress: bool = False,
                 batch_size: int | str = "auto", head: str | None = None) -> Predicted:
    """Energies (eV), raw forces (eV/Å) and Voigt stresses (eV/Å³ or None) of ``calc``.

    Args:
        calc: a SurfTuneCalculator (its head and correction apply), a Bundle (``head``,
            calibrated) or any ASE calculator (reused for every structure).
        configs: the structures (their own labels are ignored).
        compute_stress: one flag for all, or one per structure.
        progress: show a progress bar.
        batch_size: structures per forward pass, or ``"auto"`` (batched paths only).
        head: the head of a Bundle (``None``: its default head).

    Raises:
        ValueError: ``compute_stress`` has the wrong length.
    """
    configs = list(configs)
    n = len(configs)
    want = [bool(compute_stress)] * n if isinstance(compute_stress, bool) else \
        [bool(x) for x in compute_stress]
    if len(want) != n:
        raise ValueError("compute_stress must have one flag per structure")
    if _is(calc, "ase_surftune.models.calculator", "SurfTuneCalculator"):
        def run(atoms: list[Atoms], stress: bool) -> Any:
            return calc.predict(atoms, batch_size=batch_size, compute_stress=stress,
                                progress=progress)
    elif _is(calc, "ase_surftune.models.bundle", "Bundle"):
        def run(atoms: list[Atoms], stress: bool) -> Any:
            return calc.predict(atoms, head, batch_size=batch_size, compute_stress=stress,
                                progress=progress)
    else:
        return _one_by_one(calc, configs, want, progress)
    return _batched(run, configs, want)


def _batched(run: Any, configs: list[Atoms], want: list[bool]) -> Predicted:
    """Two batched calls at most: the structures with stress, and those without."""
    n = len(configs)
    energies = np.zeros(n)
    forces: list[np.ndarray] = [np.zeros((len(a), 3)) for a in configs]
    stresses: list[np.ndarray | None] = [None] * n
    for stress in (True, False):
        idx = [i for i in range(n) if want[i] == stress]
        if not idx:
            continue
        pred = run([configs[i] for i in idx], stress)
        for k, i in enumerate(idx):
            energies[i] = float(pred.energy[k])
            forces[i] = np.asarray(pred.forces[k], dtype=float)
            if stress:
                stresses[i] = full_3x3_to_voigt_6_stress(np.asarray(pred.stress[k]))
    return Predicted(energies, forces, stresses)


def _one_by_one(calc: Any, configs: list[Atoms], want: list[bool],
                progress: bool) -> Predicted:
    """Any ASE calculator, one structure at a time on a copy (labels untouched)."""
    from tqdm.auto import tqdm

    n = len(configs)
    energies = np.zeros(n)
    forces: list[np.ndarray] = [np.zeros((len(a), 3)) for a in configs]
    stresses: list[np.ndarray | None] = [None] * n
    for i in tqdm(range(n), desc="predict", disable=not progress, unit="struct"):
        work = configs[i].copy()
        work.calc = calc
        energies[i] = float(work.get_potential_energy())
        forces[i] = np.array(work.get_forces(apply_constraint=False), dtype=float)
        if want[i]:
            stresses[i] = np.array(work.get_stress(voigt=True), dtype=float)
    return Predicted(energies, forces, stresses)
