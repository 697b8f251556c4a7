"""CHGNet adapter: the embedded default backend (weights ship inside the chgnet wheel).

CHGNet has no heads of its own. The adapter gives it named heads: each head owns a
copy of the energy readout (``mlp``) and of the per-element reference energies
(``composition_model``) on the shared backbone. The foundation head (``"foundation"``)
is the original readout, so with only it selected the adapter reproduces
``CHGNet`` bit for bit.

CHGNet builds its graphs in float32 (``chgnet.graph.converter.TORCH_DTYPE``), so this
backend runs in float32 only. It needs a 3D periodic cell.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import io
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from ase import Atoms

from ase_surftune.core.errors import HeadError, ModelLoadError
from ase_surftune.core.specs import CHGNET_VERSIONS  # noqa: F401  (re-exported)
from ase_surftune.models.backends.base import Block, ModelAdapter

# chgnet's BatchedGraph builds a tensor from a list of tensors on every forward pass
warnings.filterwarnings("ignore", message="(To copy construct from a tensor|Converting a tensor with requires_grad)",
                        category=UserWarning, module=r"chgnet\.")

FOUNDATION_HEAD = "foundation"
#: GPa -> eV/Å³
_GPA_TO_EV_A3 = 1.0 / 160.21766208

#: True while the adapter runs an inference (not training) forward pass.
_INFERENCE: contextvars.ContextVar[bool] = contextvars.ContextVar("surftune_chgnet_inference",
                                                                  default=False)


class _InferenceAutograd:
    """``torch.autograd`` as chgnet's model module sees it.

    CHGNet always takes its force/stress gradients with ``create_graph=True`` so that
    they can enter a training loss. In inference that second-order graph is never used,
    yet it costs about 25 % of a forward pass and half its memory (45-atom Cu slab, CPU).
    While :data:`_INFERENCE` is set the gradients are taken without it; forces agree
    with chgnet's to float32 rounding (~1e-6 eV/Å: the backward kernels differ). Outside
    the adapter's inference calls nothing changes.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.autograd, name)

    @staticmethod
    def grad(*args: Any, **kwargs: Any) -> Any:
        if _INFERENCE.get():
            kwargs["create_graph"] = False
        return torch.autograd.grad(*args, **kwargs)


class _TorchForCHGNet:
    """A view of the ``torch`` module that differs only in :class:`_InferenceAutograd`."""

    autograd = _InferenceAutograd()

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


_PATCH_LOCK = threading.Lock()
_patch_depth = 0
_saved_torch: Any = None


@contextlib.contextmanager
def inference_autograd(inference: bool) -> Iterator[None]:
    """Within the block, chgnet's model module sees :class:`_TorchForCHGNet` and, when
    ``inference``, takes its gradients without ``create_graph``.

    The module attribute ``chgnet.model.model.torch`` is swapped only while at least one
    adapter call is inside such a block (reference-counted, so calls in several threads
    nest safely) and restored when the last one leaves; outside the adapter's calls
    chgnet is untouched. Other code running chgnet *during* an adapter call sees the
    view, which behaves exactly like ``torch`` unless its own context set the flag.
    """
    global _patch_depth, _saved_torch
    import chgnet.model.model as chgnet_model

    with _PATCH_LOCK:
        if _patch_depth == 0:
            _saved_torch = chgnet_model.torch
            chgnet_model.torch = _TorchForCHGNet()  # type: ignore[assignment]
        _patch_depth += 1
    token = _INFERENCE.set(inference)
    try:
        yield
    finally:
        _INFERENCE.reset(token)
        with _PATCH_LOCK:
            _patch_depth -= 1
            if _patch_depth == 0:
                chgnet_model.torch = _saved_torch
                _saved_torch = None


