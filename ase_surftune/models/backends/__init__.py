"""Backend adapters (one per uMLIP family) and model-spec resolution.

Model specs understood by :func:`load_model`:

=============================  ==============================================
``"chgnet"``                   bundled CHGNet 0.3.0 (the embedded default)
``"chgnet-0.2.0"``             bundled CHGNet 0.2.0 (also ``chgnet-0.3.0``,
                               ``chgnet-r2scan``, ``chgnet:0.2.0``)
``"mace:/path/file.model"``    a local MACE model file (multi-head files too),
                               or a bundle holding a MACE model
``"mace-mp-0-medium"``         MACE-MP foundation models via mace-torch's
                               downloader (see ``MACE_FOUNDATION_NAMES``)
``"m3gnet:/path/folder"``      a matgl M3GNet model folder (model.json, model.pt,
                               state.pt); needs the ``m3gnet`` extra (matgl)
``"m3gnet-mp-2021.2.8-pes"``   matgl's named M3GNet models through matgl's loader
                               (see ``M3GNET_NAMES``; also ``m3gnet-matpes-pbe``)
``"/path/model.stbundle"``     an ase_surftune model bundle
``"/path/file.model"``         a local MACE model file
=============================  ==============================================

MACE ``.model`` files, MACE-MP checkpoints and legacy (version-1) bundles are Python
pickles; they load only with ``trust=True`` (CLI ``--trust-pickle``). Bundles
(version 2) and the bundled CHGNet weights never need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ase_surftune.core.errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.models.backends.base import ModelAdapter
    from ase_surftune.models.bundle import Bundle

__all__ = ["load_model", "adapter_class", "available_models"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64,
           torch.float32: torch.float32, torch.float64: torch.float64}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"float32"``/``"float64"``/torch dtype/None -> torch dtype/None."""
    if dtype is None:
        return None
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"Unknown dtype {dtype!r}; use 'float32' or 'float64'") from None


def adapter_class(backend: str) -> type[ModelAdapter]:
    """The adapter class registered for a backend name (``"chgnet"``, ``"mace"``, ``"m3gnet"``)."""
    if backend == "chgnet":
        from ase_surftune.models.backends.chgnet import CHGNetAdapter

        return CHGNetAdapter
    if backend == "mace":
        from ase_surftune.models.backends.mace import MACEAdapter

        return MACEAdapter
    if backend == "m3gnet":
        from ase_surftune.models.backends.m3gnet import M3GNetAdapter

        return M3GNetAdapter
    raise ModelLoadError(f"Unknown backend {backend!r}; known: ['chgnet', 'mace', 'm3gnet']")


def available_models() -> list[str]:
    """Named model specs (local files and bundles are accepted too)."""
    from ase_surftune.models.backends.chgnet import CHGNET_VERSIONS
    from ase_surftune.models.backends.m3gnet import M3GNET_NAMES
    from ase_surftune.models.backends.mace import MACE_FOUNDATION_NAMES

    return (["chgnet"] + [f"chgnet-{v}" for v in CHGNET_VERSIONS]
            + sorted(MACE_FOUNDATION_NAMES) + sorted(M3GNET_NAMES))


def load_model(spec: Any, device: str = "cpu",
               dtype: str | torch.dtype | None = None, *, trust: bool | None = None) -> Bundle:
    """Resolve a model spec to a :class:`~ase_surftune.models.bundle.Bundle`.

    Zero-shot models come back as a bundle with no shifts or corrections, so callers
    handle foundation models and fine-tuned bundles the same way.

    Args:
        spec: a name, ``mace:``-prefixed path, file path, Bundle or ModelAdapter.
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
    from ase_surftune.models.backends.base import ModelAdapter
    from ase_surftune.models.bundle import Bundle

    tdtype = parse_dtype(dtype)
    if isinstance(spec, Bundle):
        return spec
    if isinstance(spec, ModelAdapter):
        return Bundle(adapter=spec)
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str) or not spec:
        raise ModelLoadError(f"Model spec must be a non-empty string, got {spec!r}")

    low = spec.lower()
    if low == "chgnet" or low.startswith(("chgnet-", "chgnet:")):
        from ase_surftune.models.backends.chgnet import CHGNetAdapter

        version = "0.3.0" if low == "chgnet" else spec[len("chgnet") + 1:]
        return Bundle(adapter=CHGNetAdapter.load(version, device=device, dtype=tdtype))
    if low.startswith("mace:"):
        from ase_surftune.models.backends.mace import MACEAdapter
        from ase_surftune.models.bundle import bundle_file_version

        if bundle_file_version(spec[5:]) is not None:  # a bundle holding a MACE model
            bundle = Bundle.load(spec[5:], device=device, dtype=tdtype, trust=trust)
            if bundle.adapter.backend != "mace":
                raise ModelLoadError(f"{spec!r}: the bundle holds a {bundle.adapter.backend} "
                                     f"model, not a MACE one")
            return bundle
        return Bundle(adapter=MACEAdapter.load_file(spec[5:], device=device, dtype=tdtype,
                                                    trust=trust))
    if low.startswith("m3gnet:") or low in _m3gnet_names():
        from ase_surftune.models.backends.m3gnet import M3GNetAdapter

        source = spec[7:] if low.startswith("m3gnet:") else low
        return Bundle(adapter=M3GNetAdapter.load(source, device=device, dtype=tdtype))
    from ase_surftune.models.backends.mace import MACE_FOUNDATION_NAMES

    if low in MACE_FOUNDATION_NAMES or low.startswith("mace-mp:"):
        from ase_surftune.models.backends.mace import MACEAdapter

        return Bundle(adapter=MACEAdapter.load_foundation(low, device=device, dtype=tdtype,
                                                          trust=trust))
    path = Path(spec)
    if path.is_file():
        if path.suffix == ".model":
            from ase_surftune.models.backends.mace import MACEAdapter

            return Bundle(adapter=MACEAdapter.load_file(path, device=device, dtype=tdtype,
                                                        trust=trust))
        return Bundle.load(path, device=device, dtype=tdtype, trust=trust)
    raise ModelLoadError(
        f"Unknown model {spec!r}: not a known name and no such file. Known names: "
        f"{available_models()}; or pass 'mace:/path/file.model', 'm3gnet:/path/folder' "
        f"or a bundle path")


def _m3gnet_names() -> dict[str, str]:
    from ase_surftune.models.backends.m3gnet import M3GNET_NAMES

    return M3GNET_NAMES
