"""Keep numpy's OpenBLAS threads from competing with torch's during ASE workflows.

numpy and scipy wheels bundle OpenBLAS, whose worker threads busy-wait for a while after
every threaded BLAS call. ASE optimizers and filters make such calls between force calls
(``FrechetCellFilter`` takes matrix exponentials, BFGS diagonalises its Hessian), so on a
small CPU the next torch forward pass shares its cores with spinning OpenBLAS threads.
Measured on 2 cores: a CHGNet stress call on a 4-atom Cu cell took 0.11-0.15 s right after
a cell-filter step instead of 0.05 s, and a whole Cu(111) surface-energy run took 0.60 s
instead of 0.33 s. The linear algebra ASE does between force calls is tiny (3N×3N), so
one BLAS thread costs nothing measurable.

The workflows whose force calls alternate with ASE's linear algebra (relaxations, surface
energies, NEB, MD) run under :func:`numpy_blas_threads`. Phonons do not: their forces
come in one batch, and phonopy's mesh diagonalisation afterwards gains a little from
more threads. Use it in your own ASE scripts the same way::

    from ase_surftune.core.threads import numpy_blas_threads

    with numpy_blas_threads():
        BFGS(FrechetCellFilter(atoms)).run(fmax=0.02)

The counts are set and restored with threadpoolctl's ``threadpool_limits`` machinery
(``ThreadpoolController.limit``) on the selected libraries; this module only adds the
bookkeeping for blocks that nest or close out of order across threads.

Only the OpenBLAS copies bundled with numpy and scipy are limited: torch's own thread
pool, and BLAS libraries that DFT codes link themselves (GPAW's, for example), are left
alone. Set ``SURFTUNE_NUMPY_BLAS_THREADS`` to a number to use that many threads instead,
or to ``off`` to leave numpy's BLAS untouched.

Workflows run from worker threads (a thread-pool executor) get the same bookkeeping, but
whether OpenBLAS honours a count set from a worker thread depends on its build; with the
pthreads builds in numpy's wheels it did not after the main thread had set one. Process
executors (``parallel.map_tasks(..., executor="process")``) are unaffected.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["numpy_blas_threads", "single_threaded_numpy"]

ENV_VAR = "SURFTUNE_NUMPY_BLAS_THREADS"

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_controllers: Any = None


def _bundled_openblas() -> Any:
    """A threadpoolctl ``ThreadpoolController`` of the OpenBLAS libraries numpy and scipy
    bundle (its ``lib_controllers`` list them)."""
    global _controllers
    with _lock:
        if _controllers is None:
            import numpy
            import scipy.linalg  # noqa: F401  (loads scipy's own OpenBLAS copy)
            from threadpoolctl import ThreadpoolController

            site = Path(numpy.__file__).resolve().parent.parent
            roots = [site / name for name in ("numpy", "numpy.libs", "scipy", "scipy.libs")]

            def bundled(path: str) -> bool:
                p = Path(path).resolve()
                return p.name.startswith("libscipy_openblas") or any(
                    p.is_relative_to(r) for r in roots)

            every = ThreadpoolController()
            _controllers = every.select(filepath=[
                lc.filepath for lc in every.lib_controllers
                if lc.internal_api == "openblas" and bundled(lc.filepath)])
        return _controllers


def _threads_from_env(default: int) -> int | None:
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return default
    if value in ("off", "none", "no", "false"):
        return None
    n = int(value) if value.isdigit() else 0
    if n < 1:
        from ase_surftune.core.errors import ConfigError

        raise ConfigError(f"environment variable {ENV_VAR}={value!r} is invalid: set it to a "
                          f"positive integer or 'off', or unset it")
    return n


_active: list[tuple[object, int]] = []  # (token, threads) of the blocks now open
_limiter: list[Any] = []  # threadpoolctl's limiter of the outermost open block


@contextlib.contextmanager
def numpy_blas_threads(n: int = 1) -> Iterator[None]:
    """Limit numpy's and scipy's bundled OpenBLAS to ``n`` threads inside the block.

    Blocks nest and may be open in several threads at once (a thread-pool executor running
    workflows side by side): the most recently opened block that is still open sets the
    count, and the counts from before the first block come back when the last one closes.
    The environment variable ``SURFTUNE_NUMPY_BLAS_THREADS`` overrides ``n`` (a number,
    or ``off`` to do nothing).
    """
    n_eff = _threads_from_env(n)
    if n_eff is None:
        yield
        return
    controller = _bundled_openblas()
    token = object()
    with _lock:
        if not _active:  # threadpoolctl's threadpool_limits: records and sets the counts
            _limiter[:] = [controller.limit(limits=n_eff)]
        else:
            for lc in controller.lib_controllers:
                lc.set_num_threads(n_eff)
        _active.append((token, n_eff))
    try:
        yield
    finally:
        with _lock:
            _active[:] = [entry for entry in _active if entry[0] is not token]
            if _active:  # blocks may close out of order across threads
                for lc in controller.lib_controllers:
                    lc.set_num_threads(_active[-1][1])
            else:
                _limiter.pop().restore_original_limits()


def single_threaded_numpy(fn: F) -> F:
    """Decorator: run ``fn`` under :func:`numpy_blas_threads` (one BLAS thread)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with numpy_blas_threads():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
