"""Numba CPU kernels of the depthwise convolution: forward and both gradients (called through the
public API of kernels/cpu.py, whose module docstring gives the rules every CPU kernel follows).
"""
import numpy as np
from numba import njit, prange

from .cpu_rows import _copy


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
def _tap_offsets(kh, kw, sy, sx, dy, dx, wq):
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


@njit(cache=True)
def _layout(x_shape, w_shape, y_shape, sy, sx, ph, pw, dy, dx):
    """What all three kernels start from, read off their arrays' shapes (x: N, C, H, W; w: C*M, 1, KH, KW;
    y: N, C*M, OH, OW): the sizes (n, c, h, w, co, m, kh, kw, oh, ow) and the stride-phase layout
    (hq, wq, phase_size, each tap's phase and shift, each tap's start in the buffer of all phases, the
    plane map's runs). The forward and the weight gradient read tap t of a block at its start."""
    n, c, h, w = x_shape
    co, _, kh, kw = w_shape
    oh, ow = y_shape[2], y_shape[3]
    hq, wq = _phase_shape(oh, ow, kh, kw, sy, sx, dy, dx)
    phase_size = (hq + 1) * wq
    phase, shift = _tap_offsets(kh, kw, sy, sx, dy, dx, wq)
    starts = phase * phase_size + shift
    runs = _plane_map(h, w, sy, sx, ph, pw, hq, wq)
    return (n, c, h, w, co, co // c, kh, kw, oh, ow), (hq, wq, phase_size, phase, shift, starts, runs)


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


@njit(cache=True, inline="always")
def _three_taps(start, starts, t):
    """The flat (unsigned) offsets of taps t, t + 1 and t + 2 of a shifted-sum or shifted-dot kernel."""
    return np.uint64(start + starts[t]), np.uint64(start + starts[t + 1]), np.uint64(start + starts[t + 2])


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
            s0, s1, s2 = _three_taps(src_start, starts, t)
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


# Written out beside _sum_shifted, not built on it: the pair's whole point is that each load of src
# feeds two channels' multiply-adds inside one loop, which a call per channel cannot give.
@njit(cache=True)
def _sum_shifted_pair(out, length, src, src_start, starts, scales_a, scales_b):
    """Two output channels of one input plane in one pass: out[k] as _sum_shifted(out, 0, ..., scales_a)
    and out[length + k] with scales_b, the same operations in the same order (bit for bit), but each
    shifted input value is loaded once for both: twice the multiply-adds per load (LeNet's C1, six
    channels per plane, N=64: 0.35 -> 0.26 ms on one thread, 0.22 -> 0.14 ms on two)."""
    n, count = np.uint64(length), starts.size
    t = 0
    while t < count:
        add = t > 0
        if count - t >= 3:
            a0, a1, a2 = scales_a[t], scales_a[t + 1], scales_a[t + 2]
            b0, b1, b2 = scales_b[t], scales_b[t + 1], scales_b[t + 2]
            s0, s1, s2 = _three_taps(src_start, starts, t)
            for k in range(n):
                x0, x1, x2 = src[s0 + k], src[s1 + k], src[s2 + k]
                va = a0 * x0 + a1 * x1 + a2 * x2
                vb = b0 * x0 + b1 * x1 + b2 * x2
                out[k] = out[k] + va if add else va
                out[n + k] = out[n + k] + vb if add else vb
            t += 3
        else:
            a0, b0, s0 = scales_a[t], scales_b[t], np.uint64(src_start + starts[t])
            for k in range(n):
                x0 = src[s0 + k]
                va, vb = a0 * x0, b0 * x0
                out[k] = out[k] + va if add else va
                out[n + k] = out[n + k] + vb if add else vb
            t += 1


@njit(cache=True, inline="always")
def _add_three(acc, t, d0, d1, d2):
    """acc[t], acc[t + 1], acc[t + 2] += d0, d1, d2: one pass's three tap sums, each into its tap."""
    acc[t] += d0
    acc[t + 1] += d1
    acc[t + 2] += d2


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dots_shifted(a, length, b, b_start, starts, acc):
    """acc[t] += sum over k < length of a[k] * b[b_start + starts[t] + k], for every tap t: three taps
    per pass over a, each sum in a's dtype (reassociated, so it vectorises), acc in float64."""
    n, count = np.uint64(length), starts.size
    t = 0
    while t < count:
        if count - t >= 3:
            s0, s1, s2 = _three_taps(b_start, starts, t)
            d0 = d1 = d2 = a.dtype.type(0)
            for k in range(n):
                d0 += a[k] * b[s0 + k]
                d1 += a[k] * b[s1 + k]
                d2 += a[k] * b[s2 + k]
            _add_three(acc, t, d0, d1, d2)
            t += 3
        else:
            s0 = np.uint64(b_start + starts[t])
            d0 = a.dtype.type(0)
            for k in range(n):
                d0 += a[k] * b[s0 + k]
            acc[t] += d0
            t += 1


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dots_shifted_pair(a, length, b, b_start, starts, acc_a, acc_b):
    """_dots_shifted for two output channels at once: a[k] and a[length + k] are their gradients, each
    shifted view of b is loaded once for both (twice the multiply-adds per load; LeNet's C1: 0.36 ->
    0.25 ms on one thread, 0.20 -> 0.14 ms on two). The float32 partial sums group differently from
    _dots_shifted's (7.8e-8 relative on C1), so a multiplier >= 2 gives the same sums on any thread
    count but not bit for bit the single-channel kernel's."""
    n, count = np.uint64(length), starts.size
    t = 0
    while t < count:
        if count - t >= 3:
            s0, s1, s2 = _three_taps(b_start, starts, t)
            p0 = p1 = p2 = q0 = q1 = q2 = a.dtype.type(0)
            for k in range(n):
                x0, x1, x2 = b[s0 + k], b[s1 + k], b[s2 + k]
                ga, gb = a[k], a[n + k]
                p0 += ga * x0
                p1 += ga * x1
                p2 += ga * x2
                q0 += gb * x0
                q1 += gb * x1
                q2 += gb * x2
            _add_three(acc_a, t, p0, p1, p2)
            _add_three(acc_b, t, q0, q1, q2)
            t += 3
        else:
            s0 = np.uint64(b_start + starts[t])
            p0 = q0 = a.dtype.type(0)
            for k in range(n):
                x0 = b[s0 + k]
                p0 += a[k] * x0
                q0 += a[n + k] * x0
            acc_a[t] += p0
            acc_b[t] += q0
            t += 1


@njit(parallel=True, cache=True)
def _depthwise_forward(x, w, y, sy, sx, ph, pw, dy, dx):
    (n, c, h, wd, co, m, kh, kw, oh, ow), (hq, wq, phase_size, phase, shift, starts, runs) = \
        _layout(x.shape, w.shape, y.shape, sy, sx, ph, pw, dy, dx)
    rows = _block_rows(oh, wq)
    taps, xf, yf = w.reshape(co, kh * kw), x.reshape(-1), y.reshape(-1)
    planes = n * c
    chunks = _chunks(planes)
    for chunk in prange(chunks):
        phases = np.zeros(sy * sx * phase_size, dtype=x.dtype)
        out = np.empty(2 * rows * wq, dtype=x.dtype)  # room for a pair of output channels
        for plane in range(chunk * planes // chunks, (chunk + 1) * planes // chunks):
            b, ci = plane // c, plane % c  # its m output channels share the padded plane
            _fill_phases(xf, plane * h * wd, phases, runs, sx)
            for oc in range(ci * m, ci * m + m, 2):  # two at a time (a multiplier > 1: LeNet's C1)
                pair = oc + 1 < ci * m + m
                for r0 in range(0, oh, rows):
                    r1 = min(oh, r0 + rows)
                    length = (r1 - r0) * wq
                    if pair:
                        _sum_shifted_pair(out, length, phases, r0 * wq, starts, taps[oc], taps[oc + 1])
                    else:
                        _sum_shifted(out, 0, length, phases, r0 * wq, starts, taps[oc], False)
                    for oy in range(r0, r1):
                        _copy(out, (oy - r0) * wq, yf, ((b * co + oc) * oh + oy) * ow, ow)
                        if pair:
                            _copy(out, length + (oy - r0) * wq, yf, ((b * co + oc + 1) * oh + oy) * ow, ow)


@njit(parallel=True, cache=True)
def _depthwise_backward_input(gy, w, gx, sy, sx, ph, pw, dy, dx):
    (n, c, h, wd, co, m, kh, kw, oh, ow), (hq, wq, phase_size, phase, shift, _, runs) = \
        _layout(gx.shape, w.shape, gy.shape, sy, sx, ph, pw, dy, dx)
    rows = _block_rows(hq + 1, wq)
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
    (n, c, h, wd, co, m, kh, kw, oh, ow), (hq, wq, phase_size, phase, shift, starts, runs) = \
        _layout(x.shape, gw.shape, gy.shape, sy, sx, ph, pw, dy, dx)
    rows = _block_rows(oh, wq)
    xf, gyf = x.reshape(-1), gy.reshape(-1)
    blocks = min(c, 32)
    # few channel blocks (LeNet's C1 has one input channel: one block) would leave threads idle, so
    # the batch is split as well, into a number of parts fixed by the shapes (never by the thread
    # count: the sums, regrouped, must not change with it), each part with its own rows of acc.
    # C1 (N=64): 0.35 ms on 1 thread, 0.19 ms on 2 (0.35 ms unsplit).
    parts = 1 if blocks >= 8 else min(n, 8)
    acc = np.zeros((parts, co, kh * kw))  # float64 sums of the per-block dot products
    # each block of input channels owns the rows of acc of its output channels (no race); it
    # walks the batch outermost, reading x and gy in runs of consecutive planes (3x faster
    # than one channel's planes, a whole batch image apart)
    for job in prange(blocks * parts):
        block, part = job // parts, job % parts
        c0, c1 = block * c // blocks, (block + 1) * c // blocks
        phases = np.zeros(sy * sx * phase_size, dtype=x.dtype)
        grad_out = np.zeros(2 * rows * wq, dtype=gy.dtype)  # columns >= ow stay 0: they add nothing
        for b in range(part * n // parts, (part + 1) * n // parts):
            for ci in range(c0, c1):
                _fill_phases(xf, (b * c + ci) * h * wd, phases, runs, sx)
                for oc in range(ci * m, ci * m + m, 2):  # two at a time where the multiplier allows
                    pair = oc + 1 < ci * m + m
                    for r0 in range(0, oh, rows):
                        r1 = min(oh, r0 + rows)
                        length = (r1 - r0) * wq
                        for oy in range(r0, r1):
                            _copy(gyf, ((b * co + oc) * oh + oy) * ow, grad_out, (oy - r0) * wq, ow)
                            if pair:
                                _copy(gyf, ((b * co + oc + 1) * oh + oy) * ow, grad_out, length + (oy - r0) * wq,
                                      ow)
                        if pair:
                            _dots_shifted_pair(grad_out, length, phases, r0 * wq, starts, acc[part, oc],
                                               acc[part, oc + 1])
                        else:
                            _dots_shifted(grad_out, length, phases, r0 * wq, starts, acc[part, oc])
    for part in range(1, parts):  # in order: the same sums on any number of threads
        acc[0] += acc[part]
    for oc in range(co):
        for t in range(kh * kw):
            gw[oc, 0, t // kw, t % kw] = acc[0, oc, t]
