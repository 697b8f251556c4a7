"""M3GNet adapter (matgl ≥ 4.1): local model folders and named matgl models.

Specs: ``m3gnet:/path/to/folder`` (a matgl folder holding ``model.json``, ``model.pt``
and ``state.pt``, loaded by ``matgl.load_model`` with no network access) and the named
models in :data:`M3GNET_NAMES`, resolved through matgl's own loader (a Hugging Face
download). When a named model is not cached and the hub cannot be reached, loading
fails within a few seconds with a message that says how to pass a local folder.

Pitfalls of matgl's own ASE calculator that this adapter handles itself:

* ``PESCalculator`` returns stress in GPa by default; here stress is eV/Å³ (ASE).
* matgl's ``Atoms2Graph`` treats any structure that is not periodic in all three
  directions as a molecule with no periodic images (a Cu(111) slab with ASE's default
  ``pbc=(True, True, False)`` loses its in-plane neighbours: -121.50 eV instead of
  -143.01 eV). Here the neighbour list honours ``atoms.pbc`` direction by direction,
  so a slab is periodic in-plane and open along z; with pbc=True everywhere the graph
  is exactly matgl's.
* float32 by default, float64 on request (``Potential.forward`` follows the model's
  dtype).

Heads: M3GNet has none of its own. Each head owns a copy of the readout
(``model.final_layer``, an atom-wise gated MLP) and of the per-element reference
energies (``element_refs``) on the shared backbone. The first head
(``"foundation"``) is the original readout, so it reproduces matgl bit for bit.

``import matgl`` writes to ``~/.cache/matgl``; this module imports matgl lazily.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms

from ase_surftune.core.errors import HeadError, InvalidStructureError, ModelLoadError
from ase_surftune.core.specs import M3GNET_NAMES
from ase_surftune.models.backends.base import Block, ModelAdapter
from ase_surftune.models.backends.m3gnet_loading import (  # noqa: F401  (re-exported)
    _HUB_HOST,
    _MODEL_FILES,
    _POTENTIAL_OPTIONS,
    CONNECT_TIMEOUT_S,
    FOUNDATION_HEAD,
    MATGL_CACHE,
    _cached_model_files,
    _check_matgl_classes,
    _hub_reachable,
    _import_matgl,
    _jsonable,
    load_potential,
)


class M3GNetHeads(torch.nn.Module):
    """A matgl ``Potential`` (M3GNet) with per-head readouts (``final_layer`` + refs)."""

    def __init__(self, potential: torch.nn.Module,
                 heads: Sequence[str] = (FOUNDATION_HEAD,)) -> None:
        super().__init__()
        self.potential = potential
        self.head_names: list[str] = list(heads)
        #: readouts of heads other than the first; the first head uses matgl's own
        self.extra_readouts = torch.nn.ModuleDict()

    def readout_modules(self, head: str) -> tuple[torch.nn.Module, torch.nn.Module | None]:
        if head == self.head_names[0]:
            return self.potential.model.final_layer, self.potential.element_refs
        pair = self.extra_readouts[head]
        return pair["final_layer"], pair["element_refs"] if "element_refs" in pair else None

    def add_head(self, name: str, from_head: str) -> None:
        layer, refs = self.readout_modules(from_head)
        pair = {"final_layer": copy.deepcopy(layer)}
        if refs is not None:
            pair["element_refs"] = copy.deepcopy(refs)
        self.extra_readouts[name] = torch.nn.ModuleDict(pair)
        self.head_names.append(name)

    @contextlib.contextmanager
    def selected(self, head: str):
        """Temporarily route the potential's readout through ``head``'s modules."""
        if head == self.head_names[0]:
            yield self.potential
            return
        pot = self.potential
        orig = pot.model.final_layer, pot.element_refs
        pot.model.final_layer, pot.element_refs = self.readout_modules(head)
        try:
            yield pot
        finally:
            pot.model.final_layer, pot.element_refs = orig

    def forward(self, graph: Any, lattice: torch.Tensor, head: str, *,
                compute_stress: bool = False, create_graph: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Potential.forward`` through ``head``: energies (B,), forces (N, 3) eV/Å,
        stresses (3B, 3) GPa (matgl's unit; zeros(1) when not asked).

        ``Potential`` keeps the force graph (``create_graph``) only in training mode;
        here that follows ``create_graph`` instead of the module's mode.
        """
        pot = self.potential
        saved = pot.training, pot.calc_stresses, pot.calc_forces
        pot.training, pot.calc_stresses, pot.calc_forces = create_graph, compute_stress, True
        try:
            with self.selected(head):
                out = pot(graph, lattice, None)
        finally:
            pot.training, pot.calc_stresses, pot.calc_forces = saved
            # M3GNet keeps every layer's features of the last call (``feature_dict``):
            # that would hold the whole autograd graph alive and break deepcopy
            pot.model.feature_dict = {}
        return out[0], out[1], out[2]


