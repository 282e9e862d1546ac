"""Numba CPU kernels: raw NumPy arrays in, raw NumPy arrays out.

The same function names and signatures as kernels/cuda.py, so a caller picks
the module for its arrays (kernels.for_array) and calls one API. Each kernel
parallelises over planes that only it writes (prange), so there are no races
and no atomics; all are njit(parallel=True, cache=True) and see only C-
contiguous float32/float64 arrays and Python ints, keeping specialisations
(and compile time) to two per kernel.
"""
import numpy as np
from numba import njit, prange


def _first_last(out_size, in_size, stride, pad, offset):
    """The output range [lo, hi) whose tap at `offset` (= tap * dilation) lands inside [0, in_size)."""
    lo = max(0, -((offset - pad) // stride))  # ceil((pad - offset) / stride)
    hi = min(out_size, (in_size - 1 + pad - offset) // stride + 1)
    return lo, max(lo, hi)


_first_last_jit = njit(cache=True)(_first_last)


@njit(cache=True)
def _axpy(dst, dst_start, dst_step, src, src_start, src_step, count, scale):
    """dst[dst_start + k*dst_step] += scale * src[src_start + k*src_step] for k < count.

    The unit-stride case goes through zero-based contiguous slices, which LLVM
    vectorises (the general indexing does not)."""
    if dst_step == 1 and src_step == 1:
        d, s = dst[dst_start:dst_start + count], src[src_start:src_start + count]
        for k in range(count):
            d[k] += scale * s[k]
    else:
        for k in range(count):
            dst[dst_start + k * dst_step] += scale * src[src_start + k * src_step]


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dot(a, a_start, b, b_start, b_step, count):
    """sum over k < count of a[a_start + k] * b[b_start + k*b_step] (reassociated, so it vectorises)."""
    acc = 0.0
    if b_step == 1:
        sa, sb = a[a_start:a_start + count], b[b_start:b_start + count]
        for k in range(count):
            acc += sa[k] * sb[k]
    else:
        for k in range(count):
            acc += a[a_start + k] * b[b_start + k * b_step]
    return acc


@njit(parallel=True, cache=True)
def _im2col(x, col, sy, sx, ph, pw, dy, dx, pad_value):
    n, c, h, w = x.shape
    _, kh, kw, _, oh, ow = col.shape
    for cij in prange(c * kh * kw):
        ci, i, j = cij // (kh * kw), (cij // kw) % kh, cij % kw
        lo, hi = _first_last_jit(ow, w, sx, pw, j * dx)
        for b in range(n):
            for oy in range(oh):
                iy = oy * sy - ph + i * dy
                out = col[ci, i, j, b, oy]
                if iy < 0 or iy >= h:
                    out[:] = pad_value
                    continue
                row = x[b, ci, iy]
                out[:lo] = pad_value
                out[hi:] = pad_value
                start = lo * sx - pw + j * dx
                if sx == 1:  # a contiguous run: a slice copy, which LLVM turns into a memcpy
                    out[lo:hi] = row[start:start + hi - lo]
                else:
                    for ox in range(lo, hi):
                        out[ox] = row[start + (ox - lo) * sx]


@njit(parallel=True, cache=True)
def _col2im(col, x, sy, sx, ph, pw, dy, dx):
    c, kh, kw, n, oh, ow = col.shape
    h, w = x.shape[2], x.shape[3]
    for plane in prange(n * c):  # each (b, ci) plane of x is written by one iteration
        b, ci = plane // c, plane % c
        out = x[b, ci]
        out[:] = 0
        for i in range(kh):
            for j in range(kw):
                lo, hi = _first_last_jit(ow, w, sx, pw, j * dx)
                for oy in range(oh):
                    iy = oy * sy - ph + i * dy
                    if iy < 0 or iy >= h:
                        continue
                    _axpy(out[iy], lo * sx - pw + j * dx, sx, col[ci, i, j, b, oy], lo, 1, hi - lo, 1.0)


@njit(parallel=True, cache=True)
def _depthwise_forward(x, w, y, sy, sx, ph, pw, dy, dx):
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    m, oh, ow = co // c, y.shape[2], y.shape[3]
    for plane in prange(n * co):  # (b, oc): output channel oc reads input channel oc // m
        b, oc = plane // co, plane % co
        out = y[b, oc]
        out[:] = 0
        src = x[b, oc // m]
        for i in range(kh):
            for j in range(kw):
                tap = w[oc, 0, i, j]
                lo, hi = _first_last_jit(ow, wd, sx, pw, j * dx)
                for oy in range(oh):
                    iy = oy * sy - ph + i * dy
                    if iy < 0 or iy >= h:
                        continue
                    _axpy(out[oy], lo, 1, src[iy], lo * sx - pw + j * dx, sx, hi - lo, tap)


@njit(parallel=True, cache=True)
def _depthwise_backward_input(gy, w, gx, sy, sx, ph, pw, dy, dx):
    n, c, h, wd = gx.shape
    co, _, kh, kw = w.shape
    m, oh, ow = co // c, gy.shape[2], gy.shape[3]
    for plane in prange(n * c):  # (b, ci) gathers from its m output channels
        b, ci = plane // c, plane % c
        out = gx[b, ci]
        out[:] = 0
        for k in range(m):
            oc = ci * m + k
            src = gy[b, oc]
            for i in range(kh):
                for j in range(kw):
                    tap = w[oc, 0, i, j]
                    lo, hi = _first_last_jit(ow, wd, sx, pw, j * dx)
                    for oy in range(oh):
                        iy = oy * sy - ph + i * dy
                        if iy < 0 or iy >= h:
                            continue
                        _axpy(out[iy], lo * sx - pw + j * dx, sx, src[oy], lo, 1, hi - lo, tap)


@njit(parallel=True, cache=True)
def _depthwise_backward_weight(gy, x, gw, sy, sx, ph, pw, dy, dx):
    n, c, h, wd = x.shape
    co, _, kh, kw = gw.shape
    m, oh, ow = co // c, gy.shape[2], gy.shape[3]
    for oc in prange(co):
        ci = oc // m
        acc = np.zeros(kh * kw)  # float64 partial sums, one per tap
        for b in range(n):  # all taps over one (gy, x) plane pair while it sits in cache
            for i in range(kh):
                for j in range(kw):
                    lo, hi = _first_last_jit(ow, wd, sx, pw, j * dx)
                    for oy in range(oh):
                        iy = oy * sy - ph + i * dy
                        if 0 <= iy < h:
                            acc[i * kw + j] += _dot(gy[b, oc, oy], lo, x[b, ci, iy], lo * sx - pw + j * dx, sx, hi - lo)
        for t in range(kh * kw):
            gw[oc, 0, t // kw, t % kw] = acc[t]


@njit(parallel=True, cache=True)
def _max_pool2d_forward(x, y, argmax, kh, kw, sy, sx, ph, pw, dy, dx):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for plane in prange(n * c):
        b, ci = plane // c, plane % c
        src = x[b, ci]
        for oy in range(oh):
            for ox in range(ow):
                best = src[0, 0]
                where = -1
                for i in range(kh):
                    iy = oy * sy - ph + i * dy
                    if iy < 0 or iy >= h:
                        continue
                    for j in range(kw):
                        ix = ox * sx - pw + j * dx
                        if ix < 0 or ix >= w:
                            continue
                        v = src[iy, ix]
                        # torch's rule: the first maximum wins, but every NaN takes over (the last NaN wins)
                        if where < 0 or v > best or v != v:
                            best, where = v, iy * w + ix
                y[b, ci, oy, ox] = best
                argmax[b, ci, oy, ox] = where


@njit(parallel=True, cache=True)
def _max_pool2d_backward(gy, argmax, gx):
    n, c, h, w = gx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    for plane in prange(n * c):  # overlapping windows stay inside one plane: no race
        b, ci = plane // c, plane % c
        out = gx[b, ci].reshape(h * w)
        out[:] = 0
        for oy in range(oh):
            for ox in range(ow):
                where = argmax[b, ci, oy, ox]
                if where >= 0:
                    out[where] += gy[b, ci, oy, ox]


# ---- the public API, shared with kernels/cuda.py ----

def _c(a):
    return np.ascontiguousarray(a)


def _geometry(stride, padding, dilation):
    (sy, sx), (ph, pw), (dy, dx) = stride, padding, dilation
    return int(sy), int(sx), int(ph), int(pw), int(dy), int(dx)


def im2col(x, kernel, stride, padding, dilation, out_hw, pad_value=0):
    """Columns (C, kh, kw, N, oh, ow), the layout of functional/conv.py's im2col."""
    x = _c(x)
    n, c = x.shape[:2]
    col = np.empty((c, kernel[0], kernel[1], n, out_hw[0], out_hw[1]), dtype=x.dtype)
    _im2col(x, col, *_geometry(stride, padding, dilation), float(pad_value))
    return col


def col2im(col, x_shape, stride, padding, dilation):
    x = np.empty(x_shape, dtype=col.dtype)
    _col2im(_c(col), x, *_geometry(stride, padding, dilation))
    return x


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


def max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw):
    """(y, argmax): argmax is the int64 flat index inside each (n, c) plane."""
    x = _c(x)
    y = np.empty(x.shape[:2] + tuple(out_hw), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.int64)
    _max_pool2d_forward(x, y, argmax, int(kernel[0]), int(kernel[1]), *_geometry(stride, padding, dilation))
    return y, argmax


def max_pool2d_backward(gy, argmax, x_shape):
    gx = np.empty(x_shape, dtype=gy.dtype)
    _max_pool2d_backward(_c(gy), _c(argmax), gx)
    return gx
