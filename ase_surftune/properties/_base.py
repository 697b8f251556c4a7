"""Shared pieces of the property workflows: result base class, force-call counter, checks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_surftune.core.errors import ConfigError, InvalidStructureError

#: 1 eV/Å² in J/m².
EV_PER_A2_TO_J_PER_M2 = 16.021766208

CalculatorLike = BaseCalculator | Callable[[], BaseCalculator]


def _to_jsonable(obj: Any) -> Any:
    """Recursively turn dataclasses, numpy values, Atoms and paths into JSON types."""
    from ase_surftune.core.io import to_jsonable

    return to_jsonable(obj, as_fields=True)


def atoms_to_dict(atoms: Atoms) -> dict[str, Any]:
    """Minimal JSON form of a structure (symbols, positions in Å, cell in Å, pbc)."""
    return {"symbols": atoms.get_chemical_symbols(),
            "positions": atoms.get_positions().tolist(),
            "cell": np.asarray(atoms.get_cell()).tolist(),
            "pbc": [bool(p) for p in atoms.pbc]}


@dataclasses.dataclass
class PropertyResult:
    """Base of every workflow result: ``to_dict()`` and ``to_json(path)``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (numpy arrays as lists, Atoms as dicts, NaN as None)."""
        return _to_jsonable(self)

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as indented JSON and return the path."""
        from ase_surftune.core.io import atomic_write_json

        return atomic_write_json(path, self.to_dict(), default=None)


class ForceCallCounter:
    """Count calls to ``calc.calculate`` (one per energy/force evaluation).

    Works for any ASE ``Calculator`` by wrapping the bound ``calculate`` method of
    that instance; use as a context manager or call :meth:`detach`.
    """

    def __init__(self, calc: BaseCalculator):
        self.calc = calc
        self.count = 0
        self._orig = calc.calculate

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return self._orig(*args, **kwargs)

        calc.calculate = counted  # type: ignore[method-assign]

    def detach(self) -> None:
        if self.calc.__dict__.get("calculate") is not None:
            del self.calc.__dict__["calculate"]

    def __enter__(self) -> ForceCallCounter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()