class CHGNetHeads(torch.nn.Module):
    """A CHGNet backbone with per-head readouts (``mlp`` + ``composition_model``)."""

    def __init__(self, chgnet: torch.nn.Module, heads: Sequence[str] = (FOUNDATION_HEAD,)) -> None:
        super().__init__()
        self.chgnet = chgnet
        self.head_names: list[str] = list(heads)
        # Readouts of heads other than the first; the first head uses chgnet's own.
        self.extra_readouts = torch.nn.ModuleDict()

    def readout_modules(self, head: str) -> tuple[torch.nn.Module, torch.nn.Module | None]:
        if head == self.head_names[0]:
            return self.chgnet.mlp, self.chgnet.composition_model
        pair = self.extra_readouts[head]
        return pair["mlp"], pair["composition_model"]

    def add_head(self, name: str, from_head: str) -> None:
        mlp, comp = self.readout_modules(from_head)
        self.extra_readouts[name] = torch.nn.ModuleDict(
            {"mlp": copy.deepcopy(mlp), "composition_model": copy.deepcopy(comp)})
        self.head_names.append(name)

    def forward(self, graphs: Sequence[Any], head: str, task: str = "ef") -> dict[str, Any]:
        """CHGNet's forward pass through ``head``'s readout (used directly and by DDP)."""
        with self.selected(head) as chgnet:
            return chgnet(graphs, task=task)

    @contextlib.contextmanager
    def selected(self, head: str):
        """CHGNet routed through ``head``'s readout, without mutating the shared module.

        For the first head this is :attr:`chgnet` itself. For another head it is a
        shallow view: a copy of the CHGNet object whose submodule table names ``head``'s
        ``mlp``/``composition_model`` and otherwise the very same submodules and
        parameters. The shared module is never modified, so calculators using different
        heads of one cached model can run in several threads at once, and gradients
        reach the shared parameters as before.
        """
        if head == self.head_names[0]:
            yield self.chgnet
            return
        mlp, comp = self.readout_modules(head)
        view = copy.copy(self.chgnet)  # new object; __dict__ copied shallowly
        view._modules = {**self.chgnet._modules, "mlp": mlp, "composition_model": comp}
        view.training = self.chgnet.training
        yield view


