"""MACE adapter: local ``.model`` files, named MACE-MP foundation models, multi-head models.

Named foundation models (``mace-mp-0-medium``, ``mace-mpa-0-medium``, ...) go through
mace-torch's own downloader (``download_mace_mp_checkpoint``). When the file is not
cached and the download host cannot be reached, loading fails within a few seconds
with a message that says how to pass a local file instead.

Import order matters: ``mace`` must be imported before ``e3nn`` under torch 2.13, so
this module imports ``mace`` first and never imports ``e3nn`` at module level.
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

from ase_surftune.backends.base import Block, ModelAdapter
from ase_surftune.errors import ModelLoadError

#: our names for MACE-MP foundation models -> mace-torch's ``mace_mp(model=...)`` names
MACE_FOUNDATION_NAMES: dict[str, str] = {
    "mace-mp-0-small": "small",
    "mace-mp-0-medium": "medium",
    "mace-mp-0-large": "large",
    "mace-mp-0b-small": "small-0b",
    "mace-mp-0b-medium": "medium-0b",
    "mace-mp-0b2-small": "small-0b2",
    "mace-mp-0b2-medium": "medium-0b2",
    "mace-mp-0b2-large": "large-0b2",
    "mace-mp-0b3-medium": "medium-0b3",
    "mace-mpa-0-medium": "medium-mpa-0",
    "mace-omat-0-small": "small-omat-0",
    "mace-omat-0-medium": "medium-omat-0",
    "mace-matpes-pbe-0": "mace-matpes-pbe-0",
    "mace-matpes-r2scan-0": "mace-matpes-r2scan-0",
    "mace-mh-0": "mh-0",
    "mace-mh-1": "mh-1",
}
#: seconds allowed to reach the download host before declaring the machine offline
CONNECT_TIMEOUT_S = 3.0


def _import_mace() -> Any:
    import mace  # noqa: F401  (must precede e3nn)
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
        self._mace_data, self._tg, self._torch_tools = _import_mace()
        from mace.tools.utils import AtomicNumberTable

        self._z_table = AtomicNumberTable(self.atomic_numbers)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load_file(cls, path: str | Path, device: str = "cpu",
                  dtype: torch.dtype | None = None, name: str | None = None) -> MACEAdapter:
        """Load a MACE ``.model`` file (a pickled ``torch.nn.Module``)."""
        p = Path(path)
        if not p.is_file():
            raise ModelLoadError(f"MACE model file not found: {str(p)!r}")
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
                        dtype: torch.dtype | None = None) -> MACEAdapter:
        """Load a named MACE-MP foundation model through mace-torch's downloader."""
        path = resolve_foundation_checkpoint(name)
        return cls.load_file(path, device=device, dtype=dtype, name=name)

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
        config = self._mace_data.Configuration(
            atomic_numbers=np.asarray(atoms.numbers),
            positions=np.asarray(atoms.positions, dtype=float),
            properties={}, property_weights={},
            cell=np.asarray(atoms.cell.array, dtype=float),
            pbc=tuple(bool(x) for x in atoms.pbc),
        )
        with self._torch_tools.default_dtype(self.dtype):
            return self._mace_data.AtomicData.from_config(
                config, z_table=self._z_table, cutoff=self.r_max, heads=self.heads)

    def collate(self, graphs: Sequence[Any], head: str) -> dict[str, torch.Tensor]:
        batch = self._tg.Batch.from_data_list(list(graphs)).to(self.device)
        batch_dict = batch.to_dict()
        batch_dict["head"] = torch.full((len(graphs),), self.heads.index(head),
                                        dtype=torch.long, device=self.device)
        return batch_dict

    def forward(self, graphs: Sequence[Any], head: str | None = None, *,
                compute_stress: bool = False, training: bool = False) -> dict[str, torch.Tensor]:
        head = self.resolve_head(head)
        batch = self.collate(graphs, head)
        with torch.set_grad_enabled(True):
            out = self.model(batch, training=training, compute_force=True,
                             compute_stress=compute_stress)
        n_atoms = batch["ptr"][1:] - batch["ptr"][:-1]
        res = {"energy": out["energy"], "forces": out["forces"], "n_atoms": n_atoms}
        if compute_stress:
            res["stress"] = out["stress"].view(-1, 3, 3)
        if not training:
            res = {k: v.detach() for k, v in res.items()}
        return res

    # ------------------------------------------------------------------ persistence
    def to_payload(self) -> dict[str, Any]:
        import copy

        return {"backend": self.backend, "name": self.name,
                "model": copy.deepcopy(self.model).to("cpu")}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], device: str = "cpu",
                     dtype: torch.dtype | None = None) -> MACEAdapter:
        _import_mace()
        return cls(payload["model"], name=payload.get("name", "mace"), device=device, dtype=dtype)
