"""Numba kernels of deformable convolution (kernels/cpu.py's deform_* API): deformable im2col into the
column layout (C, kh, kw, N, oh, ow) that one BLAS GEMM then multiplies, and its two adjoints.

The sampling rule is torchvision's (scratchnet/functional/deform_routes.py states it; that NumPy code
is the reference these kernels are tested against). Three ideas make it fast:

* A *plan* per (image, offset group, tap): for each output pixel, the four neighbours of its sample
  point as indices into a zero-bordered copy of the input plane ((H+2) x (W+2)), their bilinear weights
  times the mask, and the fractions (ly, lx). Every channel of the offset group reuses it, so the
  floors, compares and weights are computed once per C/offset_groups channels, and the channel loops
  are branch-free: a neighbour outside the image reads the zero border (torchvision reads 0 there),
  a sample with no neighbour inside points all four at the border's corner with weight 0.
* Work is split so that each iteration of a ``prange`` writes its own outputs: the columns and the
  offset/mask gradients per (image, group, tap); the input gradient, a scatter, per (image, block of
  channels), into a private zero-bordered buffer whose inside is then copied out. No atomics, no
  races, and the sums run in a fixed order: deterministic, as every CPU kernel here.
* Flat arrays with unsigned offsets inside the loops (kernels/cpu.py explains why).

A point the plan keeps in: -1 <= y < H and -1 <= x < W (floor(y) in [-1, H-1]): the neighbours of
such a point lie in the bordered plane. torchvision's sample rule is -1 < y < H; on y = -1 exactly
the two rules give the same value (the inside neighbours have weight ly = 0), and the offset gradient
there is torchvision's one-sided derivative, which reads those neighbours.
"""
import math

import numpy as np
from numba import njit, prange

CHANNEL_BLOCK = 32  # the input gradient's channels per iteration: their bordered planes stay in L1/L2


@njit(cache=True, inline="always")
def _plan(of, mf, use_mask, channel, t, kw, oh, ow, h, w, sy, sx, ph, pw, dy, dx, idx, wts, frac):
    """Fill the plan of one (image, group, tap); ``channel`` = (image * groups + group) * taps + tap, the
    tap's channel of the mask (its offsets are channels 2*channel and 2*channel + 1).

    idx (4, P) uint64: the neighbours floor/floor, floor/ceil, ceil/floor, ceil/ceil in the bordered plane;
    wts (4, P): their bilinear weights times the mask; frac (2, P): ly, lx (0 where nothing is read)."""
    pixels = oh * ow
    i, j = t // kw, t % kw
    wp = w + 2
    start_y, start_x = np.uint64(2 * channel * pixels), np.uint64((2 * channel + 1) * pixels)
    start_m = np.uint64(channel * pixels)
    for oy in range(oh):
        for ox in range(ow):
            p = oy * ow + ox
            up = np.uint64(p)
            y = (oy * sy - ph + i * dy) + of[start_y + up]
            x = (ox * sx - pw + j * dx) + of[start_x + up]
            m = mf[start_m + up] if use_mask else 1.0
            if y >= -1 and y < h and x >= -1 and x < w:
                y0, x0 = math.floor(y), math.floor(x)
                ly, lx = y - y0, x - x0
                hy, hx = 1 - ly, 1 - lx
                top = np.uint64((int(y0) + 1) * wp + int(x0) + 1)
                idx[0, p], idx[1, p] = top, top + np.uint64(1)
                idx[2, p], idx[3, p] = top + np.uint64(wp), top + np.uint64(wp + 1)
                wts[0, p], wts[1, p], wts[2, p], wts[3, p] = m * (hy * hx), m * (hy * lx), m * (ly * hx), m * (ly * lx)
                frac[0, p], frac[1, p] = ly, lx
            else:
                for k in range(4):
                    idx[k, p] = 0
                    wts[k, p] = 0
                frac[0, p] = 0
                frac[1, p] = 0


