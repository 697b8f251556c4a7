"""Issue 14 (part A): facet notations, slab layers, shared surface defaults, the Wulff
plot, an unwrapped NEB band and relaxation against a reference trajectory (all EMT)."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from ase.build import add_adsorbate, bulk, fcc100
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from ase_surftune.core.errors import ConfigError
from ase_surftune.properties import (
    neb_barrier,
    parse_facet,
    parse_facets,
    relax,
    relaxation_vs_reference,
    surface_energies,
    vacancy_migration,
    wulff_shape,
)
from ase_surftune.properties.settings import SURFACE
from ase_surftune.properties.surface import ThinSlabWarning, _to_structure

# ----------------------------------------------------------------------------- facets

SAME_FACET = {
    (1, 1, 1): ["111", "(111)", "1,1,1", "1 1 1", "[1, 1, 1]", "Cu111", "Cu(111)", 111,
                (1, 1, 1), [1, 1, 1], np.array([1, 1, 1])],
    (1, -1, 0): ["1-10", "(1-10)", "1,-1,0", "(1, -1, 0)", "Pt1-10", (1, -1, 0)],
    (-1, 1, 0): ["-110", "(-110)", "-1,1,0", [-1, 1, 0]],
    (1, 0, 0): ["10-10", "(10-10)", "1,0,-1,0", (1, 0, -1, 0), "Mg10-10", "100", "(100)"],
    (1, 1, 0): ["11-20", "(11-20)", "1 1 -2 0", [1, 1, -2, 0], "110"],
    (0, 0, 1): ["0001", "(0001)", "Mg(0001)", "0,0,0,1", (0, 0, 0, 1), "001"],
}


@pytest.mark.parametrize("facet", sorted(SAME_FACET))
def test_every_notation_parses_to_the_same_facet(facet):
    got = {parse_facet(v) for v in SAME_FACET[facet]}
    assert got == {facet}
    # a list mixing notations of one facet is that facet once
    assert parse_facets(SAME_FACET[facet]) == [facet]


def test_facet_lists_and_yaml_integers():
    assert parse_facets([111, 100, 110]) == [(1, 1, 1), (1, 0, 0), (1, 1, 0)]
    assert parse_facets("111 100") == [(1, 1, 1), (1, 0, 0)]
    assert parse_facets((1, 1, 0)) == [(1, 1, 0)]
    assert parse_facets(["0001", "10-10", "11-20"]) == [(0, 0, 1), (1, 0, 0), (1, 1, 0)]


@pytest.mark.parametrize("bad", ["11", "1111", "2,1,0,0", "1,x,1", "Cu", "(0001)x", "",
                                 (1, 2), (1, 1, 1, 1), (0, 0, 0), "000", (1.5, 0, 0), -111])
def test_bad_facets_are_one_clear_error(bad):
    with pytest.raises(ConfigError, match="Miller"):
        parse_facet(bad)


def test_miller_bravais_follows_pymatgen_hexagonal_convention():
    """pymatgen lists hcp facets both as (h,k,l) and (h,k,i,l); parse_facet of the
    4-index form must give its 3-index form (the convention SlabGenerator uses)."""
    from pymatgen.core.surface import SlabGenerator, get_symmetrically_distinct_miller_indices
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    mg = SpacegroupAnalyzer(_to_structure(bulk("Mg", "hcp", a=3.21, c=5.21))
                            ).get_conventional_standard_structure()
    three = get_symmetrically_distinct_miller_indices(mg, 2)
    four = get_symmetrically_distinct_miller_indices(mg, 2, return_hkil=True)
    assert len(three) == len(four) > 3
    for m3, m4 in zip(three, four):
        assert parse_facet(m4) == tuple(m3)
        assert parse_facet("".join(map(str, m4))) == tuple(m3) or max(map(abs, m4)) > 9
    # (0001) is the basal plane (in-plane vectors a, a at 120°); (10-10) a prism plane
    # (in-plane vectors a and c)
    for facet, lengths, angle in (("0001", (3.21, 3.21), 120.0), ("10-10", (3.21, 5.21), 90.0)):
        slab = SlabGenerator(mg, parse_facet(facet), 6.0, 6.0).get_slab()
        a, b, _, _, _, gamma = slab.lattice.parameters
        assert sorted((a, b)) == pytest.approx(lengths, abs=1e-6)
        assert min(gamma, 180 - gamma) == pytest.approx(180 - angle if angle > 90 else angle)


# ----------------------------------------------------------------------- slab layers


def _k110(**kw):
    """bcc K (110): d = 3.70 Å, so a 10 Å slab has only 3 layers (cheap LJ, unrelaxed)."""
    k = bulk("K", "bcc", a=5.23, cubic=True)
    lj = LennardJones(sigma=4.2, epsilon=0.05, rc=9.0, smooth=True)
    return surface_energies(k, lj, ["110"], relax_bulk=False, relax_slabs=False, **kw)


def test_min_layers_thickens_thin_slabs_and_thin_slabs_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ThinSlabWarning)
        res = _k110()  # defaults: 10 Å and min_layers=4
    assert res.entries[0].result.n_layers >= SURFACE.min_layers == 4
    with pytest.warns(ThinSlabWarning, match="3 atomic layers"):
        thin = _k110(min_layers=1)
    assert thin.entries[0].result.n_layers == 3
    six = _k110(min_layers=6)
    assert six.entries[0].result.n_layers >= 6


def test_one_source_of_surface_defaults():
    from ase_surftune.evaluation.compare import CompareConfig

    sig = inspect.signature(surface_energies).parameters
    s = CompareConfig().surface
    for key in ("min_slab_size", "min_vacuum_size", "min_layers", "fmax"):
        assert sig[key].default == getattr(SURFACE, key) == getattr(s, key)
    with pytest.raises(Exception):
        SURFACE.min_slab_size = 5.0  # frozen


def test_wulff_plot_names_element_and_gamma(tmp_path):
    from pymatgen.core import Lattice

    out = wulff_shape(Lattice.cubic(3.6), {"1,1,1": 1.25, "1,0,0": 1.40}, plot_dir=tmp_path,
                      name="cu_emt", title="Cu")
    assert (tmp_path / "cu_emt_wulff.png").is_file() and out["plot"].endswith("cu_emt_wulff.png")
    assert out["plot_title"] == "Cu: γ in J/m²: (1 1 1) 1.250, (1 0 0) 1.400"


# ------------------------------------------------------------------------------- NEB


def _fit_at(res, t):
    x, e = np.asarray(res.fit_coordinate), np.asarray(res.fit_energies)
    return float(np.interp(t * x[-1], x, e))


@pytest.mark.slow
def test_neb_band_is_unwrapped_and_symmetric_for_a_symmetric_hop():
    """A vacancy hop across the cell boundary with the final state *wrapped*: the band is
    unwrapped, so consecutive images differ by small steps and ASE's fit is symmetric."""
    cu = bulk("Cu", "fcc", a=3.59, cubic=True).repeat(2)
    vac = 0  # at the origin: its neighbour hops across the periodic boundary
    d = cu.get_distances(vac, range(len(cu)), mic=True)
    d[vac] = np.inf
    nn = np.flatnonzero(d < d.min() + 0.1)
    j = int(nn[np.argmax(cu.get_distances(vac, nn, mic=False))])  # an image across the cell
    hop = cu.get_distance(j, vac, mic=True, vector=True)
    initial = cu.copy()
    del initial[vac]
    final = initial.copy()
    final.positions[j - 1] += hop
    final.wrap()
    raw = np.linalg.norm(final.positions[j - 1] - initial.positions[j - 1])
    assert raw > 5.0  # the file as given jumps across the cell
    res = neb_barrier(initial, final, EMT(), n_images=3, fmax=0.03)
    assert res.converged
    steps = [np.linalg.norm(b.positions - a.positions, axis=1).max()
             for a, b in zip(res.images[:-1], res.images[1:])]
    assert max(steps) < 0.8 and sum(steps) == pytest.approx(np.linalg.norm(hop), rel=0.1)
    e = np.asarray(res.energies)
    np.testing.assert_allclose(e, e[::-1], atol=1e-6)  # measured: 1e-13
    assert _fit_at(res, 0.2) == pytest.approx(_fit_at(res, 0.8), abs=1e-6)
    assert _fit_at(res, 0.2) > 0.1  # not a made-up dip after the saddle
    assert res.barrier_fit == pytest.approx(res.barrier_forward, abs=1e-6)  # CI at the saddle
    assert res.barrier_forward == pytest.approx(0.791460, abs=2e-4)  # EMT Cu vacancy hop, eV


