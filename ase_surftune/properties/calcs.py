"""The built-in properties as :class:`~ase_surftune.properties.protocol.PropertyCalc`
classes, registered by name (``relax``, ``lattice``, ``eos``, ``vacancy_formation``,
``surface``, ``neb``, ``phonons``, ``md``).

Each is a thin adapter: it calls the public API function with its settings and turns the
result into the rows comparisons tabulate (:meth:`PropertyCalc.table`), so the API,
``compare``, ``benchmark`` and the CLI run the same code with the same defaults.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ase_surftune.properties.protocol import PropertyCalc, PropertyValue
from ase_surftune.properties.registry import register
from ase_surftune.properties.settings import (
    BarrierSettings,
    EOSSettings,
    LatticeSettings,
    MDSettings,
    PhononTableSettings,
    PropertySettings,
    RelaxSettings,
    SurfaceSettings,
    VacancyFormationSettings,
)

__all__ = ["RelaxCalc", "LatticeCalc", "EOSCalc", "VacancyFormationCalc", "SurfaceCalc",
           "NEBCalc", "PhononCalc", "MDCalc"]


def _bare(atoms: Atoms) -> Atoms:
    out = atoms.copy()
    out.calc = None
    return out


@register()
class RelaxCalc(PropertyCalc):
    """:func:`~ase_surftune.properties.relax`; passes on the relaxed structure."""

    name = "relax"
    settings_cls = RelaxSettings
    function = "ase_surftune.properties.relax:relax"

    def final_structure(self, result: Any) -> Atoms:
        return _bare(result.atoms)


@register()
class LatticeCalc(RelaxCalc):
    """Cell + positions relaxation of a bulk → ``lattice_a`` (and ``lattice_c``), Å."""

    name = "lattice"
    on_bulk = True
    settings_cls = LatticeSettings

    def run(self, atoms: Atoms, calculator: Any) -> Any:
        from ase_surftune.properties.relax import relax

        return relax(atoms, calculator, relax_cell=True, **self.settings.kwargs())

    def table(self, result: Any) -> list[PropertyValue]:
        a, _, c = result.atoms.cell.cellpar()[:3]
        rows = [PropertyValue("lattice_a", float(a), "Å", "lattice a", result.converged,
                              {"volume_per_atom": result.volume / len(result.atoms),
                               "energy_per_atom": result.energy_per_atom})]
        if abs(c - a) > 1e-3:
            rows.append(PropertyValue("lattice_c", float(c), "Å", "lattice c",
                                      result.converged))
        return rows


@register()
class EOSCalc(PropertyCalc):
    """:func:`~ase_surftune.properties.bulk.equation_of_state` → ``bulk_modulus`` (GPa)."""

    name = "eos"
    on_bulk = True
    settings_cls = EOSSettings
    function = "ase_surftune.properties.bulk:equation_of_state"

    def table(self, result: Any) -> list[PropertyValue]:
        return [PropertyValue("bulk_modulus", result.bulk_modulus, "GPa", "bulk modulus B",
                              True, {"v0": result.v0, "a_eos": result.a})]


@register()
class VacancyFormationCalc(PropertyCalc):
    """:func:`~ase_surftune.properties.bulk.vacancy_formation` → ``vacancy_formation`` (eV)."""

    name = "vacancy_formation"
    on_bulk = True
    settings_cls = VacancyFormationSettings
    function = "ase_surftune.properties.bulk:vacancy_formation"

    def table(self, result: Any) -> list[PropertyValue]:
        return [PropertyValue("vacancy_formation", result.formation_energy, "eV",
                              "vacancy formation", result.converged is not False,
                              {"n_atoms": result.n_atoms})]


@register()
class SurfaceCalc(PropertyCalc):
    """:func:`~ase_surftune.properties.surface_energies` → ``gamma_<hkl>`` (J/m²)."""

    name = "surface"
    on_bulk = True
    settings_cls = SurfaceSettings

    def run(self, atoms: Atoms, calculator: Any) -> Any:
        from ase_surftune.properties.surface import surface_energies

        s = self.settings
        kw = s.kwargs("miller_indices", "recommended_layers")
        if self.plot is not None:
            kw.update(plot_dir=str(Path(self.plot).parent), plot_name=Path(self.plot).stem)
        return surface_energies(atoms, calculator, s.miller_indices, **kw)

    def table(self, result: Any) -> list[PropertyValue]:
        rows = []
        for m in self.settings.miller_indices:
            hkl = "".join(map(str, m))
            ents = [e for e in result.entries if tuple(e.miller) == tuple(m)]
            ok = all(e.result.relax_converged is not False for e in ents)
            rows.append(PropertyValue(
                f"gamma_{hkl}", result.gamma[",".join(map(str, m))], "J/m²", f"γ({hkl})", ok,
                {"n_atoms": [e.result.n_atoms for e in ents],
                 "gamma_unrelaxed": min(e.result.gamma_unrelaxed for e in ents)}))
        return rows


_NEB_KEYS = ("n_images", "interpolation", "climb", "method", "k", "fmax", "steps",
             "optimizer", "relax_endpoints")


@register()
class NEBCalc(PropertyCalc):
    """Migration barriers on a (relaxed) bulk: ``barrier_vacancy`` (nearest-neighbour
    vacancy hop, :func:`~ase_surftune.properties.vacancy_migration`) and
    ``barrier_adatom_100`` (adatom hollow → hollow on fcc(100) of the bulk's element and
    fcc lattice constant, :func:`~ase_surftune.properties.adatom_hop`), eV. The result is
    a dict migration → :class:`~ase_surftune.properties.NEBResult`."""

    name = "neb"
    on_bulk = True
    settings_cls = BarrierSettings

    def run(self, atoms: Atoms, calculator: Any) -> dict[str, Any]:
        from ase_surftune.properties.neb import adatom_hop, vacancy_migration

        s = self.settings
        kw = {k: getattr(s, k) for k in _NEB_KEYS}
        out: dict[str, Any] = {}
        for mig in s.migrations:
            if mig == "vacancy":
                out[mig] = vacancy_migration(atoms, calculator, supercell=s.supercell,
                                             vacancy_index=s.vacancy_index,
                                             relax_bulk=False, **kw)
            else:
                from ase.build import fcc100

                element = atoms.get_chemical_symbols()[0]
                a_fcc = float(np.cbrt(4 * atoms.get_volume() / len(atoms)))
                slab = fcc100(element, size=s.slab_size, a=a_fcc, vacuum=6.0)
                out[mig] = adatom_hop(slab, element, calculator, site="hollow",
                                      fix_bottom_layers=1, **kw)
        return out

    def table(self, result: dict[str, Any]) -> list[PropertyValue]:
        names = {"vacancy": ("barrier_vacancy", "vacancy barrier"),
                 "adatom-100": ("barrier_adatom_100", "adatom hop (100)")}
        rows = []
        for mig, res in result.items():
            key, label = names[mig]
            rows.append(PropertyValue(
                key, res.barrier_forward, "eV", label,
                bool(res.converged and res.endpoints_converged is not False),
                {"energies": res.energies, "reaction_coordinate": res.reaction_coordinate,
                 "steps": res.steps, "barrier_fit": res.barrier_fit}))
        return rows


def mesh_frequencies(phonon: Any, mesh: Any) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (THz, q × band) and q-point weights on a Γ-centred ``mesh``."""
    phonon.run_mesh(list(mesh), is_gamma_center=True)
    md = phonon.get_mesh_dict()
    return np.asarray(md["frequencies"]), np.asarray(md["weights"], dtype=float)


