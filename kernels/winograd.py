"""Winograd minimal filtering for 3x3, stride-1 convolution (Lavin & Gray, CVPR 2016).

F(m x m, 3 x 3) computes an m x m tile of output from an alpha x alpha tile of
input (alpha = m + 2) with alpha^2 multiplications instead of 9 m^2:

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* element-wise)

g is a 3x3 filter, d an input tile, G g G^T the filter transform, B^T d B the
input transform and A^T (.) A the output transform. Summed over the input
channels the element-wise products become, at each of the alpha^2 transform
points, one matrix product:  M[p] = U[p] (K x C) @ V[p] (C x tiles), so the
whole convolution is one batched GEMM between two cheap transforms.

The matrices come from polynomial interpolation (Toom-Cook): pick alpha - 1
finite points plus "infinity", let E_k evaluate a polynomial with k
coefficients at them (the Vandermonde rows; at infinity: the top coefficient)
and V = E_alpha. Then A^T = E_m^T, G = E_3 and B^T = V^-T (the transpose of
interpolation), with the denominators moved from B^T into G so that the input
and output transforms hold small integers and binary fractions, exact in
floating point, and the one inexact transform (G's 1/6, 1/15, ...) is applied
once per filter. `winograd_matrices` builds them exactly (Fractions).

Float32 error grows with the tile: F(2x2) uses points 0, +-1 (errors like
im2col's); F(4x4) uses 0, +-1, 1/2, -2 (Barabasz et al.; half the error of
Lavin's 0, +-1, +-2), whose larger coefficients still cost about a decimal
digit. docs/kernels.md (Winograd) has the measured errors, the documented bound and
the speed; `choose_tile` is the tile the route uses.

Backward, with the same three transforms:
- to the input: a full correlation of gy (padded by 2 - padding; a negative
  padding crops) with the filter rotated by 180 degrees and its in/out
  channels swapped, i.e. this very forward;
- to the weight: the adjoint of the forward with respect to g,
      gw = G^T [ sum over tiles (A gy A^T) * (B^T d B) ] G,
  i.e. F(3x3, m x m) with the gy tile as the "filter": the same input
  transform of x, the transposed output transform on gy, one batched GEMM
  (K x tiles) @ (tiles x C) per point, and G^T (.) G at the end. Exact, and
  no larger than the forward.

Raw NumPy arrays in, raw arrays out (the kernels layer: no autograd).
"""
import math
import threading
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
from numba import njit, prange

from .cpu_gemm import stacked_matmul  # the stack on Numba's threads, as the transforms around it

# interpolation points (infinity is always added): the ones these tiles use
POINTS = {2: (0, 1, -1), 4: (0, 1, -1, Fraction(1, 2), -2)}