def test_vacancy_migration_relaxes_the_bulk_by_default():
    assert inspect.signature(vacancy_migration).parameters["relax_bulk"].default is True


# ------------------------------------------------------------ relaxation vs reference


def _reference_trajectory(tmp_path):
    """An EMT 'DFT' relaxation of Au on Cu(100): start and relaxed frames with energies,
    OC20 tags and the subsurface layer fixed, written as an ASE trajectory."""
    from ase.io import Trajectory

    start = fcc100("Cu", size=(2, 2, 3), vacuum=6.0)
    add_adsorbate(start, "Au", 1.9, "hollow")  # ase.build tags: layers 3,2,1; adsorbate 0
    t = start.get_tags()
    start.set_tags(np.where(t == 0, 2, np.where(t == 1, 1, 0)))  # OC20: 0 sub, 1 surf, 2 ads
    start.set_constraint(FixAtoms(indices=[a.index for a in start if a.tag == 0]))
    start.positions[-1] += [0.3, 0.2, 0.4]
    final = relax(start, EMT(), fmax=0.01).atoms
    frames = []
    path = tmp_path / "ref.traj"
    with Trajectory(str(path), "w") as traj:
        for atoms in (start, final):
            a = atoms.copy()
            a.calc = EMT()
            e, f = a.get_potential_energy(), a.get_forces()
            a.calc = SinglePointCalculator(a, energy=e, forces=f)
            traj.write(a)
            frames.append(a)
    return path, frames


