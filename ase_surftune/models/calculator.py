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
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ase_surftune.core.specs import parse_model_spec
from ase_surftune.models.backends.base import Prediction
from ase_surftune.models.bundle import Bundle
from ase_surftune.models.correction import LinearCorrection  # noqa: F401  (re-exported)
from ase_surftune.models.correction_kinds import CORRECTION_TYPES, Correction
from ase_surftune.models.correction_kinds import as_correction as _as_correction
from ase_surftune.models.loading import load_model
from ase_surftune.models.registry import parse_dtype


class UnseenElementWarning(UserWarning):
    """A head is used on an element absent from the data it was trained on."""


#: bundles shared between calculators, least recently used first
_CACHE: OrderedDict[tuple[Any, ...], Bundle] = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: how many loaded models the calculator cache keeps
CACHE_SIZE = 8


def _cache_key(spec: str, device: str, dtype: torch.dtype | None) -> tuple[Any, ...]:
    """``(spec, device, dtype)`` plus, for a file, its resolved path, inode, mtime and
    size, so that a file rewritten in place (re-training into the same path) is loaded
    anew."""
    try:
        path = parse_model_spec(spec, with_head=False).path
        st = path.stat() if path is not None else None
    except (OSError, ValueError):  # ModelLoadError is a ValueError
        return (spec, str(device), str(dtype))
    if path is None or st is None or not path.is_file():
        return (spec, str(device), str(dtype))
    # an atomic save (temp file + rename) always gives the path a new inode
    return (spec, str(device), str(dtype), str(path.resolve()), st.st_ino, st.st_mtime_ns,
            st.st_size)


def _shared_bundle(spec: str, device: str, dtype: torch.dtype | None,
                   trust: bool | None = None) -> Bundle:
    """Load a model once per (spec, file version, device, dtype) and share it.

    Calculators only run inference, so sharing weights is safe and makes "one
    calculator per NEB image" cheap; heads are selected per call without touching the
    shared module. The cache keeps the :data:`CACHE_SIZE` most recently used models.
    Fine-tuning code uses :func:`load_model`, which always returns a fresh copy.
    """
    key = _cache_key(str(spec), device, dtype)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        bundle = load_model(spec, device=device, dtype=dtype, trust=trust)
        _CACHE[key] = bundle
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return bundle


class SurfTuneCalculator(Calculator):
    """ASE calculator for CHGNet/MACE models and ase_surftune bundles.

    Args:
        model: model spec (``"chgnet"``, ``"chgnet-0.2.0"``, ``"mace:/path.model"``,
            ``"mace-mp-0-medium"``, a bundle path), a :class:`Bundle` or an adapter.
        head: head to evaluate; default: the bundle's default head. Unknown heads raise
            a ``ValueError`` listing the valid ones.
        correction: a :class:`LinearCorrection` or ``EnvCorrection`` (or its dict) to
            apply instead of the bundle's own correction for the head; ``False``
            disables any correction.
        device: torch device (``"cpu"``, ``"cuda"``...).
        dtype: ``"float32"`` or ``"float64"``; default: the model's own.
        trust: allow pickle-based model files (MACE ``.model``, legacy bundles); see
            :mod:`ase_surftune.core.trust`. Reading a pickle can run arbitrary code.
        **kwargs: passed to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: Any = "chgnet", head: str | None = None,
                 correction: Correction | dict | bool | None = None,
                 device: str = "cpu", dtype: str | torch.dtype | None = None,
                 trust: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        tdtype = parse_dtype(dtype)
        if isinstance(model, (str, Path)):
            self.bundle = _shared_bundle(str(model), device, tdtype, trust)
        else:
            self.bundle = load_model(model, device=device, dtype=tdtype, trust=trust)
        self.model_spec = model if isinstance(model, (str, Path)) else self.bundle.adapter.name
        self.adapter = self.bundle.adapter
        self._head = self.bundle.resolve_head(head)
        self._correction: Correction | bool | None = (
            False if correction is False else _as_correction(correction))
        self._warned_unseen: set[tuple[str, str]] = set()

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
    def correction(self) -> Correction | None:
        """The correction in effect for the current head (or None)."""
        if self._correction is False:
            return None
        if isinstance(self._correction, CORRECTION_TYPES):
            return self._correction
        return self.bundle.corrections.get(self._head)

    def todict(self) -> dict[str, Any]:
        return {"model": str(self.model_spec), "head": self._head,
                "device": str(self.adapter.device)}

    def _warn_unseen(self, atoms_list: Sequence[Atoms]) -> None:
        """Warn (once per head and element) about elements the head never saw in training.

        Uses the bundle's ``head_info[head]["element_counts"]`` (atoms seen per element);
        heads without that record (e.g. a foundation model's own heads) are not checked.
        """
        symbols = sorted({s for a in atoms_list for s in a.get_chemical_symbols()})
        unseen = [s for s in self.bundle.unseen_elements(self._head, symbols)
                  if (self._head, s) not in self._warned_unseen]
        if unseen:
            self._warned_unseen.update((self._head, s) for s in unseen)
            warnings.warn(f"head {self._head!r} of {self.model_spec} never saw element(s) "
                          f"{unseen} in training (seen: "
                          f"{sorted(self.bundle.element_counts(self._head) or {})}); its "
                          f"predictions for them are the base model's at best",
                          UnseenElementWarning, stacklevel=3)

    # ------------------------------------------------------------------ ASE API
    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        """Compute energy, forces and (if asked) stress for ``atoms``."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.adapter.check_atoms(atoms)
        self._warn_unseen([atoms])
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
            correction=self.correction or False, atoms=atoms)
        _check_finite(energy, forces, stress, atoms, self.model_spec)
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
            :class:`~ase_surftune.models.backends.base.Prediction` with ``energy`` (n,) eV,
            ``forces`` list of (n_i, 3) eV/Å, ``stress`` (n, 3, 3) eV/Å³ or None.
        """
        self._warn_unseen(atoms_list)
        return self.bundle.predict(list(atoms_list), self._head, batch_size=batch_size,
                                   compute_stress=compute_stress, progress=progress,
                                   correction=self.correction or False)


def _check_finite(energy: float, forces: np.ndarray, stress: np.ndarray | None,
                  atoms: Atoms, model: Any) -> None:
    """Raise :class:`NonFiniteOutputError` rather than hand NaN/inf to an optimiser or MD."""
    bad = [name for name, v in (("energy", energy), ("forces", forces), ("stress", stress))
           if v is not None and not np.all(np.isfinite(v))]
    if bad:
        from ase_surftune.core.errors import NonFiniteOutputError

        raise NonFiniteOutputError(
            f"model {str(model)!r} returned non-finite {' and '.join(bad)} for "
            f"{atoms.get_chemical_formula()}; check the structure (overlapping or far "
            f"out-of-distribution atoms) or the model's weights")


def _register_with_ase() -> None:
    """Make ``ase.calculators.calculator.get_calculator_class("surftune")`` work."""
    from ase.calculators import calculator as ase_calc

    if "surftune" not in ase_calc.external_calculators:
        ase_calc.register_calculator_class("surftune", SurfTuneCalculator)


_register_with_ase()
