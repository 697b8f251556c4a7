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

Modules (import from :mod:`ase_surftune.data`; the names below are re-exported lazily so
that ``import ase_surftune`` stays fast):

* :mod:`.labels`: label access, :class:`DataReport`;
* :mod:`.validate`: usable-data checks, minimum distance, supported elements;
* :mod:`.io`: reading and writing labelled files;
* :mod:`.splitting`: train/valid/test splits;
* :mod:`.hashing`: structure and data-set hashes;
* :mod:`.labelling`: the resumable :func:`label` workflow;
* :mod:`.references`: reference labellers (EMT, GPAW) and model-spec resolution;
* :mod:`.alignment`: per-element energy alignment between codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ase_surftune.core.lazy import lazy_exports

#: public name -> submodule that defines it
_WHERE: dict[str, str] = {
    "DEFAULT_GROUP": "labels", "DataReport": "labels", "OnError": "labels",
    "PathLike": "labels", "SkippedConfig": "labels", "free_atom_mask": "labels",
    "get_labels": "labels", "energy_weight": "labels", "ENERGY_WEIGHT_KEY": "labels",
    "MIN_INTERATOMIC_DISTANCE": "validate", "check_min_distance": "validate",
    "_closest_pair_below": "validate", "validate_config": "validate",
    "check_elements": "validate",
    "read_labelled": "io", "read_structures": "io", "write_labelled": "io",
    "source_file": "io",
    "Split": "splitting", "split": "splitting", "element_counts": "splitting",
    "split_by_group": "splitting", "TRAJECTORY_KEYS": "splitting",
    "trajectory_group": "splitting", "is_slab": "splitting",
    "split_by_trajectory": "splitting",
    "structure_hash": "hashing", "dataset_hash": "hashing",
    "label": "labelling",
    "REFERENCE_NAMES": "references", "get_reference_calculator": "references",
}

__all__ = [
    "DEFAULT_GROUP", "DataReport", "ENERGY_WEIGHT_KEY", "MIN_INTERATOMIC_DISTANCE",
    "OnError", "PathLike", "REFERENCE_NAMES", "SkippedConfig", "Split", "TRAJECTORY_KEYS",
    "check_elements", "check_min_distance", "dataset_hash", "element_counts",
    "energy_weight", "free_atom_mask", "get_labels", "get_reference_calculator", "is_slab",
    "label", "read_labelled", "read_structures", "source_file", "split", "split_by_group",
    "split_by_trajectory", "structure_hash", "trajectory_group", "validate_config",
    "write_labelled",
]

if TYPE_CHECKING:  # pragma: no cover
    from ase_surftune.data.hashing import dataset_hash, structure_hash
    from ase_surftune.data.io import (
        read_labelled,
        read_structures,
        source_file,
        write_labelled,
    )
    from ase_surftune.data.labelling import label
    from ase_surftune.data.labels import (
        DEFAULT_GROUP,
        ENERGY_WEIGHT_KEY,
        DataReport,
        OnError,
        PathLike,
        SkippedConfig,
        energy_weight,
        free_atom_mask,
        get_labels,
    )
    from ase_surftune.data.references import REFERENCE_NAMES, get_reference_calculator
    from ase_surftune.data.splitting import (
        TRAJECTORY_KEYS,
        Split,
        element_counts,
        is_slab,
        split,
        split_by_group,
        split_by_trajectory,
        trajectory_group,
    )
    from ase_surftune.data.validate import (
        MIN_INTERATOMIC_DISTANCE,
        check_elements,
        check_min_distance,
        validate_config,
    )


__getattr__, __dir__ = lazy_exports(
    __name__, globals(), {name: f"ase_surftune.data.{mod}" for name, mod in _WHERE.items()})
