"""Data layer: reading both label styles, bad data, splitting, labelling with resume."""

from __future__ import annotations

import logging

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from ase_surftune.core.errors import DataError, UnsupportedElementError
from ase_surftune.data import (
    DataReport,
    check_elements,
    dataset_hash,
    get_labels,
    label,
    read_labelled,
    split,
    split_by_group,
    structure_hash,
    validate_config,
    write_labelled,
)


def _slab(symbol: str = "Cu", seed: int = 0, size=(2, 2, 2)) -> Atoms:
    atoms = fcc111(symbol, size, vacuum=5.0)
    atoms.info.pop("adsorbate_info", None)
    atoms.rattle(0.05, seed=seed)
    return atoms


def _emt_labelled(atoms: Atoms, group: str | None = None) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = EMT()
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    s = atoms.get_stress() if all(atoms.pbc) else None
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
    if group is not None:
        atoms.info["config_type"] = group
    return atoms


def _dataset() -> list[Atoms]:
    out = []
    for i in range(4):
        out.append(_emt_labelled(_slab("Cu", seed=i), "Surfaces/Cu111"))
    for i in range(4):
        b = bulk("Cu", "fcc", a=3.6, cubic=True)
        b.rattle(0.05, seed=10 + i)
        out.append(_emt_labelled(b, "Bulk"))
    for i in range(2):
        out.append(_emt_labelled(_slab("Au", seed=20 + i), "Surfaces/Au111"))
    return out


