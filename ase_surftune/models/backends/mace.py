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
gates) plus its state dict, and rebuild it with mace's constructors: no pickle
(:mod:`~ase_surftune.models.backends.mace_storage`). A user's ``.model`` file *is* a
pickle and loads only with ``trust=True``. Heads are grown, migrated and exported in
mace's native multi-head layout (:mod:`~ase_surftune.models.backends.mace_heads`).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms

from ase_surftune.core.errors import HeadError, ModelLoadError
from ase_surftune.core.specs import MACE_FOUNDATION_NAMES
from ase_surftune.models.backends.base import Block, ModelAdapter
from ase_surftune.models.backends.mace_env import (  # noqa: F401  (re-exported)
    _import_mace,
    import_mace,
    preserve_torch_load_env,
)
from ase_surftune.models.backends.mace_heads import (  # noqa: F401  (re-exported)
    export_mace_head,
    grow_mace_heads,
    migrate_block_layout,
)
from ase_surftune.models.backends.mace_storage import (  # noqa: F401  (re-exported)
    build_mace_from_config,
    mace_model_config,
)

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

    def export_head(self, head: str, path: str | Path,
                    energy_shifts: dict[str, float] | None = None) -> Path:
        """Write ``head`` as a plain single-head mace ``.model`` file (see
        :func:`~ase_surftune.models.backends.mace_heads.export_mace_head`); the shifts
        (eV/atom) are added to the head's isolated-atom energies E0."""
        from ase_surftune.core.io import atomic_write_stream
        from ase_surftune.models.backends.mace_heads import single_head_model

        single = single_head_model(self.model, self.resolve_head(head)).cpu().eval()
        if energy_shifts:
            ae = single.atomic_energies_fn.atomic_energies
            with torch.no_grad():
                for sym, shift in energy_shifts.items():
                    ae[..., self.elements.index(sym)] += float(shift)
        return Path(atomic_write_stream(path, lambda f: torch.save(single, f)))

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
        state = payload["state_dict"]
        if payload.get("grown"):  # written before heads were native
            state = migrate_block_layout(model, state, list(payload["heads"]))
        model.load_state_dict(state, strict=True)
        return cls(model, name=payload.get("name", "mace"), device=device, dtype=dtype)
