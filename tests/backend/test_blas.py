"""stacked_matmul: np.matmul with its stack shared between the threads in blocks, each block's GEMMs on one
BLAS thread. The numbers must be np.matmul's, bit for bit; the shares must really run on the pool with BLAS
at one thread; BLAS must get the policy's count back however the call ends."""
import multiprocessing
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from scratchnet.backend import blas

rng = np.random.default_rng(0)


@pytest.fixture
def two_threads(monkeypatch):
    """The policy's count at 2, whatever this machine has (the split does not depend on the cores)."""
    monkeypatch.setattr(blas.threads, "get_num_threads", lambda: 2)


def blas_counts():
    return {pool["filepath"]: pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


CASES = [  # a shape, b shape: stacks even and odd, one share's worth, broadcast operands, 4-D
    ((36, 64, 64), (36, 64, 128)),
    ((7, 5, 3), (7, 3, 4)),
    ((2, 1, 9), (2, 9, 1)),
    ((16, 32), (8, 32, 49)),  # a 1x1 convolution: the filters broadcast over the images
    ((3, 8, 4), (5, 3, 4, 6)),  # a grouped 1x1 convolution: (g, co, ci) over (N, g, ci, hw)
    ((1, 6, 5), (9, 5, 7)),  # a leading axis of 1 broadcasts
    ((0, 4, 3), (0, 3, 2)),  # an empty stack
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_shape,b_shape", CASES)
def test_same_numbers_as_numpy(two_threads, a_shape, b_shape, dtype):
    a, b = rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)
    expected = np.matmul(a, b)
    got = blas.stacked_matmul(a, b)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_out_and_transposed_views(two_threads):
    """Winograd's weight gradient: a transposed view as the right operand, written into a given buffer."""
    gy, x = rng.standard_normal((36, 32, 98), dtype=np.float32), rng.standard_normal((36, 128, 98), dtype=np.float32)
    out = np.empty((36, 32, 128), np.float32)
    assert blas.stacked_matmul(gy, x.transpose(0, 2, 1), out=out) is out
    np.testing.assert_array_equal(out, np.matmul(gy, x.transpose(0, 2, 1)))


def test_thread_count():
    assert blas._thread_count(36, 2) == 2
    assert blas._thread_count(7, 2) == 2  # 4 of 3.5: 14% above the mean
    assert blas._thread_count(3, 2) == 1  # 2 of 1.5 would leave one thread idle a third of the time
    assert blas._thread_count(1, 2) == 1
    assert blas._thread_count(36, 1) == 1
    assert blas._thread_count(10, 4) == 4
    assert blas._thread_count(0, 2) == 1


class Spy(np.ndarray):
    """Records, for each matmul it enters, the thread and the BLAS thread counts at that moment."""
    calls = []

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        Spy.calls.append((threading.current_thread().name, set(blas_counts().values()), len(inputs[0])))
        inputs = tuple(i.view(np.ndarray) if isinstance(i, Spy) else i for i in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)


def test_shares_run_on_the_pool_with_one_blas_thread(two_threads):
    Spy.calls = []
    before = blas_counts()
    a, b = rng.standard_normal((10, 8, 8)), rng.standard_normal((10, 8, 8))
    out = blas.stacked_matmul(a.view(Spy), b, out=np.empty((10, 8, 8)))
    np.testing.assert_array_equal(out, np.matmul(a, b))
    assert all(counts == {1} for _, counts, _ in Spy.calls)
    assert [items for _, _, items in Spy.calls] == [2] * 5  # 10 items: blocks of 10 // (ITEM_BLOCKS 2 * 2 threads)
    assert blas_counts() == before


def test_one_thread_is_one_plain_matmul(monkeypatch):
    monkeypatch.setattr(blas.threads, "get_num_threads", lambda: 1)
    Spy.calls = []
    blas.stacked_matmul(rng.standard_normal((10, 8, 8)).view(Spy), rng.standard_normal((10, 8, 8)))
    assert [(name, items) for name, _, items in Spy.calls] == [(threading.current_thread().name, 10)]


def test_blas_count_restored_when_a_share_fails(two_threads):
    before = blas_counts()
    with pytest.raises(ValueError):
        blas.stacked_matmul(np.ones((4, 3, 5)), np.ones((4, 4, 2)))  # inner sizes 5 and 4
    assert blas_counts() == before


def test_concurrent_callers(two_threads):
    """Several user threads at once: every result right, and BLAS back at its count when the last ends."""
    before = blas_counts()
    a, b = rng.standard_normal((12, 40, 30)), rng.standard_normal((12, 30, 20))
    expected = np.matmul(a, b)
    failures = []

    def work():
        for _ in range(50):
            if not np.array_equal(blas.stacked_matmul(a, b), expected):
                failures.append(1)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures
    assert blas_counts() == before


def _in_child(queue):  # the fork copied the parent's patched get_num_threads (2)
    a, b = np.ones((6, 4, 4)), np.ones((6, 4, 4))
    queue.put(bool(np.array_equal(blas.stacked_matmul(a, b), np.matmul(a, b))))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
def test_after_fork(two_threads):
    """A forked child (a data loader's worker) has no copy of the pool's threads: it must start its own."""
    blas.stacked_matmul(np.ones((6, 4, 4)), np.ones((6, 4, 4)))  # the parent's pool exists
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_in_child, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and queue.get(timeout=5)


def test_other_arrays_go_to_their_own_matmul(two_threads, monkeypatch):
    """Not NumPy (CuPy on the GPU): its own matmul, untouched (checked with a stand-in array type)."""
    class Other:
        pass

    seen = []

    class Module:
        @staticmethod
        def matmul(a, b, out=None):
            seen.append((a, b, out))
            return "theirs"

    a, b = Other(), Other()
    monkeypatch.setattr(blas, "get_array_module", lambda *arrays: Module)
    assert blas.stacked_matmul(a, b) == "theirs"
    assert seen == [(a, b, None)]


def test_run_shares_runs_each_block_once_here_and_on_the_pool(two_threads):
    """run_shares: every block once, on the calling thread and the pool's, BLAS at one thread while they run and
    back after; with one thread, all items in one call here with BLAS as it is."""
    before = blas_counts()
    seen, pool_started = [], threading.Event()

    def work(lo, hi):
        here = threading.current_thread() is threading.main_thread()
        if here and not pool_started.wait(5):  # the caller waits for the pool's thread to take a block
            raise TimeoutError("the pool's thread never took a block")
        pool_started.set()
        seen.append((lo, hi, here, set(blas_counts().values())))
    blas.run_shares(work, 10, 2, block=3)
    assert sorted((lo, hi) for lo, hi, _, _ in seen) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert {here for _, _, here, _ in seen} == {True, False}
    assert all(counts == {1} for _, _, _, counts in seen)
    assert blas_counts() == before
    seen.clear()
    blas.run_shares(work, 10, 1)
    assert [(lo, hi, here) for lo, hi, here, _ in seen] == [(0, 10, True)]
    assert seen[0][3] == set(before.values())


def test_run_shares_hands_blocks_to_whoever_is_free(two_threads):
    """A pool thread busy with one block does not hold up the others: the caller takes every block left, and
    the call still returns only once the pool's block is done."""
    ran, finished = [], []

    def work(lo, hi):
        here = threading.current_thread() is threading.main_thread()
        ran.append((lo, here))
        if not here:
            time.sleep(0.2)
            finished.append(lo)
    blas.run_shares(work, 40, 2)
    assert sorted(lo for lo, _ in ran) == list(range(40))
    on_pool = [lo for lo, here in ran if not here]
    assert len(on_pool) <= 1 and finished == on_pool


def test_run_shares_raises_what_a_block_raised_once_none_runs(two_threads):
    """The first error is raised after every block that started has ended, and no block starts after it."""
    before = blas_counts()
    started, running = [], []

    def work(lo, hi):
        started.append(lo)
        running.append(lo)
        time.sleep(0.01)
        running.remove(lo)
        if lo == 2:
            raise RuntimeError("block 2 failed")
    with pytest.raises(RuntimeError, match="block 2 failed"):
        blas.run_shares(work, 100, 2)
    assert not running and len(started) < 100 and blas_counts() == before
