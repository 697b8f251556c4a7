"""Harmonic phonons with phonopy driven by any ASE calculator.

Reference data are read the way phonopy users hold them: ``phonopy_disp.yaml`` +
``FORCE_SETS`` or ``phonopy_params.yaml`` (with forces), with an optional ``BORN`` file,
from any folder, through :func:`phonopy.load` (:func:`load_phonopy`). Nothing is taken
from the current folder implicitly. Reference and model force constants are produced the
same way (drift removal and symmetrisation by default, :func:`produce_force_constants`)
and the non-analytical (LO–TO) correction is applied to both sides or to neither.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.properties._base import (
    MAX_ATOMS,
    PropertyResult,
    attach_calc,
    check_atoms,
    check_int,
    check_positive,
    check_size,
    is_calculator,
)
from ase_surftune.properties.settings import PHONONS

logger = logging.getLogger(__name__)

#: Å; the smallest supercell width (distance between opposite faces) accepted without a
#: warning when the calculator does not expose its cutoff; otherwise 2 × cutoff is used.
MIN_SUPERCELL_WIDTH = 10.0

#: phonopy force-constant solvers accepted by ``fc_calculator`` (None = traditional)
FC_CALCULATORS = ("traditional", "symfc", "alm")


class SupercellSizeWarning(UserWarning):
    """The phonon supercell is narrower than twice the interaction cutoff: force constants
    of atoms and their periodic images overlap, so frequencies are not converged."""


def _new_phonopy(atoms: Atoms, P: np.ndarray, primitive_matrix: Any, symprec: float) -> Any:
    """A ``Phonopy`` object for the unit cell ``atoms`` and supercell matrix ``P``.

    phonopy ≥ 4 warns whenever ``"auto"`` resolves to a non-identity primitive matrix;
    here ``"auto"`` is the documented choice, so that warning is not repeated per call.
    """
    import warnings

    from phonopy import Phonopy

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="primitive_matrix defaulted to 'auto'")
        return Phonopy(_phonopy_atoms(atoms), supercell_matrix=P,
                       primitive_matrix=primitive_matrix, symprec=symprec)


def parse_supercell(value: Any) -> np.ndarray:
    """Supercell matrix from an int n, three ints (diagonal) or a 3×3 integer matrix.

    Raises :class:`ConfigError` (naming the value) for anything else or a
    singular matrix.
    """
    msg = f"supercell must be an int, 3 ints or a 3x3 integer matrix, got {value!r}"
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(msg)
    if isinstance(value, (int, np.integer)):
        value = [int(value)] * 3
    try:
        arr = np.array(value, dtype=object)
    except Exception:
        raise ConfigError(msg) from None
    if arr.shape == (3,):
        flat = list(arr)
    elif arr.shape == (3, 3):
        flat = list(arr.ravel())
    else:
        raise ConfigError(msg)
    for v in flat:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ConfigError(msg)
    mat = np.array(flat, dtype=int)
    mat = np.diag(mat) if arr.shape == (3,) else mat.reshape(3, 3)
    if round(abs(np.linalg.det(mat))) < 1:
        raise ConfigError(f"supercell matrix is singular: {mat.tolist()}")
    return mat


def parse_mesh(value: Any) -> list[int]:
    """q-mesh: an int n (n×n×n) or three positive ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [int(value)] * 3
    if (not isinstance(value, (list, tuple, np.ndarray)) or len(value) != 3
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                       for v in value)):
        raise ConfigError(f"mesh must be an int or three positive ints, got {value!r}")
    return [int(v) for v in value]


def _phonopy_atoms(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.asarray(atoms.get_cell()),
                        scaled_positions=atoms.get_scaled_positions())


def _ase_atoms(patoms) -> Atoms:
    return Atoms(symbols=list(patoms.symbols), cell=np.asarray(patoms.cell),
                 scaled_positions=patoms.scaled_positions, pbc=True)


def model_cutoff(calc: Any) -> float | None:
    """Interaction cutoff of ``calc`` in Å where it exposes one (surftune models:
    the backend's ``r_max``; ASE's EMT: ``rc``), else None."""
    for obj, attr in ((getattr(calc, "adapter", None), "r_max"), (calc, "r_max"),
                      (calc, "cutoff"), (calc, "rc")):
        try:
            v = getattr(obj, attr, None) if obj is not None else None
            v = float(v) if v is not None else None
        except (TypeError, ValueError, RuntimeError):
            v = None
        if v is not None and math.isfinite(v) and v > 0:
            return v
    return None


def _face_widths(cell: np.ndarray) -> np.ndarray:
    """Distances (Å) between opposite faces of the cell spanned by the rows of ``cell``."""
    cell = np.asarray(cell, dtype=float)
    vol = abs(np.linalg.det(cell))
    return np.array([vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
                     for i in range(3)])