def test_relaxation_vs_reference_against_itself_and_by_hand(tmp_path):
    path, frames = _reference_trajectory(tmp_path)
    cmp = relaxation_vs_reference(path, EMT(), fmax=0.01)
    de_ref = frames[1].get_potential_energy() - frames[0].get_potential_energy()
    assert cmp.delta_e_reference == pytest.approx(de_ref, abs=1e-10)
    assert cmp.delta_e_reference < -0.05  # a real relaxation happened
    # same calculator as the reference: same relaxation energy, same final structure
    assert cmp.delta_e_model == pytest.approx(de_ref, abs=2e-3)
    assert abs(cmp.delta_e_error) < 2e-3 and cmp.rmsd_free < 0.02
    assert cmp.n_free == 5 and cmp.n_adsorbate == 1  # 8 fixed subsurface atoms of 13
    # RMSD by hand, free atoms only, adsorbate separately
    free = np.array([a.tag != 0 for a in frames[0]])
    dist = np.linalg.norm(cmp.relax.atoms.positions - frames[1].positions, axis=1)
    assert cmp.rmsd_free == pytest.approx(np.sqrt(np.mean(dist[free] ** 2)))
    assert cmp.rmsd_adsorbate == pytest.approx(dist[-1])
    assert cmp.rmsd_slab == pytest.approx(np.sqrt(np.mean(dist[free][:-1] ** 2)))
    # fixed atoms stayed put
    np.testing.assert_allclose(cmp.relax.atoms.positions[~free], frames[0].positions[~free])


def test_relaxation_vs_reference_bad_input(tmp_path):
    path, frames = _reference_trajectory(tmp_path)
    with pytest.raises(ConfigError, match="same"):
        relaxation_vs_reference(frames, EMT(), initial_index=1)
    with pytest.raises(ConfigError, match="out of range"):
        relaxation_vs_reference(frames, EMT(), reference_index=5)
    bare = [f.copy() for f in frames]  # no energies
    from ase_surftune.core.errors import InvalidStructureError

    with pytest.raises(InvalidStructureError, match="no energy"):
        relaxation_vs_reference(bare, EMT())


def test_loosely_relaxed_rattled_bulk_keeps_its_facets():
    """A rattled Cu cell relaxed to fmax 0.05 misses fcc symmetry at symprec 0.01 Å; the
    facets must still be those of the fcc cell (EMT γ(111) = 1.0442 J/m² for the ideal
    lattice), with a warning that the symmetrised cell was used."""
    from ase_surftune.properties.surface import BulkSymmetryWarning, surface_energies

    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    cu.rattle(0.05, seed=0)  # seed 0 gave γ(111) = 1.29 J/m² before the fix
    with pytest.warns(BulkSymmetryWarning, match="Fm-3m"):
        res = surface_energies(cu, EMT(), ["111"], relax_slabs=False)
    assert res.entries[0].gamma == pytest.approx(1.04224, rel=1e-4)  # computed; ideal 1.0442
