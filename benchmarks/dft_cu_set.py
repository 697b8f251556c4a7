"""The small Cu PBE data set of the softening study (issue 12): structures and labelling.

Every structure is small (1–16 atoms) so that GPAW PBE labels the whole set in tens of
minutes on 2 shared cores. Each has ``info["config_type"]`` (its group) and
``info["name"]`` (a stable id the study looks structures up by).

Groups:

* ``bulk_eq``          4-atom cubic cells at −2…+2 % strain (EOS → B) and rattled near a0
* ``bulk_compressed``  4-atom cells at −4…−6 % strain, rattled
* ``phonon``           8-atom cells (1×1×2 conventional) with one atom displaced / rattled
* ``slab111``          1×1×4 Cu(111) slabs: ideal (→ γ(111)) and rattled
* ``slab100``          1×1×4 Cu(100) slabs: ideal (→ γ(100)) and rattled
* ``vacancy``          8-site cell with one vacancy: ideal, rattled, and the unrelaxed
                       hop mid-point (→ vacancy barrier on a fixed, linear path)

The held-out sets (``--set confirm/third/fourth/fifth/sixth``) add rattled (110) slabs
(``slab110``, 6 layers); the fifth and sixth make every slab 2×2 ((110): 2×1) in plane, so
a rattle moves atoms of one layer independently instead of whole layers.

Labels go through :func:`ase_surftune.data.label` (resumable, each frame fsync'ed), into
``../dft_cache/cu_pbe/labels.extxyz`` (next to the repository, or
``$SURFTUNE_DFT_CACHE``) by default, never into the repository::

    nice -n 10 python benchmarks/dft_cu_set.py [--out DIR] [--only GROUP ...]
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc100, fcc110, fcc111
from ase.calculators.calculator import Calculator, all_changes

#: lattice constant used for every structure (Å); close to PBE's ~3.63 for Cu, and the
#: models are scored on the very same geometries, so it only has to be reasonable
A0 = 3.63
VACUUM = 6.0  # Å on each side of the slabs
#: label cache (outside the repository: DFT labels are never committed); override with
#: $SURFTUNE_DFT_CACHE or --cache
DEFAULT_OUT = Path(os.environ.get("SURFTUNE_DFT_CACHE",
                                  Path(__file__).resolve().parents[2] / "dft_cache" / "cu_pbe"))
EOS_STRAINS = (-0.02, -0.01, 0.0, 0.01, 0.02)


def _tag(atoms: Atoms, group: str, name: str) -> Atoms:
    atoms.info["config_type"] = group
    atoms.info["name"] = name
    return atoms


def _cubic(strain: float = 0.0) -> Atoms:
    return bulk("Cu", "fcc", a=A0 * (1.0 + strain), cubic=True)


def _rattled(atoms: Atoms, stdev: float, seed: int) -> Atoms:
    out = atoms.copy()
    out.rattle(stdev=stdev, seed=seed)
    return out


def vacancy_cell() -> Atoms:
    """8-site fcc cell (1×1×2 conventional) with the atom at the origin removed."""
    cell = _cubic().repeat((1, 1, 2))
    del cell[0]
    return cell


def vacancy_hop_midpoint() -> Atoms:
    """The vacancy cell with a nearest neighbour of the vacancy half-way into it."""
    cell = vacancy_cell()
    target = np.zeros(3)
    d = np.linalg.norm(cell.positions - target, axis=1)
    j = int(np.argmin(d))  # a nearest neighbour of the empty site
    cell.positions[j] = 0.5 * (cell.positions[j] + target)
    return cell


def vacancy_hop_part(blend: float) -> Atoms:
    """The vacancy cell with the hopping atom of :func:`vacancy_hop_midpoint` moved
    ``blend`` of the way from its site to the mid-point (0.5: a quarter of the hop)."""
    cell = vacancy_cell()
    mid = vacancy_hop_midpoint()
    j = int(np.argmax(np.linalg.norm(mid.positions - cell.positions, axis=1)))
    cell.positions[j] += blend * (mid.positions[j] - cell.positions[j])
    return cell


def slab(facet: str, layers: int = 4, size: tuple[int, int] = (1, 1)) -> Atoms:
    """An ideal, unrelaxed Cu slab, ``size`` surface cells in plane, ``layers`` thick."""
    build = {"111": fcc111, "100": fcc100, "110": fcc110}[facet]
    return build("Cu", size=(*size, layers), a=A0, vacuum=VACUUM, periodic=True)


#: default labelling order: the study's three fit structures, then the ideal structures
#: its properties need
FIRST = ("vac_rattle_0", "compr_0", "slab111_rattle_0", "eos_+0.00", "slab111_ideal",
         "slab100_ideal", "vac_ideal", "vac_hop_mid")


def structures(first: Sequence[str] = FIRST) -> list[Atoms]:
    """The full set (deterministic rattles), in labelling order: the structures named in
    ``first`` (default: the three fit structures of the study, then the ideal structures
    its properties need), then the rest, so that an interrupted run still gives the most
    useful labels."""
    out = _all_structures()
    rank = {n: k for k, n in enumerate(first)}
    ideal = [a for a in out if a.info["name"].startswith("eos_")]
    order = sorted(out, key=lambda a: (rank.get(a.info["name"], len(first)),
                                       a not in ideal))
    return order


def _all_structures() -> list[Atoms]:
    out: list[Atoms] = []
    for s in EOS_STRAINS:
        out.append(_tag(_cubic(s), "bulk_eq", f"eos_{s:+.2f}"))
    for k, s in enumerate((-0.01, 0.0, 0.01)):
        out.append(_tag(_rattled(_cubic(s), 0.04, 10 + k), "bulk_eq", f"bulk_rattle_{k}"))
    for k, s in enumerate((-0.04, -0.05, -0.06)):
        out.append(_tag(_rattled(_cubic(s), 0.06, 20 + k), "bulk_compressed", f"compr_{k}"))
    base = _cubic().repeat((1, 1, 2))
    for k, (disp, direction) in enumerate(((0.04, (1, 0, 0)), (0.08, (1, 1, 0)))):
        at = base.copy()
        at.positions[0] += disp * np.asarray(direction) / np.linalg.norm(direction)
        out.append(_tag(at, "phonon", f"phonon_disp_{k}"))
    out.append(_tag(_rattled(base, 0.08, 30), "phonon", "phonon_rattle_0"))
    for facet in ("111", "100"):
        out.append(_tag(slab(facet), f"slab{facet}", f"slab{facet}_ideal"))
        for k in range(2):
            out.append(_tag(_rattled(slab(facet), 0.05, 40 + k), f"slab{facet}",
                            f"slab{facet}_rattle_{k}"))
    out.append(_tag(vacancy_cell(), "vacancy", "vac_ideal"))
    out.append(_tag(vacancy_hop_midpoint(), "vacancy", "vac_hop_mid"))
    for k in range(2):
        out.append(_tag(_rattled(vacancy_cell(), 0.05, 50 + k), "vacancy", f"vac_rattle_{k}"))
    return out


def confirmation_structures() -> list[Atoms]:
    """A second set, independent of the study's: the same kinds of structure with new
    rattles, strains and displacements, and a facet the study never saw ((110), 6
    layers). It was defined and labelled *after* the environment correction's form was
    chosen on the study's set (issue 12), so that the correction is judged on data that
    played no part in choosing it. Names start with ``c_``.
    """
    out: list[Atoms] = []
    for k, s in enumerate((-0.005, 0.005, 0.015)):
        out.append(_tag(_rattled(_cubic(s), 0.03, 110 + k), "bulk_eq", f"c_bulk_rattle_{k}"))
    for k, s in enumerate((-0.03, -0.045)):
        out.append(_tag(_rattled(_cubic(s), 0.05, 120 + k), "bulk_compressed",
                        f"c_compr_{k}"))
    base = _cubic().repeat((1, 1, 2))
    disp = base.copy()
    disp.positions[1] += 0.06 * np.ones(3) / np.sqrt(3)  # 0.06 Å along ⟨111⟩
    out.append(_tag(disp, "phonon", "c_phonon_disp_0"))
    out.append(_tag(_rattled(base, 0.05, 130), "phonon", "c_phonon_rattle_0"))
    for facet in ("111", "100"):
        for k, sigma in enumerate((0.03, 0.07)):
            out.append(_tag(_rattled(slab(facet), sigma, 140 + k), f"slab{facet}",
                            f"c_slab{facet}_rattle_{k}"))
    out.append(_tag(slab("110", layers=6), "slab110", "c_slab110_ideal"))
    out.append(_tag(_rattled(slab("110", layers=6), 0.05, 150), "slab110",
                    "c_slab110_rattle_0"))
    for k, sigma in enumerate((0.04, 0.06)):
        out.append(_tag(_rattled(vacancy_cell(), sigma, 160 + k), "vacancy",
                        f"c_vac_rattle_{k}"))
    out.append(_tag(vacancy_hop_part(0.5), "vacancy", "c_vac_hop_quarter"))  # 25 % of the hop
    return out


@dataclass(frozen=True)
class HeldOutSet:
    """How a wholly held-out set (the third, the fourth) differs from the next: the
    confirmation set's kinds of structure, each with its own seeds (``seed0`` + 10…60),
    strains (fractions of a), rattles and displacements (Å)."""

    prefix: str
    seed0: int
    bulk: tuple[tuple[float, float], ...]          # (strain, rattle σ) near a0
    compressed: tuple[tuple[float, float], ...]    # (strain, rattle σ)
    displaced: tuple[int, float, tuple[float, float, float]]  # atom, Å, direction
    phonon_sigma: float
    slab_sigmas: tuple[float, float]               # (111) and (100), 4 layers
    slab110_sigmas: tuple[float, float]            # (110), 6 layers
    vacancy_sigmas: tuple[float, float]
    hop: tuple[float, str]                         # vacancy_hop_part blend, name suffix
    #: in-plane repeats of the slabs: (111) and (100), then (110)
    slab_size: tuple[int, int] = (1, 1)
    slab110_size: tuple[int, int] = (1, 1)

    def structures(self) -> list[Atoms]:
        p, seed = self.prefix, self.seed0
        out: list[Atoms] = []
        for k, (s, sigma) in enumerate(self.bulk):
            out.append(_tag(_rattled(_cubic(s), sigma, seed + 10 + k), "bulk_eq",
                            f"{p}_bulk_rattle_{k}"))
        for k, (s, sigma) in enumerate(self.compressed):
            out.append(_tag(_rattled(_cubic(s), sigma, seed + 20 + k), "bulk_compressed",
                            f"{p}_compr_{k}"))
        base = _cubic().repeat((1, 1, 2))
        disp = base.copy()
        atom, amount, direction = self.displaced
        disp.positions[atom] += amount * np.array(direction) / np.linalg.norm(direction)
        out.append(_tag(disp, "phonon", f"{p}_phonon_disp_0"))
        out.append(_tag(_rattled(base, self.phonon_sigma, seed + 30), "phonon",
                        f"{p}_phonon_rattle_0"))
        for m, facet in enumerate(("111", "100")):
            for k, sigma in enumerate(self.slab_sigmas):
                out.append(_tag(_rattled(slab(facet, size=self.slab_size), sigma,
                                         seed + 40 + 2 * m + k),
                                f"slab{facet}", f"{p}_slab{facet}_rattle_{k}"))
        for k, sigma in enumerate(self.slab110_sigmas):
            out.append(_tag(_rattled(slab("110", layers=6, size=self.slab110_size), sigma,
                                     seed + 50 + k), "slab110", f"{p}_slab110_rattle_{k}"))
        for k, sigma in enumerate(self.vacancy_sigmas):
            out.append(_tag(_rattled(vacancy_cell(), sigma, seed + 60 + k), "vacancy",
                            f"{p}_vac_rattle_{k}"))
        blend, suffix = self.hop
        out.append(_tag(vacancy_hop_part(blend), "vacancy", f"{p}_vac_hop_{suffix}"))
        return out


#: the third set: defined before the environment correction's second (gated) form was
#: chosen on the study and confirmation sets, scored only after that form was frozen in a
#: commit (issue 12). Names start with ``t_``.
THIRD = HeldOutSet("t", 200, bulk=((0.0, 0.035), (0.01, 0.03), (-0.01, 0.045)),
                   compressed=((-0.035, 0.05), (-0.055, 0.06)),
                   displaced=(2, 0.05, (1.0, 1.0, 0.0)), phonon_sigma=0.06,
                   slab_sigmas=(0.04, 0.06), slab110_sigmas=(0.04, 0.06),
                   vacancy_sigmas=(0.035, 0.055), hop=(0.8, "40"))  # 40 % of the hop
#: the fourth set: defined (2026-12-02) after the gated correction was scored on the third
#: set, before any form chosen on the first three sets is frozen; scored only after such
#: a freeze (issue 12). Names start with ``f_``.
FOURTH = HeldOutSet("f", 300, bulk=((0.005, 0.04), (-0.005, 0.03), (0.0, 0.05)),
                    compressed=((-0.04, 0.04), (-0.05, 0.07)),
                    displaced=(3, 0.07, (0.0, 0.0, 1.0)), phonon_sigma=0.04,
                    slab_sigmas=(0.035, 0.05), slab110_sigmas=(0.03, 0.05),
                    vacancy_sigmas=(0.045, 0.03), hop=(0.3, "15"))  # 15 % of the hop

#: the fifth set: defined (2026-12-02, twelfth session) after the fourth was scored, to
#: test whether the one slab group each fresh set missed is an artefact of 1×1 slabs. In
#: a 1×1 cell a rattle can only move whole layers (every periodic image moves with its
#: atom), so the group's slope mixes the static relaxation-force error of the ideal slab
#: with the response of a few layer modes. Here the slabs are 2×2 ((111), (100), 4
#: layers, 16 atoms) and 2×1 ((110), 6 layers, 12 atoms), so atoms of one layer move
#: independently and each slab group has four times the force components. The bulk-like
#: cells are as in the other sets. No form or fit structure changes: the frozen
#: ``ENV_GATED`` of commit 6d2d857 with the study's triple is scored on it. Names start
#: with ``v_``.
FIFTH = HeldOutSet("v", 400, bulk=((-0.005, 0.035), (0.01, 0.045), (0.0, 0.03)),
                   compressed=((-0.045, 0.055), (-0.035, 0.045)),
                   displaced=(5, 0.05, (1.0, 1.0, 1.0)), phonon_sigma=0.07,
                   slab_sigmas=(0.04, 0.06), slab110_sigmas=(0.04, 0.06),
                   vacancy_sigmas=(0.05, 0.04), hop=(0.6, "30"),  # 30 % of the hop
                   slab_size=(2, 2), slab110_size=(2, 1))

#: the sixth set: defined (2026-12-02, twelfth session) after the fifth was scored (the
#: frozen ``ENV_GATED`` with the study's triple held all 7 of its groups in band), to see
#: whether that replicates on fresh seeds, rattles and strains with the fifth set's slab
#: sizes. Nothing is changed or chosen after seeing it. Names start with ``w_``.
SIXTH = HeldOutSet("w", 500, bulk=((0.0, 0.045), (-0.01, 0.035), (0.005, 0.03)),
                   compressed=((-0.05, 0.05), (-0.04, 0.065)),
                   displaced=(6, 0.06, (1.0, 0.0, 1.0)), phonon_sigma=0.05,
                   slab_sigmas=(0.05, 0.035), slab110_sigmas=(0.05, 0.035),
                   vacancy_sigmas=(0.06, 0.045), hop=(0.4, "20"),  # 20 % of the hop
                   slab_size=(2, 2), slab110_size=(2, 1))


#: the labelled sets by name (``--set``)
SETS: dict[str, Callable[[], list[Atoms]]] = {
    "study": structures, "confirm": confirmation_structures, "third": THIRD.structures,
    "fourth": FOURTH.structures, "fifth": FIFTH.structures, "sixth": SIXTH.structures}


#: k-point density (Å⁻¹, ASE/GPAW convention n_i = ⌈2π·|b_i|·density⌉) of the study. The
#: demo's 2 Å⁻¹ gives the 1×1 Cu(111) slab a 6×6 mesh, and at 6×6 PBE's force on the
#: top layer points the wrong way (+0.105 eV/Å, outward; 12×12: −0.042, 17×17: −0.021
#: eV/Å, inward) and its energy is 0.15 eV off; 4 Å⁻¹ gets the sign and ~0.02 eV/Å right.
KPT_DENSITY = 4.0


def kpoint_mesh(atoms: Atoms, density: float) -> list[int]:
    """Γ-centred mesh for ``atoms`` at ``density`` (Å⁻¹).

    Slabs (``config_type`` starting with ``slab``) get one k-point along the vacuum
    direction z. Bulk-like cells (multiples of the cubic cell, strained) get the mesh of
    their unstrained cell, so the EOS points share one mesh and E(V) has no k-point jumps.
    """
    from ase.calculators.calculator import kptdensity2monkhorstpack

    ref = atoms.copy()
    is_slab = str(atoms.info.get("config_type", "")).startswith("slab")
    if not is_slab:
        ref.set_cell(ref.cell.array * (A0 / ref.cell.array[0, 0]), scale_atoms=True)
    mesh = [int(n) for n in kptdensity2monkhorstpack(ref, kptdensity=density, even=False)]
    if is_slab:
        mesh[2] = 1
    return mesh


def label_set(out_dir: Path = DEFAULT_OUT, only: list[str] | None = None,
              progress: bool = True, kpt_density: float = KPT_DENSITY,
              first: Sequence[str] = FIRST, names: list[str] | None = None,
              confirm: bool = False, which: str | None = None) -> list[Atoms]:
    """Label (resumably) the set, or the groups in ``only`` and/or the structures in
    ``names``, with GPAW PBE; ``confirm``: the confirmation set
    (:func:`confirmation_structures`) instead of the study's; ``which``: a set by its
    name in :data:`SETS` (overrides ``confirm``).

    Settings: the demo's (plane waves 300 eV, Fermi–Dirac 0.1 eV) with a Γ-centred mesh
    of ``kpt_density`` Å⁻¹ (:func:`kpoint_mesh`).
    """
    from ase_surftune.data import label
    from ase_surftune.demo import GPAW_DEMO_SETTINGS
    from ase_surftune.models.references import get_reference_calculator

    which = which or ("confirm" if confirm else "study")
    configs = structures(first) if which == "study" else SETS[which]()
    if only or names:
        configs = [a for a in configs if a.info["config_type"] in (only or ())
                   or a.info["name"] in (names or ())]
    for a in configs:  # stored with the label: which mesh each frame was computed with
        a.info["kpt_density"] = kpt_density
        a.info["kpts"] = "x".join(map(str, kpoint_mesh(a, kpt_density)))
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in GPAW_DEMO_SETTINGS.items() if k != "kpts"}

    def factory(atoms: Atoms) -> Calculator:
        kpts = {"size": kpoint_mesh(atoms, kpt_density), "gamma": True}
        return get_reference_calculator("gpaw", **settings, kpts=kpts,
                                        symmetry={"point_group": True})

    return label(configs, FreshCalculator(factory), out_dir / "labels.extxyz", resume=True,
                 progress=progress)


class FreshCalculator(Calculator):
    """A new calculator from ``factory`` for every structure.

    GPAW then finds each structure's own point-group symmetry (the ideal bulk cells and
    slabs need several times fewer k-points than without it), and no symmetry detected
    for one structure is imposed on the next (the reason the package's GPAW default
    switches point-group symmetry off when one calculator is reused).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, factory: Callable[[Atoms], Calculator]) -> None:
        super().__init__()
        self.factory = factory

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        work.calc = self.factory(work)
        energy = work.get_potential_energy()
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": work.get_forces(apply_constraint=False)}
        if all(work.pbc):
            self.results["stress"] = work.get_stress(voigt=True, apply_constraint=False)


