"""Numba CPU kernels of batch normalisation (called through the public API of kernels/cpu.py, whose
module docstring gives the rules every CPU kernel follows).

torch's CPU formulas on x viewed as (N, C, M), M the pixels of a plane: per channel the mean and
biased variance in float64 (two passes over its N planes), then one elementwise pass

    forward   y  = x * scale + shift               scale = w / sqrt(var + eps), shift = b - mean * scale
    backward  gx = (gy - mean_gy - (x - mean) * k) * scale          (training; k = dot / var_eps / count)
              gx = gy * scale                                        (evaluation: constant statistics)

where mean_gy and dot = sum(gy * (x - mean)) come from one more pass of per-channel sums (the
weight's gradient is dot / sqrt(var + eps), the bias's sum(gy)). NumPy's version of the same takes
about eight passes and as many full-size temporaries (ResNet-50, batch 16: 0.50 s forward and
0.65 s backward over its 53 layers). The per-channel scalars are worked out in float64 by the
caller and rounded to x's dtype once, as torch does in its opmath type.
"""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath={"reassoc"})  # reassociated float64 sums vectorise
def _channel_stats(x, mean, var):
    """mean[c], var[c] = the mean and biased variance of channel c of x (N, C, M), in float64."""
    n, c, m = x.shape
    xf, count = x.reshape(-1), n * m
    for ch in prange(c):
        total = 0.0
        for b in range(n):
            start = np.uint64((b * c + ch) * m)
            for k in range(np.uint64(m)):
                total += xf[start + k]
        mu = total / count
        squares = 0.0  # the second pass: sum((x - mean)^2) never cancels catastrophically
        for b in range(n):
            start = np.uint64((b * c + ch) * m)
            for k in range(np.uint64(m)):
                d = xf[start + k] - mu
                squares += d * d
        mean[ch], var[ch] = mu, squares / count


@njit(parallel=True, cache=True, fastmath={"reassoc"})
def _grad_sums(gy, x, mean, sum_gy, dot):
    """sum_gy[c] = sum of gy over channel c; dot[c] = sum of gy * (x - mean[c]); in float64."""
    n, c, m = x.shape
    gyf, xf = gy.reshape(-1), x.reshape(-1)
    for ch in prange(c):
        mu, s, d = mean[ch], 0.0, 0.0
        for b in range(n):
            start = np.uint64((b * c + ch) * m)
            for k in range(np.uint64(m)):
                g = gyf[start + k]
                s += g
                d += g * (xf[start + k] - mu)
        sum_gy[ch], dot[ch] = s, d


@njit(parallel=True, cache=True)
def _scale_shift(x, scale, shift, y):
    """y = x * scale[c] + shift[c] on every plane (n, c) of x (N, C, M)."""
    n, c, m = x.shape
    xf, yf = x.reshape(-1), y.reshape(-1)
    for plane in prange(n * c):
        a, b = scale[plane % c], shift[plane % c]
        start = np.uint64(plane * m)
        for k in range(np.uint64(m)):
            yf[start + k] = xf[start + k] * a + b


@njit(parallel=True, cache=True)
def _grad_input(gy, x, mean, mean_gy, k, scale, gx):
    """gx = (gy - mean_gy[c] - (x - mean[c]) * k[c]) * scale[c], the training input gradient."""
    n, c, m = x.shape
    gyf, xf, gxf = gy.reshape(-1), x.reshape(-1), gx.reshape(-1)
    for plane in prange(n * c):
        ch = plane % c
        mu, g0, kk, s = mean[ch], mean_gy[ch], k[ch], scale[ch]
        start = np.uint64(plane * m)
        for j in range(np.uint64(m)):
            gxf[start + j] = (gyf[start + j] - g0 - (xf[start + j] - mu) * kk) * s


# ---- local response normalisation (torch's formula: functional/norm.py) ----
# scale = k + alpha / size * (the sum of x^2 over the window of `before` channels before and `after`
# after), y = x * scale^-beta; the window sums add the channels in increasing order, as the array
# code's shifted sums do, and every other operation is the array code's in its order and dtype: the
# same numbers, bit for bit. The power stays NumPy's (between the two kernels of each way).

@njit(cache=True)
def _lrn_scale(x, scale, before, after, k, a):
    """scale[n, c] = k + a * sum of x[n, j]^2 for j in [c - before, c + after] inside [0, C)."""
    n, c, m = x.shape
    xf, sf = x.reshape(-1), scale.reshape(-1)
    for b in range(n):
        for ch in range(c):
            out = np.uint64((b * c + ch) * m)
            lo, hi = max(0, ch - before), min(c - 1, ch + after)
            first = np.uint64((b * c + lo) * m)
            for q in range(np.uint64(m)):
                v = xf[first + q]
                sf[out + q] = v * v
            for j in range(lo + 1, hi + 1):
                src = np.uint64((b * c + j) * m)
                for q in range(np.uint64(m)):
                    v = xf[src + q]
                    sf[out + q] += v * v
            for q in range(np.uint64(m)):
                sf[out + q] = k + a * sf[out + q]


@njit(cache=True)
def _lrn_backward(gy, x, scale, factor, gx, before, after, c2):
    """gx = gy * factor - c2 * x * (the window sum of gy * x * factor / scale over the mirrored window:
    `after` channels before, `before` after), one image at a time through a buffer of its spread."""
    n, c, m = x.shape
    gyf, xf, sf, ff, gxf = gy.reshape(-1), x.reshape(-1), scale.reshape(-1), factor.reshape(-1), gx.reshape(-1)
    spread = np.empty(c * m, x.dtype)
    back = np.empty(m, x.dtype)
    for b in range(n):
        start = np.uint64(b * c * m)
        for q in range(np.uint64(c * m)):
            spread[q] = gyf[start + q] * xf[start + q] * ff[start + q] / sf[start + q]
        for ch in range(c):
            lo, hi = max(0, ch - after), min(c - 1, ch + before)
            first = np.uint64(lo * m)
            for q in range(np.uint64(m)):
                back[q] = spread[first + q]
            for j in range(lo + 1, hi + 1):
                src = np.uint64(j * m)
                for q in range(np.uint64(m)):
                    back[q] += spread[src + q]
            out = start + np.uint64(ch * m)
            for q in range(np.uint64(m)):
                gxf[out + q] = gyf[out + q] * ff[out + q] - c2 * xf[out + q] * back[q]
