"""Facet (Miller index) notation: one parser for the API, compare, the CLI and settings."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ase_surftune.core.errors import ConfigError

__all__ = ["Miller", "parse_facet", "parse_facets", "parse_miller", "parse_miller_list",
           "facet_key"]

Miller = tuple[int, int, int]

_FACET_PREFIX = re.compile(r"^\s*([A-Z][a-z]?)+(?=[\s(\[{-]*-?\d)")
_DIGIT_TOKENS = re.compile(r"-?\d")


def _facet_error(orig: Any, why: str = "") -> ConfigError:
    return ConfigError(
        f"Miller index must be three integers (h,k,l) or four Miller-Bravais integers "
        f"(h,k,i,l with i = -(h+k)), e.g. 111, (1-10), 1,1,0, 0001, 10-10, Cu111; got "
        f"{orig!r}{': ' + why if why else ''}")


def parse_facet(value: Any) -> Miller:
    """One facet as a 3-index Miller triple (h, k, l); the one facet parser of the package.

    Accepts three Miller or four Miller–Bravais integers as a sequence or a string:
    ``"111"``, ``"(1-10)"``, ``"1-10"``, ``"-110"``, ``"1,1,0"``, ``"1 -1 0"``,
    ``"[1, 1, 1]"``, ``"0001"``, ``"10-10"``, ``"11-20"``, ``"(1,0,-1,0)"``, with an optional
    element prefix (``"Cu111"``, ``"Mg(0001)"``), or a YAML integer such as ``111``.
    Without separators every digit is one index (use commas for indices above 9).

    Miller–Bravais (h k i l) of a hexagonal lattice must have i = −(h+k) and becomes
    (h, k, l): the 3-index convention of ASE's and pymatgen's hexagonal cells (a, b at
    120°, c along z), which ``SlabGenerator`` uses, so (10-10) → (1, 0, 0) (a prism
    plane) and (0001) → (0, 0, 1) (the basal plane).

    Raises:
        ConfigError: anything else (the offending value is in the message).
    """
    orig = value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        if value < 0:
            raise _facet_error(orig)
        value = str(int(value))
    if isinstance(value, str):
        s = _FACET_PREFIX.sub("", value.strip()).strip().strip("()[]{}").strip()
        if "," in s or " " in s:
            parts = [p for p in s.replace(",", " ").split() if p]
            try:
                value = [int(p) for p in parts]
            except ValueError:
                raise _facet_error(orig) from None
        else:
            if not s or _DIGIT_TOKENS.sub("", s):
                raise _facet_error(orig)
            value = [int(t) for t in _DIGIT_TOKENS.findall(s)]
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) not in (3, 4):
        raise _facet_error(orig)
    out = []
    for v in value:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            if isinstance(v, (float, np.floating)) and float(v).is_integer():
                v = int(v)
            else:
                raise _facet_error(orig)
        out.append(int(v))
    if len(out) == 4:
        h, k, i, l = out
        if i != -(h + k):
            raise _facet_error(orig, f"Miller-Bravais needs i = -(h+k) = {-(h + k)}, got {i}")
        out = [h, k, l]
    if out == [0, 0, 0]:
        raise ConfigError(f"Miller index must not be (0, 0, 0), got {orig!r}")
    return (out[0], out[1], out[2])


#: Former name of :func:`parse_facet` (kept for existing callers).
parse_miller = parse_facet


def _is_single_facet(value: Any) -> bool:
    """3 or 4 integers are one facet, unless all have 3+ digits (``[111, 100, 110]`` from
    YAML is three facets)."""
    return isinstance(value, (list, tuple)) and len(value) in (3, 4) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ) and not all(abs(int(v)) >= 100 for v in value)


def parse_facets(value: Any) -> list[Miller]:
    """A list of facets (each as :func:`parse_facet` takes it); one facet such as
    ``(1, 1, 1)``, ``"111"`` or ``"111 100"`` / ``"111;100"`` is accepted too.
    Duplicates (the same facet in two notations) are kept once, in order."""
    if isinstance(value, str):
        value = value.replace(";", " ").split() if (";" in value or (
            " " in value.strip() and "," not in value)) else [value]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    if _is_single_facet(value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"miller_indices must be a non-empty list of facets (h, k, l), "
                          f"got {value!r}")
    out: list[Miller] = []
    for v in value:
        m = parse_facet(v)
        if m not in out:
            out.append(m)
    return out


#: Former name of :func:`parse_facets`.
parse_miller_list = parse_facets


def facet_key(miller: Sequence[int]) -> str:
    """The ``"h,k,l"`` key of a facet in result dicts (``gamma["1,1,1"]``)."""
    return ",".join(map(str, miller))
