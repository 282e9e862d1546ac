"""Numba CPU kernels: raw NumPy arrays in, raw NumPy arrays out.

The same function names and signatures as kernels/cuda.py, so a caller picks
the module for its arrays (kernels.for_array) and calls one API; ReLU and the
SGD step are CPU-only (the GPU runs CuPy's elementwise code). Each convolution
and pooling kernel parallelises over planes that only it writes (prange), so
there are no races and no atomics; the elementwise ones are serial (too little
work to pay for waking a thread). All are njit(cache=True) and see only C-
contiguous float32/float64 arrays and Python scalars, keeping specialisations
(and compile time) to two per kernel.

Indexing inside a prange loop is on flat arrays with unsigned (uint64)
offsets: signed indices make Numba check for negative ones, and that keeps
LLVM from vectorising (a copy loop ran 10x slower); and never mix uint64 with
int64 in one expression (Numba makes it a float).
"""
import numpy as np
from numba import njit, prange


def _first_last(out_size, in_size, stride, pad, offset):
    """The output range [lo, hi) whose tap at `offset` (= tap * dilation) lands inside [0, in_size)."""
    lo = max(0, -((offset - pad) // stride))  # ceil((pad - offset) / stride)
    hi = min(out_size, (in_size - 1 + pad - offset) // stride + 1)
    return lo, max(lo, hi)


_first_last_jit = njit(cache=True)(_first_last)


@njit(cache=True, inline="always")
def _copy(src, src_start, dst, dst_start, count):
    """dst[dst_start + k] = src[src_start + k] for k < count, on flat arrays."""
    s, d = np.uint64(src_start), np.uint64(dst_start)
    for k in range(np.uint64(count)):
        dst[d + k] = src[s + k]


# im2col / col2im index flat arrays with unsigned offsets and copy rows element by element: a
# slice of a view per row (what NumPy code would do) costs Numba more than copying LeNet C3's ten
# pixels (C3's columns: 0.35 ms flat vs 0.93 ms sliced, one thread).

@njit(parallel=True, cache=True)
def _im2col(x, col, sy, sx, ph, pw, dy, dx, pad_value):
    n, c, h, w = x.shape
    _, kh, kw, _, oh, ow = col.shape
    xf, cf = x.reshape(-1), col.reshape(-1)
    pad = x.dtype.type(pad_value)
    for cij in prange(c * kh * kw):  # one (channel, tap) row of col: n * oh * ow contiguous values
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
def _col2im(col, x, sy, sx, ph, pw, dy, dx):
    c, kh, kw, n, oh, ow = col.shape
    h, w = x.shape[2], x.shape[3]
    cf, xf = col.reshape(-1), x.reshape(-1)
    for plane in prange(n * c):  # each (b, ci) plane of x is written by one iteration
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
# All indexing is on flat arrays with unsigned offsets: slicing a 2-D view per row costs
# more than copying its dozen elements, and unsigned indices spare LLVM Python's negative-
# index wraparound, so the loops vectorise. The row-copy helpers are inline="always":
# inlined, their loops specialise to the kernel's stride (as calls they cost ~2x more).

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
def _plane_map(h, w, sy, sx, ph, pw, hq, wq):
    """Where a plane's pixels sit in the phase buffer, computed once per call: per (input row, column
    phase) a run of `count` pixels sx apart from `src` in the plane to `dst` in the buffer (phase
    (pi, pj) row r, column col holds pixel (r*sy + pi - ph, col*sx + pj - pw)). Every input row
    has its place: (h - 1 + ph) // sy <= hq. Also whether the runs cover the whole plane."""
    phase_size = (hq + 1) * wq
    src, dst, count = np.empty(h * sx, np.int64), np.empty(h * sx, np.int64), np.empty(h * sx, np.int64)
    for iy in range(h):
        r, pi = (iy + ph) // sy, (iy + ph) % sy
        for pj in range(sx):
            lo = min(wq, max(0, -((pj - pw) // sx)))  # the first phase column inside the plane
            hi = max(lo, min(wq, (w - 1 + pw - pj) // sx + 1))
            run = iy * sx + pj
            src[run] = iy * w + lo * sx + pj - pw
            dst[run] = (pi * sx + pj) * phase_size + r * wq + lo
            count[run] = hi - lo
    return src, dst, count, count.sum() == h * w


@njit(cache=True, inline="always")
def _fill_phases(xf, plane_start, buf, runs, sx):
    """Copy plane x.flat[plane_start:] into its places in buf. The rest of buf is zeroed once by the
    caller and stays so: every plane writes the same places."""
    src, dst, count, _ = runs
    if sx == 1:  # then every run has the same length
        for run in range(src.size):
            _copy(xf, plane_start + src[run], buf, dst[run], count[0])
        return
    step = np.uint64(sx)
    for run in range(src.size):
        s, d = np.uint64(plane_start + src[run]), np.uint64(dst[run])
        for k in range(np.uint64(count[run])):
            buf[d + k] = xf[s + k * step]


@njit(cache=True, inline="always")
def _gather_phases(buf, gxf, plane_start, plane_size, runs, sx):
    """The inverse of _fill_phases; pixels no window reaches (right of the last one) are 0."""
    src, dst, count, covers_all = runs
    if not covers_all:
        for k in range(np.uint64(plane_start), np.uint64(plane_start + plane_size)):
            gxf[k] = 0
    if sx == 1:
        for run in range(src.size):
            _copy(buf, dst[run], gxf, plane_start + src[run], count[0])
        return
    step = np.uint64(sx)
    for run in range(src.size):
        s, d = np.uint64(plane_start + src[run]), np.uint64(dst[run])
        for k in range(np.uint64(count[run])):
            gxf[s + k * step] = buf[d + k]


@njit(cache=True)
def _sum_shifted(out, out_start, length, src, src_start, starts, scales, accumulate):
    """out[out_start + k] (+)= sum over taps t of scales[t] * src[src_start + starts[t] + k], k < length.

    Three taps per pass over out: fewer loads and stores than one at a time."""
    o, n, count = np.uint64(out_start), np.uint64(length), starts.size
    t = 0
    while t < count:
        add = accumulate or t > 0
        if count - t >= 3:
            a, b, c = scales[t], scales[t + 1], scales[t + 2]
            s0, s1, s2 = (np.uint64(src_start + starts[t]), np.uint64(src_start + starts[t + 1]),
                          np.uint64(src_start + starts[t + 2]))
            for k in range(n):
                v = a * src[s0 + k] + b * src[s1 + k] + c * src[s2 + k]
                out[o + k] = out[o + k] + v if add else v
            t += 3
        else:
            a, s0 = scales[t], np.uint64(src_start + starts[t])
            for k in range(n):
                v = a * src[s0 + k]
                out[o + k] = out[o + k] + v if add else v
            t += 1


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dots_shifted(a, length, b, b_start, starts, acc):
    """acc[t] += sum over k < length of a[k] * b[b_start + starts[t] + k], for every tap t: three taps
    per pass over a, each sum in a's dtype (reassociated, so it vectorises), acc in float64."""
    n, count = np.uint64(length), starts.size
    t = 0
    while t < count:
        if count - t >= 3:
            s0, s1, s2 = (np.uint64(b_start + starts[t]), np.uint64(b_start + starts[t + 1]),
                          np.uint64(b_start + starts[t + 2]))
            d0 = d1 = d2 = a.dtype.type(0)
            for k in range(n):
                d0 += a[k] * b[s0 + k]
                d1 += a[k] * b[s1 + k]
                d2 += a[k] * b[s2 + k]
            acc[t] += d0
            acc[t + 1] += d1
            acc[t + 2] += d2
            t += 3
        else:
            s0 = np.uint64(b_start + starts[t])
            d0 = a.dtype.type(0)
            for k in range(n):
                d0 += a[k] * b[s0 + k]
            acc[t] += d0
            t += 1


@njit(parallel=True, cache=True)
def _depthwise_forward(x, w, y, sy, sx, ph, pw, dy, dx):
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    m, oh, ow = co // c, y.shape[2], y.shape[3]
    hq, wq = _phase_shape(oh, ow, kh, kw, sy, sx, dy, dx)
    phase_size, rows = (hq + 1) * wq, _block_rows(oh, wq)
    phase, shift = _tap_offsets(kh, kw, sy, sx, dy, dx, wq, phase_size)
    starts = phase * phase_size + shift
    taps, xf, yf = w.reshape(co, kh * kw), x.reshape(-1), y.reshape(-1)
    runs = _plane_map(h, wd, sy, sx, ph, pw, hq, wq)
    planes = n * c
    chunks = _chunks(planes)
    for chunk in prange(chunks):
        phases = np.zeros(sy * sx * phase_size, dtype=x.dtype)
        out = np.empty(rows * wq, dtype=x.dtype)
        for plane in range(chunk * planes // chunks, (chunk + 1) * planes // chunks):
            b, ci = plane // c, plane % c  # its m output channels share the padded plane
            _fill_phases(xf, plane * h * wd, phases, runs, sx)
            for oc in range(ci * m, ci * m + m):
                for r0 in range(0, oh, rows):
                    r1 = min(oh, r0 + rows)
                    _sum_shifted(out, 0, (r1 - r0) * wq, phases, r0 * wq, starts, taps[oc], False)
                    for oy in range(r0, r1):
                        _copy(out, (oy - r0) * wq, yf, ((b * co + oc) * oh + oy) * ow, ow)


@njit(parallel=True, cache=True)
def _depthwise_backward_input(gy, w, gx, sy, sx, ph, pw, dy, dx):
    n, c, h, wd = gx.shape
    co, _, kh, kw = w.shape
    m, oh, ow = co // c, gy.shape[2], gy.shape[3]
    hq, wq = _phase_shape(oh, ow, kh, kw, sy, sx, dy, dx)
    phase_size, rows = (hq + 1) * wq, _block_rows(hq + 1, wq)
    phase, shift = _tap_offsets(kh, kw, sy, sx, dy, dx, wq, phase_size)
    # the taps grouped by phase (phase p's are order[bounds[p]:bounds[p + 1]]); a phase's gradient
    # reads gy (laid out wq wide behind `lead` zeros) at lead - shift: the forward's shifts, backwards
    order, bounds = np.empty(kh * kw, np.int64), np.empty(sy * sx + 1, np.int64)
    grouped = 0
    for p in range(sy * sx):
        bounds[p] = grouped
        for t in range(kh * kw):
            if phase[t] == p:
                order[grouped] = t
                grouped += 1
    bounds[sy * sx] = grouped
    lead = shift.max()
    starts = lead - shift[order]
    taps, gyf, gxf = w.reshape(co, kh * kw)[:, order].copy(), gy.reshape(-1), gx.reshape(-1)
    runs = _plane_map(h, wd, sy, sx, ph, pw, hq, wq)
    planes = n * c
    chunks = _chunks(planes)
    for chunk in prange(chunks):
        grad_phases = np.empty(sy * sx * phase_size, dtype=gy.dtype)
        grad_out = np.zeros(lead + phase_size, dtype=gy.dtype)  # only the oh x ow data is ever written
        for plane in range(chunk * planes // chunks, (chunk + 1) * planes // chunks):
            b, ci = plane // c, plane % c  # gathers from its m output channels
            for k in range(m):
                oc = ci * m + k
                for oy in range(oh):
                    _copy(gyf, ((b * co + oc) * oh + oy) * ow, grad_out, lead + oy * wq, ow)
                for p in range(sy * sx):
                    t0, t1 = bounds[p], bounds[p + 1]
                    if t0 == t1:  # no tap reads this phase (a kernel smaller than the stride)
                        grad_phases[p * phase_size:(p + 1) * phase_size] = 0
                        continue
                    for r0 in range(0, hq + 1, rows):
                        length = (min(hq + 1, r0 + rows) - r0) * wq
                        _sum_shifted(grad_phases, p * phase_size + r0 * wq, length, grad_out, r0 * wq,
                                     starts[t0:t1], taps[oc, t0:t1], k > 0)
            _gather_phases(grad_phases, gxf, plane * h * wd, h * wd, runs, sx)


@njit(parallel=True, cache=True)
def _depthwise_backward_weight(gy, x, gw, sy, sx, ph, pw, dy, dx):
    n, c, h, wd = x.shape
    co, _, kh, kw = gw.shape
    m, oh, ow = co // c, gy.shape[2], gy.shape[3]
    hq, wq = _phase_shape(oh, ow, kh, kw, sy, sx, dy, dx)
    phase_size, rows = (hq + 1) * wq, _block_rows(oh, wq)
    phase, shift = _tap_offsets(kh, kw, sy, sx, dy, dx, wq, phase_size)
    starts = phase * phase_size + shift
    xf, gyf = x.reshape(-1), gy.reshape(-1)
    runs = _plane_map(h, wd, sy, sx, ph, pw, hq, wq)
    acc = np.zeros((co, kh * kw))  # float64 sums of the per-block dot products
    blocks = min(c, 32)
    # each block of input channels owns the rows of acc of its output channels (no race); it
    # walks the batch outermost, reading x and gy in runs of consecutive planes (3x faster
    # than one channel's planes, a whole batch image apart)
    for block in prange(blocks):
        c0, c1 = block * c // blocks, (block + 1) * c // blocks
        phases = np.zeros(sy * sx * phase_size, dtype=x.dtype)
        grad_out = np.zeros(rows * wq, dtype=gy.dtype)  # columns >= ow stay 0: they add nothing
        for b in range(n):
            for ci in range(c0, c1):
                _fill_phases(xf, (b * c + ci) * h * wd, phases, runs, sx)
                for oc in range(ci * m, ci * m + m):
                    for r0 in range(0, oh, rows):
                        r1 = min(oh, r0 + rows)
                        for oy in range(r0, r1):
                            _copy(gyf, ((b * co + oc) * oh + oy) * ow, grad_out, (oy - r0) * wq, ow)
                        _dots_shifted(grad_out, (r1 - r0) * wq, phases, r0 * wq, starts, acc[oc])
    for oc in range(co):
        for t in range(kh * kw):
            gw[oc, 0, t // kw, t % kw] = acc[oc, t]


# max pooling. The general kernel's branches follow the data (a 2-D view per plane is cheap next to
# them); the 2x2 and backward kernels index flat arrays: views per plane and row cost more than
# pooling a LeNet plane (C1's pool: 0.18 vs 0.34 ms).

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
# bool mask goes through a cast): LeNet C1's ReLU 0.03 vs 0.09 ms forward. Serial on purpose: a
# LeNet activation is tens of microseconds of work, about what waking a second thread costs.

@njit(cache=True)
def _relu_forward(x, y, mask):
    xf, yf, mf = x.reshape(-1), y.reshape(-1), mask.reshape(-1)
    for k in range(np.uint64(xf.size)):
        v = xf[k]
        keep = not v <= 0  # torch's rule: NaN passes (value and gradient), -inf becomes 0
        mf[k] = keep
        yf[k] = v if keep else 0


@njit(cache=True)
def _relu_backward(gy, mask, gx):
    gyf, mf, gxf = gy.reshape(-1), mask.reshape(-1), gx.reshape(-1)
    for k in range(np.uint64(gyf.size)):
        gxf[k] = gyf[k] if mf[k] else 0


# ---- SGD ----
# torch's SGD rule for one parameter in one pass (NumPy takes six, each a fresh array). The same
# operations in the same order and dtype as optim/sgd.py's array code, none fused into an FMA, so
# the numbers are bit for bit those of the array code.

@njit(cache=True)
def _sgd_step(p, grad, buf, new_p, lr, momentum, keep, weight_decay, nesterov, first):
    pf, gf, bf, nf = p.reshape(-1), grad.reshape(-1), buf.reshape(-1), new_p.reshape(-1)
    for k in range(np.uint64(pf.size)):
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

def relu_forward(x):
    """(y, mask): y = max(x, 0) with NaN kept, as torch.relu; mask = not x <= 0, what backward needs."""
    x = _c(x)
    y, mask = np.empty_like(x), np.empty(x.shape, dtype=np.bool_)
    _relu_forward(x, y, mask)
    return y, mask


def relu_backward(gy, mask):
    """gy where the input was positive or NaN, else 0 (torch's threshold_backward)."""
    gx = np.empty(gy.shape, dtype=gy.dtype)
    _relu_backward(_c(gy), mask, gx)
    return gx



def sgd_step(p, grad, buf, lr, momentum, dampening, weight_decay, nesterov):
    """One SGD step (optim/sgd.py's rule): the new parameter array and the momentum buffer, updated in
    place (None: the first step, which creates it; and always None without momentum)."""
    one = p.dtype.type
    first = buf is None
    if momentum != 0 and first:
        buf = np.empty_like(p)
    new_p = np.empty_like(p)
    _sgd_step(_c(p), _c(grad), p if buf is None else buf, new_p, one(lr), one(momentum), one(1 - dampening),
              one(weight_decay), bool(nesterov), first)
    return new_p, buf
