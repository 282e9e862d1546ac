"""Work with BLAS in it, split between the threads: ``stacked_matmul`` (numpy.matmul with its stack split) and
``run_shares`` (any work, in shares).

``np.matmul`` on a stack, (B, m, k) @ (B, k, n), calls one BLAS GEMM per item, one after the other,
and BLAS spreads each GEMM over all its threads: for items of a few MFLOP (Winograd's products at
each transform point, a 1x1 convolution's product per image) the threads spend much of every GEMM
starting, splitting and waiting. Here the stack is shared between the threads instead, and each
thread runs the GEMMs it takes with BLAS on one thread, on this module's own pool of threads. The
convolution routes run their stacks on Numba's threads instead where they can (kernels/cpu_gemm.py,
the same numbers: the threads of the kernels around the stacks), and here otherwise: another BLAS than
NumPy's bundled OpenBLAS, layouts BLAS cannot take as they are, a first run's kernels still compiling,
CuPy arrays. np.matmul against both, on Winograd's products of ResNet-20 and DenseNet layers and a
ResNet-50 1x1 convolution's GEMM per image (1 to 103 MFLOP per item): `python benchmarks/shares.py`,
results in benchmarks/results/shares.json (docs/core.md quotes them).

Each item is still one BLAS GEMM over its whole k, as in np.matmul, so the results are the same
numbers (OpenBLAS splits a GEMM between threads by rows and columns, never along k).

While shares run, every BLAS library loaded is held at one thread (threadpoolctl); once no block is
left or running, the caller (the last of several calling at once) gives BLAS back the policy's count
(threads.get_num_threads). NumPy arrays only: anything else (CuPy) goes to its own matmul.

The items are handed out in blocks from a shared counter, not in fixed halves: the calling thread starts
on them at once and the pool's threads join when they wake (50-100 us after the call on a 2-core machine),
so nobody waits at the end for a thread that started late with a whole half still to do. Which thread
runs a block does not change its numbers.

``run_shares`` runs any work that way: the im2col route's column chunks, each built, multiplied and put
in place by one thread, where the route's own kernel on Numba's threads cannot run (functional/conv_routes.py).
"""
import contextlib
import os
import queue
import threading

import numpy as np

from . import threads
from .arrays import get_array_module

MOST_IMBALANCE = 1.2  # share only when the largest share is at most this much above the mean (3 items: no)
ITEM_BLOCKS = 2  # stacked_matmul hands out about this many blocks per thread

_lock = threading.Lock()
_state = {"pool": None, "workers": 0, "blas": None, "held": 0}  # pool: the queue its threads take calls from