class CountingEMT(Calculator):
    """EMT that counts how many structures it evaluated."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self._emt = EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        work = self.atoms.copy()
        work.calc = self._emt
        self.results = {"energy": work.get_potential_energy(),
                        "forces": work.get_forces(apply_constraint=False),
                        "stress": work.get_stress()}


# --------------------------------------------------------------------------- reading


def test_read_extxyz_calculator_style_roundtrip(tmp_path):
    data = _dataset()
    path = tmp_path / "d.xyz"
    write_labelled(data, path)
    back = read_labelled(path)
    assert len(back) == len(data)
    for a, b in zip(data, back):
        ea, fa, sa = get_labels(a)
        eb, fb, sb = get_labels(b)
        assert eb == pytest.approx(ea, abs=1e-8)
        np.testing.assert_allclose(fb, fa, atol=1e-6)
        if sa is None:
            assert sb is None
        else:
            np.testing.assert_allclose(sb, sa, atol=1e-8)
        assert b.info["config_type"] == a.info["config_type"]
        assert b.info["source"].startswith(str(path))
    assert isinstance(back[0].calc, SinglePointCalculator)


def test_read_extxyz_named_keys(tmp_path):
    data = _dataset()[:3]
    frames = []
    for a in data:
        e, f, _ = get_labels(a)
        b = Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)
        b.info["dft_energy"] = e
        b.arrays["dft_force"] = f
        b.info["dft_stress"] = np.eye(3) * 0.01
        b.info["kind"] = "Surfaces/x"
        frames.append(b)
    path = tmp_path / "keys.xyz"
    ase.io.write(path, frames)
    back = read_labelled(path, energy_key="dft_energy", forces_key="dft_force",
                         stress_key="dft_stress", group_key="kind")
    for a, b in zip(data, back):
        e, f, s = get_labels(b)
        assert e == pytest.approx(get_labels(a)[0], abs=1e-10)
        np.testing.assert_allclose(f, get_labels(a)[1], atol=1e-6)
        np.testing.assert_allclose(s, [0.01, 0.01, 0.01, 0, 0, 0])
        assert b.info["config_type"] == "Surfaces/x"
        assert "dft_energy" not in b.info and "dft_force" not in b.arrays
    # The same file without keys has no labels: a clear error.
    with pytest.raises(DataError, match="energy"):
        read_labelled(path)


def test_read_traj_oc20_style_with_constraints(tmp_path):
    frames = []
    for i in range(3):
        a = _slab("Cu", seed=i, size=(2, 2, 3))
        a.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
        a.calc = EMT()
        e = a.get_potential_energy()
        f = a.get_forces(apply_constraint=False)
        a.calc = SinglePointCalculator(a, energy=e, forces=f, free_energy=e + 0.01)
        frames.append(a)
    path = tmp_path / "oc20.traj"
    ase.io.write(path, frames)
    back = read_labelled(path)
    assert len(back) == 3
    for a, b in zip(frames, back):
        assert isinstance(b.constraints[0], FixAtoms)
        np.testing.assert_array_equal(b.constraints[0].index, [0, 1, 2, 3])
        e, f, s = get_labels(b)
        assert e == pytest.approx(a.calc.results["energy"])
        # raw labels: forces on fixed atoms are kept, not zeroed
        np.testing.assert_allclose(f, a.calc.results["forces"])
        assert np.abs(f[:4]).max() > 0
        assert s is None
        assert b.info["config_type"] == "default"


def test_read_db_and_multiple_files(tmp_path):
    data = _dataset()
    db = tmp_path / "d.db"
    ase.io.write(db, data[:5])
    xyz = tmp_path / "d.xyz"
    write_labelled(data[5:], xyz)
    back = read_labelled([db, xyz])
    assert len(back) == len(data)
    assert dataset_hash(back) == dataset_hash(read_labelled([db, xyz]))


# --------------------------------------------------------------------------- bad data


def test_missing_forces(tmp_path):
    a = _slab()
    a.calc = SinglePointCalculator(a, energy=1.0)
    path = tmp_path / "noforces.traj"
    ase.io.write(path, a)
    with pytest.raises(DataError, match="missing forces"):
        read_labelled(path)
    assert len(read_labelled(path, require_forces=False)) == 1
    with pytest.raises(DataError, match="missing forces"):
        validate_config(a)


def test_mismatched_lengths(tmp_path):
    good = _emt_labelled(_slab(seed=1))
    bad = _slab(seed=2)
    bad.calc = SinglePointCalculator(bad, energy=1.0, forces=np.zeros((len(bad) - 1, 3)))
    with pytest.raises(DataError, match="shape"):
        validate_config(bad)
    path = tmp_path / "mixed.traj"
    ase.io.write(path, [good, bad, good])
    with pytest.raises(DataError, match=r"@1.*forces have shape"):
        read_labelled(path)
    report = DataReport()
    back = read_labelled(path, on_error="skip", report=report)
    assert len(back) == 2
    assert report.n_read == 3 and report.n_kept == 2
    assert report.skipped[0].index == 1 and "shape" in report.skipped[0].reason


def test_truncated_extxyz_is_an_error(tmp_path):
    path = tmp_path / "t.xyz"
    write_labelled(_dataset()[:2], path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-3]))
    with pytest.raises(DataError, match="cannot parse"):
        read_labelled(path)
    report = DataReport()
    assert len(read_labelled(path, on_error="skip", report=report)) == 1
    assert report.skipped and report.skipped[0].index == 1


@pytest.mark.parametrize("where", ["energy", "forces"])
def test_nan_labels(tmp_path, where, caplog):
    frames = [_emt_labelled(_slab(seed=i)) for i in range(3)]
    e, f, _ = get_labels(frames[1])
    if where == "energy":
        e = float("nan")
    else:
        f = f.copy()
        f[2, 1] = np.nan
    frames[1].calc = SinglePointCalculator(frames[1], energy=e, forces=f)
    path = tmp_path / "nan.xyz"
    write_labelled(frames, path)
    with pytest.raises(DataError, match="NaN"):
        read_labelled(path)
    report = DataReport()
    with caplog.at_level(logging.WARNING, logger="ase_surftune.data"):
        back = read_labelled(path, on_error="skip", report=report)
    assert len(back) == 2 and report.n_skipped == 1
    assert "NaN" in report.skipped[0].reason
    assert "skipped" in caplog.text
    assert "skipped 1" in report.summary()


def test_empty_file(tmp_path):
    path = tmp_path / "empty.xyz"
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_labelled(path)
    with pytest.raises(DataError, match="empty"):
        read_labelled(path, on_error="skip")  # nothing at all survives
    good = tmp_path / "good.xyz"
    write_labelled(_dataset()[:2], good)
    report = DataReport()
    assert len(read_labelled([path, good], on_error="skip", report=report)) == 2
    assert report.skipped[0].index is None and "empty" in report.skipped[0].reason


def test_unknown_element():
    data = _dataset()
    assert check_elements(data, ["Cu", "Au"], "emt") == data
    with pytest.raises(UnsupportedElementError, match=r"mini-model.*Au"):
        check_elements(data, ["Cu"], "mini-model")
    report = DataReport()
    kept = check_elements(data, ["Cu"], "mini-model", on_error="skip", report=report)
    assert len(kept) == 8 and report.n_skipped == 2


def test_on_error_value_checked(tmp_path):
    with pytest.raises(ValueError):
        read_labelled(tmp_path / "x.xyz", on_error="ignore")


# --------------------------------------------------------------------------- splitting


def test_split_fractions_reproducible():
    data = [_emt_labelled(_slab(seed=i, size=(1, 1, 2))) for i in range(20)]
    s1 = split(data, (0.7, 0.2, 0.1), seed=3)
    s2 = split(data, (0.7, 0.2, 0.1), seed=3)
    s3 = split(data, (0.7, 0.2, 0.1), seed=4)
    assert [len(p) for p in s1] == [14, 4, 2]
    ids = lambda part: [id(a) for a in part]  # noqa: E731
    assert ids(s1.train) == ids(s2.train) and ids(s1.test) == ids(s2.test)
    assert ids(s1.valid) != ids(s3.valid) or ids(s1.test) != ids(s3.test)
    assert sorted(ids(s1.train) + ids(s1.valid) + ids(s1.test)) == sorted(ids(data))
    with pytest.raises(DataError):
        split(data, (0.5, 0.2, 0.2))


def test_split_stratified_keeps_every_kind_in_each_part():
    data = []
    for kind, n in (("slab", 6), ("vacancy", 4), ("adatom", 2)):
        for i in range(n):
            a = _emt_labelled(_slab(seed=len(data), size=(1, 1, 2)))
            a.info["config_type"] = kind
            data.append(a)
    s = split(data, (0.5, 0.0, 0.5), seed=0, stratify="config_type")
    kinds = lambda part: sorted(a.info["config_type"] for a in part)  # noqa: E731
    assert kinds(s.train) == kinds(s.test) == ["adatom"] + ["slab"] * 3 + ["vacancy"] * 2
    ids = lambda part: [id(a) for a in part]  # noqa: E731
    assert sorted(ids(s.train) + ids(s.test)) == sorted(ids(data))
    # without stratify the default split is unchanged by the new option
    assert ids(split(data, (0.5, 0.0, 0.5), seed=0).train) == \
        ids(split(data, (0.5, 0.0, 0.5), seed=0, stratify=None).train)


def test_split_by_group_holdout_surfaces():
    data = _dataset()
    parts = split_by_group(data, holdout=["Surfaces/*"], valid_fraction=0.25, seed=0)
    assert len(parts.test) == 6
    assert all(a.info["config_type"].startswith("Surfaces/") for a in parts.test)
    assert all(a.info["config_type"] == "Bulk" for a in parts.train + parts.valid)
    assert len(parts.valid) == 1 and len(parts.train) == 3
    with pytest.raises(DataError, match="matches no group"):
        split_by_group(data, holdout=["surface/*"])
    with pytest.raises(DataError, match="nothing left"):
        split_by_group(data, holdout=["*"])


# --------------------------------------------------------------------------- labelling


def _to_label() -> list[Atoms]:
    out = []
    for i in range(6):
        b = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
        b.rattle(0.03, seed=i)
        b.info["config_type"] = f"Bulk/{i}"
        out.append(b)
    return out


def test_label_writes_and_resumes(tmp_path):
    configs = _to_label()
    path = tmp_path / "labels.xyz"
    calc = CountingEMT()
    first = label(configs[:3], calc, path, progress=False)
    assert calc.calls == 3 and len(first) == 3
    # Simulate an interruption while writing frame 4: a partial frame at the end.
    with open(path, "a") as fh:
        fh.write(f"{len(configs[3])}\nLattice=\"1 0 0 0 1 0 0 0 1\" Properties=spec")
    calc2 = CountingEMT()
    out = label(configs, calc2, path, progress=False)
    assert calc2.calls == 3
    frames = ase.io.read(path, ":")
    assert len(frames) == 6
    assert [f.info["label_index"] for f in frames] == list(range(6))
    assert [f.info["config_type"] for f in frames] == [f"Bulk/{i}" for i in range(6)]
    assert [f.info["structure_hash"] for f in frames] == [structure_hash(c) for c in configs]
    ref = CountingEMT()
    for c, o in zip(configs, out):
        np.testing.assert_allclose(o.positions, c.positions)
        w = c.copy()
        w.calc = ref
        assert get_labels(o)[0] == pytest.approx(w.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(get_labels(o)[1], w.get_forces(), atol=1e-6)
        assert get_labels(o)[2] is not None  # bulk: stress labelled
    # Everything done: a third call computes nothing; read_labelled reads the file.
    calc3 = CountingEMT()
    label(configs, calc3, path, progress=False)
    assert calc3.calls == 0
    assert len(read_labelled(path)) == 6


def test_label_refuses_foreign_file_and_can_overwrite(tmp_path):
    path = tmp_path / "labels.xyz"
    write_labelled(_dataset()[:1], path)
    with pytest.raises(DataError, match="match none"):
        label(_to_label()[:2], CountingEMT(), path, progress=False)
    calc = CountingEMT()
    label(_to_label()[:2], calc, path, resume=False, progress=False)
    assert calc.calls == 2 and len(ase.io.read(path, ":")) == 2


def test_label_calculator_failure(tmp_path):
    class Failing(CountingEMT):
        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            if len(atoms) > 2:
                raise RuntimeError("SCF did not converge")
            super().calculate(atoms, properties, system_changes)

    configs = _to_label()[:2] + [bulk("Cu", "fcc", a=3.6) * (3, 1, 1)]
    with pytest.raises(DataError, match="SCF"):
        label(configs, Failing(), tmp_path / "a.xyz", progress=False)
    report = DataReport()
    out = label(configs, Failing(), tmp_path / "b.xyz", progress=False, on_error="skip",
                report=report)
    assert len(out) == 2 and report.n_skipped == 1


# --------------------------------------------------------------------------- hashing


def test_dataset_hash_sensitive_to_labels():
    data = _dataset()
    h = dataset_hash(data)
    assert h == dataset_hash(list(data))
    changed = [a for a in data]
    e, f, s = get_labels(data[0])
    b = data[0].copy()
    b.calc = SinglePointCalculator(b, energy=e + 1e-6, forces=f, stress=s)
    changed[0] = b
    assert dataset_hash(changed) != h
    assert dataset_hash(data[::-1]) != h
    # an energy weight changes what a fine-tune fits; weight 1 is the same as none
    weighted = [a.copy() for a in data]
    for a, orig in zip(weighted, data):
        a.calc = orig.calc
    weighted[0].info["config_energy_weight"] = 1.0
    assert dataset_hash(weighted) == h
    weighted[0].info["config_energy_weight"] = 4.0
    assert dataset_hash(weighted) != h


def _resolve_to_emt(spec: str):
    """A model-spec resolver for the test: any spec gives EMT (module level: it pickles)."""
    return EMT()


def test_label_resolves_model_specs_through_the_resolver_handed_down(tmp_path):
    """The data layer builds reference labellers itself; a model spec goes to the resolver
    a higher layer hands down (the package registers models.references.get_calculator)."""
    from ase_surftune.core.errors import ConfigError
    from ase_surftune.data import references as refs
    from ase_surftune.models.references import get_calculator

    assert refs._RESOLVER == [get_calculator]  # registered by `import ase_surftune`
    configs = [_slab(seed=s) for s in range(2)]
    out = label(configs, "some-model@head", tmp_path / "a.xyz", progress=False,
                resolve=_resolve_to_emt)
    for a, got in zip(configs, out):
        b = a.copy()
        b.calc = EMT()
        assert got.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-12)
    saved = list(refs._RESOLVER)
    refs._RESOLVER.clear()
    try:
        with pytest.raises(ConfigError, match="not a reference calculator"):
            label(configs, "some-model", tmp_path / "b.xyz", progress=False)
        assert not (tmp_path / "b.xyz").exists()  # failed before any file was touched
    finally:
        refs._RESOLVER[:] = saved


def test_the_data_package_re_exports_every_public_name_lazily():
    """``from ase_surftune.data import X`` keeps working after the split into modules;
    the lazy table, ``__all__`` and the modules agree."""
    import ase_surftune.data as data

    assert data.__all__ == sorted(data.__all__)
    assert set(data.__all__) == {n for n in data._WHERE if not n.startswith("_")}
    for name, module in data._WHERE.items():
        mod = __import__(f"ase_surftune.data.{module}", fromlist=[name])
        assert getattr(data, name) is getattr(mod, name), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        data.nope  # noqa: B018


def test_fresh_and_resumed_labels_are_identical(tmp_path):
    """label() returns the labels as stored, so a resumed run sees bit-identical data
    (a resumed fine-tuning then finds the same dataset hash; `make demo` twice works)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from ase_surftune.data import dataset_hash, get_labels, label

    rng = np.random.default_rng(0)
    configs = []
    for k in range(3):
        a = bulk("Cu", "fcc", a=3.6, cubic=True)
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        configs.append(a)
    fresh = label(configs, EMT(), tmp_path / "l.xyz", progress=False)
    again = label(configs, EMT(), tmp_path / "l.xyz", progress=False)
    assert dataset_hash(fresh) == dataset_hash(again)
    for a, b in zip(fresh, again):
        ea, fa, sa = get_labels(a)
        eb, fb, sb = get_labels(b)
        assert ea == eb and np.array_equal(fa, fb)
        assert np.array_equal(a.positions, b.positions)