def check_atoms(atoms: Any, *, name: str = "structure", need_cell: bool = False) -> Atoms:
    """Raise :class:`InvalidStructureError` unless ``atoms`` is a finite, non-empty Atoms."""
    if not isinstance(atoms, Atoms):
        raise InvalidStructureError(f"{name} must be an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise InvalidStructureError(f"{name} has no atoms")
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        raise InvalidStructureError(f"{name} {atoms.get_chemical_formula()} has NaN/inf positions")
    if need_cell:
        if not all(atoms.pbc) or abs(atoms.cell.volume) < 1e-6:
            raise InvalidStructureError(
                f"{name} {atoms.get_chemical_formula()} must be 3D periodic with a cell; "
                f"got pbc={atoms.pbc.tolist()}, volume={atoms.cell.volume:.3g} Å^3")
    return atoms


#: Default upper limit on the atoms of a structure a workflow builds (supercells, slabs).
#: Raise it per call (``max_atoms=``) when the cost is intended.
MAX_ATOMS = 1000
#: Seconds per atom of one CHGNet force call on one CPU core (benchmarks/RESULTS.md: 64
#: single calls on 45-atom slabs took 17.3 s); used only for the size-guard estimate.
SECONDS_PER_ATOM_FORCE_CALL = 0.006


def check_size(n_atoms: int, what: str, max_atoms: int | None, *, force_calls: int = 1,
               extra: str = "") -> None:
    """Refuse a structure of ``n_atoms`` above ``max_atoms`` with an estimate of its cost.

    Raises:
        SizeLimitError: naming the atom count, a rough CPU time (CHGNet, one core) and
            how to raise the limit. ``max_atoms=None`` disables the guard.
    """
    if max_atoms is None or n_atoms <= max_atoms:
        return
    from ase_surftune.core.errors import SizeLimitError

    t = n_atoms * SECONDS_PER_ATOM_FORCE_CALL * force_calls
    est = f"{t / 60:.0f} min" if t >= 60 else f"{t:.0f} s"
    raise SizeLimitError(
        f"{what} would have about {n_atoms} atoms (limit max_atoms={max_atoms}); "
        f"{force_calls} force call(s) take about {est} on one CPU core with CHGNet"
        f"{extra}. Use a smaller size, or raise max_atoms if this is intended")


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A finite positive number or :class:`ConfigError` naming the value."""
    try:
        val = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(val) or val < 0 or (val == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return val


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    """An integer >= minimum or :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def is_calculator(obj: Any) -> bool:
    """True for a calculator instance (not a class or factory)."""
    return not isinstance(obj, type) and (isinstance(obj, BaseCalculator)
                                          or hasattr(obj, "get_potential_energy"))


def resolve_calc(calc: CalculatorLike) -> BaseCalculator:
    """A calculator instance from an instance or a zero-argument factory (or class)."""
    if is_calculator(calc):
        return calc  # type: ignore[return-value]
    if callable(calc):
        out = calc()
        if not is_calculator(out):
            raise ConfigError(f"calculator factory returned {type(out).__name__}, not a calculator")
        return out
    raise ConfigError(f"calc must be an ASE calculator or a factory, got {type(calc).__name__}")


def attach_calc(atoms: Atoms, calc: BaseCalculator) -> Atoms:
    """Attach ``calc``; resets its cached results so reuse across structures is safe.

    Nothing is reset when ``calc`` is already attached to ``atoms`` (its cache then
    belongs to this structure and saves a force call).
    """
    if atoms.calc is calc:
        return atoms
    if hasattr(calc, "reset"):
        try:
            calc.reset()
        except Exception:  # pragma: no cover - exotic calculators
            pass
    atoms.calc = calc
    return atoms


def layer_indices(atoms: Atoms, tol: float = 0.3, axis: int = 2) -> list[list[int]]:
    """Atom indices grouped in layers along the surface normal, bottom first (tol in Å).

    The normal is that of the plane of the two cell vectors other than ``axis`` (the
    cartesian ``axis`` when those vectors are missing), so a tilted slab cell from
    pymatgen and an ``ase.build`` slab are layered alike. The one layer finder of the
    package (surfaces, adatom hops).
    """
    cell = np.asarray(atoms.get_cell())
    a, b = (cell[i] for i in range(3) if i != axis)
    normal = np.cross(a, b)
    if np.linalg.norm(normal) < 1e-8:
        normal = np.eye(3)[axis]
    normal = normal / np.linalg.norm(normal)
    if np.dot(cell[axis], normal) < 0:
        normal = -normal
    h = atoms.get_positions() @ normal
    order = np.argsort(h, kind="stable")
    layers: list[list[int]] = []
    last = None
    for i in order:
        if last is None or h[i] - last > tol:
            layers.append([int(i)])
        else:
            layers[-1].append(int(i))
        last = h[i]
    return layers


def vacuum_size(atoms: Atoms, axis: int = 2) -> float:
    """Empty gap (Å) along cell vector ``axis`` between periodic images of the atoms."""
    cell = np.asarray(atoms.get_cell())
    if np.linalg.norm(cell[axis]) < 1e-8:
        return math.inf
    if not atoms.pbc[axis]:
        return math.inf
    # height of the cell along the plane normal, and extent of atoms along it
    a, b = [cell[i] for i in range(3) if i != axis]
    normal = np.cross(a, b)
    normal /= np.linalg.norm(normal)
    height = abs(np.dot(cell[axis], normal))
    frac = atoms.get_scaled_positions(wrap=True)[:, axis]
    # largest gap between sorted fractional coordinates (periodic)
    fs = np.sort(frac)
    gaps = np.diff(np.concatenate([fs, [fs[0] + 1.0]]))
    return float(gaps.max() * height)
