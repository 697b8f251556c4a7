"""Model bundles: one file holding everything needed to use a (fine-tuned) model.

A bundle holds

* the backend adapter (backend name, weights, heads, element list);
* per-head, per-element reference-energy shifts from energy-reference alignment (eV/atom);
* optional per-head softening corrections (:class:`LinearCorrection` or
  :class:`~ase_surftune.models.env_correction.EnvCorrection`, JSON tagged ``kind``);
* the default head, what data trained each head, the training config, metrics and
  provenance (base model, data hash, date, package versions).

File format (``*.stbundle`` by convention, any name works), version 2: a zip archive of

* ``manifest.json`` — ``{"format": "ase_surftune-bundle", "format_version": 2,
  "backend": ..., "heads": [...], "members": {name: sha256_hex}}``;
* ``meta.json`` — everything but the weights, as JSON (the adapter payload without its
  ``state_dict``, shifts, corrections, head info, config, metrics, provenance);
* ``tensors.safetensors`` — the adapter's ``state_dict`` in the safetensors format.

Loading a version-2 bundle never executes code: JSON and safetensors cannot describe
code, the model is rebuilt by the backend's own constructors from plain configuration,
and the sha256 of every member is checked against the manifest *before* that member
is parsed. What the checksum proves: the members were not corrupted or truncated since
the manifest was written (disk, transfer, partial copy). What it does not prove: who
wrote the file or that it is benign; anyone can write a manifest that matches their
own members. It is not a signature. Safety does not depend on it.

Version 1 (earlier ase_surftune 0.1 releases, a pickled ``torch.save`` archive) can run
arbitrary code when read. It loads only with ``trust=True`` (CLI ``--trust-pickle``); re-save it with
:meth:`Bundle.save` to convert it to version 2.

Writing goes through a uniquely named temporary file, fsync and an atomic rename, so an
interrupted save never leaves a half-written bundle behind.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_surftune.core.energy import per_element_sum
from ase_surftune.core.errors import BundleError, HeadError
from ase_surftune.core.io import atomic_write_stream
from ase_surftune.models.backends.base import ModelAdapter, Prediction, check_payload
from ase_surftune.models.bundle_file import (  # noqa: F401  (re-exported)
    _MANIFEST,
    _META,
    _TENSORS,
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    BUNDLE_SUFFIX,
    LEGACY_FORMAT_VERSION,
    _json_bytes,
    _safetensors_bytes,
    bundle_file_version,
    read_bundle_file,
    read_bundle_manifest,
)
from ase_surftune.models.correction import LinearCorrection  # noqa: F401  (re-exported)
from ase_surftune.models.correction_kinds import (
    Correction,
    apply_correction,
    correction_from_dict,
)


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
        corrections: ``{head: LinearCorrection | EnvCorrection}`` applied after the shifts.
        default_head: head used when none is given (``None``: the adapter's first head).
        head_info: ``{head: {...}}`` free-form description of what trained each head.
        train_config: the fine-tuning configuration that produced the bundle.
        metrics: final metrics (errors, softening scales, forgetting report...).
        provenance: base model, data hash, date, package versions.
    """

    adapter: ModelAdapter
    reference_energies: dict[str, dict[str, float]] = field(default_factory=dict)
    corrections: dict[str, Correction] = field(default_factory=dict)
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
        return per_element_sum(self.reference_energies.get(head), numbers)

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
                    correction: Correction | None | bool = True,
                    atoms: Any = None) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Apply reference shifts then the correction to one raw prediction.

        ``correction=True`` uses the bundle's correction for ``head``, ``False``/``None``
        none, and a :class:`LinearCorrection` or ``EnvCorrection`` that one (the latter
        needs the structure, ``atoms``; it sees the energy after the shifts).
        """
        energy = float(energy) + self.energy_shift(head, numbers)
        corr = self.corrections.get(head) if correction is True else (correction or None)
        if corr is not None:
            energy, forces, stress = apply_correction(corr, energy, forces, numbers, stress,
                                                      atoms)
        return energy, forces, stress

    def predict(self, atoms_list: list, head: str | None = None, *,
                batch_size: int | str = "auto", compute_stress: bool = False,
                progress: bool = False,
                correction: Correction | None | bool = True) -> Prediction:
        """Batched, calibrated predictions (eV, eV/Å, eV/Å³) for many structures."""
        head = self.resolve_head(head)
        raw = self.adapter.predict(atoms_list, head, batch_size=batch_size,
                                   compute_stress=compute_stress, progress=progress)
        energies, forces, stresses = [], [], []
        for i, atoms in enumerate(atoms_list):
            s = raw.stress[i] if raw.stress is not None else None
            e, f, s = self.postprocess(head, raw.energy[i], raw.forces[i], atoms.numbers, s,
                                       correction=correction, atoms=atoms)
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
        """Write the bundle atomically in the safe format (version 2). Returns the path.

        Raises:
            BundleError: the adapter payload breaks the contract of
                :meth:`ModelAdapter.to_payload` (non-JSON values), or the metadata holds
                objects that have no JSON form.
        """
        path = Path(path)
        prov = dict(self.provenance)
        prov.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat())
        prov.setdefault("package_versions", package_versions())
        prov.setdefault("base_model", self.adapter.name)
        self.provenance = prov
        d = self.to_dict()
        adapter_payload = dict(d["adapter"])
        try:
            check_payload(adapter_payload)
        except TypeError as exc:
            raise BundleError(f"cannot save bundle {str(path)!r}: {exc}") from exc
        state = adapter_payload.pop("state_dict", None) or {}
        d["adapter"] = adapter_payload
        members = {_META: _json_bytes(d, str(path)), _TENSORS: _safetensors_bytes(state)}
        manifest = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
                    "backend": self.adapter.backend, "heads": self.heads,
                    "members": {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}}

        def write(fh: Any) -> None:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr(_MANIFEST, json.dumps(manifest, indent=1))
                for name, data in members.items():
                    zf.writestr(name, data)

        return atomic_write_stream(path, write)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu",
             dtype: torch.dtype | None = None, *, trust: bool | None = None) -> Bundle:
        """Read a bundle written by :meth:`save` without executing code.

        Args:
            path: the bundle file.
            device, dtype: where and in which precision to put the model.
            trust: also read legacy version-1 bundles, which are pickles and can run
                arbitrary code. Only for files from a source you trust. ``None``:
                whether a :func:`ase_surftune.core.trust.trust_pickle` block is active.

        Raises:
            BundleError: missing, truncated, corrupt (checksum) or foreign file, or an
                unknown version.
            UnsafeLoadError: a legacy pickled bundle and ``trust`` is False.
        """
        from ase_surftune.models.registry import adapter_class

        path = Path(path)
        d, state = read_bundle_file(path, trust=trust)
        try:
            payload = dict(d["adapter"])
            if state is not None:
                payload["state_dict"] = state
            adapter = adapter_class(payload["backend"]).from_payload(
                payload, device=device, dtype=dtype)
        except BundleError:
            raise
        except Exception as exc:
            raise BundleError(f"Bundle {str(path)!r} could not be rebuilt "
                              f"({type(exc).__name__}: {exc})") from exc
        bundle = cls(
            adapter=adapter,
            reference_energies=d.get("reference_energies", {}),
            corrections={h: correction_from_dict(c)
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


# --------------------------------------------------------------------------- file format
