"""Labelled data: reading, validating, splitting, labelling and hashing configurations.

A *labelled configuration* is a plain :class:`ase.Atoms` whose labels live in an attached
:class:`~ase.calculators.singlepoint.SinglePointCalculator` and whose group lives in
``atoms.info["config_type"]``. Units and conventions are ASE's throughout:

* energy: total energy in eV;
* forces: eV/Å, shape ``(n_atoms, 3)`` (raw labels, *not* zeroed on constrained atoms);
* stress: eV/Å³, Voigt order ``(xx, yy, zz, yz, xz, xy)``, ASE sign convention
  (positive = tensile, ``σ = -virial / V``).

Every function that meets bad data either raises :class:`~ase_surftune.core.errors.DataError`
(or :class:`~ase_surftune.core.errors.UnsupportedElementError`) with a message naming the
offending file/frame, or, with ``on_error="skip"``, drops the configuration, logs a warning
and records the reason in a :class:`DataReport`. Nothing bad passes silently.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from ase_surftune.core.errors import DataError, UnsupportedElementError

__all__ = [
    "DEFAULT_GROUP",
    "DataReport",
    "SkippedConfig",
    "Split",
    "check_elements",
    "dataset_hash",
    "element_counts",
    "get_labels",
    "label",
    "read_labelled",
    "split",
    "split_by_group",
    "split_by_trajectory",
    "trajectory_group",
    "is_slab",
    "structure_hash",
    "validate_config",
    "write_labelled",
]

log = logging.getLogger(__name__)

#: Group name given to configurations that carry no group key.
DEFAULT_GROUP = "default"

#: Smallest interatomic distance (Å) accepted anywhere (training data, model inputs).
#: The shortest physical bond (H2) is 0.74 Å; closer pairs are overlapping atoms (a
#: duplicated atom, a unit error) on which models return NaN or meaningless numbers.
MIN_INTERATOMIC_DISTANCE = 0.5


def check_min_distance(atoms: Atoms, where: str, error: type[Exception] = DataError,
                       min_distance: float = MIN_INTERATOMIC_DISTANCE) -> None:
    """Raise ``error`` if two atoms (periodic images included) are closer than
    ``min_distance`` Å; the message names the pair and the distance."""
    if len(atoms) < 2 and not atoms.pbc.any():
        return
    pair = _closest_pair_below(atoms, min_distance)
    if pair is not None:
        i, j, d = pair
        raise error(f"{where}: atoms {i} and {j} are {d:.3f} Å apart (closer than the "
                    f"minimum {min_distance} Å): overlapping atoms; remove the duplicate or "
                    f"fix the positions (Å)")


def _closest_pair_below(atoms: Atoms, r: float) -> tuple[int, int, float] | None:
    """The closest pair (i, j, distance Å) of atoms closer than ``r``, images included.

    A KD-tree over the atoms plus the periodic images of those within ``r`` of a cell
    face (about 1 ms for 2000 atoms, where ``ase.neighborlist`` took ~0.5 s: it runs on
    every calculator call). Cells thinner than ``2 r`` fall back to ``neighbor_list``.
    """
    import itertools

    from scipy.spatial import cKDTree

    pbc = np.asarray(atoms.pbc, dtype=bool)
    n = len(atoms)
    if pbc.any():
        cell = atoms.cell.array
        if atoms.cell.rank < 3:
            heights = np.zeros(3)
        else:
            vol = abs(np.linalg.det(cell))
            heights = np.array([vol / np.linalg.norm(np.cross(cell[(k + 1) % 3],
                                                               cell[(k + 2) % 3]))
                                for k in range(3)])
        if np.any(heights[pbc] < 2 * r):
            from ase.neighborlist import neighbor_list

            i, j, d = neighbor_list("ijd", atoms, r, self_interaction=False)
            if not len(d):
                return None
            k = int(np.argmin(d))
            return int(i[k]), int(j[k]), float(d[k])
        frac = atoms.cell.scaled_positions(atoms.positions)
        frac[:, pbc] %= 1.0
        pos = frac @ cell
        low, high = frac * heights < r, (1.0 - frac) * heights < r
        pts, idx = [pos], [np.arange(n)]
        ranges = [(-1, 0, 1) if p else (0,) for p in pbc]
        for shift in itertools.product(*ranges):
            if shift == (0, 0, 0):
                continue
            m = np.ones(n, dtype=bool)
            for ax, s_ax in enumerate(shift):
                if s_ax == 1:
                    m &= low[:, ax]
                elif s_ax == -1:
                    m &= high[:, ax]
            if m.any():
                pts.append(pos[m] + np.asarray(shift, dtype=float) @ cell)
                idx.append(np.nonzero(m)[0])
        pts_a, idx_a = np.concatenate(pts), np.concatenate(idx)
    else:
        pts_a, idx_a = atoms.positions, np.arange(n)
    pairs = cKDTree(pts_a).query_pairs(r, output_type="ndarray")
    if not len(pairs):
        return None
    pairs = pairs[(pairs[:, 0] < n) | (pairs[:, 1] < n)]
    if not len(pairs):
        return None
    d = np.linalg.norm(pts_a[pairs[:, 0]] - pts_a[pairs[:, 1]], axis=1)
    k = int(np.argmin(d))
    return int(idx_a[pairs[k, 0]]), int(idx_a[pairs[k, 1]]), float(d[k])

OnError = Literal["raise", "skip"]
PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class SkippedConfig:
    """One configuration (or whole file, ``index=None``) that was dropped, and why."""

    source: str
    index: int | None
    reason: str

    def __str__(self) -> str:
        where = self.source if self.index is None else f"{self.source}[{self.index}]"
        return f"{where}: {self.reason}"


@dataclass
class DataReport:
    """What a reading/filtering step kept and what it skipped.

    Pass an instance as ``report=`` to :func:`read_labelled`, :func:`check_elements` or
    :func:`label`; the function appends to it. ``n_read`` counts frames seen, ``n_kept``
    frames returned.
    """

    n_read: int = 0
    n_kept: int = 0
    skipped: list[SkippedConfig] = field(default_factory=list)

    def add_skip(self, source: str, index: int | None, reason: str) -> None:
        """Record a skip and log it as a warning."""
        entry = SkippedConfig(str(source), index, reason)
        self.skipped.append(entry)
        log.warning("skipped %s", entry)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        """One line, then one line per skipped entry."""
        lines = [f"read {self.n_read} configuration(s), kept {self.n_kept}, "
                 f"skipped {self.n_skipped}"]
        lines += [f"  - {s}" for s in self.skipped]
        return "\n".join(lines)


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")


# --------------------------------------------------------------------------- labels


def _as_voigt(stress: Any, where: str) -> np.ndarray:
    """Stress as a Voigt 6-vector in eV/Å³ from 6, 9 or 3x3 input."""
    s = np.asarray(stress, dtype=float)
    if s.shape == (6,):
        return s.copy()
    if s.shape in ((9,), (3, 3)):
        return full_3x3_to_voigt_6_stress(s.reshape(3, 3))
    raise DataError(f"{where}: stress has shape {s.shape}; expected (6,), (9,) or (3, 3)")


def free_atom_mask(atoms: Atoms) -> np.ndarray:
    """(n,) bool: True for atoms not held by a ``FixAtoms`` constraint."""
    from ase.constraints import FixAtoms

    mask = np.ones(len(atoms), dtype=bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            mask[c.get_indices()] = False
    return mask


def get_labels(atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
    """The labels of one configuration.

    Returns:
        ``(energy, forces, stress)``: energy in eV, forces in eV/Å with shape
        ``(n_atoms, 3)`` (raw values from the calculator results, constraints not
        applied), stress in eV/Å³ as a Voigt 6-vector or ``None`` if absent.

    Raises:
        DataError: no calculator/results, no energy, or no forces.
    """
    results = getattr(atoms.calc, "results", None)
    if not results:
        raise DataError(f"{atoms.get_chemical_formula()}: no labels (no calculator results)")
    if "energy" in results:
        energy = float(np.asarray(results["energy"]).reshape(()))
    elif "free_energy" in results:
        energy = float(np.asarray(results["free_energy"]).reshape(()))
    else:
        raise DataError(f"{atoms.get_chemical_formula()}: no energy label")
    if results.get("forces") is None:
        raise DataError(f"{atoms.get_chemical_formula()}: no forces label")
    forces = np.array(results["forces"], dtype=float)
    stress = results.get("stress")
    stress_v = None if stress is None else _as_voigt(stress, atoms.get_chemical_formula())
    return energy, forces, stress_v


def _set_labels(atoms: Atoms, energy: float, forces: np.ndarray | None,
                stress: np.ndarray | None) -> None:
    """Attach labels as a fresh SinglePointCalculator (only the given ones)."""
    kwargs: dict[str, Any] = {"energy": float(energy)}
    if forces is not None:
        kwargs["forces"] = np.asarray(forces, dtype=float)
    if stress is not None:
        kwargs["stress"] = np.asarray(stress, dtype=float)
    atoms.calc = SinglePointCalculator(atoms, **kwargs)


def validate_config(atoms: Atoms, require_forces: bool = True, where: str | None = None) -> None:
    """Check that one configuration is usable as training data.

    Checks: at least one atom; finite positions (Å) and cell; no two atoms closer than
    :data:`MIN_INTERATOMIC_DISTANCE`; an energy label (eV) that is
    finite; forces (eV/Å) of shape ``(n_atoms, 3)`` and finite (required unless
    ``require_forces=False``); stress (eV/Å³), if present, of Voigt/3x3 shape and finite.

    Args:
        atoms: the configuration, labels in ``atoms.calc.results``.
        require_forces: fail when forces are missing.
        where: text naming the configuration in error messages (file and frame).

    Raises:
        DataError: with a message naming ``where`` and the problem.
    """
    where = where or atoms.get_chemical_formula() or "<empty Atoms>"
    n = len(atoms)
    if n == 0:
        raise DataError(f"{where}: configuration has no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise DataError(f"{where}: non-finite (NaN/inf) positions")
    if not np.all(np.isfinite(atoms.cell.array)):
        raise DataError(f"{where}: non-finite (NaN/inf) cell")
    check_min_distance(atoms, where)
    results = getattr(atoms.calc, "results", None) or {}
    e = results.get("energy", results.get("free_energy"))
    if e is None:
        raise DataError(f"{where}: missing energy label")
    e_arr = np.asarray(e, dtype=float)
    if e_arr.size != 1:
        raise DataError(f"{where}: energy label has {e_arr.size} values; expected one")
    if not np.isfinite(e_arr).all():
        raise DataError(f"{where}: energy label is {float(e_arr.reshape(()))} (NaN/inf)")
    forces = results.get("forces")
    if forces is None:
        if require_forces:
            raise DataError(f"{where}: missing forces label")
    else:
        f = np.asarray(forces, dtype=float)
        if f.shape != (n, 3):
            raise DataError(f"{where}: forces have shape {f.shape} but the structure has "
                            f"{n} atoms; expected ({n}, 3)")
        if not np.all(np.isfinite(f)):
            bad = int(np.count_nonzero(~np.isfinite(f).all(axis=1)))
            raise DataError(f"{where}: forces contain NaN/inf on {bad} atom(s)")
    stress = results.get("stress")
    if stress is not None:
        s = _as_voigt(stress, where)
        if not np.all(np.isfinite(s)):
            raise DataError(f"{where}: stress contains NaN/inf")


def _normalise(atoms: Atoms, where: str, energy_key: str | None, forces_key: str | None,
               stress_key: str | None, group_key: str) -> Atoms:
    """Copy of ``atoms`` with labels in a SinglePointCalculator and the group set.

    Labels named by a key are taken from ``atoms.info`` (energy, stress) or
    ``atoms.arrays`` / ``atoms.info`` (forces) and removed there; otherwise from the
    attached calculator's results.
    """
    results = dict(getattr(atoms.calc, "results", None) or {})
    out = atoms.copy()  # drops the calculator, keeps info/arrays/constraints
    if energy_key is not None:
        if energy_key not in out.info:
            raise DataError(f"{where}: energy key {energy_key!r} not in info "
                            f"(keys: {sorted(out.info)})")
        energy = out.info.pop(energy_key)
    else:
        energy = results.get("energy", results.get("free_energy"))
        if energy is None:
            raise DataError(f"{where}: missing energy label (no calculator energy; "
                            f"pass energy_key= if it is stored under another name)")
    if forces_key is not None:
        if forces_key in out.arrays:
            forces = out.arrays.pop(forces_key)
        elif forces_key in out.info:
            forces = out.info.pop(forces_key)
        else:
            raise DataError(f"{where}: missing forces: key {forces_key!r} is neither a "
                            f"per-atom array ({sorted(out.arrays)}) nor an info key")
    else:
        forces = results.get("forces")
    if stress_key is not None:
        stress = out.info.pop(stress_key, None)
        if stress is None:
            raise DataError(f"{where}: stress key {stress_key!r} not in info")
    else:
        stress = results.get("stress")

    e_arr = np.asarray(energy, dtype=float)
    if e_arr.size != 1:
        raise DataError(f"{where}: energy label has {e_arr.size} values; expected one")
    f_arr = None if forces is None else np.asarray(forces, dtype=float)
    if f_arr is not None and f_arr.ndim == 1 and f_arr.size == 3 * len(out):
        f_arr = f_arr.reshape(-1, 3)  # flat per-structure info entries
    s_arr = None if stress is None else _as_voigt(stress, where)
    _set_labels(out, float(e_arr.reshape(())), f_arr, s_arr)
    group = out.info.get(group_key)
    out.info["config_type"] = DEFAULT_GROUP if group is None else str(group)
    return out


# --------------------------------------------------------------------------- reading


def _iter_frames(path: Path, index: Any, fmt: str | None) -> Iterator[Atoms]:
    """Frames of one file; parse errors surface as DataError naming the file."""
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    try:
        yield from ase.io.iread(str(path), index=index, format=fmt)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - ase.io raises many unrelated types
        hint = ("it is binary, not text" if isinstance(exc, UnicodeDecodeError)
                else f"{type(exc).__name__}: {exc}")
        raise DataError(f"{path}: cannot parse ({hint}); give a structure file ase.io "
                        f"reads (extxyz, traj, POSCAR, CIF...) or name its format") from exc


def read_structures(path: PathLike, index: Any = ":", format: str | None = None
                    ) -> list[Atoms]:
    """Unlabelled structures from any file :mod:`ase.io` reads.

    Raises:
        DataError: missing, empty, binary or unparsable file (names the file and why).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"structure file not found: {str(p)!r}")
    frames = list(_iter_frames(p, index, format))
    if not frames:
        raise DataError(f"{p}: no structures read (index={index!r})")
    return frames


