"""numpy's bundled OpenBLAS is single-threaded inside property workflows, and only there."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from ase_surftune.core import threads
from ase_surftune.core.threads import numpy_blas_threads
from ase_surftune.properties import relax


def _blas_threads() -> list[int]:
    libs = threads._bundled_openblas().lib_controllers
    if not libs:
        pytest.skip("numpy/scipy here do not bundle OpenBLAS (nothing to limit)")
    return [lc.get_num_threads() for lc in libs]


@pytest.fixture
def two_blas_threads():
    """Start every test from a known state: 2 BLAS threads, restored afterwards."""
    libs = threads._bundled_openblas().lib_controllers
    old = [lc.get_num_threads() for lc in libs]
    for lc in libs:
        lc.set_num_threads(2)
    yield
    for lc, k in zip(libs, old):
        lc.set_num_threads(k)


class _RecordingEMT(EMT):
    """EMT that records numpy's BLAS thread counts at every calculation."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[int]] = []

    def calculate(self, *args, **kwargs):
        self.seen.append(_blas_threads())
        super().calculate(*args, **kwargs)


def test_context_limits_restores_and_nests(two_blas_threads, monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    assert set(_blas_threads()) == {2}
    torch_threads = torch.get_num_threads()
    with numpy_blas_threads():
        assert set(_blas_threads()) == {1}
        assert torch.get_num_threads() == torch_threads  # torch's pool is not touched
        with numpy_blas_threads(2):
            assert set(_blas_threads()) == {2}
        assert set(_blas_threads()) == {1}
        a = np.random.default_rng(0).normal(size=(64, 64))
        np.testing.assert_allclose(a @ np.linalg.inv(a), np.eye(64), atol=1e-8)
    assert set(_blas_threads()) == {2}


def test_restored_after_an_exception(two_blas_threads, monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    with pytest.raises(RuntimeError), numpy_blas_threads():
        raise RuntimeError("boom")
    assert set(_blas_threads()) == {2}


def test_workflow_runs_single_threaded(two_blas_threads, monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.02, seed=1)
    calc = _RecordingEMT()
    res = relax(atoms, calc, fmax=0.05, relax_cell=True)
    assert res.converged
    assert calc.seen and all(set(s) == {1} for s in calc.seen)
    assert set(_blas_threads()) == {2}  # the caller's setting is back


def test_env_var_overrides_or_switches_off(two_blas_threads, monkeypatch):
    monkeypatch.setenv(threads.ENV_VAR, "off")
    with numpy_blas_threads():
        assert set(_blas_threads()) == {2}
    monkeypatch.setenv(threads.ENV_VAR, "3")
    with numpy_blas_threads():
        assert set(_blas_threads()) == {3}
    for bad in ("two", "0"):
        monkeypatch.setenv(threads.ENV_VAR, bad)
        with pytest.raises(ValueError, match=threads.ENV_VAR):
            numpy_blas_threads().__enter__()  # the value is checked on entry
    assert set(_blas_threads()) == {2}


class _FakeBLAS:
    """Stands in for a threadpoolctl library controller: one process-wide thread count."""

    filepath, prefix, user_api, internal_api, version = "fake", "fake", "blas", "openblas", None

    def __init__(self, n: int) -> None:
        self.num_threads = n

    def info(self, **_: object) -> dict:
        return {"filepath": self.filepath, "prefix": self.prefix, "user_api": self.user_api,
                "internal_api": self.internal_api, "version": self.version,
                "num_threads": self.num_threads}

    def get_num_threads(self) -> int:
        return self.num_threads

    def set_num_threads(self, n: int) -> None:
        self.num_threads = n


def test_blocks_open_in_two_threads_restore_the_original(monkeypatch):
    """A closes before B: B keeps its limit, and the original count comes back after B.

    The bookkeeping is tested on a stand-in library: OpenBLAS's own answer to a thread
    count set from a worker thread depends on its build (with the pthreads builds that
    numpy wheels bundle, a count set from a worker thread after the main thread set one
    did not show in get_num_threads), so a worker-thread workflow may simply run with
    numpy's count unchanged.
    """
    import threading

    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    fake = _FakeBLAS(2)
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController._from_controllers([fake])
    monkeypatch.setattr(threads, "_bundled_openblas", lambda: controller)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def thread_a():
        with numpy_blas_threads():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def thread_b():
        a_in.wait(5)
        with numpy_blas_threads(3):
            b_in.set()
            a_out.wait(5)
            seen["b_after_a_closed"] = fake.num_threads

    workers = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert seen["b_after_a_closed"] == 3
    assert fake.num_threads == 2
