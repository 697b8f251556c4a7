"""Run independent tasks through any ``concurrent.futures.Executor``.

Sweeps (properties over many surfaces and models, labelling, evaluation of many files,
learning-curve points) are lists of independent tasks. They go through
:func:`map_tasks`, which accepts

* ``None`` or ``"inline"`` — run in this process, one after another (the default);
* ``"process"`` or ``"process:N"`` — a local ``ProcessPoolExecutor`` (spawned workers,
  safe with torch);
* any ``concurrent.futures.Executor`` — e.g. ``dask.distributed.Client(...).get_executor()``.

Tasks must carry *specs* (model names, bundle paths, file paths) rather than live torch
objects so that they pickle to remote workers. Results come back in task order; a task
that raises is reported next to the others (:class:`TaskResult.error`) instead of
killing the sweep.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["InlineExecutor", "TaskResult", "check_executor", "get_executor", "map_tasks", "raise_failures"]


class InlineExecutor(Executor):
    """An Executor that runs each task immediately in the calling process."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fut: Future[T] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - reported through the future
            fut.set_exception(exc)  # Ctrl-C and SystemExit propagate: they stop the sweep
        return fut


@dataclass
class TaskResult(Generic[T]):
    """Outcome of one task: ``value`` on success, ``error`` (message) on failure."""

    index: int
    label: str
    value: T | None = None
    error: str | None = None
    traceback: str | None = None
    exception: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        v = self.value.to_dict() if hasattr(self.value, "to_dict") else self.value
        return {"index": self.index, "label": self.label, "ok": self.ok, "value": v,
                "error": self.error}


def check_executor(executor: Executor | str | None) -> None:
    """Validate an executor argument without starting anything (cheap; call it up front).

    Raises:
        ConfigError: an unknown spec or a worker count that is not a positive integer.
        MissingDependencyError: ``dask[:N]`` without dask installed.
    """
    from ase_surftune.core.errors import ConfigError, MissingDependencyError

    if executor is None or executor == "inline" or isinstance(executor, Executor):
        return
    kind, _, n = str(executor).partition(":") if isinstance(executor, str) else ("", "", "")
    if kind not in ("process", "dask"):
        raise ConfigError(f"Unknown executor {executor!r}: use None/'inline', 'process[:N]', "
                          f"'dask[:N]' or a concurrent.futures.Executor")
    if n and not (n.isdigit() and int(n) > 0):
        raise ConfigError(f"executor {executor!r}: the worker count after ':' must be a "
                          f"positive integer, e.g. '{kind}:4'")
    if kind == "dask":
        import importlib.util

        if importlib.util.find_spec("dask") is None:
            raise MissingDependencyError(
                f"executor {executor!r} needs dask.distributed, which is not installed; "
                f"install the extra: pip install 'ase_surftune[dask]'")


def get_executor(executor: Executor | str | None = None) -> tuple[Executor, bool]:
    """Resolve an executor argument. Returns ``(executor, owned)``; owned ones get shut down."""
    check_executor(executor)
    if executor is None or executor == "inline":
        return InlineExecutor(), True
    if isinstance(executor, Executor):
        return executor, False
    if isinstance(executor, str) and executor.split(":", 1)[0] == "process":
        workers = int(executor.split(":", 1)[1]) if ":" in executor else None
        ctx = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx), True
    if isinstance(executor, str) and executor.split(":", 1)[0] == "dask":
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as exc:
            from ase_surftune.core.errors import MissingDependencyError

            raise MissingDependencyError(
                f"executor {executor!r} needs dask.distributed, which is not installed "
                f"({exc}); install the extra: pip install 'ase_surftune[dask]'") from exc
        workers = int(executor.split(":", 1)[1]) if ":" in executor else 2
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        return _DaskOwned(Client(cluster), cluster), True
    from ase_surftune.core.errors import ConfigError

    raise ConfigError(f"Unknown executor {executor!r}: use None/'inline', 'process[:N]', "
                     f"'dask[:N]' or a concurrent.futures.Executor")


class _DaskOwned(Executor):
    """A dask client's executor that also closes its client and cluster on shutdown."""

    def __init__(self, client: Any, cluster: Any) -> None:
        self._client, self._cluster = client, cluster
        self._ex = client.get_executor()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._ex.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._ex.shutdown(wait=wait)
        self._client.close()
        self._cluster.close()


def map_tasks(fn: Callable[..., T], tasks: Sequence[Any], executor: Executor | str | None = None,
              *, labels: Sequence[str] | None = None, progress: bool = True,
              desc: str = "tasks") -> list[TaskResult[T]]:
    """Run ``fn(task)`` for every task (``fn(*task)`` if the task is a tuple).

    Args:
        fn: a picklable (module-level) function.
        tasks: task arguments; keep them picklable (specs and paths, not live models).
        executor: see the module docstring.
        labels: a short label per task for reports (default ``str(task)``).
        progress: show a tqdm bar as tasks complete.

    Returns:
        One :class:`TaskResult` per task, in task order.
    """
    ex, owned = get_executor(executor)
    labels = list(labels) if labels is not None else [str(t)[:80] for t in tasks]
    results: list[TaskResult[T]] = [TaskResult(i, labels[i]) for i in range(len(tasks))]
    try:
        futures: dict[Future, int] = {}
        for i, task in enumerate(tasks):
            args = task if isinstance(task, tuple) else (task,)
            futures[ex.submit(fn, *args)] = i
        done: Iterable[Future] = as_completed(futures)
        if progress:
            from tqdm.auto import tqdm

            done = tqdm(done, total=len(futures), desc=desc, unit="task")
        for fut in done:
            i = futures[fut]
            try:
                results[i].value = fut.result()
            except Exception as exc:  # noqa: BLE001 - reported per task; Ctrl-C stops
                results[i].error = f"{type(exc).__name__}: {exc}"
                results[i].exception = exc
                results[i].traceback = "".join(traceback.format_exception(exc))
    finally:
        if owned:
            ex.shutdown(wait=True)
    return results


def raise_failures(results: Sequence[TaskResult[Any]]) -> None:
    """Raise :class:`~ase_surftune.core.errors.TaskFailedError` listing every failed task
    (chained to the first task's exception); no-op if all succeeded."""
    from ase_surftune.core.errors import TaskFailedError

    failed = [r for r in results if not r.ok]
    if failed:
        lines = "\n".join(f"  [{r.index}] {r.label}: {r.error}" for r in failed)
        raise TaskFailedError(f"{len(failed)} of {len(results)} tasks failed:\n{lines}"
                              ) from failed[0].exception
