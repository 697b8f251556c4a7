"""Loading matgl M3GNet potentials: local folders, named models via matgl's hub loader,
and the allow-list check of the classes a ``model.pt`` names (see
:mod:`ase_surftune.models.backends.m3gnet`)."""


import functools
import json
import os
from pathlib import Path
from typing import Any

import torch

from ase_surftune.core.errors import ModelLoadError
from ase_surftune.core.specs import M3GNET_NAMES

FOUNDATION_HEAD = "foundation"
#: seconds allowed to reach the model hub before declaring the machine offline
CONNECT_TIMEOUT_S = 3.0
_HUB_HOST = "huggingface.co"
#: matgl's download cache (``matgl.config.MATGL_CACHE``), known without importing matgl:
#: ``import matgl`` pulls lightning and takes 10-60 s on a busy 2-core machine, too long
#: for the offline failure of a named model
MATGL_CACHE = Path.home() / ".cache" / "matgl"
_MODEL_FILES = ("model.json", "model.pt", "state.pt")
#: Potential constructor options kept in a payload (tensors travel in the state dict)
_POTENTIAL_OPTIONS = ("calc_forces", "calc_stresses", "calc_hessian", "calc_magmom",
                      "calc_charge", "calc_repuls", "zbl_trainable")


@functools.lru_cache(maxsize=1)
def _import_matgl() -> Any:
    try:
        import matgl
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelLoadError(
            "The M3GNet backend needs matgl (Python >= 3.11): pip install "
            "'ase_surftune[m3gnet]'") from exc
    return matgl


def _hub_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    from ase_surftune.models.backends.mace import (
        _host_reachable,  # plain socket check, no mace import
    )

    return _host_reachable(f"https://{_HUB_HOST}", timeout=timeout)


def _cached_model_files(repo_id: str) -> dict[str, Path] | None:
    """The three files of ``repo_id`` in matgl's hub cache, or None if any is missing."""
    from huggingface_hub import try_to_load_from_cache

    paths = {}
    for fn in _MODEL_FILES:
        hit = try_to_load_from_cache(repo_id, fn, cache_dir=str(MATGL_CACHE))
        if not isinstance(hit, str):
            return None
        paths[fn] = Path(hit)
    return paths


def load_potential(source: str | Path) -> torch.nn.Module:
    """A matgl M3GNet ``Potential`` from a folder or a name in :data:`M3GNET_NAMES`.

    Raises:
        ModelLoadError: missing folder/files, not an M3GNet PES model, unknown name, or
            a named model that is not cached while the hub is unreachable.
    """
    name = str(source)
    low = name.lower()
    if low in M3GNET_NAMES:
        repo = f"materialyze/{M3GNET_NAMES[low]}"
        files = _cached_model_files(repo)
        if files is None and not _hub_reachable():
            raise ModelLoadError(
                f"M3GNet model {name!r} is not cached and the model hub ({_HUB_HOST}) "
                f"cannot be reached (offline?). Copy matgl's folder "
                f"pretrained_models/{M3GNET_NAMES[low]} (model.json, model.pt, state.pt) to "
                f"this machine and pass it instead: model='m3gnet:/path/to/folder' "
                f"(CLI: --model m3gnet:/path/to/folder)")
        target: Any = files if files is not None else M3GNET_NAMES[low]
        where = f"{name!r}"
    else:
        path = Path(name)
        missing = [fn for fn in _MODEL_FILES if not (path / fn).is_file()]
        if missing:
            raise ModelLoadError(
                f"M3GNet model folder {name!r} is missing {missing}: a matgl model folder "
                f"holds {list(_MODEL_FILES)}; named models: {sorted(M3GNET_NAMES)}")
        target = {fn: path / fn for fn in _MODEL_FILES}
        where = f"folder {name!r}"
    matgl = _import_matgl()
    from matgl.apps.pes import Potential

    try:
        if isinstance(target, dict):
            with open(target["model.json"]) as fh:
                kind = json.load(fh).get("@class")
            if kind != "Potential":
                raise ModelLoadError(f"M3GNet {where} holds a matgl {kind!r}, not a "
                                     f"potential-energy-surface model (Potential)")
            _check_matgl_classes(target["model.pt"], where)
            pot = Potential.load(target)
        else:
            pot = matgl.load_model(target)
    except ModelLoadError:
        raise
    except Exception as exc:  # matgl wraps everything in ValueError/RuntimeError
        raise ModelLoadError(f"Could not load M3GNet {where}: {exc}") from exc
    if not isinstance(pot, Potential) or type(pot.model).__name__ != "M3GNet":
        raise ModelLoadError(f"{where} is not an M3GNet potential (got "
                             f"{type(getattr(pot, 'model', pot)).__name__})")
    return pot


def _check_matgl_classes(model_pt: Path, where: str) -> None:
    """Refuse a ``model.pt`` that names classes outside matgl.

    matgl reads ``model.pt`` with ``torch.load(weights_only=True)`` (no pickle code), but
    then imports every ``@module`` it names and calls ``@class(**init_args)``: a crafted
    file could name ``subprocess.Popen``. Only ``matgl.*`` classes are allowed here.
    """
    try:
        d = torch.load(model_pt, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"M3GNet {where}: model.pt is not a plain-data matgl file "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    stack: list[Any] = [d]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            mod = v.get("@module")
            if mod is not None and not (isinstance(mod, str)
                                        and (mod == "matgl" or mod.startswith("matgl."))):
                raise ModelLoadError(
                    f"M3GNet {where}: model.pt names the class {v.get('@class')!r} of module "
                    f"{mod!r}, outside matgl; refusing to construct it (a crafted file could "
                    f"run code this way)")
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"not JSON-able: {type(value).__name__}")
