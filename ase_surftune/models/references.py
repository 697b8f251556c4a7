"""Resolve a calculator spec to an ASE calculator: reference codes or models.

``get_calculator("emt")`` gives ASE's EMT, ``"gpaw"`` a PBE GPAW calculator (needs
the optional ``[dft]`` extra), anything else is treated as a model spec and gives a
:class:`~ase_surftune.models.calculator.SurfTuneCalculator`. Property workflows take any
ASE calculator; this is only the convenience used by the CLI and the demo.
"""

from __future__ import annotations

from typing import Any

from ase.calculators.calculator import BaseCalculator

from ase_surftune.core.errors import ConfigError
from ase_surftune.core.specs import split_head

REFERENCE_NAMES = ("emt", "gpaw")


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


parse_spec = split_head  # "model@head" -> ("model", "head"); see ase_surftune.core.specs


def get_calculator(spec: str, head: str | None = None, device: str = "cpu",
                   **kwargs: Any) -> BaseCalculator:
    """A reference calculator if ``spec`` names one, else a SurfTuneCalculator for the model.

    ``spec`` may carry its head as ``"model@head"`` (see :func:`parse_spec`); giving a
    different ``head`` as well is a :class:`ConfigError`.
    """
    model, spec_head = parse_spec(spec)
    if spec_head is not None:
        if head is not None and head != spec_head:
            raise ConfigError(f"two heads given: {spec!r} names head {spec_head!r} but "
                              f"head={head!r}; give one")
        head = spec_head
    if model.lower() in REFERENCE_NAMES:
        if head is not None:
            raise ConfigError(f"reference calculator {model!r} has no heads (got {head!r})")
        return get_reference_calculator(model, **kwargs)
    from ase_surftune.models.calculator import SurfTuneCalculator

    return SurfTuneCalculator(model=model, head=head, device=device, **kwargs)
