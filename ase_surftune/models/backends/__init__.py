"""Backend adapters (one per uMLIP family).

Model specs (parsed once, in :mod:`ase_surftune.core.specs`) understood by
:func:`~ase_surftune.models.loading.load_model`:

=============================  ==============================================
``"chgnet"``                   bundled CHGNet 0.3.0 (the embedded default)
``"chgnet-0.2.0"``             bundled CHGNet 0.2.0 (also ``chgnet-0.3.0``,
                               ``chgnet-r2scan``, ``chgnet:0.2.0``)
``"mace:/path/file.model"``    a local MACE model file (multi-head files too),
                               or a bundle holding a MACE model
``"mace-mp-0-medium"``         MACE-MP foundation models via mace-torch's
                               downloader (see ``MACE_FOUNDATION_NAMES``)
``"m3gnet:/path/folder"``      a matgl M3GNet model folder (model.json, model.pt,
                               state.pt); needs the ``m3gnet`` extra (matgl)
``"m3gnet-mp-2021.2.8-pes"``   matgl's named M3GNet models through matgl's loader
                               (see ``M3GNET_NAMES``; also ``m3gnet-matpes-pbe``)
``"/path/model.stbundle"``     an ase_surftune model bundle
``"/path/file.model"``         a local MACE model file
=============================  ==============================================

MACE ``.model`` files, MACE-MP checkpoints and legacy (version-1) bundles are Python
pickles; they load only with ``trust=True`` (CLI ``--trust-pickle``). Bundles
(version 2) and the bundled CHGNet weights never need it.

``load_model``, ``adapter_class``, ``available_models`` and ``parse_dtype`` live in
:mod:`ase_surftune.models.loading` and :mod:`ase_surftune.models.registry`; the names
here are lazy re-exports for existing code (lazy, so that the adapters below the bundle
never import it).
"""

from __future__ import annotations

from ase_surftune.core.lazy import lazy_exports

__all__ = ["load_model", "adapter_class", "available_models", "parse_dtype"]

_REEXPORTS = {"load_model": "ase_surftune.models.loading",
              "adapter_class": "ase_surftune.models.registry",
              "available_models": "ase_surftune.models.registry",
              "parse_dtype": "ase_surftune.models.registry"}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _REEXPORTS)
