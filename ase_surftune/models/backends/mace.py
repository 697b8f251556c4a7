"""MACE adapter: local ``.model`` files, named MACE-MP foundation models, multi-head models.

Named foundation models (``mace-mp-0-medium``, ``mace-mpa-0-medium``, ...) go through
mace-torch's own downloader (``download_mace_mp_checkpoint``). When the file is not
cached and the download host cannot be reached, loading fails within a few seconds
with a message that says how to pass a local file instead.

Import order matters: ``mace`` must be imported before ``e3nn`` under torch 2.13, so
this module imports ``mace`` first and never imports ``e3nn`` at module level.

Importing mace sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` process-wide, which would
switch off torch's safe ``torch.load`` default for this process and its children.
Every import of mace in ase_surftune goes through :func:`import_mace`, which restores
the variable to what it was (unset if it was unset).

Bundles store a MACE model as its construction config (from mace's own
``extract_config_mace_model``, encoded as JSON with allow-listed mace classes and
gates) plus its state dict, and rebuild it with mace's constructors: no pickle.
A user's ``.model`` file *is* a pickle and loads only with ``trust=True``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import os
import socket
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms

from ase_surftune.core.errors import BundleError, HeadError, ModelLoadError
from ase_surftune.core.specs import MACE_FOUNDATION_NAMES
from ase_surftune.models.backends.base import Block, ModelAdapter

#: seconds allowed to reach the download host before declaring the machine offline
CONNECT_TIMEOUT_S = 3.0


def collate_atomic_data(graphs: Sequence[Any]) -> dict[str, torch.Tensor] | None:
    """``Batch.from_data_list(graphs).to_dict()`` for mace ``AtomicData``, done per key.

    mace's generic batching walks every key of every graph in Python (1.95 ms for four
    16-atom slabs, against 0.38 ms here, measured on 2 CPU cores). Here each key is
    concatenated once, with the same rules: ``*index*``/``*face*`` keys are offset by the
    preceding graphs' node counts and joined along their last dimension, 0-d tensors are
    stacked, everything else is joined along dimension 0; ``batch`` and ``ptr`` are
    added. Returns ``None`` when a graph holds anything but tensors, or its node count is
    unknown, so that the caller can fall back to mace's batching.
    """
    first = graphs[0]
    keys = first.keys
    n_nodes = [g.num_nodes for g in graphs]
    if any(n is None for n in n_nodes) or any(g.keys != keys for g in graphs[1:]):
        return None
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        items = [g[key] for g in graphs]
        if not all(isinstance(t, torch.Tensor) for t in items):
            return None
        x0 = items[0]
        if x0.dim() == 0:
            out[key] = torch.stack(items)
            continue
        if x0.dtype != torch.bool and first.__inc__(key, x0) != 0:
            offset, shifted = 0, []
            for g, t in zip(graphs, items):
                shifted.append(t + offset if offset else t)
                offset += g.__inc__(key, t)
            items = shifted
        out[key] = torch.cat(items, dim=first.__cat_dim__(key, x0))
    counts = torch.tensor(n_nodes, dtype=torch.long)
    out["batch"] = torch.repeat_interleave(torch.arange(len(graphs)), counts)
    out["ptr"] = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    return out


_UNSAFE_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def preserve_torch_load_env() -> Any:
    """Restore ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` on exit (mace's imports set it to 1)."""
    before = os.environ.get(_UNSAFE_ENV)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_UNSAFE_ENV, None)
        else:
            os.environ[_UNSAFE_ENV] = before


def import_mace() -> None:
    """Import mace (before e3nn) and the mace modules ase_surftune uses, without letting
    mace switch off torch's safe ``torch.load`` default for the process or its children.

    Use this instead of ``import mace`` everywhere (library, tests, benchmarks).
    """
    _import_mace()


@functools.lru_cache(maxsize=1)
def _import_mace() -> Any:
    with preserve_torch_load_env():
        import mace  # noqa: F401  (must precede e3nn)
        import mace.calculators  # noqa: F401  (sets the variable again on import)
        import mace.tools.scripts_utils  # noqa: F401
        from mace import data as mace_data
        from mace.tools import torch_geometric, torch_tools

    return mace_data, torch_geometric, torch_tools


def _host_reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_foundation_checkpoint(name: str) -> str:
    """Path of a named MACE-MP checkpoint, downloading it with mace-torch if needed.

    Raises:
        ModelLoadError: unknown name, or not cached and the host is unreachable
            (within ``CONNECT_TIMEOUT_S`` seconds), or the download failed.
    """
    mace_name = MACE_FOUNDATION_NAMES.get(name)
    if mace_name is None and name.startswith("mace-mp:"):
        mace_name = name.split(":", 1)[1]
    _import_mace()
    from mace.calculators import foundations_models as fm
    from mace.tools.utils import get_cache_dir

    if mace_name not in fm.mace_mp_urls:
        raise ModelLoadError(
            f"Unknown MACE foundation model {name!r}; known: {sorted(MACE_FOUNDATION_NAMES)}")
    url = fm.mace_mp_urls[mace_name]
    cached = Path(get_cache_dir()) / "".join(
        c for c in os.path.basename(url) if c.isalnum() or c in "_")
    if cached.is_file():
        return str(cached)
    if not _host_reachable(fm._normalize_github_download_url(url)):
        raise ModelLoadError(
            f"MACE foundation model {name!r} is not cached in {cached.parent} and its download "
            f"host cannot be reached (offline?). Download {url} on a machine with internet "
            f"access and pass the local file instead: model='mace:/path/to/file.model' "
            f"(CLI: --model mace:/path/to/file.model)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return str(fm.download_mace_mp_checkpoint(mace_name))
    except Exception as exc:  # network errors of every kind
        raise ModelLoadError(f"Downloading MACE foundation model {name!r} from {url} failed: "
                             f"{exc}. Pass a local file with model='mace:/path/file.model'") from exc


class MACEAdapter(ModelAdapter):
    """Adapter for MACE models (``mace-torch`` ≥ 0.3.10), single- or multi-head."""

    backend: ClassVar[str] = "mace"
    needs_cell: ClassVar[bool] = False

    def __init__(self, model: torch.nn.Module, name: str = "mace", device: str = "cpu",
                 dtype: torch.dtype | None = None) -> None:
        model_dtype = next(model.parameters()).dtype
        dtype = dtype or model_dtype
        super().__init__(model, name=name, device=device, dtype=dtype)
        if model_dtype != dtype:
            self.model.to(dtype=dtype)
        _import_mace()
        from mace.tools.utils import AtomicNumberTable

        self._z_table = AtomicNumberTable(self.atomic_numbers)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load_file(cls, path: str | Path, device: str = "cpu",
                  dtype: torch.dtype | None = None, name: str | None = None, *,
                  trust: bool | None = None) -> MACEAdapter:
        """Load a MACE ``.model`` file (a pickled ``torch.nn.Module``), or the MACE model
        of a (safe) bundle file.

        Reading a pickle can run arbitrary code, so this needs ``trust=True`` (CLI
        ``--trust-pickle``, or a :func:`ase_surftune.core.trust.trust_pickle` block). Save
        the model as a bundle to share it safely.

        Raises:
            UnsafeLoadError: ``trust`` is False.
            ModelLoadError: missing or unreadable file, or not a MACE model.
        """
        from ase_surftune.core.errors import UnsafeLoadError
        from ase_surftune.core.trust import pickle_trusted
        from ase_surftune.models.bundle_file import bundle_file_version, read_bundle_file

        p = Path(path)
        if not p.is_file():
            raise ModelLoadError(f"MACE model file not found: {str(p)!r}")
        if bundle_file_version(p) is not None:  # a bundle (v1 needs trust, as Bundle.load says)
            d, state = read_bundle_file(p, trust=trust)
            payload = dict(d["adapter"])
            if payload.get("backend") != cls.backend:
                raise ModelLoadError(f"{str(p)!r}: the bundle holds a {payload.get('backend')} "
                                     f"model, not a MACE one")
            if state is not None:
                payload["state_dict"] = state
            return cls.from_payload(payload, device=device, dtype=dtype)
        if not pickle_trusted(trust):
            raise UnsafeLoadError(
                f"{str(p)!r} is a MACE .model file, a Python pickle, and reading a pickle "
                f"can run arbitrary code. If you trust the file's source, load it with "
                f"trust=True (CLI: --trust-pickle); to share a model safely, save it as an "
                f"ase_surftune bundle (Bundle(adapter).save('model.stbundle'))")
        _import_mace()
        try:
            model = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelLoadError(f"Could not read MACE model file {str(p)!r}: {exc}") from exc
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "atomic_numbers"):
            raise ModelLoadError(f"{str(p)!r} does not contain a MACE model "
                                 f"(got {type(model).__name__})")
        return cls(model, name=name or f"mace:{p.name}", device=device, dtype=dtype)

    @classmethod
    def load_foundation(cls, name: str, device: str = "cpu",
                        dtype: torch.dtype | None = None, *,
                        trust: bool | None = None) -> MACEAdapter:
        """Load a named MACE-MP foundation model through mace-torch's downloader.

        The checkpoints are pickles, so this needs ``trust=True`` like :meth:`load_file`.
        """
        path = resolve_foundation_checkpoint(name)
        return cls.load_file(path, device=device, dtype=dtype, name=name, trust=trust)

    # ------------------------------------------------------------------ metadata
    @property
    def heads(self) -> list[str]:
        return list(getattr(self.model, "heads", None) or ["Default"])

    @property
    def atomic_numbers(self) -> list[int]:
        return [int(z) for z in self.model.atomic_numbers]

    @property
    def r_max(self) -> float:
        return float(self.model.r_max)

    def blocks(self) -> list[Block]:
        named = list(self.model.named_parameters())
        n_inter = len(self.model.interactions)
        groups: dict[str, list[tuple[str, torch.nn.Parameter]]] = {"embedding": []}
        for i in range(n_inter):
            groups[f"interaction_{i}"] = []
        groups["readout"] = []
        for n, p in named:
            parts = n.split(".")
            if parts[0] in ("interactions", "products"):
                groups[f"interaction_{int(parts[1])}"].append((n, p))
            elif parts[0] in ("readouts", "scale_shift"):
                groups["readout"].append((n, p))
            else:  # node_embedding, radial_embedding, atomic_energies, pair_repulsion, ...
                groups["embedding"].append((n, p))
        return [Block(k, tuple(v)) for k, v in groups.items()]

    # ------------------------------------------------------------------ compute
    def featurize(self, atoms: Atoms) -> Any:
        mace_data, _, torch_tools = _import_mace()
        config = mace_data.Configuration(
            atomic_numbers=np.asarray(atoms.numbers),
            positions=np.asarray(atoms.positions, dtype=float),
            properties={}, property_weights={},
            cell=np.asarray(atoms.cell.array, dtype=float),
            pbc=tuple(bool(x) for x in atoms.pbc),
        )
        with torch_tools.default_dtype(self.dtype):
            return mace_data.AtomicData.from_config(
                config, z_table=self._z_table, cutoff=self.r_max, heads=self.heads)

    def collate(self, graphs: Sequence[Any], head: str) -> dict[str, torch.Tensor]:
        batch_dict = collate_atomic_data(graphs)
        if batch_dict is None:  # something mace's generic batching must handle
            batch_dict = _import_mace()[1].Batch.from_data_list(list(graphs)).to_dict()
        batch_dict = {k: v.to(self.device) for k, v in batch_dict.items()}
        batch_dict["head"] = torch.full((len(graphs),), self.heads.index(head),
                                        dtype=torch.long, device=self.device)
        return batch_dict

    def forward(self, graphs: Sequence[Any], head: str | None = None, *,
                compute_stress: bool = False, training: bool = False) -> dict[str, torch.Tensor]:
        head = self.resolve_head(head)
        batch = self.collate(graphs, head)
        with torch.set_grad_enabled(True):
            out = self._forward_module()(batch, training=training, compute_force=True,
                             compute_stress=compute_stress)
        n_atoms = batch["ptr"][1:] - batch["ptr"][:-1]
        res = {"energy": out["energy"], "forces": out["forces"], "n_atoms": n_atoms}
        if compute_stress:
            res["stress"] = out["stress"].view(-1, 3, 3)
        if not training:
            res = {k: v.detach() for k, v in res.items()}
        return res

    # ------------------------------------------------------------------ heads
    def add_head(self, name: str, from_head: str | None = None,
                 atomic_energies: dict[str, float] | None = None) -> None:
        """Grow the model by head ``name``, initialised as a copy of ``from_head``.

        Works on single-head and multi-head ``ScaleShiftMACE``/``MACE`` models (also on
        models grown before). Readout output dimensions, the per-head isolated-atom
        energies ``atomic_energies_fn.atomic_energies`` ([n_heads, n_elements]), the
        ``scale_shift`` vectors and ``model.heads`` all grow by one; the backbone is
        shared. See :func:`grow_mace_heads` for the numerics guarantee.

        Args:
            name: new head name (must not exist yet).
            from_head: head whose readout, E0s and scale/shift are copied (default: the
                first head).
            atomic_energies: optional E0 values (eV) of the new head for some elements;
                others keep ``from_head``'s.

        Raises:
            HeadError: ``name`` exists already, ``from_head`` is unknown, or the model's
                readout layout is one this method cannot grow.
            UnsupportedElementError: ``atomic_energies`` names an element outside the model.
        """
        from ase_surftune.core.errors import UnsupportedElementError

        if not isinstance(name, str) or not name:
            raise HeadError(f"head name must be a non-empty string, got {name!r}")
        if name in self.heads:
            raise HeadError(f"Head {name!r} already exists; existing heads: {self.heads}")
        src = self.resolve_head(from_head)
        if atomic_energies:
            bad = sorted(set(atomic_energies) - set(self.elements))
            if bad:
                raise UnsupportedElementError(
                    f"atomic_energies for the new head {name!r} name element(s) {bad} that "
                    f"model {self.name!r} does not cover; it covers {self.elements}")
        grow_mace_heads(self.model, name, self.heads.index(src))
        if atomic_energies:
            ae = self.model.atomic_energies_fn.atomic_energies
            with torch.no_grad():
                for sym, val in atomic_energies.items():
                    ae[-1, self.elements.index(sym)] = float(val)
        self.model.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ persistence
    def to_payload(self) -> dict[str, Any]:
        """Construction config (JSON) + state dict; see :func:`mace_model_config`."""
        return {"backend": self.backend, "name": self.name,
                **mace_model_config(self.model),
                "state_dict": {k: v.detach().cpu().clone()
                               for k, v in self.model.state_dict().items()}}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], device: str = "cpu",
                     dtype: torch.dtype | None = None) -> MACEAdapter:
        if isinstance(payload.get("model"), torch.nn.Module):
            # a legacy (version-1) bundle, unpickled because the caller trusted it
            model = payload["model"]
            return cls(model, name=payload.get("name", "mace"), device=device, dtype=dtype)
        model = build_mace_from_config(payload)
        model.load_state_dict(payload["state_dict"], strict=True)
        return cls(model, name=payload.get("name", "mace"), device=device, dtype=dtype)


# --------------------------------------------------------------------------- safe storage

#: model classes a bundle may name (rebuilt with ``mace.modules.<name>(**config)``)
_MODEL_CLASSES = ("ScaleShiftMACE", "MACE")


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


def _is_grown(model: torch.nn.Module) -> bool:
    """Whether :func:`grow_mace_heads` changed the readout layout of ``model``."""
    return any(getattr(m, "_surftune_blocks", False) for m in model.modules())


def mace_model_config(model: torch.nn.Module) -> dict[str, Any]:
    """JSON-able description from which :func:`build_mace_from_config` rebuilds ``model``.

    ``{"model_class", "dtype", "config", "heads", "grown"}``: the config comes from
    mace's ``extract_config_mace_model``. A model grown by :meth:`MACEAdapter.add_head`
    is described as its first head's single-head model plus the list of heads to grow
    (the per-head block layout of grown readouts does not depend on the native head
    count, so replaying the growth gives the same parameter shapes).

    Raises:
        BundleError: a model class or config value without a safe JSON form.
    """
    _import_mace()
    from mace.tools.scripts_utils import extract_config_mace_model

    cls_name = type(model).__name__
    if cls_name not in _MODEL_CLASSES:
        raise BundleError(f"cannot store a {cls_name} safely; supported MACE model classes: "
                          f"{list(_MODEL_CLASSES)}")
    config = extract_config_mace_model(model) if cls_name == "ScaleShiftMACE" else None
    if config is None or "error" in config:
        raise BundleError(f"cannot store this {cls_name} safely: mace's "
                          f"extract_config_mace_model does not describe it")
    if config.get("cueq_config") is not None:
        raise BundleError("cannot store a cuequivariance MACE model safely; convert it to "
                          "e3nn first (mace.cli.convert_cueq_e3nn)")
    heads = list(getattr(model, "heads", None) or ["Default"])
    grown = _is_grown(model)
    if grown:  # describe the first head as a single-head model, growth is replayed
        config["heads"] = heads[:1]
        config["atomic_energies"] = np.atleast_2d(config["atomic_energies"])[0]
        for key in ("atomic_inter_scale", "atomic_inter_shift"):
            config[key] = float(np.atleast_1d(config[key])[0])
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return {"model_class": cls_name, "dtype": dtype, "heads": heads, "grown": grown,
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
    if cls_name not in _MODEL_CLASSES:
        raise BundleError(f"unknown MACE model class {cls_name!r}; supported: "
                          f"{list(_MODEL_CLASSES)}")
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
    if payload.get("grown"):
        for h in heads[1:]:
            grow_mace_heads(model, h, 0)
    model.heads = heads
    return model


# --------------------------------------------------------------------------- head growth


def _linear_blocks(linear: torch.nn.Module, n_heads: int, per_head_out: int,
                   per_head_in: int | None = None) -> tuple[list[int], list[torch.Tensor]]:
    """Describe an e3nn ``Linear`` of a readout as per-head weight blocks.

    Returns ``(in_entries, blocks)``: the input entries the layer reads and, for each
    head ``h``, the weight block ``blocks[h]`` of shape ``(rows, per_head_out)`` (rows
    over the used input channels, in entry order). Two layouts are understood: our
    block layout (``_surftune_blocks``: one instruction per head and input entry,
    outputs ``k x0e`` per head) and mace's native one (all instructions end in a single
    ``(H·k)x0e`` output; with ``per_head_in`` the input is ``(H·m)x0e`` and only the
    block-diagonal part matters because ``mask_head`` zeroes the rest).
    """
    ins = list(linear.instructions)
    w = linear.weight.detach()
    mats, off = [], 0
    for i in ins:
        k = i.path_shape[0] * i.path_shape[1]
        mats.append(w[off:off + k].reshape(i.path_shape))
        off += k
    if getattr(linear, "_surftune_blocks", False):
        blocks = [torch.cat([m for i, m in zip(ins, mats) if i.i_out == h], dim=0)
                  for h in range(n_heads)]
        entries = [i.i_in for i in ins if i.i_out == 0]
        return entries, blocks
    if len(linear.irreps_out) != 1 or any(i.i_out != 0 for i in ins):
        raise HeadError(f"cannot add a head: this MACE readout has an unexpected layout "
                        f"({linear}); supported are single-output linear readouts")
    full = torch.cat(mats, dim=0)  # (rows, H*k)
    if per_head_in is None:
        blocks = [full[:, h * per_head_out:(h + 1) * per_head_out] for h in range(n_heads)]
    else:
        blocks = [full[h * per_head_in:(h + 1) * per_head_in,
                       h * per_head_out:(h + 1) * per_head_out] for h in range(n_heads)]
    return [i.i_in for i in ins], blocks


def _block_linear(irreps_in: Any, entries_per_head: list[list[int]], per_head_out: int,
                  blocks: list[torch.Tensor], dtype: torch.dtype) -> torch.nn.Module:
    """An e3nn ``Linear`` whose output is one ``k x0e`` entry per head and whose head
    ``h`` reads input entries ``entries_per_head[h]`` with weight ``blocks[h]``."""
    from e3nn import o3

    n_heads = len(blocks)
    irreps_out = o3.Irreps("+".join([f"{per_head_out}x0e"] * n_heads))
    instructions = [(i_in, h) for h in range(n_heads) for i_in in entries_per_head[h]]
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        lin = o3.Linear(irreps_in, irreps_out, instructions=instructions)
    finally:
        torch.set_default_dtype(prev)
    flat = []
    for h in range(n_heads):
        rows, r0 = blocks[h], 0
        for i_in in entries_per_head[h]:
            m = irreps_in[i_in].mul
            flat.append(rows[r0:r0 + m].reshape(-1))
            r0 += m
    with torch.no_grad():
        lin.weight.copy_(torch.cat(flat).to(lin.weight.dtype))
    lin._surftune_blocks = True
    return lin


def grow_mace_heads(model: torch.nn.Module, name: str, src: int) -> None:
    """Add head ``name`` to a (Scale)Shift MACE model in place, copying head ``src``.

    Readouts are rebuilt in a *per-head block* layout (one e3nn instruction per head
    and per input entry): each head's readout computes exactly the same operations,
    with the same shapes and normalisation, as a single-head readout. Hence

    * growing a single-head model (any MACE-MP-like foundation) or a model grown
      before leaves every existing head **bit-identical**;
    * growing a mace-native multi-head model (e.g. trained by ``mace_run_train
      --multiheads_finetuning``) keeps existing heads identical up to float rounding
      (~1e-15 relative), because its readout normalisation ``1/sqrt(H·m)`` is
      re-expressed per head.

    mace's own ``remove_pt_head``/state-dict tools expect the native layout and do not
    apply to grown models (ase_surftune never needs them).
    """
    _import_mace()  # (before e3nn)
    from e3nn import o3
    from mace.modules.blocks import LinearReadoutBlock, NonLinearReadoutBlock

    heads = list(getattr(model, "heads", None) or ["Default"])
    n = len(heads)
    dtype = next(model.parameters()).dtype
    readouts = list(model.readouts)
    if getattr(model, "embedding_readout", None) is not None:
        readouts.append(model.embedding_readout)
    for ro in readouts:
        if type(ro) is LinearReadoutBlock:
            entries, blocks = _linear_blocks(ro.linear, n, 1)
            ro.linear = _block_linear(ro.linear.irreps_in, [entries] * (n + 1), 1,
                                      [*blocks, blocks[src].clone()], dtype)
        elif type(ro) is NonLinearReadoutBlock:
            m = ro.linear_1.irreps_out.num_irreps // n  # MLP scalars per head
            entries, b1 = _linear_blocks(ro.linear_1, n, m)
            ro.linear_1 = _block_linear(ro.linear_1.irreps_in, [entries] * (n + 1), m,
                                        [*b1, b1[src].clone()], dtype)
            native = not getattr(ro.linear_2, "_surftune_blocks", False)
            _, b2 = _linear_blocks(ro.linear_2, n, 1, per_head_in=m if native else None)
            if native and n > 1:  # native fan-in is n*m, per-head blocks have fan-in m
                b2 = [b / n ** 0.5 for b in b2]
            hid = o3.Irreps("+".join([f"{m}x0e"] * (n + 1)))
            ro.linear_2 = _block_linear(hid, [[h] for h in range(n + 1)], 1,
                                        [*b2, b2[src].clone()], dtype)
            ro.hidden_irreps = o3.Irreps(f"{m * (n + 1)}x0e")
            ro.non_linearity.irreps_in = ro.hidden_irreps
            ro.non_linearity.irreps_out = ro.hidden_irreps
            ro.num_heads = n + 1
        else:
            raise HeadError(
                f"cannot add a head: readout type {type(ro).__name__} is not supported "
                f"(supported: LinearReadoutBlock, NonLinearReadoutBlock)")
    # per-head isolated-atom energies [n_heads, n_elements]
    aef = model.atomic_energies_fn
    ae = torch.atleast_2d(aef.atomic_energies)
    aef.atomic_energies = torch.cat([ae, ae[src:src + 1].clone()], dim=0)
    # per-head scale / shift
    if hasattr(model, "scale_shift"):
        ss = model.scale_shift
        for attr in ("scale", "shift"):
            v = torch.atleast_1d(getattr(ss, attr))
            if v.numel() == 1 and n > 1:
                v = v.expand(n).clone()
            setattr(ss, attr, torch.cat([v, v[src:src + 1].clone()]))
    model.heads = [*heads, name]
