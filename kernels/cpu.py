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


# ---- depthwise convolution ----
# An (n, c) plane is small (7x7 to 112x112), so per-row loops run a few elements at a
# time. Instead each input plane is copied once into a zero-padded buffer split into its
# stride phases (phase (pi, pj) holds input rows pi - ph, pi - ph + sy, ... and columns
# pj - pw, pj - pw + sx, ...), every row wq wide. There every tap of any stride and
# dilation is a unit-stride shift: output (oy, ox), tap (i, j) reads phase
# ((i*dy) % sy, (j*dx) % sx) at row oy + (i*dy) // sy, column ox + (j*dx) // sx. So a
# block of output rows, computed wq wide, is a sum of shifted copies of one flat vector:
# a long contiguous loop that LLVM vectorises. The wq - ow extra columns of each output
# row read past its end (the next row, or the spare zero row at the end of each phase)
# and are dropped when the rows are copied out. The backward kernels use the same views:
# the input gradient of a phase is the sum of the output gradient (wq wide, extra columns
# zero) shifted back by each of the phase's taps, the weight gradient of a tap the dot
# product of the output gradient with that tap's shifted view of the input.

@njit(cache=True)
def _phase_shape(oh, ow, kh, kw, sy, sx, dy, dx):
    """(hq, wq): each phase has hq + 1 rows (the last a spare) of wq columns."""
    return oh + (kh - 1) * dy // sy, ow + (kw - 1) * dx // sx


@njit(cache=True)
def _tap_offsets(kh, kw, sy, sx, dy, dx, wq, phase_size):
    """Per tap (i, j) in w's order: its phase and its shift inside the phase."""
    phase, shift = np.empty(kh * kw, np.int64), np.empty(kh * kw, np.int64)
    for i in range(kh):
        for j in range(kw):
            phase[i * kw + j] = (i * dy) % sy * sx + (j * dx) % sx
            shift[i * kw + j] = (i * dy) // sy * wq + (j * dx) // sx
    return phase, shift


