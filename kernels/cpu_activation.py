"""Numba CPU kernels of the sigmoid and SiLU (swish) activations (called through the public API of
kernels/cpu.py, whose module docstring gives the rules every CPU kernel follows).

Both start from the stable sigmoid, which never overflows (functional/activation.py's array code):

    e = exp(-|x|)        s = 1 / (1 + e)  where x >= 0,   e / (1 + e)  elsewhere

The exponential is NumPy's, in place on a temporary (its SIMD exp is 5x Numba's scalar one here);
the kernels are the passes around it, each writing everything it can in one go (SiLU's output and
the sigmoid its backward needs; a gradient in one pass). The same operations in the same order and
dtype as the array code, so the same numbers, bit for bit. The choice between 1 and e is a select,
not a branch: a branch on the data kept LLVM from vectorising (5x slower). Serial: these passes are
bound by memory bandwidth, which a second thread does not widen on the machines measured.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def _negative_abs(xf, tf):
    """tf = -|xf| (NaN stays NaN)."""
    for k in range(np.uint64(xf.size)):
        v = xf[k]
        tf[k] = -v if v >= 0 else v


@njit(cache=True)
def _sigmoid_from_exp(xf, ef, sf):
    """sf = sigmoid(xf), given ef = exp(-|xf|)."""
    one = xf.dtype.type(1)
    for k in range(np.uint64(xf.size)):
        e = ef[k]
        numerator = one if xf[k] >= 0 else e
        sf[k] = numerator / (one + e)


@njit(cache=True)
def _silu_from_exp(xf, ef, yf, sf):
    """yf = xf * sigmoid(xf) and sf = sigmoid(xf), given ef = exp(-|xf|)."""
    one = xf.dtype.type(1)
    for k in range(np.uint64(xf.size)):
        v, e = xf[k], ef[k]
        numerator = one if v >= 0 else e
        s = numerator / (one + e)
        sf[k] = s
        yf[k] = v * s


@njit(cache=True)
def _sigmoid_backward(gyf, sf, gxf):
    """gxf = gy * s * (1 - s)."""
    one = sf.dtype.type(1)
    for k in range(np.uint64(gyf.size)):
        s = sf[k]
        gxf[k] = gyf[k] * s * (one - s)


@njit(cache=True)
def _silu_backward(gyf, xf, sf, gxf):
    """gxf = gy * s * (1 + x * (1 - s)), the derivative of x * s(x)."""
    one = sf.dtype.type(1)
    for k in range(np.uint64(gyf.size)):
        s = sf[k]
        gxf[k] = gyf[k] * s * (one + xf[k] * (one - s))


def exp_of_negative_abs(xf):
    """exp(-|xf|) of a flat array, as a new array: the one exponential both activations need."""
    t = np.empty_like(xf)
    _negative_abs(xf, t)
    return np.exp(t, out=t)
