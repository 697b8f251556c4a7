"""Safe storage of MACE models: a JSON construction config + a state dict, no pickle.

Bundles store a MACE model as its construction config (from mace's own
``extract_config_mace_model``, encoded as JSON with allow-listed mace classes and
gates) plus its state dict, and rebuild it with mace's constructors. Multi-head models,
including heads grown by ``MACEAdapter.add_head``, are in mace's native layout and are
described by mace's config directly; payloads of the old per-head block layout
(``"grown": true``) are rebuilt in the native layout (see
:mod:`~ase_surftune.models.backends.mace_heads`).
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ase_surftune.core.errors import BundleError
from ase_surftune.models.backends.mace_env import _import_mace
from ase_surftune.models.backends.mace_heads import grow_mace_heads

__all__ = ["mace_model_config", "build_mace_from_config", "MODEL_CLASSES"]

#: model classes a bundle may name (rebuilt with ``mace.modules.<name>(**config)``)
MODEL_CLASSES = ("ScaleShiftMACE", "MACE")


def _encode_config_value(key: str, value: Any) -> Any:
    """JSON form of one value of mace's ``extract_config_mace_model`` output."""
    from e3nn import o3
    from mace import modules

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        return {"__array__": arr.tolist(), "dtype": str(arr.dtype)}
    if isinstance(value, o3.Irreps):
        return {"__irreps__": str(value)}
    if isinstance(value, (list, tuple)):
        return [_encode_config_value(key, v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode_config_value(key, v) for k, v in value.items()}
    for table in ("interaction_classes", "readout_classes"):
        for name, klass in getattr(modules, table).items():
            if value is klass:
                return {"__mace_class__": name, "table": table}
    for name, fn in modules.gate_dict.items():
        if fn is not None and value is fn:
            return {"__gate__": name}
    raise BundleError(f"cannot store this MACE model safely: its config entry {key!r} is a "
                      f"{type(value).__name__} ({value!r}) that has no JSON form")


def _decode_config_value(value: Any) -> Any:
    from e3nn import o3
    from mace import modules

    if isinstance(value, list):
        return [_decode_config_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        return np.asarray(value["__array__"], dtype=np.dtype(str(value["dtype"])))
    if "__irreps__" in value:
        return o3.Irreps(str(value["__irreps__"]))
    if "__mace_class__" in value:
        table = {"interaction_classes": modules.interaction_classes,
                 "readout_classes": modules.readout_classes}.get(value.get("table"))
        if table is None or value["__mace_class__"] not in table:
            raise BundleError(f"unknown MACE class {value!r} in a bundle")
        return table[value["__mace_class__"]]
    if "__gate__" in value:
        if value["__gate__"] not in modules.gate_dict:
            raise BundleError(f"unknown MACE gate {value['__gate__']!r} in a bundle")
        return modules.gate_dict[value["__gate__"]]
    return {k: _decode_config_value(v) for k, v in value.items()}


def mace_model_config(model: torch.nn.Module) -> dict[str, Any]:
    """JSON-able description from which :func:`build_mace_from_config` rebuilds ``model``.

    ``{"model_class", "dtype", "config", "heads", "grown": False}``: the config comes
    from mace's ``extract_config_mace_model`` and describes every head (heads grown by
    ``MACEAdapter.add_head`` are native). ``"grown": True`` marks payloads of the old
    block layout, which :func:`build_mace_from_config` still reads.

    Raises:
        BundleError: a model class or config value without a safe JSON form.
    """
    _import_mace()
    from mace.tools.scripts_utils import extract_config_mace_model

    cls_name = type(model).__name__
    if cls_name not in MODEL_CLASSES:
        raise BundleError(f"cannot store a {cls_name} safely; supported MACE model classes: "
                          f"{list(MODEL_CLASSES)}")
    config = extract_config_mace_model(model) if cls_name == "ScaleShiftMACE" else None
    if config is None or "error" in config:
        raise BundleError(f"cannot store this {cls_name} safely: mace's "
                          f"extract_config_mace_model does not describe it")
    if config.get("cueq_config") is not None:
        raise BundleError("cannot store a cuequivariance MACE model safely; convert it to "
                          "e3nn first (mace.cli.convert_cueq_e3nn)")
    if any(getattr(m, "_surftune_blocks", False) for m in model.modules()):
        raise BundleError("this MACE model still has ase_surftune's old block readout "
                          "layout in memory; load it from its bundle to convert it")
    heads = list(getattr(model, "heads", None) or ["Default"])
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return {"model_class": cls_name, "dtype": dtype, "heads": heads, "grown": False,
            "config": {k: _encode_config_value(k, v) for k, v in config.items()}}


#: modules already built from a config, least recently used first (see below)
_TEMPLATES: OrderedDict[str, torch.nn.Module] = OrderedDict()
_TEMPLATES_LOCK = threading.Lock()
_N_TEMPLATES = 4


def build_mace_from_config(payload: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the (untrained) module described by :func:`mace_model_config`.

    Building a MACE model compiles its e3nn tensor products (TorchScript, opt_einsum):
    12 s for the tiny test model and 17 s for a MACE-MP-medium-like one on 2 CPU cores,
    against 1.2-1.5 s to unpickle one. So the first build of an architecture in a
    process is kept as a template (the last :data:`_N_TEMPLATES`) and later loads
    deep-copy it (~1 s); the caller then loads the weights.
    """
    key = json.dumps({k: v for k, v in payload.items() if k not in ("state_dict", "name")},
                     sort_keys=True)
    with _TEMPLATES_LOCK:
        template = _TEMPLATES.get(key)
        if template is None:
            template = _build_mace_from_config(payload)
            _TEMPLATES[key] = template
            while len(_TEMPLATES) > _N_TEMPLATES:
                _TEMPLATES.popitem(last=False)
        else:
            _TEMPLATES.move_to_end(key)
        return copy.deepcopy(template)


def _build_mace_from_config(payload: dict[str, Any]) -> torch.nn.Module:
    _import_mace()
    from mace import modules

    cls_name = payload.get("model_class")
    if cls_name not in MODEL_CLASSES:
        raise BundleError(f"unknown MACE model class {cls_name!r}; supported: "
                          f"{list(MODEL_CLASSES)}")
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(payload.get("dtype"))
    if dtype is None:
        raise BundleError(f"unknown MACE dtype {payload.get('dtype')!r}")
    config = {k: _decode_config_value(v) for k, v in payload["config"].items()}
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = getattr(modules, cls_name)(**config)
    finally:
        torch.set_default_dtype(prev)
    heads = list(payload["heads"])
    if payload.get("grown"):  # old block layout: its config is the first head's model
        for h in heads[1:]:
            grow_mace_heads(model, h, 0)  # native shapes; weights are migrated on load
    model.heads = heads
    return model
