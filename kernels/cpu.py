"""The CPU's kernel module: Numba kernels, raw NumPy arrays in, raw NumPy arrays out.

It provides kernels/interface.py's CPU list (checked at the end of this file): the functions it
shares with kernels/cuda.py, so a caller picks the module for its arrays (kernels.for_array) and
calls one API (deformable convolution's Numba kernels live in cpu_deform.py), and the CPU-only
ones: ReLU, sigmoid and SiLU (cpu_activation.py), the SGD step, batch norm and local response norm
(cpu_norm.py; the GPU runs CuPy's array code for these),
the Winograd route's transforms (winograd.py) and stacks of GEMMs on Numba's threads (cpu_gemm.py). Each
convolution, pooling and batch norm kernel parallelises over planes or channels that only it
writes (prange), so there are no races and no atomics; the elementwise kernels (the activations, SGD)
over blocks of large arrays only (kernels/cpu_rows.py's BLOCK: a small array stays on the calling
thread). All are njit(cache=True) and see only C-contiguous float32/float64 arrays and Python
scalars, keeping specialisations (and compile time) to two per kernel.

Indexing inside a prange loop is on flat arrays with unsigned (uint64)
offsets: signed indices make Numba check for negative ones, and that keeps
LLVM from vectorising (a copy loop ran 10x slower); and never mix uint64 with
int64 in one expression (Numba makes it a float).
"""
import math

import numpy as np
from numba import njit, prange

from ..backend import blas
from . import dispatch, interface
from . import cpu_cache  # watches Numba's compiles of these kernels: reports and times them
from . import cpu_gemm
from .cpu_activation import _sigmoid_backward, _sigmoid_from_exp, _silu_backward, _silu_from_exp, exp_of_negative_abs
from .cpu_deform import _deform_col2im, _deform_col2im_coord, _deform_im2col, bordered
from .cpu_depthwise import _depthwise_backward_input, _depthwise_backward_weight, _depthwise_forward
from .cpu_gemm import NO_TRANS, TRANS, _gemm
from .cpu_gemm import stacked_matmul  # noqa: F401 (the interface's stacked GEMMs)
from .cpu_norm import _channel_stats, _grad_input, _grad_sums, _lrn_backward, _lrn_scale, _scale_shift
from .cpu_rows import _blocks, _copy
from .cpu_scale import _scale_planes, _scale_planes_backward
from .winograd import FUSED_CHANNELS
from .winograd import backward_input as winograd_backward_input  # noqa: F401 (the interface's Winograd)
from .winograd import backward_weight as winograd_backward_weight  # noqa: F401
from .winograd import forward as winograd_forward  # noqa: F401