def check_supercell_size(unitcell: Any, supercell: Any, *, cutoff: float | None = None,
                         min_width: float | None = None, warn: bool = True) -> dict[str, Any]:
    """Is the supercell wide enough for the interaction range?

    The width is the smallest distance between opposite faces of the supercell (the
    diameter of the largest sphere it holds). It must be at least ``min_width`` if given,
    else 2 × ``cutoff`` (so an atom's interaction sphere does not meet its own periodic
    image), else :data:`MIN_SUPERCELL_WIDTH`. Message-passing models reach further than
    one cutoff, so this is a necessary, not a sufficient, condition.

    Args:
        unitcell: 3×3 cell (Å, rows are lattice vectors) of the unit cell.
        supercell: supercell matrix (anything :func:`parse_supercell` takes).
        cutoff: interaction cutoff in Å (e.g. :func:`model_cutoff`).
        min_width: required width in Å (overrides the cutoff rule).
        warn: emit a :class:`SupercellSizeWarning` when too small.

    Returns:
        ``{"width": Å, "required": Å, "rule": str, "ok": bool, "suggested": [n1, n2, n3],
        "message": str | None}``; ``suggested`` is the smallest diagonal supercell of the
        unit cell that is wide enough.
    """
    P = parse_supercell(supercell)
    cell = np.asarray(unitcell, dtype=float)
    if min_width is not None:
        required, rule = check_positive("min_supercell_width", min_width), "min_supercell_width"
    elif cutoff is not None:
        required, rule = 2.0 * float(cutoff), f"2 x cutoff {float(cutoff):.2f} Å"
    else:
        required, rule = MIN_SUPERCELL_WIDTH, "default minimum (cutoff unknown)"
    width = float(_face_widths(P @ cell).min())
    suggested = [max(1, math.ceil(required / h - 1e-9)) for h in _face_widths(cell)]
    ok = width >= required - 1e-6
    msg = None
    if not ok:
        msg = (f"phonon supercell {P.tolist()} is {width:.2f} Å wide, less than "
               f"{required:.2f} Å ({rule}): force constants overlap their periodic images; "
               f"supercell {' '.join(map(str, suggested))} would be wide enough")
        if warn:
            warnings.warn(msg, SupercellSizeWarning, stacklevel=3)
    return {"width": width, "required": required, "rule": rule, "ok": ok,
            "suggested": suggested, "message": msg}


def _fc_drift(ph) -> float:
    """Largest |Σ_j Φ_ij| (eV/Å²) over atoms and Cartesian pairs: the acoustic sum rule
    violation of the force constants (phonopy's own drift measure)."""
    from phonopy.harmonic.force_constants import get_drift_force_constants

    d1, d2, _, _ = get_drift_force_constants(ph.force_constants, primitive=ph.primitive)
    return float(max(abs(d1), abs(d2)))


def produce_force_constants(ph, *, symmetrize: bool = True,
                            fc_calculator: str | None = None) -> dict[str, Any]:
    """Force constants of a Phonopy object with forces, with phonopy's own tools.

    ``symmetrize`` imposes the translational (acoustic sum rule: drift removal) and index
    permutation symmetries with :meth:`Phonopy.symmetrize_force_constants`, which removes
    the spurious imaginary acoustic modes at Γ. The ``symfc`` and ``alm`` solvers impose
    these symmetries in their fit, so no further step is run for them.

    Returns ``{"symmetrize_fc", "fc_calculator", "fc_drift" (eV/Å², before),
    "fc_drift_after" (eV/Å²)}``.
    """
    if fc_calculator is not None and fc_calculator not in FC_CALCULATORS:
        raise ConfigError(f"fc_calculator must be one of {list(FC_CALCULATORS)} or None, "
                          f"got {fc_calculator!r}")
    ds = ph.dataset or {}
    if "displacements" in ds and fc_calculator in (None, "traditional"):
        raise DataError("the dataset displaces all atoms at once (type-II FORCE_SETS): "
                        "pass fc_calculator='symfc' (--fc-calculator symfc) or 'alm'")
    try:
        ph.produce_force_constants(fc_calculator=fc_calculator, show_drift=False)
    except ImportError as exc:
        raise ConfigError(f"fc_calculator {fc_calculator!r} needs a package that is not "
                          f"installed: {exc}") from exc
    before = _fc_drift(ph)
    if symmetrize and fc_calculator in (None, "traditional"):
        ph.symmetrize_force_constants(show_drift=False)
    return {"symmetrize_fc": bool(symmetrize), "fc_calculator": fc_calculator,
            "fc_drift": before, "fc_drift_after": _fc_drift(ph)}


def _is_phonopy_yaml(path: str | Path) -> bool:
    return Path(path).suffix.lower() in (".yaml", ".yml")


def _yaml_info(path: Path):
    """phonopy's own parse of a phonopy yaml (cell, matrices, dataset, nac_params)."""
    from phonopy.interface.phonopy_yaml import PhonopyYaml

    pyaml = PhonopyYaml()
    try:
        pyaml.read(str(path))
    except Exception as exc:
        raise DataError(f"cannot read phonopy yaml {str(path)!r}: {exc}") from exc
    if pyaml.unitcell is None:
        raise DataError(f"{str(path)!r} is not a phonopy yaml (no unit cell in it)")
    return pyaml


