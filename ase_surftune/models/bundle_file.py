"""The bundle file format (version 2 zip + legacy version 1), read without an adapter.

Format functions only: nothing here knows the backends, so a backend may read a bundle
file (``MACEAdapter.load_file`` does) without an import cycle through
:class:`~ase_surftune.models.bundle.Bundle`. See :mod:`ase_surftune.models.bundle` for
the format description.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_surftune.core.errors import BundleError, UnsafeLoadError

BUNDLE_FORMAT = "ase_surftune-bundle"
BUNDLE_FORMAT_VERSION = 2
#: the pickled format of earlier ase_surftune 0.1 releases (loads only with ``trust=True``)
LEGACY_FORMAT_VERSION = 1
BUNDLE_SUFFIX = ".stbundle"
_MANIFEST, _META, _TENSORS = "manifest.json", "meta.json", "tensors.safetensors"
#: a manifest is a few hundred bytes; anything far larger is not ours
_MAX_MANIFEST_BYTES = 1 << 20


def bundle_file_version(path: str | Path) -> int | None:
    """2 for a safe bundle, 1 for a legacy pickled one, None for anything else.

    Looks only at the zip directory and the small JSON manifest; never unpickles.
    """
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return None
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
            if _MANIFEST in names:
                manifest = _read_manifest(zf, p)
                return int(manifest["format_version"])
    except (zipfile.BadZipFile, BundleError, OSError, ValueError, KeyError, TypeError):
        return None
    if p.suffix != ".model" and any(n.endswith("data.pkl") for n in names):
        return LEGACY_FORMAT_VERSION
    return None


def read_bundle_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest (format, version, backend, heads, member checksums) of a v2 bundle.

    Raises:
        BundleError: not a version-2 bundle, or an unreadable manifest.
    """
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            return _read_manifest(zf, p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{str(p)!r} is not an ase_surftune bundle "
                          f"({type(exc).__name__}: {exc})") from exc


def _read_manifest(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        info = zf.getinfo(_MANIFEST)
    except KeyError:
        raise BundleError(f"{str(path)!r} is not an ase_surftune bundle "
                          f"(no {_MANIFEST})") from None
    if info.file_size > _MAX_MANIFEST_BYTES:
        raise BundleError(f"{str(path)!r}: {_MANIFEST} is implausibly large "
                          f"({info.file_size} bytes); not an ase_surftune bundle")
    try:
        manifest = json.loads(zf.read(info).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise BundleError(f"Bundle {str(path)!r} is corrupt: unreadable {_MANIFEST} "
                          f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{str(path)!r} is not an ase_surftune bundle")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"Bundle {str(path)!r} has format version "
                          f"{manifest.get('format_version')!r}; this ase_surftune reads "
                          f"version {BUNDLE_FORMAT_VERSION} (and {LEGACY_FORMAT_VERSION} "
                          f"with trust=True)")
    return manifest


def read_bundle_file(path: Path, *, trust: bool | None = None
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """``(bundle dict, state_dict)`` of a bundle file, checksums verified first.

    For a legacy bundle (only with ``trust``) the state dict is inside the bundle dict
    and ``None`` is returned in its place.
    """
    if not path.is_file():
        raise BundleError(f"Bundle file not found: {str(path)!r}")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"Bundle {str(path)!r} is corrupt, truncated or not an "
                          f"ase_surftune bundle (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if _MANIFEST not in names:
                if any(n.endswith("data.pkl") for n in names):
                    return _read_legacy(path, trust), None
                raise BundleError(f"{str(path)!r} is not an ase_surftune bundle")
            manifest = _read_manifest(zf, path)
            members = manifest.get("members")
            if not isinstance(members, dict) or set(members) != {_META, _TENSORS}:
                raise BundleError(f"Bundle {str(path)!r} is corrupt: its manifest lists "
                                  f"members {members!r}, expected {[_META, _TENSORS]}")
            data = {}
            for name, digest in members.items():
                raw = zf.read(name)  # bytes only; nothing is parsed before the check
                if hashlib.sha256(raw).hexdigest() != digest:
                    raise BundleError(f"Bundle {str(path)!r} failed its checksum ({name} "
                                      f"differs from the manifest): the file is corrupt")
                data[name] = raw
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
        raise BundleError(f"Bundle {str(path)!r} is corrupt or truncated "
                          f"({type(exc).__name__}: {exc})") from exc
    try:
        d = json.loads(data[_META].decode("utf-8"))
        from safetensors.torch import load as st_load

        state = st_load(data[_TENSORS])
    except Exception as exc:
        raise BundleError(f"Bundle {str(path)!r} is corrupt ({type(exc).__name__}: "
                          f"{exc})") from exc
    if not isinstance(d, dict) or not isinstance(d.get("adapter"), dict):
        raise BundleError(f"Bundle {str(path)!r} is corrupt: {_META} has no adapter")
    return d, state


def _read_legacy(path: Path, trust: bool | None) -> dict[str, Any]:
    """Unpickle a version-1 bundle; only with ``trust=True``."""
    from ase_surftune.core.trust import pickle_trusted

    if not pickle_trusted(trust):
        raise UnsafeLoadError(
            f"{str(path)!r} is a legacy (version-1) ase_surftune bundle stored with Python "
            f"pickle, and reading a pickle can run arbitrary code. If you trust the file's "
            f"source, load it with trust=True (CLI: --trust-pickle) and re-save it with "
            f"Bundle.save() to convert it to the safe format")
    try:
        outer = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise BundleError(f"Bundle {str(path)!r} is corrupt or truncated "
                          f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(outer, dict) or outer.get("format") != BUNDLE_FORMAT \
            or outer.get("format_version") != LEGACY_FORMAT_VERSION:
        raise BundleError(f"{str(path)!r} is not an ase_surftune bundle")
    payload = outer.get("payload", b"")
    if hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise BundleError(f"Bundle {str(path)!r} failed its checksum: the file is corrupt")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise BundleError(f"Bundle {str(path)!r} is corrupt ({type(exc).__name__}: "
                          f"{exc})") from exc


def _json_default(obj: Any) -> Any:
    """JSON form of the NumPy/Path values that metrics and configs commonly hold."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} has no JSON form")


def _json_bytes(d: dict[str, Any], where: str) -> bytes:
    try:
        return json.dumps(d, default=_json_default).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise BundleError(f"cannot save bundle {where!r}: its metadata holds a value that "
                          f"cannot be stored as JSON ({exc})") from exc


def _safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save as st_save

    # own, contiguous CPU copies: safetensors refuses tensors that share memory
    return st_save({k: v.detach().cpu().clone().contiguous() for k, v in state.items()})