@register()
class PhononCalc(PropertyCalc):
    """:func:`~ase_surftune.properties.phonons` → ``phonon_mean_THz`` (q-weighted mean
    over the mesh of the modes above ``freq_cutoff``) and ``phonon_max_THz``."""

    name = "phonons"
    on_bulk = True
    settings_cls = PhononTableSettings

    def run(self, atoms: Atoms, calculator: Any) -> Any:
        from ase_surftune.properties.phonons import phonons

        return phonons(atoms, calculator, plot=self.plot, **self.settings.kwargs("freq_cutoff"))

    def table(self, result: Any) -> list[PropertyValue]:
        fr, w = mesh_frequencies(result.phonon, self.settings.mesh)
        mask = np.abs(fr) > self.settings.freq_cutoff
        wm = np.broadcast_to(w[:, None], fr.shape) * mask
        mean = float((fr * wm).sum() / wm.sum()) if wm.sum() else math.nan
        ok = not result.has_imaginary
        return [PropertyValue("phonon_mean_THz", mean, "THz", "mean phonon ω", ok,
                              {"min_frequency": result.min_frequency, "plot": result.plot}),
                PropertyValue("phonon_max_THz", float(fr.max()), "THz", "max phonon ω", ok)]


@register()
class MDCalc(PropertyCalc):
    """:func:`~ase_surftune.properties.run_md`; passes on the last frame. Tabulates the
    energy drift (eV/atom; ``converged`` = no guard stopped the run)."""

    name = "md"
    settings_cls = MDSettings

    def run(self, atoms: Atoms, calculator: Any) -> Any:
        from ase_surftune.properties.md import run_md

        return run_md(atoms, calculator, plot=self.plot, **self.settings.kwargs())

    def final_structure(self, result: Any) -> Atoms | None:
        return None if result.atoms is None else _bare(result.atoms)

    def table(self, result: Any) -> list[PropertyValue]:
        return [PropertyValue("md_energy_drift", result.energy_drift, "eV/atom",
                              "MD energy drift", bool(result.completed),
                              {"mean_temperature": result.mean_temperature,
                               "stop_reason": result.stop_reason})]


def settings_class(name: str) -> type[PropertySettings]:
    """The settings model of the registered property ``name``."""
    from ase_surftune.properties.registry import get_property

    return get_property(name).settings_cls
