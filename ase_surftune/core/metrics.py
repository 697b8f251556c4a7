"""The one definition of the error metrics and of the softening scale.

Everything that reports an MAE/RMSE or a softening scale (``evaluate``, ``finetune``'s
printed metrics, ``learning-curve``, the linear and environment-aware corrections)
calls these functions, so the numbers agree wherever they are printed.

Softening scale (Deng et al., seed 002)::

    s = Σ_c F_ref,c · F_model,c / Σ_c F_ref,c²        (dimensionless)

the least-squares slope through the origin of model force components against
reference ones; s < 1: the model's PES is too soft, s = 1: no systematic bias.

Because one slope is dominated by the largest components, :func:`softening_stats`
also reports it on a *band* of reference components and as a per-frame median:

* ``s_all``: every component;
* ``s_band``: components with ``FORCE_NOISE_FLOOR <= |F_ref,c| <= FORCE_BAND_MAX``
  (defaults 0.05 and 10 eV/Å): outliers such as the 100-270 eV/Å components of
  strongly repulsive OC20 frames and sub-noise components are left out, and the number
  left out is reported;
* ``s_frame_median``: the median over frames of each frame's band slope (frames whose
  band has too little signal are skipped);
* no number at all when the signal is too small to define a slope: fewer than
  ``MIN_FORCE_COMPONENTS`` (9) band components or Σ F_ref² over them below
  ``MIN_FORCE_SIGNAL`` (0.1 eV²/Å², e.g. nine components of 0.1 eV/Å). Tables then
  print ``"n/a (too little force signal)"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ase_surftune.core.errors import DataError

__all__ = ["FORCE_BAND_MAX", "FORCE_NOISE_FLOOR", "MIN_FORCE_COMPONENTS", "MIN_FORCE_SIGNAL",
           "NA_SIGNAL", "mae_rmse", "softening_scale", "softening_stats", "stack_forces",
           "paired_forces", "force_signal_ok", "ErrorAccumulator"]

#: upper end (eV/Å) of the band of |F_ref| components used for ``s_band``
FORCE_BAND_MAX = 10.0
#: lower end (eV/Å) of that band: smaller reference components are treated as noise
FORCE_NOISE_FLOOR = 0.05
#: fewest force components for a softening scale
MIN_FORCE_COMPONENTS = 9
#: smallest Σ F_ref² (eV²/Å²) for a softening scale
MIN_FORCE_SIGNAL = 0.1
#: what tables print instead of a softening scale without enough signal
NA_SIGNAL = "n/a (too little force signal)"

ForcesLike = np.ndarray | Sequence[np.ndarray]


def mae_rmse(diff: np.ndarray | Sequence[float]) -> tuple[float, float]:
    """(MAE, RMSE) of an array of differences, in its units; ``(nan, nan)`` if empty."""
    x = np.asarray(diff, dtype=float).ravel()
    if x.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(np.abs(x))), float(np.sqrt(np.mean(x ** 2)))


def stack_forces(forces: ForcesLike, name: str = "forces") -> np.ndarray:
    """All force components as one flat float array (eV/Å); DataError on NaN/inf."""
    if isinstance(forces, np.ndarray):
        arr = np.asarray(forces, dtype=float)
    else:
        parts = [np.asarray(f, dtype=float).reshape(-1) for f in forces]
        arr = np.concatenate(parts) if parts else np.zeros(0)
    arr = arr.reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contain NaN/inf")
    return arr


def paired_forces(f_ref: ForcesLike, f_model: ForcesLike) -> tuple[np.ndarray, np.ndarray]:
    """Flat reference and model components, checked to match structure by structure."""
    if not isinstance(f_ref, np.ndarray) and not isinstance(f_model, np.ndarray):
        if len(f_ref) != len(f_model):
            raise DataError(f"{len(f_ref)} reference force arrays but {len(f_model)} model "
                            f"force arrays")
        for i, (a, b) in enumerate(zip(f_ref, f_model)):
            if np.shape(a) != np.shape(b):
                raise DataError(f"structure {i}: reference forces have shape {np.shape(a)}, "
                                f"model forces {np.shape(b)}")
    r, m = stack_forces(f_ref, "reference forces"), stack_forces(f_model, "model forces")
    if r.shape != m.shape:
        raise DataError(f"{r.size} reference force components but {m.size} model ones")
    return r, m


def softening_scale(f_ref: ForcesLike, f_model: ForcesLike) -> float:
    """Softening scale s = Σ F_ref·F_model / Σ F_ref² over all components (seed 002).

    Args:
        f_ref, f_model: forces in eV/Å, each an ``(n, 3)`` array or a list of them (one
            per structure, matching shapes).

    Raises:
        DataError: mismatched shapes, NaN/inf, or all reference forces zero.
    """
    r, m = paired_forces(f_ref, f_model)
    denom = float(r @ r)
    if denom <= 0.0:
        raise DataError("softening scale undefined: all reference forces are zero")
    return float(r @ m) / denom


def force_signal_ok(r: np.ndarray, *, min_components: int = MIN_FORCE_COMPONENTS,
                    min_signal: float = MIN_FORCE_SIGNAL) -> bool:
    """True when reference components ``r`` carry enough signal for a slope."""
    return r.size >= min_components and float(r @ r) >= min_signal


def _band(r: np.ndarray, low: float, high: float | None) -> np.ndarray:
    a = np.abs(r)
    keep = a >= low
    if high is not None:
        keep &= a <= high
    return keep


def softening_stats(f_ref: ForcesLike, f_model: ForcesLike, *,
                    band_max: float | None = FORCE_BAND_MAX,
                    noise_floor: float = FORCE_NOISE_FLOOR,
                    min_components: int = MIN_FORCE_COMPONENTS,
                    min_signal: float = MIN_FORCE_SIGNAL) -> dict[str, Any]:
    """Robust softening scales of one group of structures (see the module docstring).

    Args:
        f_ref, f_model: forces (eV/Å): one ``(n, 3)`` array per structure (a list), or
            one array (then the per-frame median is that single frame's slope).
        band_max: upper |F_ref| (eV/Å) of the band; None = no upper limit.
        noise_floor: lower |F_ref| (eV/Å) of the band.
        min_components, min_signal: the least signal (component count, Σ F_ref² in
            eV²/Å²) for which a slope is reported.

    Returns:
        JSON-able dict: ``s_all``, ``s_band``, ``s_frame_median`` (float or None),
        ``n_components``, ``n_band``, ``n_excluded_high`` (above ``band_max``),
        ``n_excluded_low`` (below ``noise_floor``), ``n_frames_median`` (frames in the
        median), ``band`` ([low, high]) and ``note`` (``NA_SIGNAL`` when there is too
        little force signal for ``s_all``/``s_band``, else None).
    """
    frames = [f_ref] if isinstance(f_ref, np.ndarray) else list(f_ref)
    frames_m = [f_model] if isinstance(f_model, np.ndarray) else list(f_model)
    r, m = paired_forces(frames, frames_m)
    keep = _band(r, noise_floor, band_max)
    kw = {"min_components": min_components, "min_signal": min_signal}
    out: dict[str, Any] = {
        "s_all": None, "s_band": None, "s_frame_median": None,
        "n_components": int(r.size), "n_band": int(keep.sum()),
        "n_excluded_high": int(np.count_nonzero(np.abs(r) > band_max))
        if band_max is not None else 0,
        "n_excluded_low": int(np.count_nonzero(np.abs(r) < noise_floor)),
        "n_frames_median": 0, "band": [float(noise_floor), band_max], "note": None}
    if force_signal_ok(r, **kw):
        out["s_all"] = float(r @ m) / float(r @ r)
    rb, mb = r[keep], m[keep]
    if force_signal_ok(rb, **kw):
        out["s_band"] = float(rb @ mb) / float(rb @ rb)
    per_frame = []
    for fr, fm in zip(frames, frames_m):
        a, b = stack_forces(fr), stack_forces(fm)
        k = _band(a, noise_floor, band_max)
        if force_signal_ok(a[k], **kw):
            per_frame.append(float(a[k] @ b[k]) / float(a[k] @ a[k]))
    if per_frame:
        out["s_frame_median"] = float(np.median(per_frame))
        out["n_frames_median"] = len(per_frame)
    if out["s_all"] is None and out["s_band"] is None:
        out["note"] = NA_SIGNAL
    return out


class ErrorAccumulator:
    """Streaming MAE/RMSE (and weighted means) over many batches.

    Keeps, per key, the running sums Σ|x|, Σx² and the count n (and Σw·v, Σw for
    :meth:`add_mean`), so :meth:`mae` and :meth:`rmse` equal :func:`mae_rmse` of all the
    differences seen, in their units. :attr:`sums` is a plain ``{str: float}`` dict
    (keys ``<key>_abs``, ``<key>_sq``, ``<key>_n``, ``<key>_sum``, ``<key>_cnt``): it is
    what training checkpoints store, and what data-parallel ranks sum.
    """

    def __init__(self, sums: dict[str, float] | None = None) -> None:
        self.sums: dict[str, float] = dict(sums or {})

    def _inc(self, name: str, value: float) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + value

    def add(self, key: str, diff: np.ndarray | Sequence[float]) -> None:
        """Add differences (any shape; float64 sums). Empty input changes nothing."""
        x = np.asarray(diff, dtype=np.float64).ravel()
        if x.size == 0:
            return
        self._inc(key + "_abs", float(np.abs(x).sum()))
        self._inc(key + "_sq", float((x * x).sum()))
        self._inc(key + "_n", float(x.size))

    def add_mean(self, key: str, value: float, weight: float = 1.0) -> None:
        """Add ``value`` with ``weight`` to the weighted mean of ``key``."""
        self._inc(key + "_sum", float(value) * weight)
        self._inc(key + "_cnt", float(weight))

    def mae(self, key: str) -> float | None:
        """Mean absolute difference of ``key``; None before any value."""
        n = self.sums.get(key + "_n", 0.0)
        return self.sums[key + "_abs"] / n if n else None

    def rmse(self, key: str) -> float | None:
        """Root-mean-square difference of ``key``; None before any value."""
        n = self.sums.get(key + "_n", 0.0)
        return float(np.sqrt(self.sums[key + "_sq"] / n)) if n else None

    def mean(self, key: str) -> float | None:
        """Weighted mean of the values given to :meth:`add_mean`; None before any."""
        n = self.sums.get(key + "_cnt", 0.0)
        return self.sums[key + "_sum"] / n if n else None
