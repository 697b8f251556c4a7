"""Harmonic phonons with phonopy driven by any ASE calculator."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_surftune.errors import ConfigError, DataError
from ase_surftune.properties._base import (
    MAX_ATOMS,
    check_size,
    PropertyResult,
    attach_calc,
    check_atoms,
    check_int,
    check_positive,
    is_calculator,
)

logger = logging.getLogger(__name__)


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
    """Outcome of :func:`phonons`. Frequencies in THz; thermal properties per unit cell
    in phonopy units: free energy kJ/mol, entropy and heat capacity J/(K·mol),
    temperatures K.
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


def phonons(atoms: Atoms, calc: BaseCalculator, *, supercell: Any = (2, 2, 2),
            displacement: float = 0.01, primitive_matrix: Any = "auto",
            mesh: Any = (20, 20, 20), band_npoints: int = 51, t_min: float = 0.0,
            t_max: float = 1000.0, t_step: float = 10.0, imaginary_tol: float = 0.05,
            symprec: float = 1e-5, bands: bool = True, dos: bool = True,
            plot: str | Path | None = None, phonopy_params: str | Path | None = None,
            progress: bool = False, max_atoms: int | None = MAX_ATOMS) -> PhononResult:
    """Phonon bands, DOS and thermal properties with phonopy and an ASE calculator.

    Args:
        atoms: (relaxed) unit cell; it is not relaxed here.
        calc: any ASE calculator.
        supercell: int, 3 ints or 3×3 integer matrix.
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
        max_atoms: refuse supercells with more atoms (:class:`SizeLimitError` with an
            estimate); ``None`` for no limit.
    """
    check_atoms(atoms, need_cell=True)
    P = parse_supercell(supercell)
    check_size(len(atoms) * round(abs(np.linalg.det(P))), f"phonon supercell {P.tolist()}",
               max_atoms, force_calls=3 * len(atoms))
    displacement = check_positive("displacement", displacement)
    mesh = parse_mesh(mesh)
    band_npoints = check_int("band_npoints", band_npoints, minimum=2)
    imaginary_tol = check_positive("imaginary_tol", imaginary_tol, allow_zero=True)
    for name, v in (("t_min", t_min), ("t_max", t_max), ("t_step", t_step)):
        check_positive(name, v, allow_zero=name == "t_min")
    if plot is not None and not (bands and dos):
        raise ConfigError("plot needs bands=True and dos=True (it draws both)")
    ph = _new_phonopy(atoms, P, primitive_matrix, symprec)
    ph.generate_displacements(distance=displacement)
    ph.forces = compute_forces(ph, calc, progress=progress)
    ph.produce_force_constants()
    return _analyse(ph, atoms.get_chemical_formula(), P, displacement, mesh, band_npoints,
                    t_min, t_max, t_step, imaginary_tol, plot, phonopy_params,
                    bands=bands, dos=dos)


def _analyse(ph, formula, P, displacement, mesh, band_npoints, t_min, t_max, t_step,
             imaginary_tol, plot, phonopy_params, *, bands: bool = True,
             dos: bool = True) -> PhononResult:
    if bands:
        ph.auto_band_structure(npoints=band_npoints)
        bs = ph.get_band_structure_dict()
        labels = getattr(ph.band_structure, "labels", None)
        conns = getattr(ph.band_structure, "path_connections", None)
        ticks = _band_ticks(bs, labels, conns)
    else:
        bs, ticks = {"qpoints": [], "distances": [], "frequencies": []}, []
    ph.run_mesh(mesh, is_gamma_center=True)
    md = ph.get_mesh_dict()
    if dos:
        ph.run_total_dos()
        dd = ph.get_total_dos_dict()
    else:
        dd = {"frequency_points": [], "total_dos": []}
    ph.run_thermal_properties(t_min=t_min, t_max=t_max, t_step=t_step,
                              exclude_gamma_acoustic=True)
    tp = ph.get_thermal_properties_dict()
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
        imaginary_tol=imaginary_tol, phonon=ph)
    if plot is not None:
        from ase_surftune.properties._plot import plot_phonons

        res.plot = plot_phonons(plot, [np.asarray(d) for d in bs["distances"]],
                                [np.asarray(f) for f in bs["frequencies"]], ticks,
                                np.asarray(dd["frequency_points"]), np.asarray(dd["total_dos"]),
                                title=formula)
    if phonopy_params is not None:
        Path(phonopy_params).parent.mkdir(parents=True, exist_ok=True)
        ph.save(str(phonopy_params), settings={"force_constants": False})
        res.phonopy_params = str(phonopy_params)
    return res