def read_labelled(path_or_paths: PathLike | Sequence[PathLike], index: Any = ":",
                  energy_key: str | None = None, forces_key: str | None = None,
                  stress_key: str | None = None, group_key: str = "config_type",
                  on_error: OnError = "raise", require_forces: bool = True,
                  format: str | None = None, report: DataReport | None = None
                  ) -> list[Atoms]:
    """Read labelled configurations from any file(s) :mod:`ase.io` reads.

    Works for extxyz, ASE ``.traj``/``.db``, VASP OUTCAR/vasprun.xml and more; the
    format is guessed from the file unless ``format`` is given. Labels come from the
    attached single-point calculator (extxyz ``energy``/``forces``/``stress``, traj,
    OUTCAR) or, when a key is given, from ``atoms.info[energy_key]`` (eV),
    ``atoms.arrays[forces_key]`` (eV/Å) and ``atoms.info[stress_key]`` (eV/Å³, ASE sign
    convention, Voigt 6, flat 9 or 3x3). Constraints (e.g. OC20 ``FixAtoms``) are kept.

    Returns copies whose labels sit in a fresh SinglePointCalculator (energy, forces,
    stress only), with ``info["config_type"]`` set from ``info[group_key]`` (or
    ``"default"``) and ``info["source"] = "file@k"`` (``k`` counts the frames selected by
    ``index``, so it is the frame number in the file for the default ``":"``).

    Args:
        path_or_paths: a file or a list of files.
        index: ase.io index per file (``":"`` = all frames).
        energy_key, forces_key, stress_key: names of the labels when not in a calculator.
        group_key: info key holding the group (copied into ``info["config_type"]``).
        on_error: ``"raise"`` on the first bad frame/file, or ``"skip"`` it, log a warning
            and record it in ``report``.
        require_forces: treat missing forces as bad data.
        format: ase.io format name, if it cannot be guessed.
        report: a :class:`DataReport` to append counts and skips to.

    Raises:
        DataError: a bad frame/file with ``on_error="raise"``; or, in any mode, when no
            configuration at all survives.
    """
    _check_on_error(on_error)
    report = report if report is not None else DataReport()
    paths = ([path_or_paths] if isinstance(path_or_paths, (str, os.PathLike))
             else list(path_or_paths))
    if not paths:
        raise DataError("read_labelled: no input files given")
    out: list[Atoms] = []
    for p in map(Path, paths):
        n_before = len(out)
        i = -1
        try:
            for i, atoms in enumerate(_iter_frames(p, index, format)):
                report.n_read += 1
                where = f"{p}@{i}"
                try:
                    conf = _normalise(atoms, where, energy_key, forces_key, stress_key,
                                      group_key)
                    validate_config(conf, require_forces=require_forces, where=where)
                except DataError as exc:
                    if on_error == "raise":
                        raise
                    report.add_skip(str(p), i, str(exc).removeprefix(f"{where}: "))
                    continue
                conf.info["source"] = where
                out.append(conf)
        except DataError as exc:
            if on_error == "raise":
                raise
            # File-level failure (empty, unparsable): earlier frames of it are kept.
            report.add_skip(str(p), None if i < 0 else i + 1, str(exc))
        if len(out) == n_before and on_error == "raise":
            raise DataError(f"{p}: no configurations read (index={index!r})")
    report.n_kept += len(out)
    if not out:
        raise DataError(f"no labelled configurations in {[str(p) for p in paths]}"
                        + (f"; skipped: {[str(s) for s in report.skipped]}"
                           if report.skipped else ""))
    return out


