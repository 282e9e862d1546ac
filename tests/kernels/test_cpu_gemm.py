"""kernels/cpu_gemm.py: stacked GEMMs on Numba's threads, each item the BLAS call np.matmul makes for it.

The numbers must be np.matmul's, bit for bit, in every layout the route takes; every call it does not take
(its conditions, a first run's deferral, no NumPy OpenBLAS) must go to backend.blas.stacked_matmul, which
gives the same numbers; BLAS must have its threads back after each call.
"""
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import scratchnet as sn
from scratchnet.backend import blas
from scratchnet.kernels import cpu_gemm, dispatch

pytestmark = pytest.mark.skipif(not cpu_gemm._addresses(), reason="NumPy's BLAS here is not its bundled OpenBLAS "
                                "(scipy_cblas_?gemm64_): every stack takes backend.blas's route")


@pytest.fixture
def fallback_calls(monkeypatch):
    """The calls that went to backend.blas.stacked_matmul (a list, filled as they happen)."""
    calls, real = [], blas.stacked_matmul

    def spy(a, b, out=None):
        calls.append((a.shape, b.shape))
        return real(a, b, out=out)
    monkeypatch.setattr(blas, "stacked_matmul", spy)
    return calls


def transposed(x):
    """x's values in a transposed view of a C-contiguous copy (BLAS reads it with a transpose flag)."""
    return np.ascontiguousarray(x.swapaxes(-1, -2)).swapaxes(-1, -2)