@njit(parallel=True, cache=True)
def _deform_im2col(xpad, offset, mask, use_mask, col, kh, kw, sy, sx, ph, pw, dy, dx):
    """col (C, kh, kw, N, oh, ow) from the zero-bordered input xpad (N, C, H+2, W+2)."""
    n, c, hp, wp = xpad.shape
    taps, oh, ow = kh * kw, offset.shape[2], offset.shape[3]
    groups, pixels = offset.shape[1] // (2 * taps), oh * ow
    per_group = c // groups
    xf, of, mf, cf = xpad.reshape(-1), offset.reshape(-1), mask.reshape(-1), col.reshape(-1)
    for unit in prange(n * groups * taps):  # (image, group, tap): its own rows of col
        b, g, t = unit // (groups * taps), (unit // taps) % groups, unit % taps
        idx, wts = np.empty((4, pixels), np.uint64), np.empty((4, pixels), col.dtype)
        frac = np.empty((2, pixels), col.dtype)
        _plan(of, mf, use_mask, unit, t, kw, oh, ow, hp - 2, wp - 2, sy, sx, ph, pw, dy, dx, idx, wts, frac)
        i0, i1, i2, i3 = idx[0], idx[1], idx[2], idx[3]
        w0, w1, w2, w3 = wts[0], wts[1], wts[2], wts[3]
        for ci in range(g * per_group, (g + 1) * per_group):
            src = np.uint64((b * c + ci) * hp * wp)
            dst = np.uint64(((ci * taps + t) * n + b) * pixels)
            for p in range(np.uint64(pixels)):
                cf[dst + p] = (w0[p] * xf[src + i0[p]] + w1[p] * xf[src + i1[p]] + w2[p] * xf[src + i2[p]]
                               + w3[p] * xf[src + i3[p]])


