"""Model spec -> :class:`~ase_surftune.models.bundle.Bundle` (see :mod:`ase_surftune.core.specs`).

MACE ``.model`` files, MACE-MP checkpoints and legacy (version-1) bundles are Python
pickles; they load only with ``trust=True`` (CLI ``--trust-pickle``). Bundles
(version 2) and the bundled CHGNet weights never need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ase_surftune.core.errors import BundleError, ModelLoadError
from ase_surftune.core.specs import ModelSpec, parse_model_spec
from ase_surftune.models.backends.base import ModelAdapter
from ase_surftune.models.bundle import Bundle
from ase_surftune.models.bundle_file import (
    LEGACY_FORMAT_VERSION,
    bundle_file_version,
    read_bundle_manifest,
)
from ase_surftune.models.registry import adapter_class, parse_dtype

__all__ = ["load_model", "spec_backend"]


def load_model(spec: Any, device: str = "cpu",
               dtype: str | torch.dtype | None = None, *, trust: bool | None = None) -> Bundle:
    """Resolve a model spec to a :class:`~ase_surftune.models.bundle.Bundle`.

    Zero-shot models come back as a bundle with no shifts or corrections, so callers
    handle foundation models and fine-tuned bundles the same way.

    Args:
        spec: a name, ``mace:``-prefixed path, file path, Bundle or ModelAdapter (the
            forms of :mod:`ase_surftune.core.specs`; a head is chosen later, with the
            calculator's ``head=``).
        device: torch device string.
        dtype: ``"float32"``/``"float64"``; default: the model's own.
        trust: allow formats that are Python pickles (MACE ``.model`` files, MACE-MP
            checkpoints, legacy bundles). Reading a pickle can run arbitrary code: pass
            True only for files from a source you trust. ``None``: whether a
            :func:`ase_surftune.core.trust.trust_pickle` block is active.

    Raises:
        ModelLoadError: unknown name, missing file, offline download.
        BundleError: a corrupt/truncated bundle.
        UnsafeLoadError: a pickle-based file and ``trust`` is False.
    """
    tdtype = parse_dtype(dtype)
    if isinstance(spec, Bundle):
        return spec
    if isinstance(spec, ModelAdapter):
        return Bundle(adapter=spec)
    if not isinstance(spec, (str, Path)):
        raise ModelLoadError(f"Model spec must be a non-empty string, got {spec!r}")
    parsed = parse_model_spec(spec, with_head=False)
    if parsed.kind == "bundle" or (parsed.kind == "mace_file"
                                   and bundle_file_version(parsed.source) is not None):
        bundle = Bundle.load(parsed.source, device=device, dtype=tdtype, trust=trust)
        if parsed.backend is not None and bundle.adapter.backend != parsed.backend:
            raise ModelLoadError(f"{parsed.text!r}: the bundle holds a "
                                 f"{bundle.adapter.backend} model, not a MACE one")
        return bundle
    return Bundle(adapter=_load_adapter(parsed, device, tdtype, trust))


def _load_adapter(parsed: ModelSpec, device: str, dtype: torch.dtype | None,
                  trust: bool | None) -> ModelAdapter:
    cls: Any = adapter_class(str(parsed.backend))
    if parsed.kind == "chgnet":
        return cls.load(parsed.source, device=device, dtype=dtype)
    if parsed.kind == "mace_file":
        return cls.load_file(parsed.source, device=device, dtype=dtype, trust=trust)
    if parsed.kind == "mace_foundation":
        return cls.load_foundation(parsed.source, device=device, dtype=dtype, trust=trust)
    return cls.load(parsed.source, device=device, dtype=dtype)  # m3gnet folder or name


def spec_backend(spec: str) -> str:
    """The backend (``"chgnet"``/``"mace"``/``"m3gnet"``) a model spec names, found
    without loading weights: bundles are read from their JSON manifest only.

    Raises:
        ModelLoadError: unknown name, missing MACE file or M3GNet folder, a legacy
            (pickled) bundle that cannot be inspected safely, or a file that is neither
            a MACE model nor a bundle.
    """
    parsed = parse_model_spec(spec, with_head=False)
    if parsed.kind == "mace_file" and not Path(parsed.source).is_file():
        raise ModelLoadError(f"MACE model file not found: {parsed.source!r}; give an "
                             f"existing file as mace:/path/file.model")
    if parsed.kind == "m3gnet_folder" and not Path(parsed.source, "model.json").is_file():
        raise ModelLoadError(f"M3GNet model folder not found (no model.json): "
                             f"{parsed.source!r}")
    if parsed.backend is not None:
        return parsed.backend
    if bundle_file_version(parsed.source) == LEGACY_FORMAT_VERSION:
        raise ModelLoadError(
            f"{spec!r} is a legacy (version-1) bundle, a Python pickle that cannot be "
            f"inspected safely; if you trust it, convert it once with "
            f"Bundle.load({spec!r}, trust=True).save(...) and use the new file")
    try:
        return str(read_bundle_manifest(parsed.source)["backend"])
    except (BundleError, KeyError) as exc:
        raise ModelLoadError(f"{spec!r} is neither a MACE .model file nor a model "
                             f"bundle ({exc})") from exc