def write_labelled(configs: Iterable[Atoms], path: PathLike, format: str | None = None) -> None:
    """Write labelled configurations (energy eV, forces eV/Å, stress eV/Å³, info).

    The format is guessed from the extension (``.xyz``/``.extxyz`` → extxyz); the file
    reads back with :func:`read_labelled` and default keys.
    """
    configs = list(configs)
    fmt = format or _guess_format(path)
    ase.io.write(str(path), configs, format=fmt)


def _guess_format(path: PathLike) -> str | None:
    suffix = Path(path).suffix.lower()
    return "extxyz" if suffix in (".xyz", ".extxyz", "") else None


# --------------------------------------------------------------------------- elements


def check_elements(configs: Sequence[Atoms], allowed_symbols: Iterable[str],
                   model_name: str = "the model", on_error: OnError = "raise",
                   report: DataReport | None = None) -> list[Atoms]:
    """Ensure every configuration has only elements the model supports.

    Returns the configurations that pass (all of them with ``on_error="raise"``).

    Raises:
        UnsupportedElementError: naming the missing elements, how many configurations
            contain them, and the model (``on_error="raise"``).
    """
    _check_on_error(on_error)
    allowed = set(allowed_symbols)
    bad: dict[str, int] = {}
    kept: list[Atoms] = []
    for i, atoms in enumerate(configs):
        missing = sorted(set(atoms.get_chemical_symbols()) - allowed)
        if not missing:
            kept.append(atoms)
            continue
        for s in missing:
            bad[s] = bad.get(s, 0) + 1
        if report is not None and on_error == "skip":
            report.add_skip(str(atoms.info.get("source", f"configs[{i}]")), i,
                            f"element(s) {missing} not supported by {model_name}")
        elif on_error == "skip":
            log.warning("skipped configs[%d]: element(s) %s not supported by %s",
                        i, missing, model_name)
    if bad and on_error == "raise":
        detail = ", ".join(f"{s} (in {n} configuration(s))" for s, n in sorted(bad.items()))
        raise UnsupportedElementError(f"{model_name} does not support element(s): {detail}")
    return kept


