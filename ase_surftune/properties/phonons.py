"""Harmonic phonons with phonopy driven by any ASE calculator.

Reference data are read the way phonopy users hold them: ``phonopy_disp.yaml`` +
``FORCE_SETS`` or ``phonopy_params.yaml`` (with forces), with an optional ``BORN`` file,
from any folder, through :func:`phonopy.load` (:func:`load_phonopy`). Nothing is taken
from the current folder implicitly. Reference and model force constants are produced the
same way (drift removal and symmetrisation by default, :func:`produce_force_constants`)
and the non-analytical (LO–TO) correction is applied to both sides or to neither.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from ase_surftune.core.errors import ConfigError, DataError
from ase_surftune.properties._base import (
    check_atoms,
    check_int,
    check_positive,
    check_size,
)

# the phonon modules, re-exported here (their public import path before issue 15)
from ase_surftune.properties.phonon_core import (  # noqa: F401
    FC_CALCULATORS,
    MIN_SUPERCELL_WIDTH,
    PhononResult,
    SupercellSizeWarning,
    _ase_atoms,
    _face_widths,
    _fc_drift,
    _new_phonopy,
    _phonopy_atoms,
    _read_born,
    check_supercell_size,
    compute_forces,
    model_cutoff,
    parse_mesh,
    parse_supercell,
    produce_force_constants,
)
from ase_surftune.properties.phonopy_files import (  # noqa: F401
    _absolute,
    _away_from_phonopy_cwd_files,
    _has_forces,
    _is_phonopy_yaml,
    _yaml_info,
    load_phonopy,
    read_phonopy_structure,
    save_phonopy_params,
)
from ase_surftune.properties.settings import PHONONS
from ase_surftune.properties.softening import (  # noqa: F401
    SofteningResult,
    _reference_phonopy,
    _strip_forces,
    frequency_softening_ratio,
)

logger = logging.getLogger(__name__)


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




#: options of :func:`phonons_from_phonopy` (the analysis of existing force constants)
ANALYSIS_OPTIONS = ("mesh", "band_npoints", "t_min", "t_max", "t_step", "imaginary_tol",
                    "bands", "dos")


def _ref_name(source: str) -> str:
    return " + ".join(Path(p.strip()).name for p in source.split(" + "))


def phonons_vs_reference(atoms: Atoms | None, calc: BaseCalculator, reference: Any, *,
                         force_sets: str | Path | None = None,
                         born: str | Path | None = None, nac: bool | None = None,
                         supercell: Any = PHONONS.supercell, label: str | None = None,
                         phonopy_params: str | Path | None = None, **options: Any
                         ) -> tuple[PhononResult, PhononResult, SofteningResult]:
    """The model's phonons on the reference's own displacements, the reference's phonons
    analysed the same way, and the frequency softening ratio (``surftune phonons
    --reference-forces``).

    Args:
        atoms: the unit cell (None when ``reference`` is a phonopy yaml, which has it).
        reference, force_sets, born, nac: as in :func:`frequency_softening_ratio`.
        label: the model's name in the results and the plot legend.
        phonopy_params: where to write the model's ``phonopy_params.yaml``.
        options: :data:`ANALYSIS_OPTIONS` (mesh, bands, DOS, thermal; the mesh is also
            the softening ratio's) and ``symmetrize_fc``, ``fc_calculator``,
            ``min_supercell_width``, ``max_atoms``.

    Returns:
        ``(model, reference, softening)``.
    """

    analysis = {k: options.pop(k) for k in ANALYSIS_OPTIONS if k in options}
    soft = frequency_softening_ratio(
        None if _is_phonopy_yaml(reference) else atoms, calc, reference,
        force_sets=force_sets, born=born, nac=nac, supercell=supercell,
        mesh=analysis.get("mesh", PHONONS.mesh), **options)
    fc = {"symmetrize_fc": soft.symmetrize_fc, "fc_calculator": soft.fc_calculator}
    size = {"width": soft.supercell_width, "message": soft.supercell_warning}
    res = phonons_from_phonopy(soft.model_phonon, label=label, nac_source=soft.nac_source,
                               fc_info={**fc, "fc_drift": soft.fc_drift_model},
                               size_info=size, phonopy_params=phonopy_params, **analysis)
    ref_res = phonons_from_phonopy(soft.reference_phonon,
                                   label=f"reference ({_ref_name(soft.reference)})",
                                   nac_source=soft.nac_source,
                                   fc_info={**fc, "fc_drift": soft.fc_drift_ref},
                                   size_info=size, **analysis)
    return res, ref_res, soft