@njit(cache=True)
def _block_rows(rows, wq):
    """Rows per pass: a block of ~8 KB of float32 stays in L1 while every tap adds into it."""
    return max(1, min(rows, 2048 // wq))


@njit(cache=True)
def _chunks(planes):
    """Coarse prange chunks (buffers allocated once each), still enough to balance many threads."""
    return max(1, min(planes, 256))


@njit(cache=True)
def _fill_phases(src, buf, sy, sx, ph, pw, hq, wq):
    """buf[pi, pj, r, col] = src[r*sy + pi - ph, col*sx + pj - pw], writing only where that is inside
    src: the rest of buf is zero once and stays so (the same positions are written for every plane)."""
    h, w = src.shape
    phase_size = (hq + 1) * wq
    for pi in range(sy):
        for pj in range(sx):
            lo = min(wq, max(0, -((pj - pw) // sx)))  # first column inside src: ceil((pw - pj) / sx)
            hi = max(lo, min(wq, (w - 1 + pw - pj) // sx + 1))
            first = lo * sx + pj - pw  # its column in src
            for r in range(hq + 1):
                iy = r * sy + pi - ph
                if 0 <= iy < h:
                    _copy_strided(src[iy, first:], sx, buf[(pi * sx + pj) * phase_size + r * wq + lo:], hi - lo)


@njit(cache=True)
def _gather_phases(buf, dst, sy, sx, ph, pw, hq, wq):
    """The inverse of _fill_phases: dst[iy, ix] = buf at phase position (iy + ph, ix + pw), 0 right of
    the last column (every row of dst is in the buffer: (h - 1 + ph) // sy <= hq for any oh >= 1)."""
    h, w = dst.shape
    phase_size = (hq + 1) * wq
    for iy in range(h):
        r, pi = (iy + ph) // sy, (iy + ph) % sy
        line = dst[iy]
        for pj in range(sx):
            first = (pj - pw) % sx  # the first ix in this column phase, at phase column (first + pw) // sx
            col = (first + pw) // sx
            count = max(0, min((w - first + sx - 1) // sx, wq - col))
            src = buf[(pi * sx + pj) * phase_size + r * wq + col:]
            if sx == 1:
                _copy_strided(src, 1, line, count)
            else:
                for k in range(count):
                    line[first + k * sx] = src[k]
            for ix in range(first + count * sx, w, sx):  # right of every window
                line[ix] = 0


@njit(cache=True)
def _copy_strided(src, step, dst, count):
    """dst[k] = src[k * step] for k < count (unsigned indices: a vectorised copy when step is 1)."""
    if step == 1:
        for k in range(np.uint64(count)):
            dst[k] = src[k]
    else:
        for k in range(np.uint64(count)):
            dst[k] = src[k * np.uint64(step)]


@njit(cache=True)
def _copy_rows(src, src_width, dst):
    """dst[r, :] = src[r * src_width:][:dst.shape[1]]: a block computed wq wide, back to its true width."""
    rows, width = dst.shape
    for r in range(rows):
        _copy_strided(src[r * src_width:], 1, dst[r], width)


@njit(cache=True)
def _spread_rows(src, dst, dst_width):
    """The inverse of _copy_rows: src's rows into dst, dst_width apart (the columns between are left alone)."""
    rows, width = src.shape
    for r in range(rows):
        _copy_strided(src[r], 1, dst[r * dst_width:], width)


@njit(cache=True)
def _sum_shifted(out, src, starts, scales, accumulate):
    """out[k] (+)= sum over taps t of scales[t] * src[starts[t] + k], for k < out.size.

    Three taps per pass over out (fewer loads and stores than one at a time); unsigned
    indices, so LLVM drops the negative-index wraparound and vectorises the loop."""
    length, count = np.uint64(out.size), starts.size
    t = 0
    while t < count:
        add = accumulate or t > 0
        if count - t >= 3:
            a, b, c = scales[t], scales[t + 1], scales[t + 2]
            s0, s1, s2 = np.uint64(starts[t]), np.uint64(starts[t + 1]), np.uint64(starts[t + 2])
            for k in range(length):
                v = a * src[s0 + k] + b * src[s1 + k] + c * src[s2 + k]
                out[k] = out[k] + v if add else v
            t += 3
        else:
            a, s0 = scales[t], np.uint64(starts[t])
            for k in range(length):
                v = a * src[s0 + k]
                out[k] = out[k] + v if add else v
            t += 1


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dot_shifted(a, b, b_start):
    """sum over k < a.size of a[k] * b[b_start + k], in a's dtype (reassociated, so it vectorises);
    the caller sums these short dots in float64."""
    acc = a.dtype.type(0)
    start = np.uint64(b_start)
    for k in range(np.uint64(a.size)):
        acc += a[k] * b[start + k]
    return acc


@njit(parallel=True, cache=True)
def _depthwise_forward(x, w, y, sy, sx, ph, pw, dy, dx):
    n, c = x.shape[:2]
    co, _, kh, kw = w.shape
    m, oh, ow = co // c, y.shape[2], y.shape[3]
    hq, wq = _phase_shape(oh, ow, kh, kw, sy, sx, dy, dx)
    phase_size, rows = (hq + 1) * wq, _block_rows(oh, wq)
    phase, shift = _tap_offsets(kh, kw, sy, sx, dy, dx, wq, phase_size)
    starts = phase * phase_size + shift
    taps = w.reshape(co, kh * kw)
    planes = n * c
    chunks = _chunks(planes)
    for chunk in prange(chunks):
        phases = np.zeros(sy * sx * phase_size, dtype=x.dtype)
        out = np.empty(rows * wq, dtype=x.dtype)
        for plane in range(chunk * planes // chunks, (chunk + 1) * planes // chunks):
            b, ci = plane // c, plane % c  # its m output channels share the padded plane
            _fill_phases(x[b, ci], phases, sy, sx, ph, pw, hq, wq)
            for oc in range(ci * m, ci * m + m):
                for r0 in range(0, oh, rows):
                    r1 = min(oh, r0 + rows)
                    _sum_shifted(out[:(r1 - r0) * wq], phases[r0 * wq:], starts, taps[oc], False)
                    _copy_rows(out, wq, y[b, oc, r0:r1])


@njit(parallel=True, cache=True)
def _depthwise_backward_input(gy, w, gx, sy, sx, ph, pw, dy, dx):
    n, c = gx.shape[:2]
    co, _, kh, kw = w.shape
    m, oh, ow = co // c, gy.shape[2], gy.shape[3]
    hq, wq = _phase_shape(oh, ow, kh, kw, sy, sx, dy, dx)
    phase_size, rows = (hq + 1) * wq, _block_rows(hq + 1, wq)
    phase, shift = _tap_offsets(kh, kw, sy, sx, dy, dx, wq, phase_size)
    # the taps grouped by phase; a phase's gradient reads gy (laid out wq wide behind `lead`
    # zeros) at lead - shift: the forward's shifts, backwards
    order = np.argsort(phase, kind="mergesort")
    bounds = np.searchsorted(phase[order], np.arange(sy * sx + 1))
    lead = shift.max()
    starts = lead - shift[order]
    taps = w.reshape(co, kh * kw)[:, order].copy()
    planes = n * c
    chunks = _chunks(planes)
    for chunk in prange(chunks):
        grad_phases = np.empty(sy * sx * phase_size, dtype=gy.dtype)
        grad_out = np.zeros(lead + phase_size, dtype=gy.dtype)  # only the oh x ow data is ever written
        for plane in range(chunk * planes // chunks, (chunk + 1) * planes // chunks):
            b, ci = plane // c, plane % c  # gathers from its m output channels
            for k in range(m):
                oc = ci * m + k
                _spread_rows(gy[b, oc], grad_out[lead:], wq)
                for p in range(sy * sx):
                    t0, t1 = bounds[p], bounds[p + 1]
                    for r0 in range(0, hq + 1, rows):
                        block = grad_phases[p * phase_size + r0 * wq:p * phase_size + min(hq + 1, r0 + rows) * wq]
                        if t0 == t1:
                            block[:] = 0  # no tap reads this phase (a kernel smaller than the stride)
                        else:
                            _sum_shifted(block, grad_out[r0 * wq:], starts[t0:t1], taps[oc, t0:t1], k > 0)
            _gather_phases(grad_phases, gx[b, ci], sy, sx, ph, pw, hq, wq)


@njit(parallel=True, cache=True)
def _depthwise_backward_weight(gy, x, gw, sy, sx, ph, pw, dy, dx):
    n, c = x.shape[:2]
    co, _, kh, kw = gw.shape
    m, oh, ow = co // c, gy.shape[2], gy.shape[3]
    hq, wq = _phase_shape(oh, ow, kh, kw, sy, sx, dy, dx)
    phase_size, rows = (hq + 1) * wq, _block_rows(oh, wq)
    phase, shift = _tap_offsets(kh, kw, sy, sx, dy, dx, wq, phase_size)
    starts = phase * phase_size + shift
    for ci in prange(c):  # each input channel owns the weights of its m output channels
        phases = np.zeros(sy * sx * phase_size, dtype=x.dtype)
        grad_out = np.zeros(rows * wq, dtype=gy.dtype)  # columns >= ow stay 0: they add nothing
        acc = np.zeros((m, kh * kw))  # float64 sums of the per-block dot products
        for b in range(n):
            _fill_phases(x[b, ci], phases, sy, sx, ph, pw, hq, wq)
            for k in range(m):
                for r0 in range(0, oh, rows):
                    r1 = min(oh, r0 + rows)
                    _spread_rows(gy[b, ci * m + k, r0:r1], grad_out, wq)
                    block = grad_out[:(r1 - r0) * wq]
                    for t in range(kh * kw):
                        acc[k, t] += _dot_shifted(block, phases, starts[t] + r0 * wq)
        for k in range(m):
            for t in range(kh * kw):
                gw[ci * m + k, 0, t // kw, t % kw] = acc[k, t]



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
