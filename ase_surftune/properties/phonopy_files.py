"""Phonopy files as phonopy users hold them: ``phonopy_disp.yaml`` + ``FORCE_SETS``,
``phonopy_params.yaml``, ``BORN``, read from any folder through :func:`phonopy.load`
(nothing is taken from the current folder implicitly), and written back."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.properties.phonon_core import _ase_atoms, _phonopy_atoms, parse_supercell


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


def save_phonopy_params(ph, path: str | Path) -> str:
    """Write ``phonopy_params.yaml`` (cell, displacements, forces, NAC; no force
    constants) with phonopy, atomically: a temp file in the same folder is renamed."""
    from ase_surftune.core.io import atomic_path

    with atomic_path(path, suffix=".yaml") as tmp:
        ph.save(str(tmp), settings={"force_constants": False})
    return str(path)