class M3GNetAdapter(ModelAdapter):
    """Adapter for matgl's M3GNet potentials (PyG implementation, matgl ≥ 4.1)."""

    backend: ClassVar[str] = "m3gnet"
    needs_cell: ClassVar[bool] = False
    #: matgl takes dE/dstrain in the same ``autograd.grad`` call as the forces
    stress_with_forces: ClassVar[bool] = True
    #: bench_m3gnet.py (2 busy cores): batches of 8 × 36-atom slabs beat 14 × 36 (the
    #: default 512-atom budget) in both runs, so "auto" fills about 256 atoms on CPU
    cpu_atoms_per_batch: ClassVar[int] = 256

    def __init__(self, model: torch.nn.Module, name: str = "m3gnet", device: str = "cpu",
                 dtype: torch.dtype | None = None) -> None:
        if not isinstance(model, M3GNetHeads):
            model = M3GNetHeads(model)
        dtype = dtype or torch.float32
        super().__init__(model, name=name, device=device, dtype=dtype)
        self.model.to(dtype=dtype)
        _import_matgl()
        from matgl.ext.ase import Atoms2Graph

        pot = self.potential
        self._converter = Atoms2Graph(tuple(pot.model.element_types), float(pot.model.cutoff))
        from ase.data import atomic_numbers

        self._z = sorted(atomic_numbers[s] for s in pot.model.element_types)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, source: str | Path, device: str = "cpu", dtype: torch.dtype | None = None,
             name: str | None = None) -> M3GNetAdapter:
        """Load a matgl model folder or a named model (see :func:`load_potential`)."""
        pot = load_potential(source)
        low = str(source).lower()
        label = name or (low if low in M3GNET_NAMES else f"m3gnet:{Path(source).name}")
        return cls(M3GNetHeads(pot), name=label, device=device, dtype=dtype)

    # ------------------------------------------------------------------ metadata
    @property
    def potential(self) -> torch.nn.Module:
        """The wrapped matgl ``Potential`` (its readout is the foundation head's)."""
        return self.model.potential

    @property
    def heads(self) -> list[str]:
        return list(self.model.head_names)

    @property
    def atomic_numbers(self) -> list[int]:
        return list(self._z)

    @property
    def r_max(self) -> float:
        return float(self.potential.model.cutoff)

    def blocks(self) -> list[Block]:
        """embedding → interaction_0..n-1 (three-body + graph layer) → readout."""
        n = int(self.potential.model.n_blocks)
        groups: dict[str, list[tuple[str, torch.nn.Parameter]]] = {"embedding": []}
        for i in range(n):
            groups[f"interaction_{i}"] = []
        groups["readout"] = []
        for pname, p in self.model.named_parameters():
            parts = pname.split(".")
            if parts[:2] == ["potential", "model"] and parts[2] in (
                    "three_body_interactions", "graph_layers"):
                groups[f"interaction_{int(parts[3])}"].append((pname, p))
            elif parts[0] == "extra_readouts" or (
                    parts[:2] == ["potential", "model"] and parts[2] in ("final_layer", "readout")):
                groups["readout"].append((pname, p))
            else:  # embedding, bond/basis expansions, ZBL repulsion, element refs if trainable
                groups["embedding"].append((pname, p))
        return [Block(k, tuple(v)) for k, v in groups.items()]

    def check_atoms(self, atoms: Atoms) -> None:
        super().check_atoms(atoms)
        if atoms.pbc.any() and (atoms.cell.rank < 3 or abs(atoms.cell.volume) < 1e-6):
            raise InvalidStructureError(
                f"m3gnet: {atoms.get_chemical_formula()} is periodic along {atoms.pbc.tolist()} "
                f"but its cell {atoms.cell.cellpar().round(3).tolist()} is not 3D; give it a "
                f"full cell (atoms.center(vacuum=..., axis=2)) or set pbc=False")

    # ------------------------------------------------------------------ compute
    def featurize(self, atoms: Atoms) -> tuple[Any, torch.Tensor]:
        """``(graph, lattice)`` for one structure: a PyG graph and its (1, 3, 3) cell.

        Fully periodic and fully open structures get matgl's ``Atoms2Graph`` edges
        unchanged. Mixed periodicity (slabs, wires) keeps images only along the periodic
        directions (pymatgen's neighbour search with a per-direction pbc). Coordinates
        and cell are stored in the adapter's dtype: matgl builds them in float32, which
        in float64 mode would round the positions (and the stress) to float32.
        """
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if pbc.all() or not pbc.any():
            graph, _, _ = self._converter.get_graph(atoms)
        else:
            from pymatgen.optimization.neighbors import find_points_in_spheres

            cell = np.ascontiguousarray(atoms.cell.array, dtype=float)
            cart = np.ascontiguousarray(atoms.get_positions(), dtype=float)
            src, dst, images, dist = find_points_in_spheres(
                cart, cart, r=float(self.r_max), pbc=pbc.astype(np.int64), lattice=cell,
                tol=1e-8)
            keep = (src != dst) | (dist > 1e-8)
            graph, _, _ = self._converter.get_graph_from_processed_structure(
                atoms, src[keep], dst[keep], images[keep], [cell],
                self._converter.element_types, np.zeros((len(atoms), 3)), is_atoms=True)
        if pbc.any():
            coords, cell = atoms.get_scaled_positions(wrap=False), atoms.cell.array
        else:  # matgl's molecule convention: Cartesian coordinates, identity "cell"
            coords, cell = atoms.get_positions(), np.eye(3)
        graph.frac_coords = torch.as_tensor(np.asarray(coords, dtype=float), dtype=self.dtype)
        lattice = torch.as_tensor(np.asarray(cell, dtype=float), dtype=self.dtype)[None]
        return graph, lattice

    def forward(self, graphs: Sequence[Any], head: str | None = None, *,
                compute_stress: bool = False, training: bool = False) -> dict[str, torch.Tensor]:
        from matgl.utils.constants import EV_PER_ANG3_TO_GPA
        from torch_geometric.data import Batch

        head = self.resolve_head(head)
        if len(graphs) == 1:
            graph, lattice = graphs[0]
            n_atoms = torch.tensor([graph.num_nodes], device=self.device)
        else:
            graph = Batch.from_data_list([g for g, _ in graphs])
            lattice = torch.cat([lat for _, lat in graphs], dim=0)
            n_atoms = (graph.ptr[1:] - graph.ptr[:-1]).to(self.device)
        graph = graph.to(self.device)
        lattice = lattice.to(self.device)
        with torch.set_grad_enabled(True):
            energy, forces, stress = self._forward_module()(
                graph, lattice, head, compute_stress=compute_stress, create_graph=training)
        out: dict[str, torch.Tensor] = {"energy": energy.reshape(-1), "forces": forces,
                                        "n_atoms": n_atoms}
        if compute_stress:
            out["stress"] = stress.reshape(-1, 3, 3) / EV_PER_ANG3_TO_GPA
        if not training:
            out = {k: v.detach() for k, v in out.items()}
        return out

    # ------------------------------------------------------------------ heads
    def add_head(self, name: str, from_head: str | None = None) -> None:
        """Add head ``name`` whose readout and element refs start as copies of ``from_head``'s."""
        if not isinstance(name, str) or not name:
            raise HeadError(f"head name must be a non-empty string, got {name!r}")
        if name in self.heads:
            raise HeadError(f"Head {name!r} already exists; existing heads: {self.heads}")
        self.model.add_head(name, self.resolve_head(from_head))
        self.model.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments: matgl's ``M3GNet`` init args + Potential options."""
        pot = self.potential
        return {
            "model_class": "M3GNet",
            "model_init_args": _jsonable(dict(pot.model._init_args)),
            "potential_options": {k: _jsonable(pot._init_args.get(k, False))
                                  for k in _POTENTIAL_OPTIONS},
        }

    def to_payload(self) -> dict[str, Any]:
        """JSON-able values except ``"state_dict"`` (``dict[str, Tensor]``); no pickled objects."""
        return {
            "backend": self.backend,
            "name": self.name,
            "heads": self.heads,
            "dtype": str(self.dtype).replace("torch.", ""),
            "config": self.config(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
        }

    @staticmethod
    def build(config: dict[str, Any], heads: Sequence[str] = (FOUNDATION_HEAD,),
              n_refs: int | None = None) -> M3GNetHeads:
        """An untrained :class:`M3GNetHeads` from :meth:`config` (random weights)."""
        _import_matgl()
        from matgl.apps.pes import Potential
        from matgl.models import M3GNet

        if config.get("model_class") != "M3GNet":
            raise ModelLoadError(f"m3gnet payload: unsupported model class "
                                 f"{config.get('model_class')!r} (only 'M3GNet')")
        args = dict(config["model_init_args"])
        args["element_types"] = tuple(args["element_types"])
        opts = {k: bool(v) for k, v in config.get("potential_options", {}).items()
                if k in _POTENTIAL_OPTIONS}
        refs = torch.zeros(n_refs) if n_refs else None
        pot = Potential(model=M3GNet(**args), element_refs=refs, **opts)
        wrapper = M3GNetHeads(pot, heads=list(heads)[:1])
        for h in list(heads)[1:]:
            wrapper.add_head(h, wrapper.head_names[0])
        return wrapper

    @classmethod
    def from_payload(cls, payload: dict[str, Any], device: str = "cpu",
                     dtype: torch.dtype | None = None) -> M3GNetAdapter:
        state = payload["state_dict"]
        ref = state.get("potential.element_refs.property_offset")
        saved_dtype = {"float32": torch.float32, "float64": torch.float64}.get(
            payload.get("dtype", "float32"), torch.float32)
        wrapper = cls.build(payload["config"], payload["heads"],
                            n_refs=None if ref is None else int(ref.shape[-1]))
        wrapper.to(dtype=saved_dtype)
        try:
            wrapper.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelLoadError(f"m3gnet payload does not match its config: {exc}") from exc
        return cls(wrapper, name=payload.get("name", "m3gnet"), device=device,
                   dtype=dtype or saved_dtype)

    def reinitialized(self, name: str | None = None) -> M3GNetAdapter:
        """Same architecture and heads, fresh random weights (torch's global RNG).

        Buffers that hold data statistics, not learned weights (``data_mean``,
        ``data_std``, per-element reference energies), are kept.
        """
        state = self.model.state_dict()
        ref = state.get("potential.element_refs.property_offset")
        new = self.build(self.config(), self.heads,
                         n_refs=None if ref is None else int(ref.shape[-1]))
        new.to(dtype=self.dtype)
        params = {n for n, _ in new.named_parameters()}
        with torch.no_grad():
            for n, b in new.state_dict().items():
                if n not in params and n in state and state[n].shape == b.shape:
                    b.copy_(state[n])
        return type(self)(new, name=name or f"{self.name}-scratch", device=str(self.device),
                          dtype=self.dtype)