def stacked_matmul(a, b, out=None):
    """``np.matmul(a, b, out=out)``, the leading axis of the result shared between the threads.

    a and b broadcast as in np.matmul; an operand with fewer dimensions than the result, or a
    leading axis of 1, is shared whole. Stacks too short to share evenly (see MOST_IMBALANCE), one
    thread, or non-NumPy arrays: one np.matmul (xp.matmul), as before.
    """
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return get_array_module(a).matmul(a, b, out=out)
    if a.ndim < 2 or b.ndim < 2:
        return np.matmul(a, b, out=out)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    items = shape[0] if len(shape) > 2 else 0
    n_threads = thread_count(items)
    if n_threads < 2:
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty(shape, dtype=np.result_type(a, b))

    def block(lo, hi):
        np.matmul(_rows(a, lo, hi, len(shape)), _rows(b, lo, hi, len(shape)), out=out[lo:hi])

    # blocks of a few items: each np.matmul call costs some microseconds of its own
    run_shares(block, items, n_threads, max(1, items // (ITEM_BLOCKS * n_threads)))
    return out


def thread_count(items):
    """How many threads to share range(items) between: the policy's count, or 1 when sharing would not pay."""
    return _thread_count(items, threads.get_num_threads())


def run_shares(work, items, n_threads, block=1):
    """work(lo, hi) over range(items) in blocks of ``block`` items, on the calling thread and n_threads - 1 of
    the pool's, every BLAS library held at one thread meanwhile; each block runs once, and the call returns
    when none is left and none is running, raising what a block raised (no new block starts after that).

    ``work`` must not call stacked_matmul or run_shares itself (the pool's threads are its shares) and must
    release the GIL for its long parts (NumPy's BLAS calls and ``nogil`` kernels do).
    """
    if n_threads < 2:
        work(0, items)
        return
    blocks = _Blocks(work, items, block)
    pool = _pool(n_threads - 1)
    with one_blas_thread():
        for _ in range(n_threads - 1):
            pool.put(blocks)  # a thread that wakes after the last block is taken finds none and goes back
        blocks.run()
        blocks.wait()  # no block running: BLAS may have its threads back
    if blocks.error is not None:
        raise blocks.error


class _Blocks:
    """range(items) in blocks, taken one at a time by whichever thread asks next."""

    def __init__(self, work, items, block):
        self.work, self.items, self.block = work, items, block
        self.next = 0  # the first item not yet taken
        self.running = 0  # blocks taken and not finished
        self.error = None  # the first exception a block raised
        self.changed = threading.Condition(threading.Lock())

    def run(self):
        """Take blocks and run them until none is left (or one failed)."""
        while (taken := self._take()) is not None:
            try:
                self.work(*taken)
            except BaseException as error:  # noqa: B036 - handed to the caller, who raises it
                with self.changed:
                    self.error = self.error or error
            finally:
                with self.changed:
                    self.running -= 1
                    if self.running == 0:
                        self.changed.notify_all()

    def wait(self):
        with self.changed:
            self.changed.wait_for(lambda: self.running == 0)

    def _take(self):
        with self.changed:
            if self.error is not None or self.next >= self.items:
                return None
            lo = self.next
            self.next = min(self.items, lo + self.block)
            self.running += 1
            return lo, self.next


def _thread_count(items, n_threads):
    """Threads to share ``items`` between: no more than the items, and 1 where the items cannot be shared
    evenly (the largest thread's part more than MOST_IMBALANCE above the mean)."""
    parts = min(items, n_threads)
    if parts < 2 or -(-items // parts) > MOST_IMBALANCE * items / parts:
        return 1
    return parts


def _rows(operand, lo, hi, ndim):
    """operand's items lo:hi of the result's leading axis (the whole operand where it broadcasts)."""
    return operand[lo:hi] if operand.ndim == ndim and operand.shape[0] != 1 else operand


def _pool(workers):
    """The queue of the process's pool with ``workers`` threads (a new pool when the count changes). A bare
    queue and threads, not concurrent.futures: its futures and bookkeeping cost each call tens of
    microseconds, here where a call lasts a few hundred."""
    with _lock:
        if _state["workers"] != workers:
            if _state["pool"] is not None:
                for _ in range(_state["workers"]):
                    _state["pool"].put(None)  # each old thread stops when it takes one
            calls = queue.SimpleQueue()
            for index in range(workers):
                threading.Thread(target=_serve, args=(calls,), name=f"scratchnet-blas-{index}", daemon=True).start()
            _state.update(workers=workers, pool=calls)
        return _state["pool"]


def _serve(calls):
    """A pool thread: run the blocks of each call it takes, until it takes None."""
    while (blocks := calls.get()) is not None:
        blocks.run()


def _blas_libraries():
    if _state["blas"] is None:
        from threadpoolctl import ThreadpoolController
        _state["blas"] = ThreadpoolController().select(user_api="blas").lib_controllers
    return _state["blas"]


@contextlib.contextmanager
def one_blas_thread():
    """Every BLAS library at one thread inside (for work that shares itself between threads, as run_shares
    and kernels/cpu_gemm.py do); nested and concurrent uses are counted, the last one out gives BLAS back
    the policy's count."""
    _hold_blas()
    try:
        yield
    finally:
        _release_blas()


def _hold_blas():
    """One BLAS thread per share; counted, so that calls from several user threads nest."""
    with _lock:
        _state["held"] += 1
        if _state["held"] == 1:
            for library in _blas_libraries():
                library.set_num_threads(1)


def _release_blas():
    with _lock:
        _state["held"] -= 1
        if _state["held"] == 0:
            _give_blas_back()


def _give_blas_back():
    """Every BLAS library back at the policy's count."""
    for library in _blas_libraries():
        library.set_num_threads(threads.get_num_threads())


def _after_fork():
    """In a forked child (a data loader's worker) the pool's threads do not exist: start afresh, and give
    BLAS its count back if a call was running in another thread of the parent when it forked."""
    global _lock
    _lock = threading.Lock()
    held = _state["held"]
    _state.update(pool=None, workers=0, held=0)
    if held:
        _give_blas_back()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