def choose_tile(out_hw, batch, channels=None):
    """The tile with the least work, alpha^2 * (tiles * batch * (1 + TRANSFORM_WORK * (1/C + 1/K)) + FILTER_WORK)
    per channel pair (ties: the more accurate F(2x2)); ``channels``: (C, K), in and out (None: the GEMM and the
    filter side alone).

    The batched GEMM does alpha^2 products per tile, image and channel pair; the input and output
    transforms touch alpha^2 floats per tile and image once per input and output channel, each worth
    about TRANSFORM_WORK of the GEMM's multiply-adds, which counts in narrow layers (DenseNet's
    128->32); the filter side (the filter transforms of the forward and the input gradient, the weight
    gradient's summed products and their G-transform) touches alpha^2 floats per channel pair once per
    call, worth about FILTER_WORK GEMM columns. Large batches and maps: F(4x4) (56x56: 7056 against
    F(2x2)'s 12544 products per image); small ones, where the filter side is most of the work, F(2x2):
    ResNet-18's 512 @7 at batch 8 (forward and both gradients: 30 ms against F(4x4)'s 38, one quiet
    2-core run).
    """
    transforms = 0.0 if channels is None else TRANSFORM_WORK * (1 / channels[0] + 1 / channels[1])

    def work(m):
        return (m + 2) ** 2 * (-(-out_hw[0] // m) * -(-out_hw[1] // m) * batch * (1 + transforms) + FILTER_WORK)
    return min(sorted(POINTS), key=work)


def winograd_matrices(m, points, r=3):
    """Exact (Fraction) A^T (m x alpha), G (alpha x r) and B^T (alpha x alpha) of F(m, r).

    ``points``: alpha - 1 = m + r - 2 distinct finite points; infinity is the last one.
    """
    alpha = m + r - 1
    points = [Fraction(p) for p in points]
    if len(points) != alpha - 1 or len(set(points)) != len(points):
        raise ValueError(f"F({m}, {r}) needs {alpha - 1} distinct finite points, got {points}")

    def evaluation(k):  # alpha x k: a polynomial's k coefficients -> its values at the points
        rows = [[p ** j for j in range(k)] for p in points]
        return rows + [[Fraction(int(j == k - 1)) for j in range(k)]]

    inverse = _inverse(evaluation(alpha))  # interpolation: values -> coefficients
    a_t = [list(col) for col in zip(*evaluation(m))]
    g = evaluation(r)
    b_t = [list(col) for col in zip(*inverse)]
    for j in range(alpha):  # scale row j of B^T to coprime integers, row j of G by the inverse (keeps their product)
        scale = Fraction(math.lcm(*(x.denominator for x in b_t[j])))
        scale /= math.gcd(*((x * scale).numerator for x in b_t[j]))
        b_t[j] = [x * scale for x in b_t[j]]
        g[j] = [x / scale for x in g[j]]
    return a_t, g, b_t


def _inverse(matrix):
    """Gauss-Jordan in exact arithmetic (the matrices are tiny)."""
    n = len(matrix)
    work = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if work[r][col] != 0)
        work[col], work[pivot] = work[pivot], work[col]
        work[col] = [x / work[col][col] for x in work[col]]
        for r in range(n):
            if r != col and work[r][col] != 0:
                factor = work[r][col]
                work[r] = [x - factor * y for x, y in zip(work[r], work[col])]
    return [row[n:] for row in work]


class _Tile:
    """The float64 matrices of one F(m x m, 3 x 3), and (``in_dtype``) the forms the kernels take."""

    def __init__(self, m):
        if m % 2:  # alpha = m + 2 is then odd too
            raise ValueError(f"F({m}x{m}, 3x3): m must be even (the kernels compute a transform's rows in pairs)")
        a_t, g, b_t = winograd_matrices(m, POINTS[m])
        self.m, self.alpha = m, m + 2
        self.a_t, self.g, self.b_t = (np.array(mat, dtype=np.float64) for mat in (a_t, g, b_t))
        self._in_dtype = {}

    def in_dtype(self, dtype):
        """b_t, a_t and a (= A) padded to 6 columns, gg = G (x) G and gg_rotated = (G J) (x) (G J), in dtype.

        Built once per tile and dtype: rebuilt in each call (a ResNet-56 step makes 156, three per layer),
        the Kronecker products alone took about 8 ms of a 57-68 ms step at batch 1 (cProfile)."""
        key = np.dtype(dtype)
        if key not in self._in_dtype:
            g_j = self.g[:, ::-1]
            self._in_dtype[key] = SimpleNamespace(
                b_t=_padded(self.b_t, key), a_t=_padded(self.a_t, key), a=_padded(self.a_t.T, key),
                gg=np.kron(self.g, self.g).astype(key), gg_rotated=np.kron(g_j, g_j).astype(key))
        return self._in_dtype[key]


_TILES = {m: _Tile(m) for m in POINTS}


# ---- the transforms (Numba) ----
# Tiles are numbered t = (ty * tiles_w + tx) * N + n: image innermost, so a row of tiles
# across the whole batch is one contiguous run of tiles_w * N columns. Each kernel takes
# one channel per prange iteration (no two write one element) and one row of tiles at a
# time; the transform arithmetic then runs down those runs in L1. A 1-D transform is a
# small matrix times a vector of up to 6 entries; `_combine` computes two output rows of
# it for a whole run as a single 6-term loop (zero coefficients included: one dense
# vectorised loop beats skipping zeros with several short ones, measured 4x). The only
# strided steps are the gather of input rows (the padding is zeros there, never a
# padded copy of the input) and the scatter of output rows.

MAX_ALPHA = 6
CHUNK_BYTES = 16 << 20  # transformed tiles per chunk (see _chunks); a quarter of it for narrow layers
NARROW_CHANNELS = 32  # at most this many channels in and out: a narrow layer
FUSED_CHANNELS = 16  # at most this many in and out: the fused kernels (a block at a time, see below)
FUSED_BLOCK_BYTES = 512 << 10  # one block's transformed tiles (see _group)
FUSED_TILES = 128  # and at most this many tiles: longer runs gain nothing
MIN_BLOCKS = 8  # the fused kernels' fewest blocks, where the batch allows (see _group)
# The filter side's cost in GEMM columns (see choose_tile), fitted on ResNet-18's 512 @7 and 256 @14 at batch
# 8 and 16 (F(2x2) faster by 20-25% at 7x7, 5% at 14x14) and ResNet-20's 64 @8 at batch 32 (F(4x4) faster)
FILTER_WORK = 100
# A transformed element's cost in the GEMM's multiply-adds (see choose_tile): between 5.2, below which
# DenseNet's 128->32 @14 at batch 8 would keep F(2x2) (F(4x4) takes 0.90 of its time there, and 0.81 @7 at
# batch 16), and 25.8, above which ResNet-18's 256 @14 at batch 8 would leave F(2x2) (the faster there by 5%)
TRANSFORM_WORK = 12


@njit(cache=True, fastmath={"contract"}, inline="always")
def _combine(da, db, ca, cb, s0, s1, s2, s3, s4, s5):
    """da = sum_i ca[i] * s_i and db = sum_i cb[i] * s_i, elementwise: two rows of a 1-D transform for a run
    of tiles (every transform has an even number of rows).

    Two rows from one load of the six terms: measured 1.6x faster per row than one row at a time (the
    loads, not the multiply-adds, were the bound); three rows at a time stopped vectorising (more runtime
    alias checks than LLVM makes). Terms past a transform's size have coefficient 0 (their s_i is any run
    of the same length; so, as inside every transform, an inf input gives NaN where a direct sum could
    give inf).
    """
    a0, a1, a2, a3, a4, a5 = ca[0], ca[1], ca[2], ca[3], ca[4], ca[5]
    b0, b1, b2, b3, b4, b5 = cb[0], cb[1], cb[2], cb[3], cb[4], cb[5]
    for t in range(da.shape[0]):
        x0, x1, x2, x3, x4, x5 = s0[t], s1[t], s2[t], s3[t], s4[t], s5[t]
        da[t] = a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4 + a5 * x5
        db[t] = b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4 + b5 * x5


@njit(cache=True)
def _phases(w, size, stride, pad_left, steps, n):
    """Where a row's columns go when it is dealt out by phase (see _transform_tiles).

    Column j of every tile in a run is phase[rows[j], offsets[j] + t] (terms j >= size, zero
    coefficients, reuse the last one); phase q holds the src columns u*stride + q - pad_left
    for u < steps (the rest stays 0). ``targets[ix]``: where src column ix goes in the flat phase
    array (image b at targets[ix] + b), for the columns lo <= ix < hi that some tile reads.
    """
    rows, offsets = np.empty(MAX_ALPHA, np.int64), np.empty(MAX_ALPHA, np.int64)
    for j in range(MAX_ALPHA):
        jj = min(j, size - 1)
        rows[j], offsets[j] = jj % stride, (jj // stride) * n
    lo, hi = max(0, -pad_left), max(0, min(w, steps * stride - pad_left))  # src columns inside
    targets = np.zeros(w, np.uint64)
    for ix in range(lo, hi):
        targets[ix] = ((ix + pad_left) % stride) * steps * n + ((ix + pad_left) // stride) * n
    return rows, offsets, targets, lo, max(lo, hi)


@njit(cache=True, inline="always")
def _deal_row(src, b0, n, ci, iy, targets, lo, hi, phase):
    """Row iy of channel ci of images b0 .. b0 + n, dealt out by column phase into ``phase``.

    A transpose: image by image, the row read in order, each column written to its place. Unsigned
    indices (no negative-index wraparound to check): measured 1.9x faster than gathering the rows into
    L1 and dealing each phase's columns from there.
    """
    flat, row = phase.reshape(-1), src.reshape(-1)
    h, w = src.shape[2], src.shape[3]
    for b in range(n):
        start = np.uint64(((b0 + b) * src.shape[1] + ci) * h + iy) * np.uint64(w)
        for ix in range(np.uint64(lo), np.uint64(hi)):
            flat[targets[ix] + np.uint64(b)] = row[start + ix]


@njit(cache=True, inline="always")
def _row_transform(dst, mat, phase, rows, offsets, run):
    """dst[r] = row r of the along-row transform (``mat``) of a dealt-out input row, for a run of tiles."""
    pr, po = rows, offsets
    for r in range(0, mat.shape[0], 2):
        _combine(dst[r, :run], dst[r + 1, :run], mat[r], mat[r + 1], phase[pr[0], po[0]:po[0] + run],
                 phase[pr[1], po[1]:po[1] + run], phase[pr[2], po[2]:po[2] + run], phase[pr[3], po[3]:po[3] + run],
                 phase[pr[4], po[4]:po[4] + run], phase[pr[5], po[5]:po[5] + run])


@njit(cache=True, inline="always")
def _down_columns(out, ci, t0, run, mat, rows, p):
    """out[a*alpha + r, ci, t0:t0 + run] = sum_i mat[a, i] rows[p[i] + r]: the column pass of a 2-D transform,
    row p[i] + r of ``rows`` holding entry r of input row i's along-row transform (terms past the transform's
    size repeat the last p, zero coefficients)."""
    alpha = mat.shape[0]
    for r in range(alpha):
        for a in range(0, alpha, 2):
            _combine(out[a * alpha + r, ci, t0:t0 + run], out[(a + 1) * alpha + r, ci, t0:t0 + run], mat[a],
                     mat[a + 1], rows[p[0] + r, :run], rows[p[1] + r, :run], rows[p[2] + r, :run],
                     rows[p[3] + r, :run], rows[p[4] + r, :run], rows[p[5] + r, :run])


@njit(parallel=True, cache=True)
def _transform_tiles(src, mat, size, out, stride, pad_top, pad_left, ty_first, tiles_w):
    """out[a*alpha + b, c, t] = sum_ij mat[a, i] mat[b, j] src_padded[n, c, ty*stride + i, tx*stride + j].

    For the tile rows ty_first, ty_first + 1, ... that fill out (a chunk of the tiles):
    t = ((ty - ty_first) * tiles_w + tx) * N + n.
    src_padded is src behind pad_top/pad_left zeros (negative: cropped) and zeros past
    its end. ``mat`` (alpha x 6, zero past column ``size``) is B^T (size alpha) for input
    tiles, A (size m) for gy tiles.
    """
    n, c, h, w = src.shape
    alpha = mat.shape[0]
    run = tiles_w * n  # tiles in one tile row, across the batch
    tiles_h = out.shape[2] // run
    steps = tiles_w + (size - 1) // stride  # columns tx*stride + q, tx < steps, q < stride
    phase_rows, phase_offsets, targets, lo, hi = _phases(w, size, stride, pad_left, steps, n)
    for ci in prange(c):
        phase = np.zeros((stride, steps * n), dtype=out.dtype)  # one input row, split by column mod stride
        # the along-row transform of padded row Y sits in rows[(Y % size) * alpha + b]: tile rows overlap
        # by size - stride rows, which are gathered and transformed once
        rows = np.zeros((size * alpha, run), dtype=out.dtype)
        slots = np.empty(MAX_ALPHA, np.int64)
        for ty in range(ty_first, ty_first + tiles_h):
            for i in range(0 if ty == ty_first else max(0, size - stride), size):
                iy = ty * stride + i - pad_top
                slot = (ty * stride + i) % size
                if iy < 0 or iy >= h:
                    rows[slot * alpha:(slot + 1) * alpha] = 0
                    continue
                _deal_row(src, 0, n, ci, iy, targets, lo, hi, phase)
                _row_transform(rows[slot * alpha:], mat, phase, phase_rows, phase_offsets, run)  # along the row
            for i in range(MAX_ALPHA):
                slots[i] = ((ty * stride + min(i, size - 1)) % size) * alpha
            _down_columns(out, ci, (ty - ty_first) * run, run, mat, rows, slots)  # straight into out


@njit(cache=True, inline="always")
def _untransform_row(flat, t0, run, a_t, picks, last, cols, tile, sources, y, b0, n, ki, ty):
    """Output channel ki of one tile row ty of images b0 .. b0 + n: flat[a*alpha + b, t0 + t] -> y.

    Tile t = tx * n + b of the run. ``picks``/``last``: the rows/columns of the 6 transform
    terms (terms past alpha, zero coefficients, reuse the last one). ``sources``: _scatter_sources.
    """
    m, alpha = a_t.shape[0], cols.shape[0] // a_t.shape[0]
    oh, ow = y.shape[2], y.shape[3]
    p = picks
    for r in range(alpha):  # down the columns: cols[i*alpha + b] = sum_a a_t[i, a] prod[a*alpha + b]
        for i in range(0, m, 2):
            _combine(cols[i * alpha + r], cols[(i + 1) * alpha + r], a_t[i], a_t[i + 1], flat[p[0] + r, t0:t0 + run],
                     flat[p[1] + r, t0:t0 + run], flat[p[2] + r, t0:t0 + run], flat[p[3] + r, t0:t0 + run],
                     flat[p[4] + r, t0:t0 + run], flat[p[5] + r, t0:t0 + run])
    for i in range(m):  # along the rows: tile[i*m + j] is output (i, j) of each tile in the run
        q, base = last, i * alpha
        for j in range(0, m, 2):
            _combine(tile[i * m + j], tile[i * m + j + 1], a_t[j], a_t[j + 1], cols[base + q[0]], cols[base + q[1]],
                     cols[base + q[2]], cols[base + q[3]], cols[base + q[4]], cols[base + q[5]])
    # scatter the tile row into y, up to its last row and column: a transpose, image by image, each
    # output row written in order (unsigned indices, as _deal_row)
    flat_tile, flat_y = tile.reshape(-1), y.reshape(-1)
    for i in range(m):
        oy = ty * m + i
        if oy >= oh:
            break
        row_start = np.uint64(i * m * tile.shape[1])
        for b in range(n):
            start = np.uint64(((b0 + b) * y.shape[1] + ki) * oh + oy) * np.uint64(ow)
            first = row_start + np.uint64(b)
            for ox in range(np.uint64(ow)):
                flat_y[start + ox] = flat_tile[first + sources[ox]]


@njit(cache=True)
def _scatter_sources(ow, m, n, run):
    """Where output column ox of image 0 sits in _untransform_row's flat ``tile`` (m^2 x run) for the
    tile row's first output row: column j of tile tx, t = tx * n + b."""
    sources = np.empty(ow, np.uint64)
    for ox in range(ow):
        sources[ox] = (ox % m) * run + (ox // m) * n
    return sources


@njit(parallel=True, cache=True)
def _untransform_tiles(prod, a_t, y, ty_first, tiles_w):
    """y[n, k, ty*m + i, tx*m + j] = sum_ab a_t[i, a] a_t[j, b] prod[a*alpha + b, k, t], cut at y's edge.

    For the tile rows ty_first, ... in prod (a chunk): t = ((ty - ty_first) * tiles_w + tx) * N + n.
    ``a_t`` is A^T (m x alpha), with zero columns up to 6.
    """
    n, k = y.shape[:2]
    m, alpha = a_t.shape[0], int(np.sqrt(prod.shape[0]))
    run, count = tiles_w * n, prod.shape[2]
    tiles_h = count // run
    flat = prod.reshape(prod.shape[0], k * count)
    last = np.minimum(np.arange(MAX_ALPHA), alpha - 1)
    picks = last * alpha
    sources = _scatter_sources(y.shape[3], m, n, run)  # (read only: shared by the iterations)
    for ki in prange(k):
        cols = np.empty((m * alpha, run), dtype=y.dtype)
        tile = np.empty((m * m, run), dtype=y.dtype)
        for ty in range(ty_first, ty_first + tiles_h):
            t0 = ki * count + (ty - ty_first) * run  # in flat, prod viewed as (alpha^2, K * tiles)
            _untransform_row(flat, t0, run, a_t, picks, last, cols, tile, sources, y, 0, n, ki, ty)


# ---- fused: one block of tiles at a time, for narrow layers ----
# A block is one tile row of a group of images. Its transformed tiles (alpha^2 x C x tiles),
# their products with four filters at a time and the output transform stay in the core's L2
# cache; the small GEMMs run here, vectorised over the block's tiles. For layers of at most
# FUSED_CHANNELS this beats the chunked path above, whose thin BLAS GEMMs (one call per
# transform point and chunk) and whole-chunk buffers in L3 cost more than the arithmetic;
# at 32 and 64 channels BLAS's GEMM wins (measured: the fused path 0.6-0.9x there).

@njit(cache=True, inline="always")
def _transform_block(src, b0, n, ci, ty, mat, size, stride, pad_top, run, phases, phase, rows, out):
    """out[a*alpha + b, ci, :run] for one tile row ty of images b0 .. b0 + n (tile t = tx * n + b).

    As _transform_tiles for one tile row, without its reuse of overlapping rows between tile rows.
    ``phase`` must hold zeros where _deal_row writes nothing (it writes the same places every row).
    """
    h, alpha = src.shape[2], mat.shape[0]
    phase_rows, phase_offsets, targets, lo, hi = phases
    for i in range(size):
        iy = ty * stride + i - pad_top
        if iy < 0 or iy >= h:
            rows[i * alpha:(i + 1) * alpha, :run] = 0
            continue
        _deal_row(src, b0, n, ci, iy, targets, lo, hi, phase)
        _row_transform(rows[i * alpha:], mat, phase, phase_rows, phase_offsets, run)  # along the row
    last = size - 1
    _down_columns(out, ci, 0, run, mat, rows, (0, min(1, last) * alpha, min(2, last) * alpha, min(3, last) * alpha,
                                              min(4, last) * alpha, min(5, last) * alpha))


@njit(cache=True)
def _block_tiles(src, b0, n, ty, mat, size, stride, pad_top, pad_left, tiles_w, most):
    """(alpha^2, C, most): every channel's transformed tiles of one block (tile row ty of images
    b0 .. b0 + n; the first tiles_w * n columns hold them). ``mat``/``size`` as in _transform_tiles."""
    channels, w, alpha = src.shape[1], src.shape[3], mat.shape[0]
    steps = tiles_w + (size - 1) // stride
    phases = _phases(w, size, stride, pad_left, steps, n)
    phase = np.zeros((stride, steps * n), dtype=src.dtype)
    rows = np.empty((size * alpha, most), dtype=src.dtype)
    out = np.empty((alpha * alpha, channels, most), dtype=src.dtype)
    for ci in range(channels):
        _transform_block(src, b0, n, ci, ty, mat, size, stride, pad_top, tiles_w * n, phases, phase, rows, out)
    return out


@njit(cache=True)
def _block_images(block, tiles_h, group, n):
    """Block ``block`` of the fused kernels: (its tile row, its first image, its number of images)."""
    b0 = block // tiles_h * group
    return block % tiles_h, b0, min(group, n - b0)


@njit(cache=True, inline="always")
def _four(a, ki, ci):
    """a[ki, ci:ci+4] as four scalars, zeros past a's last column (their rows of b are then any row)."""
    c = a.shape[1]
    return (a[ki, ci], a[ki, min(ci + 1, c - 1)] * (ci + 1 < c), a[ki, min(ci + 2, c - 1)] * (ci + 2 < c),
            a[ki, min(ci + 3, c - 1)] * (ci + 3 < c))


@njit(cache=True, fastmath={"contract"})
def _gemm_four_rows(u, ki, v, prod, run):
    """prod[p, r, :run] = u[p, ki + r] (C) @ v[p, :, :run] (C x tiles) for r < 4, every point p.

    Four filters and four rows of v at a time, vectorised over the tiles: each load of v feeds
    four multiply-adds (measured 50-60 GFLOP/s on one core for C = 16-64, against 35-45 for two
    filters). Past K's last filter the rows repeat the last one (the caller stores K's only).
    Whole arrays in, indices apart: a separately compiled function vectorises only contiguous ones.
    """
    points, k, c = u.shape
    left = min(4, k - ki)
    k1, k2, k3 = ki + min(1, left - 1), ki + min(2, left - 1), ki + min(3, left - 1)
    for p in range(points):
        s0, s1, s2, s3 = prod[p, 0, :run], prod[p, 1, :run], prod[p, 2, :run], prod[p, 3, :run]
        for ci in range(0, c, 4):
            a00, a01, a02, a03 = _four(u[p], ki, ci)
            a10, a11, a12, a13 = _four(u[p], k1, ci)
            a20, a21, a22, a23 = _four(u[p], k2, ci)
            a30, a31, a32, a33 = _four(u[p], k3, ci)
            v0, v1 = v[p, ci, :run], v[p, min(ci + 1, c - 1), :run]
            v2, v3 = v[p, min(ci + 2, c - 1), :run], v[p, min(ci + 3, c - 1), :run]
            if ci == 0:  # the first four rows set the sums: no zeroing pass, no loads of zeros
                for t in range(run):
                    x0, x1, x2, x3 = v0[t], v1[t], v2[t], v3[t]
                    s0[t] = a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
                    s1[t] = a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
                    s2[t] = a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
                    s3[t] = a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3
                continue
            for t in range(run):
                x0, x1, x2, x3 = v0[t], v1[t], v2[t], v3[t]
                s0[t] += a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
                s1[t] += a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
                s2[t] += a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
                s3[t] += a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3


@njit(parallel=True, cache=True)
def _fused_correlate(x, u, b_t, a_t, pad_top, pad_left, y, group):
    """y = x (padded) correlated with the filters behind u (alpha^2, K, C), a block at a time.

    A block is tile row ty of images g*group .. (g+1)*group (fewer in the last group): its input
    tiles are transformed once, then four filters at a time are multiplied and untransformed.
    """
    n, k = x.shape[0], u.shape[1]
    m, alpha = a_t.shape[0], b_t.shape[0]
    points = alpha * alpha
    tiles_h, tiles_w = -(-y.shape[2] // m), -(-y.shape[3] // m)
    last = np.minimum(np.arange(MAX_ALPHA), alpha - 1)
    picks = last * alpha
    most = tiles_w * group
    for block in prange(-(-n // group) * tiles_h):
        ty, b0, nb = _block_images(block, tiles_h, group, n)
        run = tiles_w * nb
        v = _block_tiles(x, b0, nb, ty, b_t, alpha, m, pad_top, pad_left, tiles_w, most)
        prod = np.empty((points, 4, most), dtype=x.dtype)
        flat = prod.reshape(points, 4 * most)
        cols, tile = np.empty((m * alpha, run), dtype=x.dtype), np.empty((m * m, run), dtype=x.dtype)
        sources = _scatter_sources(y.shape[3], m, nb, run)
        for ki in range(0, k, 4):
            _gemm_four_rows(u, ki, v, prod, run)
            for r in range(min(4, k - ki)):
                _untransform_row(flat, r * most, run, a_t, picks, last, cols, tile, sources, y, b0, nb, ki + r, ty)


@njit(cache=True, fastmath={"reassoc", "nsz", "contract"})
def _dot(a, b, run):
    """sum_t a[t] b[t] for t < run, vectorised (reassociated: the order of the sum is the machine's)."""
    s = a.dtype.type(0)
    for t in range(run):
        s += a[t] * b[t]
    return s


@njit(parallel=True, cache=True)
def _fused_weight(x, gy, b_t, a, pad_top, pad_left, group, partial):
    """partial[block, p, k, c] = sum over the block's tiles of (A gy A^T)[p] * (B^T x B)[p].

    Blocks as in _fused_correlate; the caller sums ``partial`` over blocks in order, so the
    result does not depend on the number of threads.
    """
    n, c, k = x.shape[0], x.shape[1], gy.shape[1]
    alpha = b_t.shape[0]
    m, points = alpha - 2, alpha * alpha  # F(m x m, 3 x 3)
    tiles_h, tiles_w = -(-gy.shape[2] // m), -(-gy.shape[3] // m)
    most = tiles_w * group
    for block in prange(-(-n // group) * tiles_h):
        ty, b0, nb = _block_images(block, tiles_h, group, n)
        run = tiles_w * nb
        x_hat = _block_tiles(x, b0, nb, ty, b_t, alpha, m, pad_top, pad_left, tiles_w, most)
        gy_hat = _block_tiles(gy, b0, nb, ty, a, m, m, 0, 0, tiles_w, most)
        for p in range(points):
            for ki in range(k):
                for ci in range(c):
                    partial[block, p, ki, ci] = _dot(gy_hat[p, ki], x_hat[p, ci], run)


# ---- the convolution and its two gradients ----

def _padded(mat, dtype):
    """mat with zero columns up to 6 (the kernels' fixed 6-term transform rows), in dtype."""
    out = np.zeros((mat.shape[0], MAX_ALPHA), dtype=dtype)
    out[:, :mat.shape[1]] = mat
    return out


def _filter_transform(w, tile, rotated=False):
    """U[a*alpha + b, k, c] = (G w[k, c] G^T)[a, b], for all filters in one GEMM with G (x) G.

    G (x) G (Kronecker product) is the 2-D transform of a flattened 3x3 filter. In w's
    dtype: doing it in float64 and rounding once changed no measured float32 error
    (docs/kernels.md) and cost twice the time.

    ``rotated``: the transform of w turned by 180 degrees with its in/out channels swapped (the input
    gradient's filters), U[p, c, k] = (G rot(w[k, c]) G^T)[p], as a transposed view that BLAS reads as
    it is: G rot(g) G^T = (G J) g (G J)^T, J reversing the three taps, so no rotated copy of w is made.
    """
    k, c = w.shape[:2]
    constants = tile.in_dtype(w.dtype)
    flat = np.ascontiguousarray(w).reshape(k * c, 9)
    u = _buffer(_storage("u", tile.alpha ** 2 * k * c, w.dtype), tile.alpha ** 2, k * c)
    u = np.matmul(constants.gg_rotated if rotated else constants.gg, flat.T, out=u).reshape(tile.alpha ** 2, k, c)
    return u.transpose(0, 2, 1) if rotated else u


def _chunks(tiles_h, run, channels, tile, itemsize):
    """(first tile row, tile rows) of each chunk: the transformed tiles of a chunk fill CHUNK_BYTES at most.

    Bounds the transformed buffers (alpha^2 / m^2 = 2.25x the input each for F(4x4), whole)
    and keeps a chunk's transform, GEMM and untransform in the L3 cache. A narrow layer
    (``channels`` <= NARROW_CHANNELS) takes a quarter: its GEMMs are too thin to hide memory
    traffic, so its chunks pay for staying in cache; on the wide layers the larger chunk is
    faster (forward+backward, float32, quiet 2-core machine, 2 threads: ResNet-20's 16->16 @32,
    N=128: 27.5 vs 47.1 ms (one thread: 58 vs 87); 32->32 @16, N=128: 13.0 vs 15.4; VGG
    64->64 @56, N=8: 25.4 vs 29.2 at 16 vs 4 MB; ResNet 256 @14, N=32: 74.7 vs 89.7).
    """
    budget = CHUNK_BYTES if channels > NARROW_CHANNELS else CHUNK_BYTES // 4
    rows = max(1, min(tiles_h, budget // (tile.alpha ** 2 * channels * run * itemsize)))
    rows = -(-tiles_h // -(-tiles_h // rows))  # as many chunks, evened out (8 rows: 4 + 4, not 7 + 1)
    return [(first, min(rows, tiles_h - first)) for first in range(0, tiles_h, rows)]


def _group(n, tiles_h, tiles_w, channels, tile, itemsize):
    """Images per block of the fused kernels: a block's transformed tiles fill FUSED_BLOCK_BYTES at most
    (they stay in L2 while four filters at a time are multiplied and untransformed) and FUSED_TILES,
    halved while there are fewer than MIN_BLOCKS blocks (work for every thread). Depends on the shapes
    only, so the weight gradient's sum over blocks does not depend on the number of threads."""
    tiles = max(1, min(FUSED_TILES, FUSED_BLOCK_BYTES // (tile.alpha ** 2 * channels * itemsize)))
    group = max(1, min(n, tiles // tiles_w))
    while group > 1 and -(-n // group) * tiles_h < MIN_BLOCKS:
        group = -(-group // 2)
    return group


_scratch = threading.local()


def _storage(name, size, dtype):
    """A flat buffer of ``size`` kept per thread between calls: fresh large arrays cost their page faults on
    every call (measured: 7 ms of a 21 ms VGG 64 @56 forward; a 512 @7 weight gradient inside a ResNet-18
    step, 104-165 ms against 21 ms alone, mostly the kernel zeroing new pages).

    Per dtype: "a" and "b", one chunk's transformed tiles, about CHUNK_BYTES each; "u", an (alpha^2, K, C)
    filter-sized array (the transformed filters, or the weight gradient's products), and "part", a
    second one for a weight gradient over several chunks: 36 K C floats each, 37.7 MB at 512 channels.
    """
    buffers = _scratch.__dict__.setdefault("buffers", {})
    key = (name, np.dtype(dtype))
    if key not in buffers or buffers[key].size < size:
        buffers[key] = None  # let the old one go first
        buffers[key] = np.empty(size, dtype=dtype)
    return buffers[key]


def _buffer(storage, *shape):
    """A C-contiguous array of this shape on the front of a flat storage buffer."""
    return storage[:math.prod(shape)].reshape(shape)


def _correlate(x, u, pad, out_hw, tile):
    """y (N, K, out_hw): x (padded by pad) correlated with the filters behind u (alpha^2, K, C)."""
    n, c = x.shape[:2]
    k, m, points = u.shape[1], tile.m, tile.alpha ** 2
    tiles_h, tiles_w = -(-out_hw[0] // m), -(-out_hw[1] // m)
    constants = tile.in_dtype(x.dtype)
    b_t, a_t = constants.b_t, constants.a_t
    y = np.empty((n, k) + tuple(out_hw), dtype=x.dtype)
    if max(c, k) <= FUSED_CHANNELS:
        group = _group(n, tiles_h, tiles_w, max(c, k), tile, x.itemsize)
        u = np.ascontiguousarray(u)  # the input gradient's is a transposed view; the fused kernels index it flat
        _fused_correlate(x, u, b_t, a_t, pad[0], pad[1], y, group)
        return y
    run = tiles_w * n
    chunks = _chunks(tiles_h, run, max(c, k), tile, x.itemsize)
    v_storage = _storage("a", points * c * chunks[0][1] * run, x.dtype)
    prod_storage = _storage("b", points * k * chunks[0][1] * run, x.dtype)
    for first, rows in chunks:
        v = _buffer(v_storage, points, c, rows * run)
        _transform_tiles(x, b_t, tile.alpha, v, m, pad[0], pad[1], first, tiles_w)
        prod = stacked_matmul(u, v, out=_buffer(prod_storage, points, k, rows * run))  # a BLAS GEMM per point
        _untransform_tiles(prod, a_t, y, first, tiles_w)
    return y


def forward(x, w, padding, *, tile=None):
    """y = conv2d(x, w, stride=1, padding=padding) for a 3x3 w (K, C, 3, 3), groups=1."""
    x, w, padding, tile = _check("forward", x, w, padding, tile)
    out_hw = (x.shape[2] + 2 * padding[0] - 2, x.shape[3] + 2 * padding[1] - 2)
    return _correlate(x, _filter_transform(w, tile), padding, out_hw, tile)


def backward_input(gy, w, x_shape, padding, *, tile=None):
    """gx: gy padded by 2 - padding, correlated with w rotated by 180 degrees, in/out channels swapped."""
    gy, w, padding, tile = _check("backward_input", gy, w, padding, tile, grad_shape=x_shape)
    return _correlate(gy, _filter_transform(w, tile, rotated=True), (2 - padding[0], 2 - padding[1]),
                      tuple(x_shape[2:]), tile)


def backward_weight(gy, x, w_shape, padding, *, tile=None):
    """gw = G^T [ sum over tiles and images (A gy_tile A^T) * (B^T x_tile B) ] G."""
    x, gy, padding, tile = _check_weight(gy, x, w_shape, padding, tile)
    n, k, oh, ow = gy.shape
    m, points = tile.m, tile.alpha ** 2
    tiles_h, tiles_w = -(-oh // m), -(-ow // m)
    run, c = tiles_w * n, x.shape[1]
    constants = tile.in_dtype(x.dtype)
    b_t, a = constants.b_t, constants.a
    if max(c, k) <= FUSED_CHANNELS:
        group = _group(n, tiles_h, tiles_w, max(c, k), tile, x.itemsize)
        partial = np.empty((-(-n // group) * tiles_h, points, k, c), dtype=x.dtype)
        _fused_weight(x, gy, b_t, a, padding[0], padding[1], group, partial)
        return _weight_from_products(partial.sum(axis=0), tile, w_shape)  # summed over blocks in order
    chunks = _chunks(tiles_h, run, max(c, k), tile, x.itemsize)
    x_storage = _storage("a", points * c * chunks[0][1] * run, x.dtype)
    gy_storage = _storage("b", points * k * chunks[0][1] * run, x.dtype)
    prod = _buffer(_storage("u", points * k * c, x.dtype), points, k, c)  # the products, summed over chunks
    part = _buffer(_storage("part", points * k * c, x.dtype), points, k, c) if len(chunks) > 1 else None
    for first, rows in chunks:
        x_hat = _buffer(x_storage, points, c, rows * run)
        _transform_tiles(x, b_t, tile.alpha, x_hat, m, padding[0], padding[1], first, tiles_w)
        gy_hat = _buffer(gy_storage, points, k, rows * run)
        _transform_tiles(gy, a, m, gy_hat, m, 0, 0, first, tiles_w)
        if first == 0:
            stacked_matmul(gy_hat, x_hat.transpose(0, 2, 1), out=prod)  # (alpha^2, K, C): a BLAS GEMM per point
        else:
            prod += stacked_matmul(gy_hat, x_hat.transpose(0, 2, 1), out=part)
    return _weight_from_products(prod, tile, w_shape)


def _weight_from_products(prod, tile, w_shape):
    """gw from the summed products (alpha^2, K, C): G^T (.) G for every (k, c), one GEMM with G (x) G,
    as the filter transform."""
    gw = prod.reshape(prod.shape[0], -1).T @ tile.in_dtype(prod.dtype).gg  # (K*C, 9)
    return gw.reshape(tuple(w_shape))


# ---- argument checks ----

def _tile(tile, out_hw, batch, channels):
    """tile=m picks F(m x m, 3 x 3); None: choose_tile."""
    if tile is None:
        tile = choose_tile(out_hw, batch, channels)
    if tile not in _TILES:
        raise ValueError(f"winograd: tile must be one of {sorted(_TILES)} (F(m x m, 3 x 3)), got {tile!r}")
    return _TILES[tile]


def _padding(padding):
    if isinstance(padding, (int, np.integer)):
        padding = (padding, padding)
    if len(padding) != 2 or any(int(p) != p or p < 0 for p in padding):
        raise ValueError(f"winograd: padding must be a pair of non-negative ints, got {padding!r}")
    return int(padding[0]), int(padding[1])


def _check_arrays(name, arrays):
    for label, a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"winograd.{name}: {label} must be a NumPy array, got {type(a).__name__}")
        if a.ndim != 4:
            raise ValueError(f"winograd.{name}: {label} must have 4 dims, got shape {a.shape}")
    dtype = arrays[0][1].dtype
    if dtype not in (np.float32, np.float64) or any(a.dtype != dtype for _, a in arrays):
        raise ValueError(f"winograd.{name}: needs float32 or float64 arrays of one dtype, got "
                         + ", ".join(f"{label} {a.dtype}" for label, a in arrays))
    return [np.ascontiguousarray(a) for _, a in arrays]


def _check_filter(name, w_shape):
    if len(w_shape) != 4 or tuple(w_shape[2:]) != (3, 3):
        raise ValueError(f"winograd.{name}: only 3x3 filters (K, C, 3, 3), got weight shape {tuple(w_shape)}; "
                         f"use conv_algo='im2col' for other kernels")


def _check(name, x, w, padding, tile, grad_shape=None):
    """x is the input (forward) or gy (backward_input, whose input shape is grad_shape)."""
    x, w = _check_arrays(name, [("x" if grad_shape is None else "gy", x), ("w", w)])
    _check_filter(name, w.shape)
    padding = _padding(padding)
    channels = x.shape[1]
    if grad_shape is None and channels != w.shape[1]:
        raise ValueError(f"winograd.forward: x has {channels} channels but w {w.shape} expects {w.shape[1]} "
                         f"(groups=1 only)")
    if grad_shape is not None:
        expect = (grad_shape[0], w.shape[0], grad_shape[2] + 2 * padding[0] - 2, grad_shape[3] + 2 * padding[1] - 2)
        if len(grad_shape) != 4 or grad_shape[1] != w.shape[1] or x.shape != expect:
            raise ValueError(f"winograd.{name}: gy {x.shape} does not match input shape {tuple(grad_shape)}, "
                             f"w {w.shape} and padding {padding} (expected gy {expect})")
        return x, w, padding, _tile(tile, grad_shape[2:], grad_shape[0], w.shape[:2])
    if min(x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]) < 3:
        raise ValueError(f"winograd.forward: input {x.shape[2:]} with padding {padding} is smaller than the 3x3 filter")
    return x, w, padding, _tile(tile, (x.shape[2] + 2 * padding[0] - 2, x.shape[3] + 2 * padding[1] - 2), x.shape[0],
                                w.shape[:2])


def _check_weight(gy, x, w_shape, padding, tile):
    gy, x = _check_arrays("backward_weight", [("gy", gy), ("x", x)])
    _check_filter("backward_weight", w_shape)
    padding = _padding(padding)
    expect = (x.shape[0], w_shape[0], x.shape[2] + 2 * padding[0] - 2, x.shape[3] + 2 * padding[1] - 2)
    if w_shape[1] != x.shape[1] or gy.shape != expect:
        raise ValueError(f"winograd.backward_weight: gy {gy.shape}, x {x.shape} and weight shape {tuple(w_shape)} "
                         f"do not fit (padding {padding}; expected gy {expect})")
    return x, gy, padding, _tile(tile, gy.shape[2:], gy.shape[0], w_shape[:2])