@njit(parallel=True, cache=True)
def _deform_col2im(gcol, offset, mask, use_mask, gx, sy, sx, ph, pw, dy, dx):
    """gx (N, C, H, W): every column gradient scattered back to the four pixels its sample read."""
    c, kh, kw, n, oh, ow = gcol.shape
    h, w = gx.shape[2], gx.shape[3]
    hp, wp = h + 2, w + 2
    taps, pixels = kh * kw, oh * ow
    groups = offset.shape[1] // (2 * taps)
    per_group = c // groups
    blocks = (per_group + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    gf, of, mf, gxf = gcol.reshape(-1), offset.reshape(-1), mask.reshape(-1), gx.reshape(-1)
    for unit in prange(n * groups * blocks):  # (image, group, block of channels): its own planes of gx
        b, g, block = unit // (groups * blocks), (unit // blocks) % groups, unit % blocks
        c_lo = g * per_group + block * CHANNEL_BLOCK
        c_hi = min(c_lo + CHANNEL_BLOCK, (g + 1) * per_group)
        planes = np.zeros((c_hi - c_lo) * hp * wp, gcol.dtype)  # bordered: the border catches what falls outside
        idx, wts = np.empty((4, pixels), np.uint64), np.empty((4, pixels), gcol.dtype)
        frac = np.empty((2, pixels), gcol.dtype)
        for t in range(taps):
            _plan(of, mf, use_mask, (b * groups + g) * taps + t, t, kw, oh, ow, h, w, sy, sx, ph, pw, dy, dx, idx,
                  wts, frac)
            i0, i1, i2, i3 = idx[0], idx[1], idx[2], idx[3]
            w0, w1, w2, w3 = wts[0], wts[1], wts[2], wts[3]
            for ci in range(c_lo, c_hi):
                dst = np.uint64((ci - c_lo) * hp * wp)
                src = np.uint64(((ci * taps + t) * n + b) * pixels)
                for p in range(np.uint64(pixels)):
                    v = gf[src + p]
                    planes[dst + i0[p]] += w0[p] * v
                    planes[dst + i1[p]] += w1[p] * v
                    planes[dst + i2[p]] += w2[p] * v
                    planes[dst + i3[p]] += w3[p] * v
        for ci in range(c_lo, c_hi):  # the inside of each bordered plane is the gradient
            for y in range(h):
                src = np.uint64((ci - c_lo) * hp * wp + (y + 1) * wp + 1)
                dst = np.uint64(((b * c + ci) * h + y) * w)
                for k in range(np.uint64(w)):
                    gxf[dst + k] = planes[src + k]


@njit(parallel=True, cache=True)
def _deform_col2im_coord(gcol, xpad, offset, mask, use_mask, goffset, gmask, sy, sx, ph, pw, dy, dx):
    """goffset (N, 2*G*taps, oh, ow) and, with use_mask, gmask (N, G*taps, oh, ow): sums over each group's
    channels of gcol times the derivative of the sample in y and x (times the mask) and the sample itself."""
    c, kh, kw, n, oh, ow = gcol.shape
    hp, wp = xpad.shape[2], xpad.shape[3]
    taps, pixels = kh * kw, oh * ow
    groups = offset.shape[1] // (2 * taps)
    per_group = c // groups
    gf, xf, of, mf = gcol.reshape(-1), xpad.reshape(-1), offset.reshape(-1), mask.reshape(-1)
    gof, gmf = goffset.reshape(-1), gmask.reshape(-1)
    for unit in prange(n * groups * taps):  # (image, group, tap): its own offset and mask channels
        b, g, t = unit // (groups * taps), (unit // taps) % groups, unit % taps
        idx, wts = np.empty((4, pixels), np.uint64), np.empty((4, pixels), gcol.dtype)
        frac = np.empty((2, pixels), gcol.dtype)
        _plan(of, mf, use_mask, unit, t, kw, oh, ow, hp - 2, wp - 2, sy, sx, ph, pw, dy, dx, idx, wts, frac)
        i0, i1, i2, i3, fy, fx = idx[0], idx[1], idx[2], idx[3], frac[0], frac[1]
        along_y, along_x = np.zeros(pixels, gcol.dtype), np.zeros(pixels, gcol.dtype)
        sampled = np.zeros(pixels, gcol.dtype)
        for ci in range(g * per_group, (g + 1) * per_group):
            src = np.uint64((b * c + ci) * hp * wp)
            row = np.uint64(((ci * taps + t) * n + b) * pixels)
            for p in range(np.uint64(pixels)):
                v00, v01, v10, v11 = xf[src + i0[p]], xf[src + i1[p]], xf[src + i2[p]], xf[src + i3[p]]
                ly, lx, v = fy[p], fx[p], gf[row + p]
                along_y[p] += v * ((1 - lx) * (v10 - v00) + lx * (v11 - v01))
                along_x[p] += v * ((1 - ly) * (v01 - v00) + ly * (v11 - v10))
                if use_mask:
                    sampled[p] += v * ((1 - ly) * (1 - lx) * v00 + (1 - ly) * lx * v01 + ly * (1 - lx) * v10
                                       + ly * lx * v11)
        start_y, start_x = np.uint64(2 * unit * pixels), np.uint64((2 * unit + 1) * pixels)
        start_m = np.uint64(unit * pixels)
        for p in range(np.uint64(pixels)):
            m = mf[start_m + p] if use_mask else 1.0
            gof[start_y + p] = m * along_y[p]
            gof[start_x + p] = m * along_x[p]
            if use_mask:
                gmf[start_m + p] = sampled[p]


def bordered(x):
    """x (N, C, H, W) inside a one-pixel zero border: (N, C, H+2, W+2), what the plans index."""
    n, c, h, w = x.shape
    xpad = np.zeros((n, c, h + 2, w + 2), dtype=x.dtype)
    xpad[:, :, 1:-1, 1:-1] = x
    return xpad