@dataclass
class SofteningResult(PropertyResult):
    """ω_model/ω_ref over a q-mesh on the same displacements (dimensionless).

    ``ratio`` is the q-weight-averaged mean over all modes with |ω_ref| above
    ``freq_cutoff`` (THz), so the acoustic modes at Γ are excluded.
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


def _reference_phonopy(reference: Any, atoms: Atoms | None, P, displacement, primitive_matrix,
                       symprec):
    """A Phonopy object holding the reference displacements and forces, plus a label."""
    import phonopy

    if hasattr(reference, "dataset") and hasattr(reference, "supercells_with_displacements"):
        return reference, "Phonopy object"
    if isinstance(reference, PhononResult):
        return reference.phonon, "PhononResult"
    if isinstance(reference, (str, Path)):
        path = Path(reference)
        if not path.is_file():
            raise FileNotFoundError(f"reference force file not found: {str(path)!r}")
        if path.suffix in (".yaml", ".yml"):
            ph = phonopy.load(str(path), produce_fc=False, log_level=0)
            return ph, str(path)
        from phonopy.file_IO import parse_FORCE_SETS

        if atoms is None:
            raise ConfigError("a FORCE_SETS reference needs the unit cell `atoms`")
        ph = _new_phonopy(atoms, P, primitive_matrix, symprec)
        try:
            ds = parse_FORCE_SETS(natom=len(ph.supercell), filename=str(path))
        except Exception as exc:
            raise DataError(f"cannot read FORCE_SETS {str(path)!r} for a {len(ph.supercell)}-"
                            f"atom supercell: {exc}") from exc
        ph.dataset = ds
        return ph, str(path)
    if is_calculator(reference):
        if atoms is None:
            raise ConfigError("a calculator reference needs the unit cell `atoms`")
        ph = _new_phonopy(atoms, P, primitive_matrix, symprec)
        ph.generate_displacements(distance=displacement)
        ph.forces = compute_forces(ph, reference)
        return ph, type(reference).__name__
    raise ConfigError(f"reference must be a FORCE_SETS/phonopy yaml path, a Phonopy object, "
                      f"a PhononResult or a calculator, got {type(reference).__name__}")


def frequency_softening_ratio(atoms: Atoms | None, calc: BaseCalculator, reference: Any, *,
                              supercell: Any = (2, 2, 2), displacement: float = 0.01,
                              primitive_matrix: Any = "auto", mesh: Any = (10, 10, 10),
                              freq_cutoff: float = 0.1, symprec: float = 1e-5,
                              progress: bool = False) -> SofteningResult:
    """Mean ω_model/ω_ref over a q-mesh, with model forces on the reference displacements.

    Args:
        atoms: unit cell (may be None when ``reference`` is a phonopy yaml or object,
            which carry their own cell and supercell).
        calc: the model (any ASE calculator).
        reference: ``FORCE_SETS`` path, ``phonopy_params.yaml`` path (with forces), a
            Phonopy object with forces, a :class:`PhononResult`, or a reference
            calculator evaluated on the same displacements.
        supercell, displacement, primitive_matrix: used only when the reference does
            not define them (FORCE_SETS, calculator).
        mesh: q-mesh.
        freq_cutoff: THz; modes with |ω_ref| below it are left out.

    A value below 1 means the model is softer than the reference.
    """
    from phonopy import Phonopy

    P = parse_supercell(supercell)
    mesh = parse_mesh(mesh)
    freq_cutoff = check_positive("freq_cutoff", freq_cutoff)
    if atoms is not None:
        check_atoms(atoms, need_cell=True)
    ref, label = _reference_phonopy(reference, atoms, P, displacement, primitive_matrix,
                                    symprec)
    ds = ref.dataset
    if ds is None:
        raise DataError(f"reference {label} has no displacement dataset")
    ref_forces = ref.forces
    if ref_forces is None:
        raise DataError(f"reference {label} has no forces")
    prim = ref.primitive_matrix
    model = Phonopy(ref.unitcell, supercell_matrix=ref.supercell_matrix,
                    primitive_matrix=prim, symprec=ref.symmetry.tolerance)
    model.dataset = _strip_forces(ds)
    model.forces = compute_forces(model, calc, progress=progress)
    model.produce_force_constants()
    if ref.force_constants is None:
        ref.produce_force_constants()
    ref.run_mesh(mesh, is_gamma_center=True)
    model.run_mesh(mesh, is_gamma_center=True)
    fr = np.asarray(ref.get_mesh_dict()["frequencies"])
    fm = np.asarray(model.get_mesh_dict()["frequencies"])
    w = np.asarray(ref.get_mesh_dict()["weights"], dtype=float)
    mask = np.abs(fr) > freq_cutoff
    if not mask.any():
        raise DataError(f"no reference mode above {freq_cutoff} THz on the mesh {mesh}")
    ratio = np.where(mask, fm / np.where(mask, fr, 1.0), 0.0)
    W = np.broadcast_to(w[:, None], fr.shape) * mask
    mean = float((ratio * W).sum() / W.sum())
    std = float(np.sqrt(((ratio - mean) ** 2 * W).sum() / W.sum()))
    per_band = [float((ratio[:, b] * W[:, b]).sum() / W[:, b].sum()) if W[:, b].sum() else
                float("nan") for b in range(fr.shape[1])]
    return SofteningResult(ratio=mean, ratio_std=std, ratio_per_band=per_band,
                           n_modes=int(mask.sum()), mesh=mesh, freq_cutoff=freq_cutoff,
                           n_displacements=len(model.supercells_with_displacements),
                           reference=label, min_frequency_model=float(fm.min()),
                           min_frequency_ref=float(fr.min()))


def _strip_forces(ds: dict) -> dict:
    import copy

    out = copy.deepcopy(ds)
    out.pop("forces", None)
    for d in out.get("first_atoms", []):
        d.pop("forces", None)
    return out