def read_phonopy_structure(path: str | Path) -> tuple[Atoms, np.ndarray, Any]:
    """Unit cell, supercell matrix and primitive matrix stored in a phonopy yaml
    (``phonopy_disp.yaml``, ``phonopy_params.yaml``, ``phonopy.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"phonopy yaml not found: {str(path)!r}")
    pyaml = _yaml_info(path)
    P = pyaml.supercell_matrix
    P = np.eye(3, dtype=int) if P is None else np.asarray(P, dtype=int)
    pmat = pyaml.primitive_matrix
    return _ase_atoms(pyaml.unitcell), P, ("auto" if pmat is None else np.asarray(pmat))


#: files :func:`phonopy.load` reads from the current folder when no file is named
_PHONOPY_CWD_FILES = ("FORCE_CONSTANTS", "force_constants.hdf5", "FORCE_SETS", "BORN")
_CWD_LOCK = threading.Lock()


@contextlib.contextmanager
def _away_from_phonopy_cwd_files():
    """Run :func:`phonopy.load` where it finds none of its implicit files.

    phonopy.load always searches the current folder for FORCE_CONSTANTS (and, unless told
    otherwise, FORCE_SETS and BORN); with explicit arguments only the force-constants
    search is left, and no argument turns it off. Only when such a file is present, the
    working directory is switched to an empty temporary folder for the duration of the
    call (all paths are absolute by then; a lock serialises these calls).
    """
    if not any(Path(name).exists() for name in _PHONOPY_CWD_FILES):
        yield
        return
    with _CWD_LOCK, tempfile.TemporaryDirectory(prefix="surftune-phonopy-") as empty:
        old = os.getcwd()
        os.chdir(empty)
        try:
            yield
        finally:
            os.chdir(old)


def _has_forces(ds: Any) -> bool:
    from phonopy.structure.dataset import forces_in_dataset

    return ds is not None and bool(forces_in_dataset(ds))


def load_phonopy(path: str | Path, *, force_sets: str | Path | None = None,
                 born: str | Path | None = None, nac: bool | None = None,
                 atoms: Atoms | None = None, supercell: Any = None,
                 primitive_matrix: Any = "auto", symprec: float = 1e-5):
    """Reference phonopy data with forces, from any folder, via :func:`phonopy.load`.

    Args:
        path: ``phonopy_disp.yaml`` (then ``force_sets`` is needed),
            ``phonopy_params.yaml``/``phonopy.yaml`` with forces, or a ``FORCE_SETS``
            file (then ``atoms`` and ``supercell`` give the cell).
        force_sets: ``FORCE_SETS`` for a yaml without forces (wins over the yaml's).
        born: ``BORN`` file (Born charges, dielectric tensor) for the LO–TO correction.
        nac: None: apply ``born`` or the yaml's own ``nac_params`` where given; False:
            never; True: require one of them.
        atoms, supercell: unit cell and supercell matrix of a bare ``FORCE_SETS``.
        primitive_matrix: "auto" keeps the yaml's own primitive matrix.

    Returns:
        ``(phonopy.Phonopy, info)`` with ``info = {"source", "force_sets", "nac",
        "nac_source"}``. No force constants are produced here. Unlike
        :func:`phonopy.load` on its own, no ``FORCE_SETS`` or ``BORN`` is read from the
        current folder; a ``FORCE_CONSTANTS`` phonopy may read from there is replaced by
        force constants from the forces (:func:`produce_force_constants`).

    Raises:
        FileNotFoundError: a named file is missing.
        DataError: no forces anywhere, or a file that does not fit the structure.
    """
    import phonopy

    path = Path(path)
    for name, f in (("phonopy file", path), ("FORCE_SETS", force_sets), ("BORN", born)):
        if f is not None and not Path(f).is_file():
            raise FileNotFoundError(f"{name} not found: {str(f)!r}")
    if nac is False:
        born = None
    kw: dict[str, Any] = {"primitive_matrix": primitive_matrix, "symprec": symprec,
                          "produce_fc": False, "log_level": 0}
    nac_source = str(born) if born is not None else None
    if _is_phonopy_yaml(path):
        pyaml = _yaml_info(path)
        if force_sets is None and not _has_forces(pyaml.dataset):
            raise DataError(f"{path.name} has no forces: pass --reference-forces FORCE_SETS "
                            f"(force_sets=) or use phonopy_params.yaml")
        yaml_nac = pyaml.nac_params is not None and nac is not False and born is None
        if yaml_nac:
            nac_source = str(path)
        is_nac = born is not None or yaml_nac
        args: tuple = (_absolute(path),)
    else:
        if atoms is None or supercell is None:
            raise ConfigError(f"a bare FORCE_SETS ({str(path)!r}) needs the unit cell "
                              f"`atoms` and the `supercell` matrix")
        force_sets, is_nac, args = path, born is not None, ()
        kw.update(unitcell=_phonopy_atoms(atoms), supercell_matrix=parse_supercell(supercell))
    if nac is True and not is_nac:
        raise ConfigError(f"nac=True but neither a BORN file nor nac_params in "
                          f"{str(path)!r} were given")
    try:
        with warnings.catch_warnings(), _away_from_phonopy_cwd_files():
            warnings.filterwarnings("ignore", message="primitive_matrix defaulted to 'auto'")
            ph = phonopy.load(*args, force_sets_filename=_absolute(force_sets),
                              born_filename=_absolute(born), is_nac=is_nac, **kw)
    except (OSError, ValueError, KeyError, IndexError, RuntimeError, TypeError) as exc:
        raise DataError(f"cannot load phonopy data {str(path)!r}"
                        f"{f' with {str(force_sets)!r}' if force_sets else ''}"
                        f"{f' and {str(born)!r}' if born else ''}: {exc}") from exc
    if not _has_forces(ph.dataset):
        raise DataError(f"{path.name} has no forces: pass --reference-forces FORCE_SETS "
                        f"(force_sets=) or use phonopy_params.yaml")
    info = {"source": str(path), "force_sets": None if force_sets is None else str(force_sets),
            "nac": ph.nac_params is not None, "nac_source": nac_source
            if ph.nac_params is not None else None}
    return ph, info


def _absolute(path: str | Path | None) -> str | None:
    """Absolute path for phonopy (which may run in another folder, see
    :func:`_away_from_phonopy_cwd_files`); None stays None."""
    return None if path is None else str(Path(path).resolve())


def _read_born(ph, born: str | Path) -> dict:
    """NAC parameters of ``born`` (phonopy BORN format) for the primitive cell of ``ph``."""
    from phonopy.file_IO import parse_BORN

    if not Path(born).is_file():
        raise FileNotFoundError(f"BORN not found: {str(born)!r}")
    from phonopy.physical_units import get_calculator_physical_units

    try:
        params = parse_BORN(ph.primitive, filename=str(born))
        # as phonopy.load does: the unit factor of the calculator interface (None = VASP
        # units, eV and Å, as for every ASE calculator)
        params.setdefault("factor", get_calculator_physical_units(None).nac_factor)
        return params
    except Exception as exc:
        raise DataError(f"cannot read BORN {str(born)!r} for the {len(ph.primitive)}-atom "
                        f"primitive cell: {exc}") from exc


def compute_forces(phonon, calc: BaseCalculator, *, progress: bool = False) -> np.ndarray:
    """Forces (eV/Å) of calc on every displaced supercell of a Phonopy object."""
    from tqdm.auto import tqdm

    scs = phonon.supercells_with_displacements
    out = []
    for sc in tqdm(scs, desc="phonon displacements", disable=not progress):
        a = _ase_atoms(sc)
        attach_calc(a, calc)
        out.append(np.array(a.get_forces(), dtype=float))
    return np.array(out)


@dataclass
class PhononResult(PropertyResult):
    """Outcome of :func:`phonons`. Frequencies in THz; DOS in states/THz per primitive
    cell; thermal properties per unit cell in phonopy units: free energy kJ/mol, entropy
    and heat capacity J/(K·mol), temperatures K.

    ``nac``/``nac_source``: whether (and from which file) the LO–TO correction was
    applied. ``fc_drift``: acoustic-sum-rule violation of the raw force constants
    (eV/Å²), before the symmetrisation that ``symmetrize_fc`` says was applied.
    ``supercell_width`` (Å) and ``supercell_warning``: see :func:`check_supercell_size`.
    """

    formula: str
    supercell: list[list[int]]
    displacement: float
    n_displacements: int
    band_labels: list[tuple[float, str]]
    band_distances: list[list[float]]
    band_frequencies: list[list[list[float]]]
    dos_frequencies: list[float]
    dos: list[float]
    thermal: dict[str, list[float]]
    mesh: list[int]
    min_frequency: float
    has_imaginary: bool
    imaginary_modes: list[dict[str, Any]]
    imaginary_tol: float
    plot: str | None = None
    phonopy_params: str | None = None
    label: str | None = None
    nac: bool = False
    nac_source: str | None = None
    symmetrize_fc: bool = True
    fc_calculator: str | None = None
    fc_drift: float | None = None
    supercell_width: float | None = None
    supercell_warning: str | None = None
    phonon: Any = field(default=None, metadata={"json": False})


def _band_ticks(bs: dict, labels: Sequence[str] | None, connections: Sequence[bool] | None):
    dists = [np.asarray(d) for d in bs["distances"]]
    if not labels or connections is None:
        return [(float(d[0]), "") for d in dists] + [(float(dists[-1][-1]), "")]
    ticks: list[tuple[float, str]] = []
    li = 0
    for i, d in enumerate(dists):
        if i == 0 or not connections[i - 1]:
            lab = labels[li] if li < len(labels) else ""
            li += 1
            if i > 0 and ticks and abs(ticks[-1][0] - d[0]) < 1e-9:
                ticks[-1] = (ticks[-1][0], f"{ticks[-1][1]}|{lab}")
            else:
                ticks.append((float(d[0]), lab))
        lab = labels[li] if li < len(labels) else ""
        li += 1
        ticks.append((float(d[-1]), lab))
    import re

    def clean(lab: str) -> str:
        lab = re.sub(r"\$\\mathrm\{(.*?)\}\$", r"\1", lab)
        return "|".join("Γ" if p in ("GAMMA", "G", "\\Gamma", "$\\Gamma$") else p
                        for p in lab.split("|"))

    return [(x, clean(lab)) for x, lab in ticks]


def _check_analysis_options(mesh, band_npoints, imaginary_tol, t_min, t_max, t_step, plot,
                            bands, dos):
    mesh = parse_mesh(mesh)
    band_npoints = check_int("band_npoints", band_npoints, minimum=2)
    imaginary_tol = check_positive("imaginary_tol", imaginary_tol, allow_zero=True)
    for name, v in (("t_min", t_min), ("t_max", t_max), ("t_step", t_step)):
        check_positive(name, v, allow_zero=name == "t_min")
    if plot is not None and not (bands and dos):
        raise ConfigError("plot needs bands=True and dos=True (it draws both)")
    return mesh, band_npoints, imaginary_tol


def phonons(atoms: Atoms, calc: BaseCalculator, *, supercell: Any = PHONONS.supercell,
            displacement: float = PHONONS.displacement, primitive_matrix: Any = "auto",
            mesh: Any = PHONONS.mesh, band_npoints: int = PHONONS.band_npoints,
            t_min: float = PHONONS.t_min, t_max: float = PHONONS.t_max,
            t_step: float = PHONONS.t_step, imaginary_tol: float = PHONONS.imaginary_tol,
            symprec: float = 1e-5, bands: bool = PHONONS.bands, dos: bool = PHONONS.dos,
            plot: str | Path | None = None, phonopy_params: str | Path | None = None,
            born: str | Path | None = None, symmetrize_fc: bool = PHONONS.symmetrize_fc,
            fc_calculator: str | None = PHONONS.fc_calculator,
            min_supercell_width: float | None = PHONONS.min_supercell_width,
            label: str | None = None, progress: bool = False,
            max_atoms: int | None = PHONONS.max_atoms) -> PhononResult:
    """Phonon bands, DOS and thermal properties with phonopy and an ASE calculator.

    Args:
        atoms: (relaxed) unit cell; it is not relaxed here.
        calc: any ASE calculator.
        supercell: int, 3 ints or 3×3 integer matrix. A :class:`SupercellSizeWarning`
            is emitted when it is narrower than 2 × the model cutoff (or
            ``min_supercell_width``); see :func:`check_supercell_size`.
        displacement: finite displacement in Å (symmetry-reduced set from phonopy).
        primitive_matrix: phonopy's primitive matrix ("auto" by default).
        mesh: q-mesh for DOS, thermal properties and the imaginary-mode check.
        band_npoints: q-points per segment of seekpath's band path.
        t_min, t_max, t_step: temperature grid in K.
        imaginary_tol: THz; frequencies below ``-imaginary_tol`` count as imaginary.
        bands: compute the band structure along seekpath's path (about 50 ms for a
            1-atom cell); without it the band fields of the result are empty and only
            the q-mesh is searched for imaginary modes.
        dos: compute the total DOS (tetrahedron method on ``mesh``; about 50 ms on a
            20×20×20 mesh); without it the DOS fields are empty.
        plot: PNG path for bands + DOS (needs ``bands`` and ``dos``).
        phonopy_params: if given, save ``phonopy_params.yaml`` (displacements and
            forces) there, usable later as a reference.
        born: ``BORN`` file (phonopy format): LO–TO (non-analytical) correction.
        symmetrize_fc: drift removal and symmetrisation of the force constants
            (:func:`produce_force_constants`).
        fc_calculator: phonopy's force-constant solver (None/"traditional", "symfc", "alm").
        min_supercell_width: Å; overrides the 2 × cutoff rule of the size warning.
        label: model name for plots and tables.
        max_atoms: refuse supercells with more atoms (:class:`SizeLimitError` with an
            estimate); ``None`` for no limit.
    """
    check_atoms(atoms, need_cell=True)
    P = parse_supercell(supercell)
    check_size(len(atoms) * round(abs(np.linalg.det(P))), f"phonon supercell {P.tolist()}",
               max_atoms, force_calls=3 * len(atoms))
    displacement = check_positive("displacement", displacement)
    _check_analysis_options(mesh, band_npoints, imaginary_tol, t_min, t_max, t_step, plot,
                            bands, dos)
    ph = _new_phonopy(atoms, P, primitive_matrix, symprec)
    nac_source = None
    if born is not None:
        ph.nac_params = _read_born(ph, born)
        nac_source = str(born)
    ph.generate_displacements(distance=displacement)
    ph.forces = compute_forces(ph, calc, progress=progress)
    # after the forces: some calculators (EMT) know their cutoff only once initialised
    size = check_supercell_size(atoms.get_cell(), P, cutoff=model_cutoff(calc),
                                min_width=min_supercell_width)
    fc = produce_force_constants(ph, symmetrize=symmetrize_fc, fc_calculator=fc_calculator)
    return phonons_from_phonopy(
        ph, mesh=mesh, band_npoints=band_npoints, t_min=t_min, t_max=t_max, t_step=t_step,
        imaginary_tol=imaginary_tol, bands=bands, dos=dos, plot=plot,
        phonopy_params=phonopy_params, label=label, nac_source=nac_source, fc_info=fc,
        size_info=size)


def _displacement_amplitude(ds: dict) -> float:
    """Largest displacement (Å) of a phonopy dataset (type I or II)."""
    if "first_atoms" in ds:
        d = [np.linalg.norm(x["displacement"]) for x in ds["first_atoms"]]
    else:
        d = [np.linalg.norm(np.asarray(ds["displacements"]), axis=-1).max()]
    return float(max(d)) if d else float("nan")


def phonons_from_phonopy(ph, *, mesh: Any = (20, 20, 20), band_npoints: int = 51,
                         t_min: float = 0.0, t_max: float = 1000.0, t_step: float = 10.0,
                         imaginary_tol: float = 0.05, bands: bool = True, dos: bool = True,
                         plot: str | Path | None = None,
                         phonopy_params: str | Path | None = None, label: str | None = None,
                         nac_source: str | None = None, fc_info: dict | None = None,
                         size_info: dict | None = None) -> PhononResult:
    """Bands, DOS, thermal properties and imaginary modes of a Phonopy object whose force
    constants are already produced (e.g. a reference from :func:`load_phonopy` after
    :func:`produce_force_constants`, or ``SofteningResult.model_phonon``). Arguments
    and units as in :func:`phonons`; ``fc_info``/``size_info`` are the dicts of
    :func:`produce_force_constants` and :func:`check_supercell_size` to record."""
    if ph.force_constants is None:
        raise DataError("the Phonopy object has no force constants: run "
                        "produce_force_constants first")
    mesh, band_npoints, imaginary_tol = _check_analysis_options(
        mesh, band_npoints, imaginary_tol, t_min, t_max, t_step, plot, bands, dos)
    formula = _ase_atoms(ph.unitcell).get_chemical_formula()
    fc_info = fc_info or {}
    res = _analyse(ph, formula, ph.supercell_matrix, _displacement_amplitude(ph.dataset),
                   mesh, band_npoints, t_min, t_max, t_step, imaginary_tol, plot,
                   phonopy_params, bands=bands, dos=dos, label=label)
    res.nac = ph.nac_params is not None
    res.nac_source = nac_source if res.nac else None
    res.symmetrize_fc = bool(fc_info.get("symmetrize_fc", False))
    res.fc_calculator = fc_info.get("fc_calculator")
    res.fc_drift = fc_info.get("fc_drift")
    if size_info is not None:
        res.supercell_width = size_info["width"]
        res.supercell_warning = size_info["message"]
    return res


def _analyse(ph, formula, P, displacement, mesh, band_npoints, t_min, t_max, t_step,
             imaginary_tol, plot, phonopy_params, *, bands: bool = True,
             dos: bool = True, label: str | None = None) -> PhononResult:
    if bands:
        ph.auto_band_structure(npoints=band_npoints)
        bso = ph.band_structure  # phonopy ≥ 4.10: result objects replace the get_*_dict()
        bs = {"qpoints": bso.qpoints, "distances": bso.distances,
              "frequencies": bso.frequencies}
        labels = getattr(ph.band_structure, "labels", None)
        conns = getattr(ph.band_structure, "path_connections", None)
        ticks = _band_ticks(bs, labels, conns)
    else:
        bs, ticks = {"qpoints": [], "distances": [], "frequencies": []}, []
    ph.run_mesh(mesh, is_gamma_center=True)
    md = {"qpoints": ph.mesh.qpoints, "frequencies": ph.mesh.frequencies}
    if dos:
        ph.run_total_dos()
        dd = {"frequency_points": ph.total_dos.frequency_points, "total_dos": ph.total_dos.dos}
    else:
        dd = {"frequency_points": [], "total_dos": []}
    ph.run_thermal_properties(t_min=t_min, t_max=t_max, t_step=t_step,
                              exclude_gamma_acoustic=True)
    tpo = ph.thermal_properties
    tp = {"temperatures": tpo.temperatures, "free_energy": tpo.free_energy,
          "entropy": tpo.entropy, "heat_capacity": tpo.heat_capacity}
    imag = []
    for q, f in zip(md["qpoints"], md["frequencies"]):
        for b, w in enumerate(f):
            if w < -imaginary_tol:
                imag.append({"q": [float(x) for x in q], "band": b, "frequency": float(w),
                             "source": "mesh"})
    for seg_q, seg_f in zip(bs["qpoints"], bs["frequencies"]):
        for q, f in zip(seg_q, seg_f):
            for b, w in enumerate(f):
                if w < -imaginary_tol:
                    imag.append({"q": [float(x) for x in q], "band": b, "frequency": float(w),
                                 "source": "band"})
    fmin = float(min([np.min(md["frequencies"])] + [np.min(f) for f in bs["frequencies"]]))
    if imag:
        logger.warning("%s: %d imaginary modes (min %.3f THz)", formula, len(imag), fmin)
    res = PhononResult(
        formula=formula, supercell=np.asarray(P).tolist(), displacement=displacement,
        n_displacements=len(ph.supercells_with_displacements), band_labels=ticks,
        band_distances=[np.asarray(d).tolist() for d in bs["distances"]],
        band_frequencies=[np.asarray(f).tolist() for f in bs["frequencies"]],
        dos_frequencies=np.asarray(dd["frequency_points"]).tolist(),
        dos=np.asarray(dd["total_dos"]).tolist(),
        thermal={"temperature": np.asarray(tp["temperatures"]).tolist(),
                 "free_energy": np.asarray(tp["free_energy"]).tolist(),
                 "entropy": np.asarray(tp["entropy"]).tolist(),
                 "heat_capacity": np.asarray(tp["heat_capacity"]).tolist()},
        mesh=list(mesh), min_frequency=fmin, has_imaginary=bool(imag), imaginary_modes=imag,
        imaginary_tol=imaginary_tol, label=label, phonon=ph)
    if plot is not None:
        from ase_surftune.properties._plot import plot_phonons

        res.plot = plot_phonons(plot, [(label or "model", res)])
    if phonopy_params is not None:
        res.phonopy_params = save_phonopy_params(ph, phonopy_params)
    return res


def save_phonopy_params(ph, path: str | Path) -> str:
    """Write ``phonopy_params.yaml`` (cell, displacements, forces, NAC; no force
    constants) with phonopy, atomically: a temp file in the same folder is renamed."""
    import os
    import tempfile

    from ase_surftune.core.io import fsync_dir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".yaml", dir=path.parent)
    os.close(fd)
    try:
        ph.save(tmp, settings={"force_constants": False})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return str(path)




@dataclass
class SofteningResult(PropertyResult):
    """ω_model/ω_ref over a q-mesh on the same displacements (dimensionless).

    ``ratio`` is the q-weight-averaged mean over all modes with |ω_ref| above
    ``freq_cutoff`` (THz), so the acoustic modes at Γ are excluded. Both sides share the
    force-constant procedure (``symmetrize_fc``, ``fc_calculator``) and the LO–TO
    correction (``nac``, from ``nac_source``); ``fc_drift_ref``/``fc_drift_model`` are the
    acoustic-sum-rule violations (eV/Å²) of the raw force constants.
    """

    ratio: float
    ratio_std: float
    ratio_per_band: list[float]
    n_modes: int
    mesh: list[int]
    freq_cutoff: float
    n_displacements: int
    reference: str
    min_frequency_model: float
    min_frequency_ref: float
    nac: bool = False
    nac_source: str | None = None
    force_sets: str | None = None
    symmetrize_fc: bool = True
    fc_calculator: str | None = None
    fc_drift_ref: float | None = None
    fc_drift_model: float | None = None
    supercell: list[list[int]] | None = None
    supercell_width: float | None = None
    supercell_warning: str | None = None
    reference_phonon: Any = field(default=None, metadata={"json": False})
    model_phonon: Any = field(default=None, metadata={"json": False})


def _reference_phonopy(reference: Any, atoms: Atoms | None, P, displacement, primitive_matrix,
                       symprec, force_sets, born, nac):
    """A Phonopy object holding the reference displacements and forces, plus an info
    dict (``source``, ``force_sets``, ``nac_source``) as in :func:`load_phonopy`."""
    info: dict[str, Any] = {"force_sets": None, "nac_source": None}
    if isinstance(reference, PhononResult):
        ref, info["source"] = reference.phonon, "PhononResult"
    elif hasattr(reference, "dataset") and hasattr(reference, "supercells_with_displacements"):
        ref, info["source"] = reference, "Phonopy object"
    elif isinstance(reference, (str, Path)):
        return load_phonopy(reference, force_sets=force_sets, born=born, nac=nac, atoms=atoms,
                            supercell=P, primitive_matrix=primitive_matrix, symprec=symprec)
    elif is_calculator(reference):
        if atoms is None:
            raise ConfigError("a calculator reference needs the unit cell `atoms`")
        ref = _new_phonopy(atoms, P, primitive_matrix, symprec)
        ref.generate_displacements(distance=displacement)
        ref.forces = compute_forces(ref, reference)
        info["source"] = type(reference).__name__
    else:
        raise ConfigError(f"reference must be a phonopy yaml or FORCE_SETS path, a Phonopy "
                          f"object, a PhononResult or a calculator, got "
                          f"{type(reference).__name__}")
    if force_sets is not None:
        raise ConfigError("force_sets goes with a phonopy yaml reference path")
    # in-memory references: BORN given here wins; nac=False drops what the object has
    if nac is False:
        ref.nac_params = None
    elif born is not None:
        ref.nac_params = _read_born(ref, born)
        info["nac_source"] = str(born)
    elif ref.nac_params is not None:
        info["nac_source"] = info["source"]
    if nac is True and ref.nac_params is None:
        raise ConfigError(f"nac=True but the {info['source']} reference has no NAC "
                          f"parameters and no BORN file was given")
    return ref, info


def frequency_softening_ratio(atoms: Atoms | None, calc: BaseCalculator, reference: Any, *,
                              force_sets: str | Path | None = None,
                              born: str | Path | None = None, nac: bool | None = None,
                              supercell: Any = (2, 2, 2), displacement: float = 0.01,
                              primitive_matrix: Any = "auto", mesh: Any = (10, 10, 10),
                              freq_cutoff: float = 0.1, symprec: float = 1e-5,
                              symmetrize_fc: bool = True, fc_calculator: str | None = None,
                              min_supercell_width: float | None = None,
                              progress: bool = False,
                              max_atoms: int | None = MAX_ATOMS) -> SofteningResult:
    """Mean ω_model/ω_ref over a q-mesh, with model forces on the reference displacements.

    Args:
        atoms: unit cell (may be None when ``reference`` is a phonopy yaml or object,
            which carry their own cell and supercell).
        calc: the model (any ASE calculator).
        reference: ``phonopy_params.yaml`` (with forces), ``phonopy_disp.yaml`` (with
            ``force_sets``), a bare ``FORCE_SETS`` (with ``atoms``/``supercell``), a
            Phonopy object with forces, a :class:`PhononResult`, or a reference
            calculator evaluated on the same displacements. Paths may be in any folder;
            nothing is read from the current folder implicitly (:func:`load_phonopy`).
        force_sets: ``FORCE_SETS`` for a yaml reference without forces.
        born: ``BORN`` file; its LO–TO correction is applied to reference AND model.
        nac: None: apply ``born`` or the reference's own NAC parameters to both sides
            where present; False: to neither; True: require them.
        supercell, displacement, primitive_matrix: used only when the reference does
            not define them (FORCE_SETS, calculator).
        mesh: q-mesh.
        freq_cutoff: THz; modes with |ω_ref| below it are left out.
        symmetrize_fc, fc_calculator: force-constant procedure for both sides
            (:func:`produce_force_constants`).
        min_supercell_width: Å; overrides the 2 × cutoff rule of the supercell-size
            warning (:func:`check_supercell_size`).
        max_atoms: refuse reference supercells with more atoms; ``None`` for no limit.

    A value below 1 means the model is softer than the reference. A Phonopy object or
    :class:`PhononResult` passed as reference gets its force constants (and NAC
    parameters, where ``born``/``nac`` say so) replaced.
    """
    from phonopy import Phonopy

    P = parse_supercell(supercell)
    mesh = parse_mesh(mesh)
    freq_cutoff = check_positive("freq_cutoff", freq_cutoff)
    if atoms is not None:
        check_atoms(atoms, need_cell=True)
    ref, info = _reference_phonopy(reference, atoms, P, displacement, primitive_matrix,
                                   symprec, force_sets, born, nac)
    label = info["source"] if not info.get("force_sets") else \
        f"{info['source']} + {info['force_sets']}"
    if ref.dataset is None:
        raise DataError(f"reference {label} has no displacement dataset")
    if not _has_forces(ref.dataset):
        raise DataError(f"reference {label} has no forces")
    check_size(len(ref.supercell), f"phonon supercell {np.asarray(ref.supercell_matrix).tolist()}",
               max_atoms, force_calls=len(ref.supercells_with_displacements))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="primitive_matrix defaulted to 'auto'")
        model = Phonopy(ref.unitcell, supercell_matrix=ref.supercell_matrix,
                        primitive_matrix=ref.primitive_matrix, symprec=ref.symmetry.tolerance)
    model.nac_params = ref.nac_params  # LO–TO on both sides or on neither
    model.dataset = _strip_forces(ref.dataset)
    model.forces = compute_forces(model, calc, progress=progress)
    size = check_supercell_size(ref.unitcell.cell, ref.supercell_matrix,
                                cutoff=model_cutoff(calc), min_width=min_supercell_width)
    fc_model = produce_force_constants(model, symmetrize=symmetrize_fc,
                                       fc_calculator=fc_calculator)
    fc_ref = produce_force_constants(ref, symmetrize=symmetrize_fc, fc_calculator=fc_calculator)
    ref.run_mesh(mesh, is_gamma_center=True)
    model.run_mesh(mesh, is_gamma_center=True)
    fr = np.asarray(ref.mesh.frequencies)
    fm = np.asarray(model.mesh.frequencies)
    w = np.asarray(ref.mesh.weights, dtype=float)
    mask = np.abs(fr) > freq_cutoff
    if not mask.any():
        raise DataError(f"no reference mode above {freq_cutoff} THz on the mesh {mesh}")
    ratio = np.where(mask, fm / np.where(mask, fr, 1.0), 0.0)
    W = np.broadcast_to(w[:, None], fr.shape) * mask
    mean = float((ratio * W).sum() / W.sum())
    std = float(np.sqrt(((ratio - mean) ** 2 * W).sum() / W.sum()))
    per_band = [float((ratio[:, b] * W[:, b]).sum() / W[:, b].sum()) if W[:, b].sum() else
                float("nan") for b in range(fr.shape[1])]
    has_nac = ref.nac_params is not None
    return SofteningResult(ratio=mean, ratio_std=std, ratio_per_band=per_band,
                           n_modes=int(mask.sum()), mesh=mesh, freq_cutoff=freq_cutoff,
                           n_displacements=len(model.supercells_with_displacements),
                           reference=label, min_frequency_model=float(fm.min()),
                           min_frequency_ref=float(fr.min()), nac=has_nac,
                           nac_source=info.get("nac_source") if has_nac else None,
                           force_sets=info.get("force_sets"), symmetrize_fc=bool(symmetrize_fc),
                           fc_calculator=fc_calculator, fc_drift_ref=fc_ref["fc_drift"],
                           fc_drift_model=fc_model["fc_drift"],
                           supercell=np.asarray(ref.supercell_matrix).tolist(),
                           supercell_width=size["width"], supercell_warning=size["message"],
                           reference_phonon=ref, model_phonon=model)


def _strip_forces(ds: dict) -> dict:
    import copy

    out = copy.deepcopy(ds)
    out.pop("forces", None)
    for d in out.get("first_atoms", []):
        d.pop("forces", None)
    return out