# --------------------------------------------------------------------------- splitting


class Split(NamedTuple):
    """Train/validation/test lists of configurations."""

    train: list[Atoms]
    valid: list[Atoms]
    test: list[Atoms]


def split(configs: Sequence[Atoms], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
          seed: int = 0, stratify: str | None = None) -> Split:
    """Random train/valid/test split by fraction, reproducible for a given ``seed``.

    Fractions must be non-negative and sum to 1. Validation and test sizes are
    ``round(fraction * n)``; training gets the rest. Order inside each part follows the
    input order.

    Args:
        stratify: an ``atoms.info`` key (e.g. ``"config_type"``): split each group by the
            fractions on its own, so that every kind of structure is represented in each
            part as far as its size allows (a small data set split at random can put all
            slabs in training and all defects in the test set).
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise DataError(f"split fractions must be 3 non-negative numbers summing to 1, "
                        f"got {tuple(fractions)}")
    configs = list(configs)
    n = len(configs)
    if n == 0:
        raise DataError("cannot split an empty list of configurations")
    rng = np.random.default_rng(seed)
    if stratify is None:
        groups = [np.arange(n)]
    else:
        by_key: dict[str, list[int]] = {}
        for i, a in enumerate(configs):
            by_key.setdefault(_group(a, stratify), []).append(i)
        groups = [np.asarray(v) for v in by_key.values()]
    train_idx, valid_idx, test_idx = [], [], []
    for members in groups:
        perm = members[rng.permutation(len(members))]
        n_valid = int(round(fr[1] * len(members)))
        n_test = min(int(round(fr[2] * len(members))), len(members) - n_valid)
        valid_idx += perm[:n_valid].tolist()
        test_idx += perm[n_valid:n_valid + n_test].tolist()
        train_idx += perm[n_valid + n_test:].tolist()
    if fr[0] > 0 and len(train_idx) == 0:
        raise DataError(f"split of {n} configuration(s) with fractions {tuple(fractions)} "
                        f"leaves the training set empty")
    return Split([configs[i] for i in sorted(train_idx)], [configs[i] for i in sorted(valid_idx)],
                 [configs[i] for i in sorted(test_idx)])


def element_counts(configs: Iterable[Atoms]) -> dict[str, int]:
    """``{symbol: number of atoms}`` over ``configs`` (JSON-able; symbols sorted by Z)."""
    from ase.data import atomic_numbers

    counts: dict[str, int] = {}
    for atoms in configs:
        for s in atoms.get_chemical_symbols():
            counts[s] = counts.get(s, 0) + 1
    return {s: counts[s] for s in sorted(counts, key=lambda x: atomic_numbers[x])}


def _group(atoms: Atoms, group_key: str) -> str:
    return str(atoms.info.get(group_key, DEFAULT_GROUP))


def split_by_group(configs: Sequence[Atoms], holdout: Sequence[str] = ("Surfaces/*",),
                   valid_fraction: float = 0.1, seed: int = 0,
                   group_key: str = "config_type") -> Split:
    """Hold out whole groups as the test set; split the rest randomly into train/valid.

    Args:
        holdout: :mod:`fnmatch` patterns on the group (e.g. ``"Surfaces/*"``); a config
            whose ``info[group_key]`` matches any pattern goes to ``test``.
        valid_fraction: fraction of the remaining configs used for validation.

    Raises:
        DataError: a pattern matches no group (a typo would silently hold out nothing),
            or nothing is left to train on.
    """
    configs = list(configs)
    if isinstance(holdout, str):
        holdout = [holdout]
    groups = sorted({_group(a, group_key) for a in configs})
    for pat in holdout:
        if not any(fnmatch.fnmatchcase(g, pat) for g in groups):
            raise DataError(f"holdout pattern {pat!r} matches no group; groups are {groups}")
    is_test = [any(fnmatch.fnmatchcase(_group(a, group_key), p) for p in holdout)
               for a in configs]
    test = [a for a, t in zip(configs, is_test) if t]
    rest = [a for a, t in zip(configs, is_test) if not t]
    if not rest:
        raise DataError(f"holdout {list(holdout)} matches every configuration; "
                        f"nothing left to train on")
    parts = split(rest, (1.0 - valid_fraction, valid_fraction, 0.0), seed=seed)
    return Split(parts.train, parts.valid, test)


#: info keys that name the relaxation/trajectory a frame belongs to (first found wins)
TRAJECTORY_KEYS = ("trajectory", "traj_id", "system_id", "sid")


def trajectory_group(atoms: Atoms, split_key: str | None = None) -> str | None:
    """The relaxation/trajectory a frame belongs to, or None when nothing says so.

    ``info[split_key]`` when a key is given (e.g. ``"config_type"`` when each
    config_type is one relaxation); else the first of :data:`TRAJECTORY_KEYS` present;
    else the source file of frames read by :func:`read_labelled` (``info["source"] =
    "file@k"``: one file, one trajectory, as OC20 ships them).
    """
    if split_key is not None:
        v = atoms.info.get(split_key)
        return None if v is None else str(v)
    for k in TRAJECTORY_KEYS:
        if k in atoms.info:
            return str(atoms.info[k])
    src = atoms.info.get("source")
    return str(src).rsplit("@", 1)[0] if src else None


def is_slab(atoms: Atoms, min_vacuum: float = 4.0) -> bool:
    """True when the structure has a vacuum gap (≥ ``min_vacuum`` Å, or no periodicity)
    along exactly one cell direction: a slab, i.e. a surface model."""
    if atoms.cell.rank < 3 or len(atoms) == 0:
        return False
    cell = atoms.cell.array
    vol = abs(np.linalg.det(cell))
    frac = atoms.get_scaled_positions(wrap=True)
    gaps = 0
    for i in range(3):
        if not atoms.pbc[i]:
            gaps += 1
            continue
        height = vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
        x = np.sort(frac[:, i])
        gap = max(np.max(np.diff(x)) if len(x) > 1 else 0.0, 1.0 - x[-1] + x[0])
        gaps += gap * height >= min_vacuum
    return gaps == 1


def split_by_trajectory(configs: Sequence[Atoms], valid_fraction: float, seed: int = 0,
                        split_key: str | None = None, prefer_slabs: bool = True
                        ) -> tuple[Split, dict[str, Any]]:
    """Train/valid split that never puts frames of one trajectory on both sides.

    Whole groups (:func:`trajectory_group`) go to validation, in a seeded random order,
    until about ``valid_fraction`` of the frames are there (at least one group, never all).
    With ``prefer_slabs`` and at least two groups holding slabs, one of them is put in
    validation first, so early stopping can watch surfaces. Frames without a group
    each form their own group; when *no* frame has one, or there is a single group,
    the split falls back to frames (and the returned info says so).

    Returns:
        the split and ``{"mode": "trajectory" | "frames", "key": ..., "n_groups": ...,
        "valid_groups": [...], "reason": ...}``.
    """
    configs = list(configs)
    groups: dict[str, list[int]] = {}
    n_named = 0
    for i, a in enumerate(configs):
        g = trajectory_group(a, split_key)
        n_named += g is not None
        groups.setdefault(g if g is not None else f"#frame{i}", []).append(i)
    key = split_key or "trajectory/source file"
    if n_named == 0 or len(groups) < 2:
        why = ("no frame names its trajectory (set split_key, or info['trajectory'])"
               if n_named == 0 else f"all frames belong to one {key}")
        parts = split(configs, (1 - valid_fraction, valid_fraction, 0.0), seed=seed)
        return parts, {"mode": "frames", "key": key, "n_groups": len(groups),
                       "valid_groups": [], "reason": why}
    rng = np.random.default_rng(seed)
    names = list(groups)
    order = [names[i] for i in rng.permutation(len(names))]
    if prefer_slabs:
        slabby = [g for g in order if any(is_slab(configs[i]) for i in groups[g])]
        if len(slabby) >= 2:
            order.remove(slabby[0])
            order.insert(0, slabby[0])
    target = valid_fraction * len(configs)
    valid_groups: list[str] = []
    n_valid = 0
    for g in order:
        if len(valid_groups) == len(names) - 1:  # something always trains
            break
        if n_valid + len(groups[g]) <= max(1.5 * target, 1.0):
            valid_groups.append(g)
            n_valid += len(groups[g])
        if n_valid >= target:
            break
    if not valid_groups:  # every group is larger than the wanted validation share
        valid_groups = [min(order, key=lambda g: len(groups[g]))]
    is_valid = np.zeros(len(configs), dtype=bool)
    for g in valid_groups:
        is_valid[groups[g]] = True
    parts = Split([a for a, v in zip(configs, is_valid) if not v],
                  [a for a, v in zip(configs, is_valid) if v], [])
    return parts, {"mode": "trajectory", "key": key, "n_groups": len(groups),
                   "valid_groups": [g for g in valid_groups if not g.startswith("#frame")],
                   "reason": None}


# --------------------------------------------------------------------------- hashing


def _hash_arrays(h: Any, *arrays: Any) -> None:
    for a in arrays:
        arr = np.ascontiguousarray(np.asarray(a))
        h.update(str(arr.dtype.str).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())


def structure_hash(atoms: Atoms) -> str:
    """sha256 hex digest of atomic numbers, positions (Å), cell (Å) and pbc (no labels)."""
    h = hashlib.sha256()
    _hash_arrays(h, atoms.numbers.astype(np.int64), atoms.positions.astype(np.float64),
                 atoms.cell.array.astype(np.float64), atoms.pbc.astype(bool))
    return h.hexdigest()


def dataset_hash(configs: Iterable[Atoms]) -> str:
    """sha256 over every structure and its labels, in order (for bundle provenance).

    Covers atomic numbers, positions, cell, pbc, energy, forces and stress (if any);
    ignores ``info`` (groups, sources) and constraints.
    """
    h = hashlib.sha256()
    n = 0
    for atoms in configs:
        n += 1
        _hash_arrays(h, atoms.numbers.astype(np.int64), atoms.positions.astype(np.float64),
                     atoms.cell.array.astype(np.float64), atoms.pbc.astype(bool))
        results = getattr(atoms.calc, "results", None) or {}
        for key in ("energy", "forces", "stress"):
            if results.get(key) is not None:
                h.update(key.encode())
                _hash_arrays(h, np.asarray(results[key], dtype=np.float64))
    h.update(f"n={n}".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- labelling


def _read_done(path: Path, *, repair: bool = True,
               report: DataReport | None = None) -> list[Atoms]:
    """Readable frames of a partly written extxyz label file.

    Only a torn *final* frame (a write cut off by a kill: too few lines or no final
    newline) is cut from the file (``repair=True``). A damaged frame in the middle is
    reported (``report``, log warning) and skipped; the valid frames after it are kept and
    the file is not rewritten, so no label is ever lost. Frames are found by their atom
    count line; where that line itself is garbage, the reader resynchronises on the next
    line that starts a readable frame.

    Raises:
        DataError: the file is not text (e.g. binary bytes): refusing to touch it.
    """
    if not path.exists() or path.stat().st_size == 0:
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text extxyz label file ({exc.reason} at byte "
                        f"{exc.start}); refusing to append to it: use another output path")
    frames: list[Atoms] = []
    lines = text.splitlines(keepends=True)
    offsets = np.cumsum([0] + [len(x) for x in lines])
    i, torn_at = 0, None
    while i < len(lines):
        try:
            nat = int(lines[i].strip())
        except ValueError:
            nat = -1
        block = lines[i:i + nat + 2] if nat >= 0 else []
        if nat >= 0 and (len(block) < nat + 2 or not block[-1].endswith("\n")):
            if i + nat + 2 >= len(lines):  # runs to the end of the file: a torn last frame
                torn_at = i
                break
        atoms = None
        if nat >= 0 and len(block) == nat + 2:
            try:
                atoms = ase.io.read(io.StringIO("".join(block)), format="extxyz")
            except Exception:  # noqa: BLE001 - a damaged frame is skipped, not fatal
                atoms = None
        if atoms is not None:
            frames.append(atoms)
            i += nat + 2
            continue
        # a damaged frame: skip to the next line that starts a readable frame
        j = i + 1
        while j < len(lines) and not _starts_frame(lines, j):
            j += 1
        msg = f"unreadable frame at lines {i + 1}-{j} skipped (kept the frames after it)"
        if j >= len(lines) and not text.endswith("\n"):
            torn_at = i
            break
        if report is not None:
            report.add_skip(str(path), len(frames), msg)
        else:
            log.warning("%s: %s", path, msg)
        i = j
    if torn_at is not None and repair:
        log.warning("%s: cutting a torn final frame (line %d on) after %d frame(s)", path,
                    torn_at + 1, len(frames))
        with open(path, "r+b") as fh:
            fh.truncate(len(text[:int(offsets[torn_at])].encode("utf-8")))
            fh.flush()
            os.fsync(fh.fileno())
    return frames


def _starts_frame(lines: list[str], i: int) -> bool:
    """True if ``lines[i]`` is an atom count followed by a readable extxyz frame."""
    try:
        nat = int(lines[i].strip())
    except ValueError:
        return False
    block = lines[i:i + nat + 2]
    if nat < 0 or len(block) < nat + 2:
        return False
    try:
        ase.io.read(io.StringIO("".join(block)), format="extxyz")
    except Exception:  # noqa: BLE001
        return False
    return True


def _compute(atoms: Atoms, calc: Calculator, properties: Sequence[str]) -> Atoms:
    """A copy of ``atoms`` labelled by ``calc`` (energy, forces, stress where possible)."""
    work = atoms.copy()
    work.calc = calc
    energy = work.get_potential_energy()
    forces = work.get_forces(apply_constraint=False) if "forces" in properties else None
    stress = None
    if "stress" in properties and all(work.pbc):
        try:
            stress = work.get_stress(voigt=True, apply_constraint=False)
        except PropertyNotImplementedError:
            stress = None
    out = atoms.copy()
    _set_labels(out, energy, forces, stress)
    return out


def label(configs: Sequence[Atoms], calc: Calculator | str, out_path: PathLike,
          resume: bool = True, progress: bool = True,
          properties: Sequence[str] = ("energy", "forces", "stress"),
          on_error: OnError = "raise", report: DataReport | None = None,
          executor: Any = None) -> list[Atoms]:
    """Label structures with any ASE calculator, appending each result to an extxyz file.

    Each labelled frame is written, flushed and fsync'ed as soon as it is computed, with
    ``info["label_index"]`` (position in ``configs``) and ``info["structure_hash"]``
    (:func:`structure_hash` of the input structure). With ``resume=True`` an existing
    ``out_path`` is read first and every input whose structure hash is already there is
    reused, not recomputed; an incomplete last frame (a write cut off by an interruption)
    is discarded. At the end the file holds one frame per labelled input, in input order.

    Stress (eV/Å³, Voigt) is computed only for fully periodic cells and when the
    calculator implements it. Forces (eV/Å) are raw (constraints not applied).

    Args:
        configs: structures to label (any labels they carry are ignored).
        calc: an ASE calculator (EMT, GPAW, VASP, ...), reused for every structure, or a
            spec string (``"emt"``, ``"gpaw"``, a model spec) resolved in each worker.
        out_path: extxyz file to write.
        resume: reuse matching frames already in ``out_path`` (a torn final frame is cut,
            a damaged frame in the middle is reported and skipped, never the frames after
            it); ``False`` starts afresh, moving an existing file aside to
            ``NAME.old-<time>`` (labels may have cost hours).
        progress: show a tqdm progress bar.
        properties: which of energy/forces/stress to compute.
        on_error: ``"raise"`` when the calculator fails, or ``"skip"`` the structure
            (logged, recorded in ``report``; it is retried on the next resume).
        report: a :class:`DataReport` to append counts and skips to.
        executor: ``None`` (this process), ``"process[:N]"`` or any
            ``concurrent.futures.Executor`` (Dask...; see :mod:`ase_surftune.core.parallel`).
            Results are still written one by one as they complete, so an interrupted
            parallel run resumes too. The calculator (or spec) must pickle.

    Returns:
        Copies of the inputs (exact positions, constraints kept) with labels in a
        SinglePointCalculator, in input order (skipped ones omitted).

    The label file is locked (``.NAME.lock``, fcntl) while labelling: a second
    ``label`` on the same file gets :class:`~ase_surftune.core.errors.LockedError`.

    Raises:
        DataError: the calculator fails (``on_error="raise"``), or ``out_path`` holds
            frames that match none of ``configs`` (refusing to overwrite labels that may
            have been expensive; use another path or ``resume=False``).
    """
    from ase_surftune.core.io import clean_orphan_temps, exclusive_lock

    _check_on_error(on_error)
    report = report if report is not None else DataReport()
    path = Path(out_path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a file name for the labels (e.g. "
                        f"{path / 'labels.xyz'})")
    from ase_surftune.core.parallel import check_executor

    check_executor(executor)
    configs = list(configs)
    for i, a in enumerate(configs):  # DFT on overlapping atoms wastes hours, then fails
        if not np.all(np.isfinite(a.positions)):
            raise DataError(f"configs[{i}] ({a.get_chemical_formula()}): NaN/inf positions; "
                            f"fix or remove it")
        check_min_distance(a, f"configs[{i}] ({a.get_chemical_formula()})")
    if isinstance(calc, str) and executor is None:
        _resolve_calc(calc)  # an unknown spec fails here, before any file is touched
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(f".{path.name}.lock"), f"label file {str(path)!r}"):
        clean_orphan_temps(path.parent, names=[path.name])
        return _label_locked(configs, calc, path, resume, progress, properties,
                             on_error, report, executor)


def _label_locked(configs: list[Atoms], calc: Calculator | str, path: Path, resume: bool,
                  progress: bool, properties: Sequence[str], on_error: OnError,
                  report: DataReport, executor: Any) -> list[Atoms]:
    """:func:`label` while holding the label file's lock."""
    hashes = [structure_hash(a) for a in configs]
    done: dict[int, Atoms] = {}
    if resume:
        by_hash = {f.info.get("structure_hash"): f for f in _read_done(path, report=report)}
        foreign = set(by_hash) - set(hashes)
        if foreign:
            raise DataError(f"{path}: holds {len(foreign)} frame(s) that match none of the "
                            f"structures to label; use another out_path or resume=False")
        for i, h in enumerate(hashes):
            if h in by_hash:
                done[i] = _relabel_copy(configs[i], by_hash[h], i, h)
        if done:
            log.info("%s: resuming, %d of %d already labelled", path, len(done), len(configs))
    elif path.exists() and path.stat().st_size > 0:  # --restart: keep the old labels
        from ase_surftune.core.io import move_aside

        old = move_aside(path)
        log.warning("%s: restarting; the previous labels are kept in %s", path, old)
    todo = [i for i in range(len(configs)) if i not in done]
    iterator: Iterable[tuple[int, Atoms | None, BaseException | None]] = _label_results(
        configs, todo, calc, tuple(properties), executor)
    if progress and todo:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(todo), desc=f"labelling {path.name}",
                        unit="structure")
    with open(path, "a") as fh:
        for i, out, exc in iterator:
            if exc is not None:
                if on_error == "raise":
                    raise DataError(f"labelling configs[{i}] "
                                    f"({configs[i].get_chemical_formula()}) failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
                report.add_skip(f"configs[{i}]", i, f"calculator failed: {exc}")
                continue
            out.info["label_index"] = i
            out.info["structure_hash"] = hashes[i]
            out.info.setdefault("config_type", DEFAULT_GROUP)
            ase.io.write(fh, out, format="extxyz")
            fh.flush()
            os.fsync(fh.fileno())
            done[i] = out
    report.n_read += len(configs)
    report.n_kept += len(done)
    ordered = [done[i] for i in sorted(done)]
    file_order = [f.info.get("label_index") for f in _read_done(path, repair=False)]
    if file_order != sorted(done):
        _atomic_write(path, ordered)  # restore input order (e.g. after skips/resume)
    return ordered


_CALC_CACHE: dict[str, Any] = {}


def _resolve_calc(calc: Any) -> Any:
    """A calculator instance for ``calc`` (spec strings are built once per process)."""
    if not isinstance(calc, str):
        return calc
    if calc not in _CALC_CACHE:
        from ase_surftune.models.references import get_calculator

        _CALC_CACHE[calc] = get_calculator(calc)
    return _CALC_CACHE[calc]


def _label_task(atoms: Atoms, calc: Any, properties: tuple[str, ...]) -> Atoms:
    """Label one structure (module level so that it pickles to executor workers)."""
    return _compute(atoms, _resolve_calc(calc), properties)


def _label_results(configs: Sequence[Atoms], todo: Sequence[int], calc: Any,
                   properties: tuple[str, ...], executor: Any
                   ) -> Iterator[tuple[int, Atoms | None, BaseException | None]]:
    """Yield ``(index, labelled, error)`` as structures finish (in order when inline)."""
    if executor is None:
        for i in todo:
            try:
                yield i, _label_task(configs[i], calc, properties), None
            except Exception as exc:  # noqa: BLE001 - any calculator failure
                yield i, None, exc
        return
    from concurrent.futures import as_completed

    from ase_surftune.core.parallel import get_executor

    ex, owned = get_executor(executor)
    try:
        futures = {ex.submit(_label_task, configs[i], calc, properties): i for i in todo}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result(), None
            except Exception as exc:  # noqa: BLE001 - reported like a serial failure
                yield futures[fut], None, exc
    finally:
        if owned:
            ex.shutdown(wait=True, cancel_futures=True)


def _relabel_copy(atoms: Atoms, frame: Atoms, index: int, h: str) -> Atoms:
    """``atoms`` (exact input) with the labels of an already written ``frame``."""
    energy, forces, stress = get_labels(frame)
    out = atoms.copy()
    _set_labels(out, energy, forces, stress)
    out.info["label_index"] = index
    out.info["structure_hash"] = h
    out.info.setdefault("config_type", frame.info.get("config_type", DEFAULT_GROUP))
    return out


def _atomic_write(path: Path, configs: Sequence[Atoms]) -> None:
    from ase_surftune.core.io import atomic_writer

    with atomic_writer(path, "w") as fh:
        ase.io.write(fh, list(configs), format="extxyz")