class CHGNetAdapter(ModelAdapter):
    """Adapter for CHGNet (``chgnet`` ≥ 0.4)."""

    backend: ClassVar[str] = "chgnet"
    supported_dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32,)
    needs_cell: ClassVar[bool] = True
    #: measured on 2 CPU cores: a batch of 2+ slabs costs more per atom than single calls
    #: (a 45-atom force pass allocates ~500 MB; batches multiply that working set, and
    #: the first passes at a new batch size are several times slower still), so on CPU
    #: "auto" keeps about one slab per batch
    cpu_atoms_per_batch: ClassVar[int] = 64

    def __init__(self, model: CHGNetHeads, name: str = "chgnet", device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(model, CHGNetHeads):
            model = CHGNetHeads(model)
        super().__init__(model, name=name, device=device, dtype=dtype)
        from pymatgen.core import Lattice, Structure

        self._Structure, self._Lattice = Structure, Lattice

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, version: str = "0.3.0", device: str = "cpu",
             dtype: torch.dtype | None = None) -> CHGNetAdapter:
        """Load bundled CHGNet weights (``"0.3.0"``, ``"0.2.0"`` or ``"r2scan"``)."""
        if version not in CHGNET_VERSIONS:
            raise ModelLoadError(f"Unknown CHGNet version {version!r}; bundled versions: "
                                 f"{list(CHGNET_VERSIONS)}")
        from chgnet.model import CHGNet

        with contextlib.redirect_stdout(io.StringIO()):  # silence CHGNet's banner
            chgnet = CHGNet.load(model_name=version, use_device="cpu", verbose=False)
        name = "chgnet" if version == "0.3.0" else f"chgnet-{version}"
        return cls(CHGNetHeads(chgnet), name=name, device=device, dtype=dtype or torch.float32)

    # ------------------------------------------------------------------ metadata
    @property
    def chgnet(self) -> torch.nn.Module:
        return self.model.chgnet

    @property
    def heads(self) -> list[str]:
        return list(self.model.head_names)

    @property
    def atomic_numbers(self) -> list[int]:
        # 94 embedding rows: H (1) ... Pu (94)
        return list(range(1, self.chgnet.atom_embedding.embedding.num_embeddings + 1))

    @property
    def r_max(self) -> float:
        return float(self.chgnet.graph_converter.atom_graph_cutoff)

    def blocks(self) -> list[Block]:
        c = self.chgnet
        named = dict(self.model.named_parameters())

        def params(prefixes: Sequence[str]) -> tuple[tuple[str, torch.nn.Parameter], ...]:
            return tuple((n, p) for n, p in named.items()
                         if any(n == pre or n.startswith(pre + ".") for pre in prefixes))

        blocks = [Block("embedding", params([
            "chgnet.composition_model", "chgnet.atom_embedding", "chgnet.bond_basis_expansion",
            "chgnet.bond_embedding", "chgnet.bond_weights_ag", "chgnet.bond_weights_bg",
            "chgnet.angle_basis_expansion", "chgnet.angle_embedding"]))]
        for i in range(c.n_conv):
            prefixes = [f"chgnet.atom_conv_layers.{i}"]
            if i < c.n_conv - 1:
                prefixes += [f"chgnet.bond_conv_layers.{i}", f"chgnet.angle_layers.{i}"]
            blocks.append(Block(f"interaction_{i}", params(prefixes)))
        blocks.append(Block("readout", params([
            "chgnet.site_wise", "chgnet.readout_norm", "chgnet.pooling", "chgnet.mlp",
            "extra_readouts"])))
        return blocks

    # ------------------------------------------------------------------ compute
    def featurize(self, atoms: Atoms) -> Any:
        structure = self._Structure(
            self._Lattice(atoms.cell.array), atoms.numbers, atoms.positions,
            coords_are_cartesian=True, validate_proximity=False)
        return self.chgnet.graph_converter(structure)

    def forward(self, graphs: Sequence[Any], head: str | None = None, *,
                compute_stress: bool = False, training: bool = False) -> dict[str, torch.Tensor]:
        head = self.resolve_head(head)
        task = "efs" if compute_stress else "ef"
        graphs = [g.to(str(self.device)) for g in graphs]
        with inference_autograd(not training), torch.set_grad_enabled(True):
            pred = self._forward_module()(graphs, head=head, task=task)
        n_atoms = pred["atoms_per_graph"]
        energy = pred["e"] * n_atoms if self.chgnet.is_intensive else pred["e"]
        forces = torch.cat(pred["f"], dim=0)
        out: dict[str, torch.Tensor] = {"energy": energy, "forces": forces, "n_atoms": n_atoms}
        if compute_stress:
            out["stress"] = torch.stack(pred["s"]).view(-1, 3, 3) * _GPA_TO_EV_A3
        if not training:
            out = {k: v.detach() for k, v in out.items()}
        return out

    # ------------------------------------------------------------------ heads
    def add_head(self, name: str, from_head: str | None = None) -> None:
        """Add head ``name`` whose readout starts as a copy of ``from_head``'s."""
        if name in self.heads:
            raise HeadError(f"Head {name!r} already exists; existing heads: {self.heads}")
        self.model.add_head(name, self.resolve_head(from_head))
        self.model.to(self.device)

    def export_head(self, head: str, path: str | Path,
                    energy_shifts: dict[str, float] | None = None) -> Path:
        """Write ``head`` as a plain CHGNet state: ``{"model": {"model_args",
        "state_dict"}}``, the layout ``CHGNet.from_file`` reads (``CHGNet.from_dict``
        reads its ``"model"`` entry). Tensors and plain values only, so
        ``torch.load(..., weights_only=True)`` reads it too.

        The shifts (eV/atom) are added to the head's per-element reference energies
        (``composition_model.fc``), which CHGNet adds to every structure's energy.
        """
        from ase.data import atomic_numbers

        from ase_surftune.core.io import atomic_write_stream

        with self.model.selected(self.resolve_head(head)) as chgnet:
            state = {k: v.detach().cpu().clone() for k, v in chgnet.state_dict().items()}
        if energy_shifts:
            key = "composition_model.fc.weight"
            if key not in state:
                raise HeadError(f"cannot fold energy shifts into head {head!r}: the model "
                                f"has no composition model")
            for sym, shift in energy_shifts.items():
                state[key][0, atomic_numbers[sym] - 1] += float(shift)
        data = {"model": {"model_args": copy.deepcopy(self.chgnet.model_args),
                          "state_dict": state}}
        return Path(atomic_write_stream(path, lambda f: torch.save(data, f)))

    # ------------------------------------------------------------------ persistence
    def to_payload(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "name": self.name,
            "model_args": copy.deepcopy(self.chgnet.model_args),
            "heads": self.heads,
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], device: str = "cpu",
                     dtype: torch.dtype | None = None) -> CHGNetAdapter:
        from chgnet.model import CHGNet

        with contextlib.redirect_stdout(io.StringIO()):
            chgnet = CHGNet(**payload["model_args"])
        heads = list(payload["heads"])
        wrapper = CHGNetHeads(chgnet, heads=heads[:1])
        for h in heads[1:]:
            wrapper.add_head(h, heads[0])
        wrapper.load_state_dict(payload["state_dict"])
        return cls(wrapper, name=payload.get("name", "chgnet"), device=device,
                   dtype=dtype or torch.float32)
