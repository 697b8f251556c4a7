"""Model bundles: one file holding everything needed to use a (fine-tuned) model.

A bundle holds

* the backend adapter (backend name, weights, heads, element list);
* per-head, per-element reference-energy shifts from energy-reference alignment (eV/atom);
* optional per-head linear softening corrections (:class:`LinearCorrection`);
* the default head, what data trained each head, the training config, metrics and
  provenance (base model, data hash, date, package versions).

File format (``*.stbundle`` by convention, any name works): a ``torch.save`` archive of
``{"format": "ase_surftune-bundle", "format_version": 1, "sha256": ..., "payload": bytes}``
where ``payload`` is itself a ``torch.save`` archive of the bundle dict. The checksum
detects corrupt or truncated files; writing goes through a temporary file and an atomic
rename, so an interrupted save never leaves a half-written bundle behind.

Bundles contain pickled Python objects (as mace ``.model`` files do): load only bundles
you trust.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from ase_surftune._io import atomic_torch_save
from ase_surftune.backends.base import ModelAdapter, Prediction
from ase_surftune.correction import LinearCorrection
from ase_surftune.errors import BundleError, HeadError

BUNDLE_FORMAT = "ase_surftune-bundle"
BUNDLE_FORMAT_VERSION = 1
BUNDLE_SUFFIX = ".stbundle"


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a model's numbers."""
    from importlib import metadata

    out = {}
    for pkg in ("ase_surftune", "torch", "ase", "chgnet", "mace-torch", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class Bundle:
    """A model plus everything that turns its raw output into calibrated predictions.

    Attributes:
        adapter: the backend adapter owning the torch model.
        reference_energies: ``{head: {symbol: shift_eV_per_atom}}`` added to the head's
            raw energy (energy-reference alignment).
        corrections: ``{head: LinearCorrection}`` applied after the shifts.
        default_head: head used when none is given (``None``: the adapter's first head).
        head_info: ``{head: {...}}`` free-form description of what trained each head.
        train_config: the fine-tuning configuration that produced the bundle.
        metrics: final metrics (errors, softening scales, forgetting report...).
        provenance: base model, data hash, date, package versions.
    """

    adapter: ModelAdapter
    reference_energies: dict[str, dict[str, float]] = field(default_factory=dict)
    corrections: dict[str, LinearCorrection] = field(default_factory=dict)
    default_head: str | None = None
    head_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ heads
    @property
    def heads(self) -> list[str]:
        return self.adapter.heads

    def resolve_head(self, head: str | None) -> str:
        """``head`` if valid, else the bundle's default head; HeadError lists valid heads."""
        if head is None:
            head = self.default_head
        return self.adapter.resolve_head(head)

    def energy_shift(self, head: str, numbers: np.ndarray) -> float:
        """Σ_i δ_{head, Z_i} in eV from the reference-energy alignment."""
        shifts = self.reference_energies.get(head)
        if not shifts:
            return 0.0
        return float(sum(shifts.get(chemical_symbols[int(z)], 0.0) for z in numbers))

    # ------------------------------------------------------------------ training coverage
    def element_counts(self, head: str) -> dict[str, int] | None:
        """``{symbol: atoms seen}`` in the data that trained ``head`` (None: not recorded)."""
        counts = self.head_info.get(head, {}).get("element_counts")
        return None if counts is None else {str(k): int(v) for k, v in counts.items()}

    def unseen_elements(self, head: str, symbols: Sequence[str]) -> list[str]:
        """The elements of ``symbols`` that ``head`` never saw in training ([] when the
        bundle does not record the head's element counts)."""
        counts = self.element_counts(head)
        if counts is None:
            return []
        return sorted({s for s in symbols if counts.get(s, 0) == 0})

    # ------------------------------------------------------------------ predictions
    def postprocess(self, head: str, energy: float, forces: np.ndarray, numbers: np.ndarray,
                    stress: np.ndarray | None = None,
                    correction: LinearCorrection | None | bool = True,
                    ) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Apply reference shifts then the linear correction to one raw prediction.

        ``correction=True`` uses the bundle's correction for ``head``, ``False``/``None``
        none, and a :class:`LinearCorrection` that one.
        """
        energy = float(energy) + self.energy_shift(head, numbers)
        corr = self.corrections.get(head) if correction is True else (correction or None)
        if corr is not None:
            energy, forces, stress = corr.apply(energy, forces, numbers, stress)
        return energy, forces, stress

    def predict(self, atoms_list: list, head: str | None = None, *,
                batch_size: int | str = "auto", compute_stress: bool = False,
                progress: bool = False,
                correction: LinearCorrection | None | bool = True) -> Prediction:
        """Batched, calibrated predictions (eV, eV/Å, eV/Å³) for many structures."""
        head = self.resolve_head(head)
        raw = self.adapter.predict(atoms_list, head, batch_size=batch_size,
                                   compute_stress=compute_stress, progress=progress)
        energies, forces, stresses = [], [], []
        for i, atoms in enumerate(atoms_list):
            s = raw.stress[i] if raw.stress is not None else None
            e, f, s = self.postprocess(head, raw.energy[i], raw.forces[i], atoms.numbers, s,
                                       correction=correction)
            energies.append(e)
            forces.append(f)
            stresses.append(s)
        return Prediction(energy=np.asarray(energies, dtype=float), forces=forces,
                          stress=np.stack(stresses) if compute_stress and stresses else None,
                          n_atoms=raw.n_atoms)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """The bundle as plain Python data (the adapter as its payload)."""
        return {
            "adapter": self.adapter.to_payload(),
            "reference_energies": {h: dict(v) for h, v in self.reference_energies.items()},
            "corrections": {h: c.to_dict() for h, c in self.corrections.items()},
            "default_head": self.default_head,
            "head_info": self.head_info,
            "train_config": self.train_config,
            "metrics": self.metrics,
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> Path:
        """Write the bundle atomically (temporary file + rename). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        prov = dict(self.provenance)
        prov.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat())
        prov.setdefault("package_versions", package_versions())
        prov.setdefault("base_model", self.adapter.name)
        self.provenance = prov
        inner = io.BytesIO()
        torch.save(self.to_dict(), inner)
        payload = inner.getvalue()
        outer = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
                 "backend": self.adapter.backend, "heads": self.heads,
                 "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}
        return atomic_torch_save(outer, path)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu",
             dtype: torch.dtype | None = None) -> Bundle:
        """Read a bundle written by :meth:`save`.

        Raises:
            BundleError: missing, truncated, corrupt or foreign file, or unknown version.
        """
        from ase_surftune.backends import adapter_class

        path = Path(path)
        if not path.is_file():
            raise BundleError(f"Bundle file not found: {str(path)!r}")
        try:
            outer = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise BundleError(f"Bundle {str(path)!r} is corrupt or truncated "
                              f"({type(exc).__name__}: {exc})") from exc
        if not isinstance(outer, dict) or outer.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{str(path)!r} is not an ase_surftune bundle")
        if outer.get("format_version") != BUNDLE_FORMAT_VERSION:
            raise BundleError(f"Bundle {str(path)!r} has format version "
                              f"{outer.get('format_version')!r}; this ase_surftune reads "
                              f"version {BUNDLE_FORMAT_VERSION}")
        payload = outer.get("payload", b"")
        if hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
            raise BundleError(f"Bundle {str(path)!r} failed its checksum: the file is corrupt")
        try:
            d = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
            adapter = adapter_class(d["adapter"]["backend"]).from_payload(
                d["adapter"], device=device, dtype=dtype)
        except BundleError:
            raise
        except Exception as exc:
            raise BundleError(f"Bundle {str(path)!r} could not be rebuilt "
                              f"({type(exc).__name__}: {exc})") from exc
        bundle = cls(
            adapter=adapter,
            reference_energies=d.get("reference_energies", {}),
            corrections={h: LinearCorrection.from_dict(c)
                         for h, c in d.get("corrections", {}).items()},
            default_head=d.get("default_head"),
            head_info=d.get("head_info", {}),
            train_config=d.get("train_config", {}),
            metrics=d.get("metrics", {}),
            provenance=d.get("provenance", {}),
        )
        if bundle.default_head is not None and bundle.default_head not in adapter.heads:
            raise HeadError(f"Bundle default head {bundle.default_head!r} not in {adapter.heads}")
        return bundle

    @staticmethod
    def is_bundle_file(path: str | Path) -> bool:
        """Cheap check whether ``path`` looks like a bundle (zip archive with our key)."""
        import zipfile

        p = Path(path)
        if not p.is_file() or not zipfile.is_zipfile(p):
            return False
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
            return any(n.endswith("data.pkl") for n in names) and p.suffix != ".model"
        except zipfile.BadZipFile:
            return False

    def summary(self) -> dict[str, Any]:
        """Plain-dict description: model, heads (with training data), shifts, corrections."""
        return {
            "model": self.adapter.describe(),
            "default_head": self.resolve_head(None),
            "heads": {h: self.head_info.get(h, {}) for h in self.heads},
            "reference_energies": self.reference_energies,
            "corrections": {h: c.to_dict() for h, c in self.corrections.items()},
            "provenance": self.provenance,
        }
