"""MACE heads in mace's own multi-head layout: grow, migrate, export.

mace's multi-head models (``mace_run_train --multiheads_finetuning``, MACE-MH) keep one
readout per head *inside* each readout layer: a ``LinearReadoutBlock`` maps to
``H x0e`` (column ``h`` is head ``h``); a ``NonLinearReadoutBlock`` maps to
``(H·m)x0e`` hidden scalars (block ``h`` of ``m`` per head), masks the other heads'
blocks (``mask_head``) and maps to ``H x0e``; ``atomic_energies`` is ``[H, n_elements]``
and ``scale_shift`` holds one scale/shift per head; ``model.heads`` names them.

:func:`grow_mace_heads` adds a head in exactly that layout, so a grown model is a
plain mace multi-head model: mace's ``extract_config_mace_model`` describes it,
``remove_pt_head``/``mace/cli/select_head.py`` read it, and :func:`export_mace_head`
turns any head into a single-head ``.model`` file that mace's ``MACECalculator`` loads.

Bundles written before this layout (``"grown": true`` in the payload: one e3nn
instruction per head, ``_surftune_blocks``) are converted on load by
:func:`migrate_block_layout`; re-save them to store the native layout.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ase_surftune.core.errors import HeadError

__all__ = ["grow_mace_heads", "migrate_block_layout", "single_head_model", "export_mace_head"]

log = logging.getLogger(__name__)


def _readouts(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    out = [(f"readouts.{i}", ro) for i, ro in enumerate(model.readouts)]
    if getattr(model, "embedding_readout", None) is not None:
        out.append(("embedding_readout", model.embedding_readout))
    return out


def _per_entry(linear: torch.nn.Module) -> list[torch.Tensor]:
    """The weight of an e3nn ``Linear`` as one ``(mul_in, mul_out)`` matrix per instruction."""
    w, mats, off = linear.weight.detach(), [], 0
    for ins in linear.instructions:
        k = ins.path_shape[0] * ins.path_shape[1]
        mats.append(w[off:off + k].reshape(ins.path_shape))
        off += k
    return mats


def _new_linear(irreps_in: Any, n_out: int, mats: list[torch.Tensor],
                dtype: torch.dtype) -> torch.nn.Module:
    """An e3nn ``Linear`` ``irreps_in -> n_out x0e`` (mace's readout form) with the
    per-instruction weight matrices ``mats``."""
    from e3nn import o3

    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        lin = o3.Linear(irreps_in, o3.Irreps(f"{n_out}x0e"))
    finally:
        torch.set_default_dtype(prev)
    if len(lin.instructions) != len(mats):
        raise HeadError(f"cannot rebuild a MACE readout {irreps_in} -> {n_out}x0e: "
                        f"{len(lin.instructions)} paths, expected {len(mats)}")
    with torch.no_grad():
        lin.weight.copy_(torch.cat([m.reshape(-1) for m in mats]).to(lin.weight.dtype))
    return lin


def _check_native(linear: torch.nn.Module) -> None:
    if getattr(linear, "_surftune_blocks", False) or len(linear.irreps_out) != 1 \
            or any(i.i_out != 0 for i in linear.instructions):
        raise HeadError(f"cannot add a head: this MACE readout has an unexpected layout "
                        f"({linear}); supported are mace's single-output linear readouts")


def _grow_nonlinear(ro: torch.nn.Module, n: int, src: int, dtype: torch.dtype) -> None:
    """Grow a native ``NonLinearReadoutBlock`` from ``n`` to ``n + 1`` heads."""
    from e3nn import o3

    m = ro.linear_1.irreps_out.num_irreps // n  # MLP scalars per head
    _check_native(ro.linear_1)
    _check_native(ro.linear_2)
    mats1 = [torch.cat([w, w[:, src * m:(src + 1) * m]], dim=1) for w in _per_entry(ro.linear_1)]
    ro.linear_1 = _new_linear(ro.linear_1.irreps_in, (n + 1) * m, mats1, dtype)
    (w2,) = _per_entry(ro.linear_2)  # (n*m, n); only the diagonal blocks matter (mask_head)
    # e3nn normalises by 1/sqrt(fan-in) = 1/sqrt(n*m): rescale so each head's output
    # stays the same with fan-in (n+1)*m (float rounding, ~1e-16 relative)
    factor = ((n + 1) / n) ** 0.5
    new2 = torch.zeros((n + 1) * m, n + 1, dtype=w2.dtype)
    for h in range(n + 1):
        old = src if h == n else h
        new2[h * m:(h + 1) * m, h] = w2[old * m:(old + 1) * m, old] * factor
    hid = o3.Irreps(f"{(n + 1) * m}x0e")
    ro.linear_2 = _new_linear(hid, n + 1, [new2], dtype)
    ro.hidden_irreps = hid
    ro.non_linearity.irreps_in = hid
    ro.non_linearity.irreps_out = hid
    ro.num_heads = n + 1


def grow_mace_heads(model: torch.nn.Module, name: str, src: int) -> None:
    """Add head ``name`` to a (Scale)Shift MACE model in place, copying head ``src``,
    in mace's native multi-head layout (see the module docstring).

    Linear readouts keep every existing head bit-identical. Non-linear readouts are
    normalised by ``1/sqrt(H·m)`` over all heads' hidden scalars, so their output
    weights are rescaled by ``sqrt((H+1)/H)``: existing heads agree to float rounding
    (~1e-16 relative in float64), as in mace's own multi-head fine-tuning.

    Raises:
        HeadError: a readout class other than mace's ``LinearReadoutBlock`` /
            ``NonLinearReadoutBlock``, or a non-native readout layout.
    """
    from ase_surftune.models.backends.mace_env import import_mace

    import_mace()  # (before e3nn)
    from mace.modules.blocks import LinearReadoutBlock, NonLinearReadoutBlock

    heads = list(getattr(model, "heads", None) or ["Default"])
    n = len(heads)
    dtype = next(model.parameters()).dtype
    for _, ro in _readouts(model):
        if type(ro) is LinearReadoutBlock:
            _check_native(ro.linear)
            mats = [torch.cat([w, w[:, src:src + 1]], dim=1) for w in _per_entry(ro.linear)]
            ro.linear = _new_linear(ro.linear.irreps_in, n + 1, mats, dtype)
        elif type(ro) is NonLinearReadoutBlock:
            _grow_nonlinear(ro, n, src, dtype)
        else:
            raise HeadError(
                f"cannot add a head: readout type {type(ro).__name__} is not supported "
                f"(supported: LinearReadoutBlock, NonLinearReadoutBlock)")
    aef = model.atomic_energies_fn  # per-head isolated-atom energies [n_heads, n_elements]
    ae = torch.atleast_2d(aef.atomic_energies)
    aef.atomic_energies = torch.cat([ae, ae[src:src + 1].clone()], dim=0)
    if hasattr(model, "scale_shift"):
        ss = model.scale_shift
        for attr in ("scale", "shift"):
            v = torch.atleast_1d(getattr(ss, attr))
            if v.numel() == 1 and n > 1:
                v = v.expand(n).clone()
            setattr(ss, attr, torch.cat([v, v[src:src + 1].clone()]))
    model.heads = [*heads, name]


def _legacy_to_native(name: str, native: torch.nn.Module, legacy: torch.Tensor,
                      n: int, per_head_out: int) -> torch.Tensor:
    """Flat native weight of e3nn ``Linear`` ``native`` from the flat weight of the old
    block layout (instructions ``(i_in, h)`` for each head ``h`` and input entry)."""
    entries = [ins.i_in for ins in native.instructions]
    muls = [native.irreps_in[i].mul for i in entries]
    blocks, off = [], 0
    for _h in range(n):
        row = []
        for mul in muls:
            row.append(legacy[off:off + mul * per_head_out].reshape(mul, per_head_out))
            off += mul * per_head_out
        blocks.append(row)
    if off != legacy.numel():
        raise HeadError(f"cannot migrate {name}: {legacy.numel()} weights, expected {off}")
    return torch.cat([torch.cat([blocks[h][e] for h in range(n)], dim=1).reshape(-1)
                      for e in range(len(entries))])


def migrate_block_layout(model: torch.nn.Module, state: dict[str, torch.Tensor],
                         heads: list[str]) -> dict[str, torch.Tensor]:
    """State dict of a bundle written in the old per-head block layout, converted for
    ``model``: the same architecture grown natively to ``heads``. Every head computes
    the same numbers as before (non-linear readouts to float rounding).
    """
    n = len(heads)
    log.warning("converting a MACE model with heads %s from ase_surftune's old per-head "
                "block readout layout to mace's native multi-head layout; re-save the "
                "bundle to store the native layout", heads)
    out = dict(state)
    for prefix, ro in _readouts(model):
        if hasattr(ro, "linear"):
            key = f"{prefix}.linear.weight"
            out[key] = _legacy_to_native(key, ro.linear, state[key], n, 1)
            continue
        m = ro.linear_1.irreps_out.num_irreps // n
        key = f"{prefix}.linear_1.weight"
        out[key] = _legacy_to_native(key, ro.linear_1, state[key], n, m)
        key = f"{prefix}.linear_2.weight"
        old = state[key].reshape(n, m)  # one (m, 1) block per head, fan-in m each
        new = torch.zeros(n * m, n, dtype=old.dtype)
        for h in range(n):
            new[h * m:(h + 1) * m, h] = old[h] * n ** 0.5  # native fan-in is n*m
        out[key] = new.reshape(-1)
    return out


def single_head_model(model: torch.nn.Module, head: str) -> torch.nn.Module:
    """A new single-head MACE model computing ``head`` of ``model`` (mace's own
    ``remove_pt_head``; a one-head model is copied as it is).

    Raises:
        HeadError: unknown head, or a model mace cannot reduce.
    """
    import copy

    from ase_surftune.models.backends.mace_env import import_mace

    heads = list(getattr(model, "heads", None) or ["Default"])
    if head not in heads:
        raise HeadError(f"Unknown head {head!r}; valid heads: {heads}")
    if len(heads) == 1:
        return copy.deepcopy(model)
    import_mace()
    from mace.tools.scripts_utils import remove_pt_head

    dtype = next(model.parameters()).dtype
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        single = remove_pt_head(copy.deepcopy(model).cpu(), head)
    except Exception as exc:  # mace raises ValueError/RuntimeError/KeyError alike
        raise HeadError(f"mace's remove_pt_head cannot extract head {head!r}: {exc}") from exc
    finally:
        torch.set_default_dtype(prev)
    return single.to(dtype)


def export_mace_head(model: torch.nn.Module, head: str, path: str | Path) -> Path:
    """Write ``head`` of ``model`` as a plain single-head mace ``.model`` file.

    The file is what ``mace_run_train`` writes (a pickled ``torch.nn.Module``), so mace's
    ``MACECalculator(model_paths=path)``, ``mace_create_lammps_model`` and
    ``remove_pt_head``-style tools load it. Like every ``.model`` file it is a pickle:
    share bundles when the reader should not have to trust you. Written atomically.
    """
    from ase_surftune.core.io import atomic_write_stream

    single = single_head_model(model, head).cpu().eval()
    return Path(atomic_write_stream(path, lambda f: torch.save(single, f)))
