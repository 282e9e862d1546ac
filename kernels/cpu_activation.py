"""Numba CPU kernels of the sigmoid and SiLU (swish) activations (called through the public API of
kernels/cpu.py, whose module docstring gives the rules every CPU kernel follows).

Both start from the stable sigmoid, which never overflows (functional/activation.py's array code):

    e = exp(-|x|)        s = 1 / (1 + e)  where x >= 0,   e / (1 + e)  elsewhere

The exponential is NumPy's, in place on a temporary (its SIMD exp is 5x Numba's scalar one here);
the kernels are the passes around it, each writing everything it can in one go (SiLU's output and
the sigmoid its backward needs; a gradient in one pass). The same operations in the same order and
dtype as the array code, so the same numbers, bit for bit. The choice between 1 and e is a select,
not a branch: a branch on the data kept LLVM from vectorising (5x slower). The passes hand a large
array's blocks to the threads, as every elementwise kernel does (kernels/cpu_rows.py), and so does the exp.
"""
import numpy as np
from numba import njit, prange

from ..backend import blas
from .cpu_rows import BLOCK, _blocks

# Each pass is a range (the loop) and a driver that hands an array of several blocks to the threads (cpu_rows.py's
# BLOCK). error_model="numpy" on the passes that divide: Numba's default (Python's) checks every divisor for
# zero, a branch that keeps the loop scalar (the SiLU pass: 3.0 vs 1.5 ms on 12 MB); 1 + e is never zero.


@njit(cache=True, inline="always")
def _negative_abs_range(xf, tf, start, stop):
    for k in range(start, stop):
        v = xf[k]
        tf[k] = -v if v >= 0 else v


@njit(parallel=True, cache=True)
def _negative_abs(xf, tf):
    """tf = -|xf| (NaN stays NaN)."""
    blocks, length, size = _blocks(xf.size)
    if blocks == 1:  # (a parallel loop of one block would still wake the threads)
        _negative_abs_range(xf, tf, np.uint64(0), size)
        return
    for i in prange(blocks):
        start = np.uint64(i) * length
        _negative_abs_range(xf, tf, start, min(start + length, size))


@njit(cache=True, inline="always", error_model="numpy")
def _sigmoid_from_exp_range(xf, ef, sf, start, stop):
    one = xf.dtype.type(1)
    for k in range(start, stop):
        e = ef[k]
        numerator = one if xf[k] >= 0 else e
        sf[k] = numerator / (one + e)


@njit(parallel=True, cache=True, error_model="numpy")
def _sigmoid_from_exp(xf, ef, sf):
    """sf = sigmoid(xf), given ef = exp(-|xf|)."""
    blocks, length, size = _blocks(xf.size)
    if blocks == 1:
        _sigmoid_from_exp_range(xf, ef, sf, np.uint64(0), size)
        return
    for i in prange(blocks):
        start = np.uint64(i) * length
        _sigmoid_from_exp_range(xf, ef, sf, start, min(start + length, size))


@njit(cache=True, inline="always", error_model="numpy")
def _silu_from_exp_range(xf, ef, yf, sf, start, stop):
    one = xf.dtype.type(1)
    for k in range(start, stop):
        v, e = xf[k], ef[k]
        numerator = one if v >= 0 else e
        s = numerator / (one + e)
        sf[k] = s
        yf[k] = v * s


@njit(parallel=True, cache=True, error_model="numpy")
def _silu_from_exp(xf, ef, yf, sf):
    """yf = xf * sigmoid(xf) and sf = sigmoid(xf), given ef = exp(-|xf|)."""
    blocks, length, size = _blocks(xf.size)
    if blocks == 1:
        _silu_from_exp_range(xf, ef, yf, sf, np.uint64(0), size)
        return
    for i in prange(blocks):
        start = np.uint64(i) * length
        _silu_from_exp_range(xf, ef, yf, sf, start, min(start + length, size))


@njit(cache=True, inline="always")
def _sigmoid_backward_range(gyf, sf, gxf, start, stop):
    one = sf.dtype.type(1)
    for k in range(start, stop):
        s = sf[k]
        gxf[k] = gyf[k] * s * (one - s)


@njit(parallel=True, cache=True)
def _sigmoid_backward(gyf, sf, gxf):
    """gxf = gy * s * (1 - s)."""
    blocks, length, size = _blocks(gyf.size)
    if blocks == 1:
        _sigmoid_backward_range(gyf, sf, gxf, np.uint64(0), size)
        return
    for i in prange(blocks):
        start = np.uint64(i) * length
        _sigmoid_backward_range(gyf, sf, gxf, start, min(start + length, size))


@njit(cache=True, inline="always")
def _silu_backward_range(gyf, xf, sf, gxf, start, stop):
    one = sf.dtype.type(1)
    for k in range(start, stop):
        s = sf[k]
        gxf[k] = gyf[k] * s * (one + xf[k] * (one - s))


@njit(parallel=True, cache=True)
def _silu_backward(gyf, xf, sf, gxf):
    """gxf = gy * s * (1 + x * (1 - s)), the derivative of x * s(x)."""
    blocks, length, size = _blocks(gyf.size)
    if blocks == 1:
        _silu_backward_range(gyf, xf, sf, gxf, np.uint64(0), size)
        return
    for i in prange(blocks):
        start = np.uint64(i) * length
        _silu_backward_range(gyf, xf, sf, gxf, start, min(start + length, size))


def exp_of_negative_abs(xf):
    """exp(-|xf|) of a flat array, as a new array: the one exponential both activations need. On a large array
    NumPy's exp takes the blocks in turn on backend/blas.py's pool (it releases the GIL): exp is the
    activations' longest pass (EfficientNet-B0's (8, 96, 112, 112): 2.8 vs 4.5 ms), and every element is
    computed alone, so the numbers are one call's."""
    t = np.empty_like(xf)
    _negative_abs(xf, t)
    blocks = max(1, t.size // BLOCK)
    length = -(-t.size // blocks)

    def exp(first, last):
        np.exp(t[first * length:last * length], out=t[first * length:last * length])
    blas.run_shares(exp, blocks, blas.thread_count(blocks))
    return t
