"""Numba CPU kernels of a tensor times one value per plane: x (N, C, ...) * s (N, C, 1, ...), squeeze-excitation's
gates (SE-ResNet, EfficientNet) on their feature maps (called through the public API of kernels/cpu.py, whose
module docstring gives the rules every CPU kernel follows).

    forward   y  = x * s[plane]
    backward  gx = gy * s[plane],   gs[plane] = sum(gy * x) over the plane

NumPy's broadcasting takes one pass forward, but backward two products of full size and a reduction over
one of them (SE-ResNet-50 at batch 8: 47 ms of its 1.5 s step). Here the backward is one pass reading gy
and x once, writing gx and each plane's sum. The products are the array code's, bit for bit; the sums
add the float32 products in float64 (as batch norm's do), so they are the exact sums' rounding, not
NumPy's pairwise float32 order. The planes go to the threads in blocks (cpu_rows.py's BLOCK: a small
map stays on the calling thread).
"""
import numpy as np
from numba import njit, prange

from .cpu_rows import _blocks


@njit(cache=True, inline="always")
def _scale_range(xf, sf, yf, m, first, last):
    for plane in range(first, last):
        s, start = sf[plane], plane * m
        for k in range(m):
            yf[start + k] = xf[start + k] * s


@njit(parallel=True, cache=True)
def _scale_planes(xf, sf, yf):
    """yf = xf * sf[plane] on each of xf's sf.size planes (flat, contiguous)."""
    planes = np.uint64(sf.size)
    m = np.uint64(xf.size) // planes
    blocks = _blocks(xf.size)[0]
    if blocks == 1:  # (a parallel loop of one block would still wake the threads)
        _scale_range(xf, sf, yf, m, np.uint64(0), planes)
        return
    for i in prange(blocks):
        block = np.uint64(i)
        _scale_range(xf, sf, yf, m, block * planes // blocks, (block + np.uint64(1)) * planes // blocks)


@njit(cache=True, inline="always")
def _scale_grad_range(gyf, xf, sf, gxf, gsf, m, first, last, input_grad, scale_grad):
    for plane in range(first, last):
        start = plane * m
        if input_grad:
            s = sf[plane]
            for k in range(m):
                gxf[start + k] = gyf[start + k] * s
        if scale_grad:
            total = 0.0
            for k in range(m):
                total += gyf[start + k] * xf[start + k]
            gsf[plane] = total


@njit(parallel=True, cache=True, fastmath={"reassoc"})  # reassociated float64 sums vectorise
def _scale_planes_backward(gyf, xf, sf, gxf, gsf, input_grad, scale_grad):
    """gxf = gyf * sf[plane] where input_grad, gsf[plane] = sum(gyf * xf) over the plane (float64) where
    scale_grad; an array not asked for may be empty."""
    planes = np.uint64(gsf.size if scale_grad else sf.size)
    m = np.uint64(gyf.size) // planes
    blocks = _blocks(gyf.size)[0]
    if blocks == 1:
        _scale_grad_range(gyf, xf, sf, gxf, gsf, m, np.uint64(0), planes, input_grad, scale_grad)
        return
    for i in prange(blocks):
        block = np.uint64(i)
        _scale_grad_range(gyf, xf, sf, gxf, gsf, m, block * planes // blocks, (block + np.uint64(1)) * planes // blocks,
                          input_grad, scale_grad)
