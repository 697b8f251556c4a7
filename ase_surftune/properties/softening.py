"""Frequency softening ratio: mean ω_model/ω_ref over a q-mesh, with model forces on
the reference's own displacements (the same force-constant treatment on both sides)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.properties import phonon_core as core
from ase_surftune.properties._base import (
    MAX_ATOMS,
    PropertyResult,
    check_atoms,
    check_positive,
    check_size,
    is_calculator,
)
from ase_surftune.properties.phonon_core import PhononResult
from ase_surftune.properties.phonopy_files import _has_forces, load_phonopy


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
        ref = core._new_phonopy(atoms, P, primitive_matrix, symprec)
        ref.generate_displacements(distance=displacement)
        ref.forces = core.compute_forces(ref, reference)
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
        ref.nac_params = core._read_born(ref, born)
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
            (:func:`~ase_surftune.properties.phonon_core.produce_force_constants`).
        min_supercell_width: Å; overrides the 2 × cutoff rule of the supercell-size
            warning (:func:`~ase_surftune.properties.phonon_core.check_supercell_size`).
        max_atoms: refuse reference supercells with more atoms; ``None`` for no limit.

    A value below 1 means the model is softer than the reference. A Phonopy object or
    :class:`PhononResult` passed as reference gets its force constants (and NAC
    parameters, where ``born``/``nac`` say so) replaced.

    Why this is over 80 lines: it is a public API function whose docstring
    documents every keyword argument with its unit; the code is 58 lines.
    """
    from phonopy import Phonopy

    P = core.parse_supercell(supercell)
    mesh = core.parse_mesh(mesh)
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
    model.forces = core.compute_forces(model, calc, progress=progress)
    size = core.check_supercell_size(ref.unitcell.cell, ref.supercell_matrix,
                                     cutoff=core.model_cutoff(calc),
                                     min_width=min_supercell_width)
    fc_model = core.produce_force_constants(model, symmetrize=symmetrize_fc,
                                            fc_calculator=fc_calculator)
    fc_ref = core.produce_force_constants(ref, symmetrize=symmetrize_fc,
                                          fc_calculator=fc_calculator)
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

