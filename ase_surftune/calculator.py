"""``SurfTuneCalculator``: every model (zero-shot, fine-tuned, one head of a multi-head
model, linearly corrected) as an ordinary ASE calculator.

    >>> from ase.build import fcc111
    >>> from ase_surftune import SurfTuneCalculator
    >>> slab = fcc111("Cu", (3, 3, 4), vacuum=8.0)
    >>> slab.calc = SurfTuneCalculator("chgnet")
    >>> slab.get_potential_energy()        # eV

Units: energy eV, forces eV/Å, stress eV/Å³ (ASE Voigt order, ASE sign convention).
The calculator is reusable on Atoms of any size and composition (graphs are rebuilt
per call), works in ASE optimizers, filters, NEB, MD and phonopy, and is registered as
the ASE plugin ``"surftune"``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ase_surftune.backends import load_model, parse_dtype
from ase_surftune.backends.base import Prediction
from ase_surftune.bundle import Bundle
from ase_surftune.correction import LinearCorrection

_CACHE: dict[tuple[str, str, str], Bundle] = {}
_CACHE_LOCK = threading.Lock()


def _shared_bundle(spec: str, device: str, dtype: torch.dtype | None) -> Bundle:
    """Load a model once per (spec, device, dtype) and share it between calculators.

    Calculators only run inference, so sharing weights is safe and makes "one
    calculator per NEB image" cheap. Fine-tuning code uses :func:`load_model`, which
    always returns a fresh copy.
    """
    key = (str(spec), str(device), str(dtype))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_model(spec, device=device, dtype=dtype)
        return _CACHE[key]


def _as_correction(c: Any) -> LinearCorrection | None:
    if c is None or isinstance(c, LinearCorrection):
        return c
    if isinstance(c, dict):
        return LinearCorrection.from_dict(c)
    raise TypeError(f"correction must be a LinearCorrection, a dict or None, got {type(c)}")


class SurfTuneCalculator(Calculator):
    """ASE calculator for CHGNet/MACE models and ase_surftune bundles.

    Args:
        model: model spec (``"chgnet"``, ``"chgnet-0.2.0"``, ``"mace:/path.model"``,
            ``"mace-mp-0-medium"``, a bundle path), a :class:`Bundle` or an adapter.
        head: head to evaluate; default: the bundle's default head. Unknown heads raise
            a ``ValueError`` listing the valid ones.
        correction: a :class:`LinearCorrection` (or its dict) to apply instead of the
            bundle's own correction for the head; ``False`` disables any correction.
        device: torch device (``"cpu"``, ``"cuda"``...).
        dtype: ``"float32"`` or ``"float64"``; default: the model's own.
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: Any = "chgnet", head: str | None = None,
                 correction: LinearCorrection | dict | bool | None = None,
                 device: str = "cpu", dtype: str | torch.dtype | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        tdtype = parse_dtype(dtype)
        if isinstance(model, (str, Path)):
            self.bundle = _shared_bundle(str(model), device, tdtype)
        else:
            self.bundle = load_model(model, device=device, dtype=tdtype)
        self.model_spec = model if isinstance(model, (str, Path)) else self.bundle.adapter.name
        self.adapter = self.bundle.adapter
        self._head = self.bundle.resolve_head(head)
        self._correction: LinearCorrection | bool | None = (
            False if correction is False else _as_correction(correction))

    # ------------------------------------------------------------------ heads
    @property
    def heads(self) -> list[str]:
        """The model's heads."""
        return self.bundle.heads

    @property
    def head(self) -> str:
        """The selected head. Setting it validates the name and clears cached results."""
        return self._head

    @head.setter
    def head(self, value: str | None) -> None:
        new = self.bundle.resolve_head(value)
        if new != self._head:
            self._head = new
            self.reset()

    @property
    def correction(self) -> LinearCorrection | None:
        """The linear correction in effect for the current head (or None)."""
        if self._correction is False:
            return None
        if isinstance(self._correction, LinearCorrection):
            return self._correction
        return self.bundle.corrections.get(self._head)

    def todict(self) -> dict[str, Any]:
        return {"model": str(self.model_spec), "head": self._head,
                "device": str(self.adapter.device)}

    # ------------------------------------------------------------------ ASE API
    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        """Compute energy, forces and (if asked) stress for ``atoms``."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.adapter.check_atoms(atoms)
        asked = "stress" in properties
        want_stress = asked or (self.adapter.stress_with_forces and bool(atoms.pbc.all())
                                and atoms.cell.rank == 3)
        if asked and atoms.cell.rank < 3:
            raise PropertyNotImplementedError(
                "stress needs a 3D cell; this structure has cell "
                f"{atoms.cell.cellpar().round(3).tolist()}")
        out = self.adapter.forward([self.adapter.featurize(atoms)], self._head,
                                   compute_stress=want_stress)
        energy = float(out["energy"][0])
        forces = out["forces"].cpu().double().numpy()
        stress = out["stress"][0].cpu().double().numpy() if want_stress else None
        energy, forces, stress = self.bundle.postprocess(
            self._head, energy, forces, atoms.numbers, stress,
            correction=self.correction or False)
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = forces
        if stress is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)

    # ------------------------------------------------------------------ batched
    def predict(self, atoms_list: Sequence[Atoms], batch_size: int | str = "auto", *,
                compute_stress: bool = False, progress: bool = False) -> Prediction:
        """Evaluate many structures in batches; returns arrays.

        Args:
            atoms_list: structures of any sizes.
            batch_size: structures per forward pass, or ``"auto"`` (by an atom budget;
                batches that run out of memory are split and retried).
            compute_stress: also compute stresses (eV/Å³, 3×3 per structure).
            progress: show a progress bar.

        Returns:
            :class:`~ase_surftune.backends.base.Prediction` with ``energy`` (n,) eV,
            ``forces`` list of (n_i, 3) eV/Å, ``stress`` (n, 3, 3) eV/Å³ or None.
        """
        return self.bundle.predict(list(atoms_list), self._head, batch_size=batch_size,
                                   compute_stress=compute_stress, progress=progress,
                                   correction=self.correction or False)

    def get_forces_and_energy(self, atoms: Atoms) -> tuple[np.ndarray, float]:
        """Convenience: (forces eV/Å, energy eV) for one structure."""
        return self.get_forces(atoms), self.get_potential_energy(atoms)


def _register_with_ase() -> None:
    """Make ``ase.calculators.calculator.get_calculator_class("surftune")`` work."""
    from ase.calculators import calculator as ase_calc

    if "surftune" not in ase_calc.external_calculators:
        ase_calc.register_calculator_class("surftune", SurfTuneCalculator)


_register_with_ase()
