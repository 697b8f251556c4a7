"""Reference labellers (EMT, GPAW) by name, and how :func:`~ase_surftune.data.label` turns a
calculator spec string into a calculator.

Reference codes are labellers, not models, so they live in the data layer. A spec that
names no reference code (``"chgnet"``, ``"run/bundle.zip@surf"``) is a *model* spec; the
data layer cannot build models (models sit above it), so it asks a resolver that a higher
layer hands down: :func:`register_spec_resolver` (the package root registers
:func:`ase_surftune.models.references.get_calculator` when ``ase_surftune`` is imported, so
every process, pool workers included, has it), or the ``resolve=`` argument of
:func:`~ase_surftune.data.label`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ase_surftune.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ase.calculators.calculator import BaseCalculator

__all__ = ["REFERENCE_NAMES", "get_reference_calculator", "register_spec_resolver",
           "resolve_spec"]

REFERENCE_NAMES = ("emt", "gpaw")

SpecResolver = Callable[[str], "BaseCalculator"]
_RESOLVER: list[SpecResolver] = []


def get_reference_calculator(name: str, **kwargs: Any) -> BaseCalculator:
    """A reference (non-ML) calculator by name.

    Args:
        name: ``"emt"`` (instant, Cu/Ag/Au/Ni/Pd/Pt/Al/H/C/N/O) or ``"gpaw"``
            (PBE plane waves; kwargs override the defaults ``mode=PW(350)``,
            ``kpts={"density": 3.0}``, ``xc="PBE"``, ``occupations=FermiDirac(0.1)``,
            ``symmetry={"point_group": False}`` so that one calculator can follow
            displaced and relaxing structures).
    """
    key = name.lower()
    if key == "emt":
        from ase.calculators.emt import EMT

        return EMT(**kwargs)
    if key == "gpaw":
        try:
            from gpaw import GPAW, PW, FermiDirac
        except ImportError as exc:  # pragma: no cover - optional extra
            raise ImportError(
                "GPAW is not installed. Install the [dft] extra: "
                "apt-get install -y libxc-dev libopenblas-dev && "
                "CC=g++ pip install gpaw gpaw-data") from exc
        # point-group symmetry off: GPAW refuses to move atoms in a way that breaks the
        # symmetry it started with (SymmetryBrokenError), which every phonon displacement,
        # NEB band and rattled relaxation does when one calculator is reused
        params: dict[str, Any] = {"mode": PW(350), "xc": "PBE", "kpts": {"density": 3.0},
                                  "occupations": FermiDirac(0.1), "txt": None,
                                  "symmetry": {"point_group": False}}
        params.update(kwargs)
        return GPAW(**params)
    raise ValueError(f"Unknown reference calculator {name!r}; choose from {REFERENCE_NAMES}")


def register_spec_resolver(resolver: SpecResolver) -> None:
    """Set the function that builds a calculator from a model spec (one, the last wins)."""
    _RESOLVER[:] = [resolver]


def resolve_spec(spec: str, resolve: SpecResolver | None = None) -> BaseCalculator:
    """A calculator for ``spec``: a reference code by name, else ``resolve(spec)`` (or the
    registered resolver).

    Raises:
        ConfigError: ``spec`` names no reference code and no resolver is known.
    """
    if spec.strip().lower() in REFERENCE_NAMES:
        return get_reference_calculator(spec.strip())
    resolver = resolve or (_RESOLVER[0] if _RESOLVER else None)
    if resolver is None:
        raise ConfigError(f"{spec!r} is not a reference calculator ({', '.join(REFERENCE_NAMES)})"
                          f" and no model resolver is registered; pass an ASE calculator or "
                          f"resolve=ase_surftune.models.references.get_calculator")
    return resolver(spec)
