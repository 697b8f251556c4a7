"""One parser for model specs and ``spec@head`` strings.

Every place that reads a model spec (loading, the calculator cache, config validation,
config-relative paths) goes through :func:`parse_model_spec`, so a new spec form is added
here once. Parsing reads no weights: it only looks at the string and whether a file
exists.

=============================  ==================  ==========  ====================
spec                           ``kind``            ``backend`` ``source``
=============================  ==================  ==========  ====================
``chgnet``                     ``chgnet``          chgnet      ``0.3.0``
``chgnet-0.2.0``/``chgnet:r2scan`` ``chgnet``      chgnet      ``0.2.0``/``r2scan``
``mace:/path/file.model``      ``mace_file``       mace        the path (a MACE
                                                               bundle is allowed too)
``mace-mp-0-medium``           ``mace_foundation`` mace        the lower-case name
``mace-mp:small``              ``mace_foundation`` mace        the lower-case name
``m3gnet:/path/folder``        ``m3gnet_folder``   m3gnet      the folder
``m3gnet-mp-2021.2.8-pes``     ``m3gnet_named``    m3gnet      the lower-case name
``/path/file.model``           ``mace_file``       mace        the path
``/path/model.stbundle``       ``bundle``          None        the path (the backend
                                                               is in the manifest)
=============================  ==================  ==========  ====================

``spec@head`` is split at the *last* ``@`` unless the whole string names an existing
file or the part after ``@`` contains a path separator (paths containing ``@`` keep
working); see :func:`split_head`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ase_surftune.core.errors import ConfigError, ModelLoadError

__all__ = ["ModelSpec", "parse_model_spec", "split_head", "rebase_spec", "known_model_names",
           "CHGNET_VERSIONS", "MACE_FOUNDATION_NAMES", "M3GNET_NAMES"]

#: names accepted by ``CHGNet.load`` (all bundled in the chgnet wheel)
CHGNET_VERSIONS: tuple[str, ...] = ("0.3.0", "0.2.0", "r2scan")
#: our names for MACE-MP foundation models -> mace-torch's ``mace_mp(model=...)`` names
MACE_FOUNDATION_NAMES: dict[str, str] = {
    "mace-mp-0-small": "small",
    "mace-mp-0-medium": "medium",
    "mace-mp-0-large": "large",
    "mace-mp-0b-small": "small-0b",
    "mace-mp-0b-medium": "medium-0b",
    "mace-mp-0b2-small": "small-0b2",
    "mace-mp-0b2-medium": "medium-0b2",
    "mace-mp-0b2-large": "large-0b2",
    "mace-mp-0b3-medium": "medium-0b3",
    "mace-mpa-0-medium": "medium-mpa-0",
    "mace-omat-0-small": "small-omat-0",
    "mace-omat-0-medium": "medium-omat-0",
    "mace-matpes-pbe-0": "mace-matpes-pbe-0",
    "mace-matpes-r2scan-0": "mace-matpes-r2scan-0",
    "mace-mh-0": "mh-0",
    "mace-mh-1": "mh-1",
}
#: our names for matgl's pretrained M3GNet PES models -> matgl's names
M3GNET_NAMES: dict[str, str] = {
    "m3gnet-mp-2021.2.8-pes": "M3GNet-MP-2021.2.8-PES",
    "m3gnet-matpes-pbe": "M3GNet-MatPES-PBE-v2025.1-PES",
}

SpecKind = Literal["chgnet", "mace_file", "mace_foundation", "m3gnet_folder",
                   "m3gnet_named", "bundle"]
_PREFIXES = ("mace:", "m3gnet:")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        text: the spec without its ``@head`` part.
        kind: which loader applies (see the module table).
        backend: ``"chgnet"``/``"mace"``/``"m3gnet"``, or None for a bundle (read its
            manifest to know).
        source: CHGNet version, file/folder path or lower-case model name.
        head: the head after ``@``, or None.
    """

    text: str
    kind: SpecKind
    backend: str | None
    source: str
    head: str | None = None

    @property
    def path(self) -> Path | None:
        """The file or folder the spec names, or None for a named model."""
        if self.kind in ("mace_file", "m3gnet_folder", "bundle"):
            return Path(self.source)
        return None


def known_model_names() -> list[str]:
    """Named model specs (local files and bundles are accepted too)."""
    return (["chgnet"] + [f"chgnet-{v}" for v in CHGNET_VERSIONS]
            + sorted(MACE_FOUNDATION_NAMES) + sorted(M3GNET_NAMES))


def split_head(spec: str) -> tuple[str, str | None]:
    """``"model@head"`` -> ``("model", "head")``; ``"model"`` -> ``("model", None)``.

    Split at the *last* ``@`` unless the whole string names an existing file or the part
    after ``@`` contains a path separator (so paths containing ``@`` keep working).

    Raises:
        ConfigError: ``spec`` is not a non-empty string.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"calculator spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if "@" not in spec or Path(spec).exists():
        return spec, None
    model, head = spec.rsplit("@", 1)
    if not model or not head or "/" in head or os.sep in head:
        return spec, None
    return model, head


def parse_model_spec(spec: str | os.PathLike[str], *, with_head: bool = True) -> ModelSpec:
    """Parse a model spec (see the module table) without reading any weights.

    Args:
        spec: the spec string (or a path).
        with_head: split a trailing ``@head`` off first (see :func:`split_head`).

    Raises:
        ModelLoadError: empty spec, or neither a known name nor an existing file; the
            message lists the known names and the accepted forms.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError(f"Model spec must be a non-empty string, got {spec!r}")
    text, head = split_head(spec) if with_head else (spec, None)
    low = text.lower()
    if low == "chgnet" or low.startswith(("chgnet-", "chgnet:")):
        version = "0.3.0" if low == "chgnet" else text[len("chgnet") + 1:]
        return ModelSpec(text, "chgnet", "chgnet", version, head)
    if low.startswith("mace:"):
        return ModelSpec(text, "mace_file", "mace", text[5:], head)
    if low.startswith("m3gnet:"):
        return ModelSpec(text, "m3gnet_folder", "m3gnet", text[7:], head)
    if low in M3GNET_NAMES:
        return ModelSpec(text, "m3gnet_named", "m3gnet", low, head)
    if low in MACE_FOUNDATION_NAMES or low.startswith("mace-mp:"):
        return ModelSpec(text, "mace_foundation", "mace", low, head)
    if Path(text).is_file():
        if Path(text).suffix == ".model":
            return ModelSpec(text, "mace_file", "mace", text, head)
        return ModelSpec(text, "bundle", None, text, head)
    raise ModelLoadError(
        f"unknown model {text!r}: not a known name and no such file. Known names: "
        f"{known_model_names()}; or pass 'mace:/path/file.model', 'm3gnet:/path/folder' "
        f"or a bundle path")


def rebase_spec(spec: str, base: str | os.PathLike[str]) -> str:
    """``spec`` with a relative file/folder path made absolute against ``base`` (a config
    file's folder), when that path exists there; prefixes and ``@head`` are kept.

    Anything else (names, absolute paths, paths that do not exist under ``base``) is
    returned unchanged.
    """
    text, head = split_head(spec)
    prefix = next((p for p in _PREFIXES if text.lower().startswith(p)), "")
    rel = Path(text[len(prefix):])
    target = Path(base) / rel  # a folder only for m3gnet:, a file otherwise
    found = target.is_dir() if prefix == "m3gnet:" else target.is_file()
    if rel.is_absolute() or not found:
        return spec
    out = prefix + str(Path(base) / rel)
    return f"{out}@{head}" if head is not None else out