def read_set(out_dir: Path = DEFAULT_OUT) -> list[Atoms]:
    """The labelled frames written so far (complete frames only)."""
    from ase_surftune.data import read_labelled

    path = out_dir / "labels.extxyz"
    if not path.exists():
        return []
    return list(read_labelled(str(path)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--only", nargs="*", default=None, help="groups to label")
    p.add_argument("--names", nargs="*", default=None,
                   help="structures to label (with --only: those groups and these)")
    p.add_argument("--list", action="store_true", help="print the structures and exit")
    p.add_argument("--confirm", action="store_true",
                   help="the confirmation set (same as --set confirm)")
    p.add_argument("--set", choices=sorted(SETS), default=None,
                   help="which set to label or list (default: study)")
    p.add_argument("--kpt-density", type=float, default=KPT_DENSITY,
                   help="k-point density in 1/Å (default %(default)s)")
    p.add_argument("--first", nargs="*", default=list(FIRST),
                   help="structure names to label first (default: the fit structures, "
                        "then the ideal ones)")
    args = p.parse_args()
    which = args.set or ("confirm" if args.confirm else "study")
    logging.basicConfig(level=logging.INFO)
    if args.list:
        for a in (structures(args.first) if which == "study" else SETS[which]()):
            print(f"{a.info['config_type']:16s} {a.info['name']:22s} {len(a):3d} atoms "
                  f"k-mesh {kpoint_mesh(a, args.kpt_density)}")
        return
    frames = label_set(args.out, args.only, kpt_density=args.kpt_density, first=args.first,
                       names=args.names, which=which)
    print(f"{len(frames)} labelled frames in {args.out / 'labels.extxyz'}")


if __name__ == "__main__":
    main()