LAYOUTS = {
    "both C-contiguous": lambda a, b: (a, b),
    "a transposed (the input gradient's filters)": lambda a, b: (transposed(a), b),
    "b transposed (the weight gradient's x_hat^T)": lambda a, b: (a, transposed(b)),
    "both transposed": lambda a, b: (transposed(a), transposed(b)),
    "a 2-D, shared by every item (a 1x1 conv's weight)": lambda a, b: (a[0], b),
    "b 2-D, shared by every item": lambda a, b: (a, b[0]),
    "row and item steps longer than the matrix": lambda a, b: (a[:, :, :20], b[:, :20]),
    "the stack a strided view (every other item)": lambda a, b: (a[::2], b[::2]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_np_matmuls_numbers_bit_for_bit(dtype, layout, fallback_calls):
    rng = np.random.default_rng(0)
    a, b = LAYOUTS[layout](rng.standard_normal((12, 9, 23)).astype(dtype),
                           rng.standard_normal((12, 23, 17)).astype(dtype))
    expected = np.matmul(a, b)
    out = np.full(expected.shape, np.nan, dtype)
    assert cpu_gemm.stacked_matmul(a, b, out=out) is out
    assert np.array_equal(out, expected)
    assert np.array_equal(cpu_gemm.stacked_matmul(a, b), expected)
    assert fallback_calls == []  # all on Numba's threads


def test_winograd_and_1x1_shapes_match_np_matmul(fallback_calls):
    """The stacks the convolution routes hand it: Winograd's products (and the weight gradient's, b transposed),
    a 1x1 convolution's GEMM per image."""
    rng = np.random.default_rng(1)
    for a_shape, b_shape, flip_b in [((36, 32, 32), (36, 32, 512), False), ((36, 64, 128), (36, 64, 128), True),
                                     ((64, 32), (8, 32, 196), False)]:
        a = rng.standard_normal(a_shape, dtype=np.float32)
        b = rng.standard_normal(b_shape, dtype=np.float32)
        b = b.transpose(0, 2, 1) if flip_b else b
        assert np.array_equal(cpu_gemm.stacked_matmul(a, b), np.matmul(a, b))
    assert fallback_calls == []


def stacks(rng, items=6):
    return rng.standard_normal((items, 5, 7)), rng.standard_normal((items, 7, 4))


CALLS_IT_LEAVES = {
    # what np.matmul would compute with another BLAS call, or cannot hand to BLAS as it is
    "a matrix-vector product (np.matmul's gemv)": lambda a, b: (a, b[:, :, :1]),
    "one row (np.matmul's gemv)": lambda a, b: (a[:, :1], b),
    "dtypes that differ (np.matmul converts)": lambda a, b: (a.astype(np.float32), b),
    "float16": lambda a, b: (a.astype(np.float16), b.astype(np.float16)),
    "integers": lambda a, b: (a.astype(np.int64), b.astype(np.int64)),
    "a (np.matmul's syrk for A @ A.T)": lambda a, b: (a, a.transpose(0, 2, 1)),
    "neither axis of unit stride": lambda a, b: (a[:, :, ::2], b[:, ::2]),
    "a one-item stack broadcast": lambda a, b: (a[:1], b),
    "4-D stacks": lambda a, b: (a[None], b[None]),
    "one item": lambda a, b: (a[:1], b[:1]),
}


@pytest.mark.parametrize("case", CALLS_IT_LEAVES)
def test_calls_it_does_not_take_go_to_the_pool_route_with_the_same_numbers(case, fallback_calls):
    a, b = CALLS_IT_LEAVES[case](*stacks(np.random.default_rng(2)))
    got = cpu_gemm.stacked_matmul(a, b)
    assert np.array_equal(got, np.matmul(a, b)) and got.dtype == np.matmul(a, b).dtype
    assert len(fallback_calls) == 1


def test_an_output_that_overlaps_an_operand_goes_to_the_pool_route(fallback_calls):
    """np.matmul buffers such an output; a GEMM writing into its own operand would read what it wrote."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 5, 5)), rng.standard_normal((6, 5, 5))
    expected = np.matmul(a, b)
    assert np.array_equal(cpu_gemm.stacked_matmul(a, b, out=a), expected)
    assert len(fallback_calls) == 1


def test_one_thread_and_no_numpy_openblas_go_to_the_pool_route(fallback_calls, monkeypatch):
    a, b = stacks(np.random.default_rng(4))
    threads = sn.get_num_threads()
    sn.set_num_threads(1)
    try:
        assert np.array_equal(cpu_gemm.stacked_matmul(a, b), np.matmul(a, b))
    finally:
        sn.set_num_threads(threads)
    monkeypatch.setitem(cpu_gemm._found, "addresses", {})  # NumPy built against another BLAS
    monkeypatch.setattr(blas, "thread_count", lambda items: 2)
    assert np.array_equal(cpu_gemm.stacked_matmul(a, b), np.matmul(a, b))
    assert len(fallback_calls) == 2


def test_while_a_first_run_compiles_it_the_pool_route_runs_and_the_kernel_is_wanted(fallback_calls, monkeypatch):
    monkeypatch.setattr(blas, "thread_count", lambda items: 2)  # (sharing pays: the route would be taken)
    a, b = stacks(np.random.default_rng(5))
    dispatch.defer_cpu_kernels(["stacked_matmul"])
    try:
        assert np.array_equal(cpu_gemm.stacked_matmul(a, b), np.matmul(a, b))
        assert dispatch.wanted_cpu_kernels(np.float64) == ["stacked_matmul"]
    finally:
        dispatch.defer_cpu_kernels(())
    assert len(fallback_calls) == 1
    cpu_gemm.stacked_matmul(a, b)
    assert len(fallback_calls) == 1  # kernels back: Numba's threads again


def test_bad_operands_raise_np_matmuls_error():
    with pytest.raises(ValueError, match="matmul"):
        cpu_gemm.stacked_matmul(np.ones((4, 3, 5)), np.ones((4, 4, 2)))  # inner sizes 5 and 4
    with pytest.raises(ValueError):
        cpu_gemm.stacked_matmul(np.ones((4, 3, 4)), np.ones((4, 4, 2)), out=np.empty((4, 3, 3)))  # out's shape


def blas_threads():
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_blas_has_the_policys_threads_back_after_each_call_and_calls_from_threads_at_once_are_right():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((8, 30, 40)), rng.standard_normal((8, 40, 30))
    expected = np.matmul(a, b)
    cpu_gemm.stacked_matmul(a, b)
    assert set(blas_threads().values()) == {sn.get_num_threads()}
    results = []

    def worker():
        for _ in range(20):
            results.append(np.array_equal(cpu_gemm.stacked_matmul(a, b), expected))
    workers = [threading.Thread(target=worker) for _ in range(3)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert results == [True] * 60
    assert set(blas_threads().values()) == {sn.get_num_threads()}
