"""Work with BLAS in it, split between the threads: ``stacked_matmul`` (numpy.matmul with its stack split) and
``run_shares`` (any work, in shares).

``np.matmul`` on a stack, (B, m, k) @ (B, k, n), calls one BLAS GEMM per item, one after the other,
and BLAS spreads each GEMM over all its threads: for items of a few MFLOP (Winograd's products at
each transform point, a 1x1 convolution's product per image) the threads spend much of every GEMM
starting, splitting and waiting. Here the stack is cut into one share per thread instead, and each
thread runs its share's GEMMs with BLAS on one thread. Measured alone, float32, 2 threads, quiet
2-core machine (np.matmul vs split): Winograd's 36 x (64x64)@(64x128) (ResNet-20's 64 @8 at batch
32) 0.34 vs 0.23 ms; 36 x (128x32)@(32x392) (DenseNet's 32->128 input gradient @28, batch 8)
1.45 vs 0.71 ms; a ResNet-50 1x1 conv, 8 x (256x64)@(64x3136), 5.4 vs 5.0 ms; never slower on
the 16 shapes measured (0.8 to 103 MFLOP per item).

Each item is still one BLAS GEMM over its whole k, as in np.matmul, so the results are the same
numbers (OpenBLAS splits a GEMM between threads by rows and columns, never along k).

While shares run, every BLAS library loaded is held at one thread (threadpoolctl); the last share
to finish gives BLAS back the policy's count (threads.get_num_threads). NumPy arrays only: anything
else (CuPy) goes to its own matmul.

``run_shares`` runs any work that way, one share per thread: the im2col route's column chunks, each
built, multiplied and put in place by one thread (functional/conv_routes.py).
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import threads
from .arrays import get_array_module

MOST_IMBALANCE = 1.2  # split only when the largest share is at most this much above the mean (3 items: no)

_lock = threading.Lock()
_state = {"pool": None, "workers": 0, "blas": None, "held": 0}


def stacked_matmul(a, b, out=None):
    """``np.matmul(a, b, out=out)``, the leading axis of the result cut into one share per thread.

    a and b broadcast as in np.matmul; an operand with fewer dimensions than the result, or a
    leading axis of 1, is shared whole. Stacks too short to share evenly (see MOST_IMBALANCE), one
    thread, or non-NumPy arrays: one np.matmul (xp.matmul), as before.
    """
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return get_array_module(a).matmul(a, b, out=out)
    if a.ndim < 2 or b.ndim < 2:
        return np.matmul(a, b, out=out)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    bounds = thread_shares(shape[0] if len(shape) > 2 else 0)
    if len(bounds) < 2:
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty(shape, dtype=np.result_type(a, b))

    def share(lo, hi):
        np.matmul(_rows(a, lo, hi, len(shape)), _rows(b, lo, hi, len(shape)), out=out[lo:hi])

    run_shares(share, bounds)
    return out


def thread_shares(items):
    """[(lo, hi)]: one share of range(items) per thread, or [(0, items)] when splitting would not pay."""
    return _shares(items, threads.get_num_threads())


def run_shares(work, bounds):
    """work(lo, hi) for every share in ``bounds`` at once, the first on the calling thread and the others on the
    pool, every BLAS library held at one thread meanwhile; raises what a share raised once all are done.

    ``work`` must not call stacked_matmul or run_shares itself (the pool's threads are its shares) and must
    release the GIL for its long parts (NumPy's BLAS calls and ``nogil`` kernels do).
    """
    if len(bounds) < 2:
        work(*bounds[0])
        return
    pool = _pool(len(bounds) - 1)
    _hold_blas()
    try:
        futures = [pool.submit(work, lo, hi) for lo, hi in bounds[1:]]
        try:
            work(*bounds[0])
        finally:
            for future in futures:
                future.exception()  # waits: every share done before BLAS gets its threads back
        for future in futures:
            future.result()  # raises what a share raised
    finally:
        _release_blas()


def _shares(items, n_threads):
    """[(lo, hi)] for each thread's share of ``items``, or one share when splitting would not pay."""
    parts = min(items, n_threads)
    if parts < 2 or -(-items // parts) > MOST_IMBALANCE * items / parts:
        return [(0, items)]
    edges = [items * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _rows(operand, lo, hi, ndim):
    """operand's items lo:hi of the result's leading axis (the whole operand where it broadcasts)."""
    return operand[lo:hi] if operand.ndim == ndim and operand.shape[0] != 1 else operand


def _pool(workers):
    """The process's pool with ``workers`` threads (a new one when the count changes)."""
    with _lock:
        if _state["workers"] != workers:
            if _state["pool"] is not None:
                _state["pool"].shutdown(wait=False)
            _state.update(workers=workers, pool=ThreadPoolExecutor(workers, thread_name_prefix="scratchnet-blas"))
        return _state["pool"]


def _blas_libraries():
    if _state["blas"] is None:
        from threadpoolctl import ThreadpoolController
        _state["blas"] = ThreadpoolController().select(user_api="blas").lib_controllers
    return _state["blas"]


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