def _first_last(out_size, in_size, stride, pad, offset):
    """The output range [lo, hi) whose tap at `offset` (= tap * dilation) lands inside [0, in_size)."""
    lo = max(0, -((offset - pad) // stride))  # ceil((pad - offset) / stride)
    hi = min(out_size, (in_size - 1 + pad - offset) // stride + 1)
    return lo, max(lo, hi)


_first_last_jit = njit(cache=True)(_first_last)


# im2col / col2im index flat arrays with unsigned offsets and copy rows element by element: a
# slice of a view per row (what NumPy code would do) costs Numba more than copying LeNet C3's ten
# pixels (C3's columns: 0.35 ms flat vs 0.93 ms sliced, one thread).

@njit(cache=True, inline="always")
def _im2col_row(xf, cf, x_shape, col_shape, cij, sy, sx, ph, pw, dy, dx, pad):
    """Row cij (one channel and tap) of the columns: n * oh * ow contiguous values."""
    n, c, h, w = x_shape
    _, kh, kw, _, oh, ow = col_shape
    ci, i, j = cij // (kh * kw), (cij // kw) % kh, cij % kw
    lo, hi = _first_last_jit(ow, w, sx, pw, j * dx)
    for b in range(n):
        plane = (b * c + ci) * h * w
        for oy in range(oh):
            iy = oy * sy - ph + i * dy
            d = np.uint64(((cij * n + b) * oh + oy) * ow)
            if iy < 0 or iy >= h:
                for k in range(np.uint64(ow)):
                    cf[d + k] = pad
                continue
            for k in range(np.uint64(lo)):
                cf[d + k] = pad
            for k in range(np.uint64(hi), np.uint64(ow)):
                cf[d + k] = pad
            s, d = np.uint64(plane + iy * w + lo * sx - pw + j * dx), d + np.uint64(lo)
            if sx == 1:
                _copy(xf, s, cf, d, hi - lo)
            else:
                step = np.uint64(sx)
                for k in range(np.uint64(hi - lo)):
                    cf[d + k] = xf[s + k * step]


@njit(parallel=True, cache=True)
def _im2col(x, col, sy, sx, ph, pw, dy, dx, pad_value):
    xf, cf, pad = x.reshape(-1), col.reshape(-1), x.dtype.type(pad_value)
    for cij in prange(col.shape[0] * col.shape[1] * col.shape[2]):  # no two rows write one element
        _im2col_row(xf, cf, x.shape, col.shape, cij, sy, sx, ph, pw, dy, dx, pad)


@njit(cache=True, nogil=True)
def _im2col_one_thread(x, col, sy, sx, ph, pw, dy, dx, pad_value):
    """_im2col on the calling thread, without the GIL: several threads each build their own images' columns."""
    xf, cf, pad = x.reshape(-1), col.reshape(-1), x.dtype.type(pad_value)
    for cij in range(col.shape[0] * col.shape[1] * col.shape[2]):
        _im2col_row(xf, cf, x.shape, col.shape, cij, sy, sx, ph, pw, dy, dx, pad)


@njit(cache=True, inline="always")
def _col2im_plane(cf, xf, col_shape, x_shape, plane, sy, sx, ph, pw, dy, dx):
    """Plane ``plane`` (= b * C + ci) of x: zeros, then every column entry that came from it added back."""
    c, kh, kw, n, oh, ow = col_shape
    h, w = x_shape[2], x_shape[3]
    b, ci = plane // c, plane % c
    start = np.uint64(plane * h * w)
    for k in range(np.uint64(h * w)):
        xf[start + k] = 0
    for i in range(kh):
        for j in range(kw):
            lo, hi = _first_last_jit(ow, w, sx, pw, j * dx)
            for oy in range(oh):
                iy = oy * sy - ph + i * dy
                if iy < 0 or iy >= h:
                    continue
                s = np.uint64(((((ci * kh + i) * kw + j) * n + b) * oh + oy) * ow + lo)
                d = np.uint64(plane * h * w + iy * w + lo * sx - pw + j * dx)
                if sx == 1:  # a contiguous run, which LLVM vectorises
                    for k in range(np.uint64(hi - lo)):
                        xf[d + k] += cf[s + k]
                else:
                    step = np.uint64(sx)
                    for k in range(np.uint64(hi - lo)):
                        xf[d + k * step] += cf[s + k]


@njit(parallel=True, cache=True)
def _col2im(col, x, sy, sx, ph, pw, dy, dx):
    cf, xf = col.reshape(-1), x.reshape(-1)
    for plane in prange(x.shape[0] * x.shape[1]):  # each (b, ci) plane of x is written by one iteration
        _col2im_plane(cf, xf, col.shape, x.shape, plane, sy, sx, ph, pw, dy, dx)


@njit(cache=True, nogil=True)
def _col2im_one_thread(col, x, sy, sx, ph, pw, dy, dx):
    """_col2im on the calling thread, without the GIL (as _im2col_one_thread)."""
    cf, xf = col.reshape(-1), x.reshape(-1)
    for plane in range(x.shape[0] * x.shape[1]):
        _col2im_plane(cf, xf, col.shape, x.shape, plane, sy, sx, ph, pw, dy, dx)


# The im2col route's batch chunks on Numba's threads (functional/conv_routes.py's Im2col on the CPU, when the
# chunks are shared): thread t takes chunks t, t + threads, ... and for each builds the columns in its own
# buffer, multiplies them by one BLAS GEMM per group (NumPy's own, BLAS held at one thread: cpu_gemm's call
# through the function's address) and puts the result in place. The threads that run every other kernel
# here, and no Python between the chunks. Each GEMM is the call np.matmul makes for that chunk and group
# (same operands, flags and leading dimensions), so the numbers are the pool route's (conv_routes._each_chunk)
# bit for bit.

@njit(parallel=True, nogil=True, cache=True)
def _im2col_chunks_forward(address, x, w, y, cols, outs, starts, keep, kh, kw, sy, sx, ph, pw, dy, dx):
    """y[lo:hi] = the convolution of x[lo:hi] with w (g, C_out/g, C/g*kh*kw) for each chunk lo:hi of starts;
    outs: each thread's GEMM output, (threads, size of the largest chunk's); cols: each thread's columns, or
    where ``keep``, each chunk's (chunks, that size), left there for the weight gradient."""
    threads = outs.shape[0]
    for t in prange(threads):  # (a call per chunk: the parallel loop stays small, and so its compile time)
        for index in range(t, starts.size - 1, threads):
            _forward_chunk(address, x, w, y, cols[index] if keep else cols[t], outs[t], starts[index],
                           starts[index + 1], kh, kw, sy, sx, ph, pw, dy, dx)


@njit(cache=True, nogil=True)
def _forward_chunk(address, x, w, y, cf, of, lo, hi, kh, kw, sy, sx, ph, pw, dy, dx):
    c, h, wd = x.shape[1], x.shape[2], x.shape[3]
    g, co_g, k = w.shape
    c_out, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    images, pixels, image = hi - lo, oh * ow, c * h * wd
    m = images * pixels
    xc, wf, yf = x.reshape(-1)[lo * image:hi * image], w.reshape(-1), y.reshape(-1)
    zero, one = x.dtype.type(0), x.dtype.type(1)
    for cij in range(c * kh * kw):
        _im2col_row(xc, cf, (images, c, h, wd), (c, kh, kw, images, oh, ow), cij, sy, sx, ph, pw, dy, dx, zero)
    for gi in range(g):  # (C_out/g, C/g*kh*kw) @ (C/g*kh*kw, images*oh*ow)
        _gemm(address, NO_TRANS, NO_TRANS, co_g, m, k, one, wf[gi * co_g * k:].ctypes.data, k,
              cf[gi * k * m:].ctypes.data, m, zero, of[gi * co_g * m:].ctypes.data, m)
    for r in range(c_out):  # (C_out, images, oh*ow) -> NCHW
        for b in range(images):
            _copy(of, (r * images + b) * pixels, yf, ((lo + b) * c_out + r) * pixels, pixels)


@njit(parallel=True, nogil=True, cache=True)
def _im2col_chunks_backward(address, gy, x, w_t, gx, parts, cols, gys, kept, starts, c, h, wd, g, k, kh, kw, sy, sx,
                            ph, pw, dy, dx, input_gradient, weight_gradient):
    """For each chunk lo:hi of starts, its gy gathered once as (g, C_out/g, images*oh*ow), then where asked
    gx[lo:hi] (w_t (g, k = C/g*kh*kw, C_out/g) times it, col2im) and parts[chunk] (the chunk's columns times
    that gy's transpose: (g, k, C_out/g)); the input is (N, c, h, wd); cols and gys: each thread's columns and
    gathered gy; kept: each chunk's columns as the forward left them, or empty (then built here from x). An
    array not asked for may be empty (x, w_t and gx, or parts)."""
    threads = cols.shape[0]
    for t in prange(threads):
        for index in range(t, starts.size - 1, threads):
            _backward_chunk(address, gy, x, w_t, gx, parts, cols[t], gys[t], kept, index, starts[index],
                            starts[index + 1], c, h, wd, g, k, kh, kw, sy, sx, ph, pw, dy, dx, input_gradient,
                            weight_gradient)


@njit(cache=True, nogil=True)
def _backward_chunk(address, gy, x, w_t, gx, parts, cf, gf, kept, index, lo, hi, c, h, wd, g, k, kh, kw, sy, sx, ph,
                    pw, dy, dx, input_gradient, weight_gradient):
    c_out, oh, ow = gy.shape[1], gy.shape[2], gy.shape[3]
    co_g, images, pixels, image = c_out // g, hi - lo, oh * ow, c * h * wd
    m = images * pixels
    gyf, wf = gy.reshape(-1), w_t.reshape(-1)
    zero, one = gy.dtype.type(0), gy.dtype.type(1)
    for r in range(c_out):  # (images, C_out, oh*ow) -> (C_out, images, oh*ow)
        for b in range(images):
            _copy(gyf, ((lo + b) * c_out + r) * pixels, gf, (r * images + b) * pixels, pixels)
    col_shape, x_shape = (c, kh, kw, images, oh, ow), (images, c, h, wd)
    if input_gradient:
        for gi in range(g):  # (C/g*kh*kw, C_out/g) @ (C_out/g, images*oh*ow)
            _gemm(address, NO_TRANS, NO_TRANS, k, m, co_g, one, wf[gi * k * co_g:].ctypes.data, co_g,
                  gf[gi * co_g * m:].ctypes.data, m, zero, cf[gi * k * m:].ctypes.data, m)
        gxc = gx.reshape(-1)[lo * image:hi * image]
        for plane in range(images * c):
            _col2im_plane(cf, gxc, col_shape, x_shape, plane, sy, sx, ph, pw, dy, dx)
    if weight_gradient:
        columns = cf
        if kept.shape[0]:
            columns = kept[index]
        else:
            xc = x.reshape(-1)[lo * image:hi * image]
            for cij in range(c * kh * kw):
                _im2col_row(xc, cf, x_shape, col_shape, cij, sy, sx, ph, pw, dy, dx, zero)
        pf = parts[index].reshape(-1)
        for gi in range(g):  # (C/g*kh*kw, images*oh*ow) @ (images*oh*ow, C_out/g): gy's transpose
            _gemm(address, NO_TRANS, TRANS, k, co_g, m, one, columns[gi * k * m:].ctypes.data, m,
                  gf[gi * co_g * m:].ctypes.data, m, zero, pf[gi * k * co_g:].ctypes.data, co_g)


# max pooling. The general kernel's branches follow the data (a 2-D view per plane is cheap next to
# them); the 2x2 and backward kernels index flat arrays: views per plane and row cost more than
# pooling a LeNet plane (C1's pool: 0.18 vs 0.34 ms).

@njit(cache=True, inline="always")
def _pool_window(xf, base, h, w, oy, ox, kh, kw, sy, sx, ph, pw, dy, dx):
    """(max, flat index in the plane) of one window, every tap checked against the plane's edges."""
    best, where = xf[base], -1
    for i in range(kh):
        iy = oy * sy - ph + i * dy
        if iy < 0 or iy >= h:
            continue
        for j in range(kw):
            ix = ox * sx - pw + j * dx
            if ix < 0 or ix >= w:
                continue
            v = xf[base + np.uint64(iy * w + ix)]
            # torch's rule: the first maximum wins, but every NaN takes over (the last NaN wins)
            if where < 0 or v > best or v != v:
                best, where = v, iy * w + ix
    return best, where


@njit(parallel=True, cache=True)
def _max_pool2d_forward(x, y, argmax, kh, kw, sy, sx, ph, pw, dy, dx):
    """Any window, stride, padding and dilation. The windows of an output row that lie wholly inside the
    plane (all but its edges) are done tap by tap: each tap one contiguous pass along the row (at a
    stride sx > 1 over a copy of the input row split into its sx column phases, as the depthwise
    kernels do) updating a row of running maxima with selects, not branches (the data would
    mispredict them; this way the passes vectorise), in the windows' row-major order: the same
    maxima, ties and NaNs. The edge windows check every tap (_pool_window). GoogLeNet's 3x3/1 pool
    @28 (192 channels, N=8): 13 vs 36 ms on one thread."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    xf, yf, af = x.reshape(-1), y.reshape(-1), argmax.reshape(-1)
    first_lo, first_hi = _first_last_jit(ow, w, sx, pw, 0)
    last_lo, last_hi = _first_last_jit(ow, w, sx, pw, (kw - 1) * dx)
    lo, hi = max(first_lo, last_lo), min(first_hi, last_hi)  # columns whose first and last taps are inside
    hi = max(lo, hi)
    wq = (w + sx - 1) // sx  # the length of a column phase
    for plane in prange(n * c):
        base, out = np.uint64(plane * h * w), np.uint64(plane * oh * ow)
        phases = np.empty(sx * wq, x.dtype)
        for oy in range(oh):
            iy0 = oy * sy - ph
            row_out = out + np.uint64(oy * ow)
            inner_lo, inner_hi = lo, hi
            if iy0 < 0 or iy0 + (kh - 1) * dy >= h:  # a window row outside the plane: all edge windows
                inner_lo, inner_hi = ow, ow
            count = np.uint64(max(0, inner_hi - inner_lo))
            o = row_out + np.uint64(inner_lo) if count else row_out
            for i in range(kh):
                if count == 0:
                    break
                iy = iy0 + i * dy
                row = base + np.uint64(iy * w)
                if sx == 1:
                    src = xf
                else:  # column phase p holds columns p, p + sx, ...
                    for p in range(sx):
                        for q in range(np.uint64((w - p + sx - 1) // sx)):
                            phases[np.uint64(p * wq) + q] = xf[row + np.uint64(p) + q * np.uint64(sx)]
                    src = phases
                for j in range(kw):
                    shift = j * dx - pw  # the tap's column is ox * sx + shift
                    if sx == 1:
                        start = row + np.uint64(inner_lo + shift)
                    else:  # column ox * sx + shift = (ox + shift // sx) * sx + shift % sx
                        start = np.uint64(shift % sx * wq + inner_lo + shift // sx)
                    at0 = iy * w + inner_lo * sx + shift  # the flat index in the plane of the row's first tap
                    if i == 0 and j == 0:
                        for k in range(count):
                            yf[o + k] = src[start + k]
                            af[o + k] = at0 + np.int64(k) * sx
                        continue
                    for k in range(count):
                        v, best = src[start + k], yf[o + k]
                        take = (v > best) | (v != v)
                        yf[o + k] = v if take else best
                        af[o + k] = at0 + np.int64(k) * sx if take else af[o + k]
            for ox in range(ow):
                if inner_lo <= ox < inner_hi:
                    continue
                v, at = _pool_window(xf, base, h, w, oy, ox, kh, kw, sy, sx, ph, pw, dy, dx)
                yf[row_out + np.uint64(ox)], af[row_out + np.uint64(ox)] = v, at


@njit(parallel=True, cache=True)
def _max_pool2x2_forward(x, y, argmax):
    """The 2x2 stride-2 window without padding or dilation (LeNet, VGG), unrolled: no bounds checks,
    the same rules as above (first maximum in row-major order, every NaN takes over)."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    xf, yf, af = x.reshape(-1), y.reshape(-1), argmax.reshape(-1)
    for plane in prange(n * c):
        for oy in range(oh):
            row = 2 * oy * w  # the window's top-left pixel in the plane: row + 2 * ox
            top, out = np.uint64(plane * h * w + row), np.uint64(plane * oh * ow + oy * ow)
            bottom = top + np.uint64(w)  # (indices stay unsigned: uint64 with int64 would make a float)
            for ox in range(ow):
                left = 2 * ox
                at, one = np.uint64(left), np.uint64(1)
                best, where = xf[top + at], row + left
                v = xf[top + at + one]
                if v > best or v != v:
                    best, where = v, row + left + 1
                v = xf[bottom + at]
                if v > best or v != v:
                    best, where = v, row + w + left
                v = xf[bottom + at + one]
                if v > best or v != v:
                    best, where = v, row + w + left + 1
                yf[out + np.uint64(ox)] = best
                af[out + np.uint64(ox)] = where


@njit(parallel=True, cache=True)
def _max_pool2d_backward(gy, argmax, gx):
    n, c, h, w = gx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    gyf, af, gxf = gy.reshape(-1), argmax.reshape(-1), gx.reshape(-1)
    for plane in prange(n * c):  # overlapping windows stay inside one plane: no race
        src, dst = np.uint64(plane * oh * ow), np.uint64(plane * h * w)
        for k in range(np.uint64(h * w)):
            gxf[dst + k] = 0
        for k in range(np.uint64(oh * ow)):
            where = af[src + k]
            if where >= 0:
                gxf[dst + np.uint64(where)] += gyf[src + k]


# ---- ReLU ----
# One pass writes the output and the mask backward needs (NumPy takes two, and its product with a
# bool mask goes through a cast): LeNet C1's ReLU 0.03 vs 0.09 ms forward. Each kernel is a range
# (the loop) and a driver that hands an array of several blocks to the threads, block by block
# (kernels/cpu_rows.py's BLOCK: a LeNet activation stays on the calling thread).

# The elementwise kernels take flat (1-D) arrays: one specialisation per dtype, whatever the
# tensor's rank (Numba compiles one per number of dimensions).

@njit(cache=True, inline="always")
def _relu_forward_range(xf, yf, mf, start, stop):
    for k in range(start, stop):
        v = xf[k]
        keep = not v <= 0  # torch's rule: NaN passes (value and gradient), -inf becomes 0
        mf[k] = keep
        yf[k] = v if keep else 0


@njit(parallel=True, cache=True)
def _relu_forward(xf, yf, mf):
    blocks, length, size = _blocks(xf.size)
    if blocks == 1:  # (a parallel loop of one block would still wake the threads)
        _relu_forward_range(xf, yf, mf, np.uint64(0), size)
        return
    for i in prange(blocks):
        start = np.uint64(i) * length
        _relu_forward_range(xf, yf, mf, start, min(start + length, size))


@njit(cache=True, inline="always")
def _relu_forward_inplace_range(xf, mf, start, stop):
    for k in range(start, stop):
        v = xf[k]
        keep = not v <= 0
        mf[k] = keep
        xf[k] = v if keep else 0


@njit(parallel=True, cache=True)
def _relu_forward_inplace(xf, mf):
    """_relu_forward with y = x: one array read and written (through two names LLVM must assume they
    overlap, and the loop stays scalar: 2.4x slower on 25 MB)."""
    blocks, length, size = _blocks(xf.size)
    if blocks == 1:
        _relu_forward_inplace_range(xf, mf, np.uint64(0), size)
        return
    for i in prange(blocks):
        start = np.uint64(i) * length
        _relu_forward_inplace_range(xf, mf, start, min(start + length, size))


@njit(cache=True, inline="always")
def _relu_backward_range(gyf, mf, gxf, start, stop):
    for k in range(start, stop):
        gxf[k] = gyf[k] if mf[k] else 0


@njit(parallel=True, cache=True)
def _relu_backward(gyf, mf, gxf):
    blocks, length, size = _blocks(gyf.size)
    if blocks == 1:
        _relu_backward_range(gyf, mf, gxf, np.uint64(0), size)
        return
    for i in prange(blocks):
        start = np.uint64(i) * length
        _relu_backward_range(gyf, mf, gxf, start, min(start + length, size))


# LeakyReLU the same way: one pass for the output and the mask, one for the gradient (NumPy takes
# three and two, with a temporary each). The slope comes in the array's dtype, so each product is
# the array code's, bit for bit.

@njit(cache=True, inline="always")
def _leaky_relu_forward_range(xf, yf, mf, slope, start, stop):
    for k in range(start, stop):
        v = xf[k]
        keep = v > 0  # torch's rule: the slope also at 0 (and NaN * slope is NaN)
        mf[k] = keep
        yf[k] = v if keep else v * slope


@njit(parallel=True, cache=True)
def _leaky_relu_forward(xf, yf, mf, slope):
    blocks, length, size = _blocks(xf.size)
    if blocks == 1:
        _leaky_relu_forward_range(xf, yf, mf, slope, np.uint64(0), size)
        return
    for i in prange(blocks):
        start = np.uint64(i) * length
        _leaky_relu_forward_range(xf, yf, mf, slope, start, min(start + length, size))


@njit(cache=True, inline="always")
def _leaky_relu_backward_range(gyf, mf, gxf, slope, start, stop):
    for k in range(start, stop):
        g = gyf[k]
        gxf[k] = g if mf[k] else g * slope


@njit(parallel=True, cache=True)
def _leaky_relu_backward(gyf, mf, gxf, slope):
    blocks, length, size = _blocks(gyf.size)
    if blocks == 1:
        _leaky_relu_backward_range(gyf, mf, gxf, slope, np.uint64(0), size)
        return
    for i in prange(blocks):
        start = np.uint64(i) * length
        _leaky_relu_backward_range(gyf, mf, gxf, slope, start, min(start + length, size))


# ---- SGD ----
# torch's SGD rule for one parameter in one pass (NumPy takes six, each a fresh array). The same
# operations in the same order and dtype as optim/sgd.py's array code, none fused into an FMA, so
# the numbers are bit for bit those of the array code. Elementwise, so over blocks like the
# activations: a parameter of one block (every bias, LeNet's layers) stays on the calling thread,
# the large ones (a 4096x9216 AlexNet layer) are bound by memory, and both cores move more of it
# than one (a block is ~5 MB of the five arrays' traffic, ~0.2 ms on one core).


@njit(cache=True)
def _sgd_range(pf, gf, bf, nf, lr, momentum, keep, weight_decay, nesterov, first, start, stop):
    for k in range(start, stop):
        g = gf[k]
        if weight_decay != 0:
            g = g + weight_decay * pf[k]
        if momentum != 0:
            if first:
                b = g
            else:
                b = bf[k] * momentum
                b = b + (g if keep == 1 else keep * g)  # keep = 1 - dampening
            bf[k] = b
            g = g + momentum * b if nesterov else b
        nf[k] = pf[k] - lr * g


@njit(parallel=True, cache=True)
def _sgd_step(pf, gf, bf, nf, lr, momentum, keep, weight_decay, nesterov, first):
    blocks, block, size = _blocks(pf.size)
    if blocks == 1:
        _sgd_range(pf, gf, bf, nf, lr, momentum, keep, weight_decay, nesterov, first, np.uint64(0), size)
        return
    for i in prange(blocks):  # each block's elements are written by its iteration only
        start = np.uint64(i) * block
        _sgd_range(pf, gf, bf, nf, lr, momentum, keep, weight_decay, nesterov, first, start, min(start + block, size))


# ---- the public API, shared with kernels/cuda.py ----

def _c(a):
    return np.ascontiguousarray(a)


def _geometry(stride, padding, dilation):
    (sy, sx), (ph, pw), (dy, dx) = stride, padding, dilation
    return int(sy), int(sx), int(ph), int(pw), int(dy), int(dx)


def im2col(x, kernel, stride, padding, dilation, out_hw, pad_value=0):
    """Columns (C, kh, kw, N, oh, ow), the layout of functional/conv.py's im2col."""
    return _columns(_im2col, x, kernel, stride, padding, dilation, out_hw, pad_value)


def im2col_one_thread(x, kernel, stride, padding, dilation, out_hw, pad_value=0):
    """im2col on the calling thread alone, the GIL released: for one thread's share of a batch."""
    return _columns(_im2col_one_thread, x, kernel, stride, padding, dilation, out_hw, pad_value)


def _columns(kernel_function, x, kernel, stride, padding, dilation, out_hw, pad_value):
    x = _c(x)
    n, c = x.shape[:2]
    col = np.empty((c, kernel[0], kernel[1], n, out_hw[0], out_hw[1]), dtype=x.dtype)
    kernel_function(x, col, *_geometry(stride, padding, dilation), float(pad_value))
    return col


def col2im(col, x_shape, stride, padding, dilation):
    return _images(_col2im, col, x_shape, stride, padding, dilation)


def col2im_one_thread(col, x_shape, stride, padding, dilation):
    """col2im on the calling thread alone, the GIL released: for one thread's share of a batch."""
    return _images(_col2im_one_thread, col, x_shape, stride, padding, dilation)


def _images(kernel_function, col, x_shape, stride, padding, dilation):
    x = np.empty(x_shape, dtype=col.dtype)
    kernel_function(_c(col), x, *_geometry(stride, padding, dilation))
    return x


def im2col_chunks_forward(x, w_groups, kernel, starts, threads, stride, padding, dilation, out_hw, keep=False):
    """conv2d's forward on the im2col route, the batch chunks lo:hi of ``starts`` shared between ``threads`` of
    Numba's threads (w_groups: (g, C_out/g, C/g*kh*kw)): (y, each chunk's columns where ``keep``, else None);
    None where this cannot run (_chunks_gemm_address)."""
    g, co_g, k = w_groups.shape
    images = np.diff(starts)  # each chunk's
    address = _chunks_gemm_address("im2col_chunks_forward", x.dtype, (co_g, k), images, out_hw)
    if address is None:
        return None
    n, c = x.shape[:2]
    largest = int(images.max())
    cols = np.empty((len(images) if keep else threads, largest * c * kernel[0] * kernel[1] * out_hw[0] * out_hw[1]),
                    x.dtype)
    outs = np.empty((threads, largest * g * co_g * out_hw[0] * out_hw[1]), x.dtype)
    y = np.empty((n, g * co_g) + tuple(out_hw), x.dtype)
    with blas.one_blas_thread():
        _im2col_chunks_forward(address, _c(x), _c(w_groups), y, cols, outs, starts, keep, *kernel,
                               *_geometry(stride, padding, dilation))
    return y, (cols if keep else None)


def im2col_chunks_backward(gy, x, w_t, x_shape, w_shape, groups, starts, threads, stride, padding, dilation,
                           columns=None):
    """conv2d's gradients on the im2col route as im2col_chunks_forward shares its forward: (gx or None, parts or
    None), gx where w_t (g, C/g*kh*kw, C_out/g) is given, the weight gradient's per-chunk products (chunks, g,
    C/g*kh*kw, C_out/g) where x is, from ``columns`` where given (what im2col_chunks_forward kept for the same
    starts) instead of x's columns built again; None where this cannot run (_chunks_gemm_address)."""
    c, h, wd = x_shape[1:]
    c_out, c_group, kh, kw = w_shape
    k, co_g, pixels = c_group * kh * kw, c_out // groups, gy.shape[2] * gy.shape[3]
    images = np.diff(starts)  # each chunk's
    address = _chunks_gemm_address("im2col_chunks_backward", gy.dtype, (co_g, k), images, gy.shape[2:])
    if address is None:
        return None
    largest = int(images.max())
    empty = np.empty((0, 0, 0, 0), gy.dtype)  # (an array not asked for)
    gx = np.empty(x_shape, gy.dtype) if w_t is not None else empty
    parts = np.empty((len(starts) - 1, groups, k, co_g), gy.dtype) if x is not None else empty
    cols = np.empty((threads, largest * c * kh * kw * pixels), gy.dtype)
    gys = np.empty((threads, largest * c_out * pixels), gy.dtype)
    with blas.one_blas_thread():
        _im2col_chunks_backward(address, _c(gy), empty if x is None else _c(x),
                                empty.reshape(0, 0, 0) if w_t is None else _c(w_t), gx, parts, cols, gys,
                                empty.reshape(0, 0) if columns is None else columns, starts, c, h, wd, groups, k, kh,
                                kw, *_geometry(stride, padding, dilation), w_t is not None, x is not None)
    return (gx if w_t is not None else None), (parts if x is not None else None)


def _chunks_gemm_address(function, dtype, sizes, images, out_hw):
    """The address of NumPy's GEMM for the chunk kernels' dtype, or None where they would not give np.matmul's
    numbers (a GEMM with a side under 2 is NumPy's matrix-vector product; NumPy's BLAS is not its OpenBLAS:
    cpu_gemm) or while a first run compiles them in the background (noted as wanted: kernels/dispatch.py).
    ``sizes``: the GEMMs' other two sides; ``images``: each chunk's number of images."""
    pixels = out_hw[0] * out_hw[1]
    if min(sizes) < 2 or int(images.min()) * pixels < 2:
        return None
    if function in dispatch.cpu_kernels_deferred():
        dispatch.note_wanted_cpu_kernel(function, dtype)
        return None
    return cpu_gemm.gemm_address(dtype)


def depthwise_forward(x, w, stride, padding, dilation, out_hw):
    y = np.empty((x.shape[0], w.shape[0]) + tuple(out_hw), dtype=x.dtype)
    _depthwise_forward(_c(x), _c(w), y, *_geometry(stride, padding, dilation))
    return y


def depthwise_backward_input(gy, w, x_shape, stride, padding, dilation):
    gx = np.empty(x_shape, dtype=gy.dtype)
    _depthwise_backward_input(_c(gy), _c(w), gx, *_geometry(stride, padding, dilation))
    return gx


def depthwise_backward_weight(gy, x, w_shape, stride, padding, dilation):
    gw = np.empty(w_shape, dtype=x.dtype)
    _depthwise_backward_weight(_c(gy), _c(x), gw, *_geometry(stride, padding, dilation))
    return gw


def _mask_arg(mask, dtype):
    """(mask, use_mask) as the deform kernels take them: a 1-element stand-in when there is no mask."""
    return (np.ones(1, dtype), False) if mask is None else (_c(mask), True)


def deform_im2col(x, offset, mask, kernel, stride, padding, dilation, out_hw):
    """Deformable columns (C, kh, kw, N, oh, ow) (functional/deform_routes.py's layout and rule); mask may be None."""
    col = np.empty((x.shape[1], kernel[0], kernel[1], x.shape[0]) + tuple(out_hw), dtype=x.dtype)
    _deform_im2col(bordered(x), _c(offset), *_mask_arg(mask, x.dtype), col, int(kernel[0]), int(kernel[1]),
                   *_geometry(stride, padding, dilation))
    return col


def deform_col2im(gcol, offset, mask, x_shape, stride, padding, dilation):
    """The input gradient of deform_im2col: each column gradient added to the pixels its sample read."""
    gx = np.empty(x_shape, dtype=gcol.dtype)
    _deform_col2im(_c(gcol), _c(offset), *_mask_arg(mask, gcol.dtype), gx, *_geometry(stride, padding, dilation))
    return gx


def deform_col2im_coord(gcol, x, offset, mask, stride, padding, dilation):
    """(goffset, gmask) of deform_im2col's columns; gmask is None without a mask."""
    goffset = np.empty(offset.shape, dtype=gcol.dtype)
    mask_arg, use_mask = _mask_arg(mask, gcol.dtype)
    gmask = np.empty(mask.shape, dtype=gcol.dtype) if use_mask else np.empty(1, gcol.dtype)
    _deform_col2im_coord(_c(gcol), bordered(x), _c(offset), mask_arg, use_mask, goffset, gmask,
                         *_geometry(stride, padding, dilation))
    return goffset, (gmask if use_mask else None)


def max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw):
    """(y, argmax): argmax is the int64 flat index inside each (n, c) plane."""
    x = _c(x)
    y = np.empty(x.shape[:2] + tuple(out_hw), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.int64)
    geometry = _geometry(stride, padding, dilation)
    inside = 2 * y.shape[2] <= x.shape[2] and 2 * y.shape[3] <= x.shape[3]  # not so with ceil_mode, odd sizes
    if tuple(kernel) == (2, 2) and geometry == (2, 2, 0, 0, 1, 1) and inside:
        _max_pool2x2_forward(x, y, argmax)
    else:
        _max_pool2d_forward(x, y, argmax, int(kernel[0]), int(kernel[1]), *geometry)
    return y, argmax


def max_pool2d_backward(gy, argmax, x_shape):
    gx = np.empty(x_shape, dtype=gy.dtype)
    _max_pool2d_backward(_c(gy), _c(argmax), gx)
    return gx


# ---- CPU only (the GPU takes CuPy's elementwise ops) ----

def _elementwise_backward(kernel, gy, *saved, scalars=()):
    """gx from an elementwise backward kernel(gy, *saved, gx, *scalars), the arrays as flat contiguous views."""
    gx = np.empty(gy.shape, dtype=gy.dtype)
    kernel(_c(gy).reshape(-1), *(_c(a).reshape(-1) for a in saved), gx.reshape(-1), *scalars)
    return gx


def relu_forward(x, inplace=False):
    """(y, mask): y = max(x, 0) with NaN kept, as torch.relu; mask = not x <= 0, what backward needs.
    ``inplace``: y is x itself, written in one pass that reads and writes x (a strided x through a copy)."""
    mask = np.empty(x.shape, dtype=np.bool_)
    if inplace:
        y = _c(x)  # x itself, or a contiguous copy of a strided x, written back below
        _relu_forward_inplace(y.reshape(-1), mask.reshape(-1))
        if y is not x:
            x[...] = y
        return x, mask
    src = _c(x)
    y = np.empty_like(src)
    _relu_forward(src.reshape(-1), y.reshape(-1), mask.reshape(-1))
    return y, mask


def relu_backward(gy, mask):
    """gy where the input was positive or NaN, else 0 (torch's threshold_backward)."""
    return _elementwise_backward(_relu_backward, gy, mask)


def leaky_relu_forward(x, negative_slope):
    """(y, mask): y = x where x > 0, else negative_slope * x (as torch.nn.functional.leaky_relu); mask = x > 0."""
    x = _c(x)
    y, mask = np.empty_like(x), np.empty(x.shape, dtype=np.bool_)
    _leaky_relu_forward(x.reshape(-1), y.reshape(-1), mask.reshape(-1), x.dtype.type(negative_slope))
    return y, mask


def leaky_relu_backward(gy, mask, negative_slope):
    """gy where the input was positive, else negative_slope * gy."""
    return _elementwise_backward(_leaky_relu_backward, gy, mask, scalars=(gy.dtype.type(negative_slope),))


def sigmoid_forward(x):
    """1 / (1 + exp(-x)) in the stable form (cpu_activation.py): NumPy's exp, one fused pass around it."""
    x = _c(x)
    s = np.empty_like(x)
    _sigmoid_from_exp(x.reshape(-1), exp_of_negative_abs(x.reshape(-1)), s.reshape(-1))
    return s


def sigmoid_backward(gy, s):
    """gy * s * (1 - s), s the forward's output."""
    return _elementwise_backward(_sigmoid_backward, gy, s)


def silu_forward(x):
    """(y, s): y = x * sigmoid(x) (SiLU, swish) and s = sigmoid(x), what backward needs."""
    x = _c(x)
    y, s = np.empty_like(x), np.empty_like(x)
    _silu_from_exp(x.reshape(-1), exp_of_negative_abs(x.reshape(-1)), y.reshape(-1), s.reshape(-1))
    return y, s


def silu_backward(gy, x, s):
    """gy * s * (1 + x * (1 - s))."""
    return _elementwise_backward(_silu_backward, gy, x, s)


def channel_scale_forward(x, s):
    """x (N, C, ...) * s (N, C, 1, ...): one value of s per plane of x (cpu_scale.py)."""
    x = _c(x)
    y = np.empty_like(x)
    if s.size:  # (an empty batch has no planes)
        _scale_planes(x.reshape(-1), _c(s).reshape(-1), y.reshape(-1))
    return y


def channel_scale_backward(gy, x, s):
    """(gx, gs) of channel_scale_forward: gx = gy * s where s is given, gs (s's shape: each plane's sum of gy * x,
    in float64, then in gy's dtype) where x is given; None for the other."""
    nothing = np.empty(0, dtype=gy.dtype)
    gx = None if s is None else np.empty(gy.shape, dtype=gy.dtype)
    sums = None if x is None else np.empty(gy.shape[0] * gy.shape[1])
    if gy.shape[0] * gy.shape[1]:  # (an empty batch has no planes)
        _scale_planes_backward(_c(gy).reshape(-1), nothing if x is None else _c(x).reshape(-1),
                               nothing if s is None else _c(s).reshape(-1), nothing if gx is None else gx.reshape(-1),
                               np.empty(0) if sums is None else sums, s is not None, x is not None)
    gs = None if sums is None else sums.astype(gy.dtype).reshape(gy.shape[:2] + (1,) * (gy.ndim - 2))
    return gx, gs


def sgd_step(p, grad, buf, lr, momentum, dampening, weight_decay, nesterov):
    """One SGD step (optim/sgd.py's rule): the parameter array, updated in place where it is a writable
    contiguous array (a new one otherwise), and the momentum buffer, updated in place (None: the first
    step, which creates it; and always None without momentum). Element by element, so writing over p
    reads each element before it is written."""
    one = p.dtype.type
    first = buf is None
    if momentum != 0 and first:
        buf = np.empty_like(p)
    new_p = p if p.flags.c_contiguous and p.flags.writeable else np.empty_like(p)
    flat = [_c(a).reshape(-1) for a in (p, grad, p if buf is None else buf, new_p)]
    _sgd_step(*flat, one(lr), one(momentum), one(1 - dampening), one(weight_decay), bool(nesterov), first)
    return new_p, buf


def _planes(a):
    """a (N, C, ...) as a contiguous (N, C, M) array, M the size of a plane."""
    return _c(a).reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def batch_norm_stats(x):
    """(mean, biased variance) of each channel of x (N, C, ...), in float64."""
    mean, var = np.empty(x.shape[1]), np.empty(x.shape[1])
    _channel_stats(_planes(x), mean, var)
    return mean, var


def batch_norm_scale_shift(x, scale, shift):
    """x * scale[c] + shift[c] on every channel c (the float64 scalars rounded to x's dtype)."""
    x = _c(x)
    y = np.empty_like(x)
    _scale_shift(_planes(x), scale.astype(x.dtype), shift.astype(x.dtype), _planes(y))
    return y


def batch_norm_grad_sums(gy, x, mean):
    """(sum of gy, sum of gy * (x - mean)) over each channel, in float64."""
    sum_gy, dot = np.empty(x.shape[1]), np.empty(x.shape[1])
    _grad_sums(_planes(gy), _planes(x), mean, sum_gy, dot)
    return sum_gy, dot


def batch_norm_grad_input(gy, x, mean, mean_gy, k, scale):
    """(gy - mean_gy[c] - (x - mean[c]) * k[c]) * scale[c] on every channel (the scalars in x's dtype)."""
    gx = np.empty(x.shape, dtype=x.dtype)
    one = [a.astype(x.dtype) for a in (mean, mean_gy, k, scale)]
    _grad_input(_planes(gy), _planes(x), *one, _planes(gx))
    return gx


def local_response_norm_forward(x, size, alpha, beta, k):
    """(y, scale, factor) of torch's local_response_norm on x (N, C, ...): scale = k + alpha / size * the
    window's sum of squares, factor = scale^-beta, y = x * factor (cpu_norm.py: the array code's numbers)."""
    x = _c(x)
    dtype = x.dtype.type
    scale = np.empty_like(x)
    _lrn_scale(_planes(x), _planes(scale), size // 2, (size - 1) // 2, dtype(k), dtype(alpha / size))
    factor = np.power(scale, dtype(-beta))
    return np.multiply(x, factor), scale, factor


def local_response_norm_backward(gy, x, scale, factor, size, alpha, beta):
    """The input gradient of local_response_norm_forward, from what it returned."""
    gx = np.empty(x.shape, dtype=x.dtype)
    _lrn_backward(_planes(gy), _planes(x), _planes(scale), _planes(factor), _planes(gx), size // 2,
                  (size - 1) // 2, x.dtype.type(2 * alpha * beta / size))
    return gx


# ---- start-up ----

def _warm_up_calls(dtype):
    """Each kernel called once on tiny arrays of ``dtype``: (its Numba function's name, the call)."""
    x, w = np.zeros((1, 1, 4, 4), dtype), np.zeros((1, 1, 3, 3), dtype)
    y, argmax, p = np.zeros((1, 1, 2, 2), dtype), np.zeros((1, 1, 2, 2), np.int64), np.zeros(3, dtype)
    unit, none, two = (1, 1), (0, 0), (2, 2)
    mean, var = np.zeros(1), np.ones(1)
    offset, mask = np.zeros((1, 18, 2, 2), dtype), np.ones((1, 9, 2, 2), dtype)
    col = np.zeros((1, 3, 3, 1, 2, 2), dtype)  # deform_im2col's columns for x and a 3x3 kernel
    return [
        ("im2col", lambda: [f(x, (3, 3), unit, none, unit, two) for f in (im2col, im2col_one_thread)]),
        ("col2im", lambda: [f(np.zeros((1, 3, 3, 1, 2, 2), dtype), x.shape, unit, none, unit)
                            for f in (col2im, col2im_one_thread)]),
        ("depthwise_forward", lambda: depthwise_forward(x, w, unit, none, unit, two)),
        ("depthwise_backward_input", lambda: depthwise_backward_input(y, w, x.shape, unit, none, unit)),
        ("depthwise_backward_weight", lambda: depthwise_backward_weight(y, x, w.shape, unit, none, unit)),
        ("max_pool2x2_forward", lambda: max_pool2d_forward(x, two, two, none, unit, two)),
        ("max_pool2d_forward", lambda: max_pool2d_forward(x, (3, 3), unit, none, unit, two)),
        ("max_pool2d_backward", lambda: max_pool2d_backward(y, argmax, x.shape)),
        ("relu_forward", lambda: relu_forward(x)),
        ("relu_forward_inplace", lambda: relu_forward(x.copy(), inplace=True)),
        ("relu_backward", lambda: relu_backward(x, np.zeros(x.shape, np.bool_))),
        ("leaky_relu_forward", lambda: leaky_relu_forward(x, 0.1)),
        ("leaky_relu_backward", lambda: leaky_relu_backward(x, np.zeros(x.shape, np.bool_), 0.1)),
        ("negative_abs", lambda: exp_of_negative_abs(x.reshape(-1))),  # sigmoid's and SiLU's
        ("sigmoid_from_exp", lambda: sigmoid_forward(x)),
        ("sigmoid_backward", lambda: sigmoid_backward(x, x)),
        ("silu_from_exp", lambda: silu_forward(x)),
        ("silu_backward", lambda: silu_backward(x, x, x)),
        ("scale_planes", lambda: channel_scale_forward(x, x[:, :, :1, :1])),  # a map times one value per plane
        ("scale_planes_backward", lambda: channel_scale_backward(x, x, x[:, :, :1, :1])),
        ("channel_stats", lambda: batch_norm_stats(x)),  # batch norm's four
        ("scale_shift", lambda: batch_norm_scale_shift(x, var, mean)),
        ("grad_sums", lambda: batch_norm_grad_sums(x, x, mean)),
        ("grad_input", lambda: batch_norm_grad_input(x, x, mean, mean, var, var)),
        ("lrn_scale", lambda: local_response_norm_forward(x, 5, 1e-4, 0.75, 1.0)),
        ("lrn_backward", lambda: local_response_norm_backward(x, x, x + 1, x + 1, 5, 1e-4, 0.75)),
        # deformable convolution, v1 (no mask) and v2: one specialisation each
        ("deform_im2col", lambda: [deform_im2col(x, offset, m, (3, 3), unit, none, unit, two) for m in (None, mask)]),
        ("deform_col2im", lambda: [deform_col2im(col, offset, m, x.shape, unit, none, unit) for m in (None, mask)]),
        ("deform_col2im_coord", lambda: [deform_col2im_coord(col, x, offset, m, unit, none, unit)
                                         for m in (None, mask)]),
        ("gemm_items", lambda: cpu_gemm.warm_up(dtype)),  # stacked_matmul's
        ("im2col_chunks", lambda: _warm_up_chunks(dtype)),
        ("sgd_step", lambda: (sgd_step(p, p, None, 0.1, 0.9, 0, 0, False),  # the first step (makes the buffer)
                              sgd_step(p, p, np.zeros_like(p), 0.1, 0.9, 0, 0, False))),  # and a later one
        ("winograd", lambda: [(winograd_forward(a, b, unit), winograd_backward_input(c, b, a.shape, none),
                               winograd_backward_weight(c, a, b.shape, none))  # its fused and chunked kernels
                              for a, b, c in (_widened(x, w, y, 1), _widened(x, w, y, FUSED_CHANNELS + 1))]),
    ]


def _warm_up_chunks(dtype):
    """The chunk kernels once on two one-image chunks, whatever the threads; nothing where NumPy's BLAS was not
    found (they are never called then)."""
    address = cpu_gemm.gemm_address(dtype)
    if address is None:
        return
    x, w_groups, y = np.zeros((2, 2, 4, 4), dtype), np.zeros((1, 2, 18), dtype), np.zeros((2, 2, 2, 2), dtype)
    starts, geometry = np.arange(3, dtype=np.int64), (1, 1, 0, 0, 1, 1)  # 3x3, stride 1, no padding
    cols, buffers = np.zeros((2, 18 * 4), dtype), np.zeros((2, 2 * 4), dtype)  # per thread: columns, y or gy
    _im2col_chunks_forward(address, x, w_groups, y, cols, buffers, starts, False, 3, 3, *geometry)
    _im2col_chunks_backward(address, y, x, np.zeros((1, 18, 2), dtype), np.zeros_like(x),
                            np.zeros((2, 1, 18, 2), dtype), cols, buffers, cols[:0], starts, 2, 4, 4, 1, 18, 3, 3,
                            *geometry, True, True)


def _widened(x, w, y, channels):
    """x, w and y with ``channels`` channels in and out (zeros)."""
    return (np.zeros((1, channels) + x.shape[2:], x.dtype), np.zeros((channels, channels) + w.shape[2:], w.dtype),
            np.zeros((1, channels) + y.shape[2:], y.dtype))


# The warm-up's names (the Numba functions, as above) behind each interface function that is not one of them
# by itself: what a run calling the function needs compiled (the training CLI compiles just those in the
# background on a machine's first run: scratchnet/train/cpu_kernels.py).
_COMPILES = {
    "im2col_one_thread": ("im2col",), "col2im_one_thread": ("col2im",),  # (compiled beside the parallel ones)
    "relu_forward": ("relu_forward", "relu_forward_inplace"),
    "max_pool2d_forward": ("max_pool2x2_forward", "max_pool2d_forward"),  # (2x2/2 has its own kernel)
    "sigmoid_forward": ("negative_abs", "sigmoid_from_exp"), "silu_forward": ("negative_abs", "silu_from_exp"),
    "channel_scale_forward": ("scale_planes",), "channel_scale_backward": ("scale_planes_backward",),
    "batch_norm_stats": ("channel_stats",), "batch_norm_scale_shift": ("scale_shift",),
    "batch_norm_grad_sums": ("grad_sums",), "batch_norm_grad_input": ("grad_input",),
    "local_response_norm_forward": ("lrn_scale",), "local_response_norm_backward": ("lrn_backward",),
    "stacked_matmul": ("gemm_items",),
    "im2col_chunks_forward": ("im2col_chunks",), "im2col_chunks_backward": ("im2col_chunks",),
    "winograd_forward": ("winograd",), "winograd_backward_input": ("winograd",),
    "winograd_backward_weight": ("winograd",),
}


def kernels_of(functions):
    """The warm-up's names of the Numba kernels that the interface functions ``functions`` call, in the
    warm-up's order."""
    wanted = {name for f in functions for name in _COMPILES.get(f, (f,))}
    return [name for name, _ in _warm_up_calls(np.float64) if name in wanted]


def functions_of(names):
    """The interface functions (kernels/interface.py's CPU list) that call one of the kernels ``names`` (the
    warm-up's names): those a run cannot call while those kernels are not compiled."""
    names = set(names)
    return [f for f in interface.CPU if names.intersection(_COMPILES.get(f, (f,)))]


def compile_kernels(names, dtype):
    """Compile (or load) the named kernels of _warm_up_calls for ``dtype`` in this process."""
    calls = dict(_warm_up_calls(np.dtype(dtype)))
    for name in names:
        calls[name]()


COMPILE_CALL = f"from {__name__} import compile_kernels; compile_kernels(NAMES, DTYPE)"  # what a compiling child runs


def warm_up(dtype=np.float32, compile=False, processes=1):
    """Load every kernel of ``dtype`` that Numba's cache holds, in this thread and on one thread; return
    the names of those it does not hold (their first use on this machine), left for their first real
    call to compile (kernels/cpu_cache.py: only what runs is compiled). ``compile=True`` compiles
    them now instead, in ``processes`` child processes at once when more than one (a machine's first
    run: its cores compile side by side, where the first step would compile one kernel after another),
    and returns the names of those that still failed to load ([] normally).

    Numba's first call in a process initialises its compiler (~0.3 s, most of it importing its
    typing registries) and each kernel's first call loads its machine code from the cache: 0.3-0.4 s
    in all, which otherwise lands in the first training step. A caller can overlap it with other
    start-up work (the training CLI runs it in a thread while the dataset loads). It starts no
    thread pool: Numba's thread count is per calling thread, and this one uses 1.
    """
    import numba
    numba.set_num_threads(1)
    dtype = np.dtype(dtype)
    missing = []
    for name, call in _warm_up_calls(dtype):
        try:
            with cpu_cache.load_only():
                call()
        except cpu_cache.NotCompiled:
            missing.append(name)
    if not (compile and missing):
        return missing
    if processes > 1:
        cpu_cache.compile_in_processes(missing, dtype, processes, COMPILE_CALL)
    compile_kernels(missing, dtype)  # loads what the children compiled, compiles what they could not
    return []
