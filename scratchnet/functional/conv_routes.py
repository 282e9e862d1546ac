"""How a convolution is computed: every route, and the one table that picks between them.

A route computes one convolution three ways on raw arrays, each writing NCHW:

    forward(x, w, geo)                   -> y   (N, C_out, oh, ow)
    backward_input(gy, w, x_shape, geo)  -> gx  (also conv_transpose2d's forward)
    backward_weight(gy, x, w_shape, geo) -> gw

A route may also have ``backward(gy, x, w, geo) -> (gx, gw)``, both gradients at
once where that saves work (Im2col's: one walk over the batch chunks).
``geo`` is a ``Geometry`` (stride, padding, dilation, groups, out_hw). Routes
return fresh arrays (conv.py adds the bias in place). ``ROUTES`` below lists
them side by side with the devices, dtypes and shapes each one handles, and
``AUTO`` holds conv_algo='auto''s rules with the measurement behind each; they
make ``CONV2D``, conv2d's table in the one dispatch mechanism every op with
kernels uses (kernels/dispatch.py), whose ``choose`` is the only place that
decides which route a call takes. Adding a kernel means its source (kernels/),
its launch rule (kernels/launch.py on the GPU) and one row here
(docs/kernels.md, "Adding a kernel").

The reference route (NumPy/CuPy im2col + one batched GEMM) stays the readable
baseline every other route is tested against. Its column layout is
``(C, kh, kw, N, oh, ow)``: reshaped to ``(groups, C/groups*kh*kw, N*oh*ow)`` it
is contiguous, so grouped and depthwise convolution are one batched matmul,
never a Python loop over groups. col2im is the *adjoint* of im2col, not its
inverse: overlapping windows accumulate.
"""
import math
from collections import namedtuple

import numpy as np

from .. import backend, kernels
from ..backend.blas import run_shares, thread_count
from ..backend.blas import stacked_matmul as shared_matmul
from ..kernels.dispatch import ANY, KERNEL_DTYPES, Op, Route, device, same_dtype

Geometry = namedtuple("Geometry", "stride padding dilation groups out_hw")


def conv_output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """Output length along one axis; the one rule shared by conv and pooling."""
    span = dilation * (kernel - 1) + 1
    if ceil_mode:
        out = -(-(size + 2 * padding - span) // stride) + 1
        # torch: the last window must start inside the input or left padding
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return (size + 2 * padding - span) // stride + 1


def im2col(x, kernel, stride, padding, dilation, out_size=None, pad_value=0):
    """Columns of ``x`` (N, C, H, W): an array of shape (C, kh, kw, N, oh, ow).

    ``out_size`` overrides the output size (pooling with ceil_mode pads the
    bottom/right further); ``pad_value`` fills the padding (-inf for max pool).
    """
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (sy, sx), (ph, pw), (dy, dx) = kernel, stride, padding, dilation
    if out_size is None:
        out_size = (conv_output_size(h, kh, sy, ph, dy), conv_output_size(w, kw, sx, pw, dx))
    oh, ow = out_size
    # extra bottom/right padding so every window in out_size is in bounds
    extra_h = max(0, (oh - 1) * sy + dy * (kh - 1) + 1 - (h + 2 * ph))
    extra_w = max(0, (ow - 1) * sx + dx * (kw - 1) + 1 - (w + 2 * pw))
    padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w)), constant_values=pad_value)
    col = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for i in range(kh):
        top = i * dy
        for j in range(kw):
            left = j * dx
            window = padded[:, :, top:top + sy * (oh - 1) + 1:sy, left:left + sx * (ow - 1) + 1:sx]
            col[:, i, j] = window.transpose(1, 0, 2, 3)
    return col


def col2im(col, x_shape, stride, padding, dilation):
    """The adjoint of im2col: add every column entry back to the pixel it came from."""
    xp = backend.get_array_module(col)
    c, kh, kw, n, oh, ow = col.shape
    _, _, h, w = x_shape
    (sy, sx), (ph, pw), (dy, dx) = stride, padding, dilation
    extra_h = max(0, (oh - 1) * sy + dy * (kh - 1) + 1 - (h + 2 * ph))
    extra_w = max(0, (ow - 1) * sx + dx * (kw - 1) + 1 - (w + 2 * pw))
    padded = xp.zeros((n, c, h + 2 * ph + extra_h, w + 2 * pw + extra_w), dtype=col.dtype)
    for i in range(kh):
        top = i * dy
        for j in range(kw):
            left = j * dx
            padded[:, :, top:top + sy * (oh - 1) + 1:sy, left:left + sx * (ow - 1) + 1:sx] += \
                col[:, i, j].transpose(1, 0, 2, 3)
    return padded[:, :, ph:ph + h, pw:pw + w]


def _empty_batch(like, shape):
    """The result of a call on an empty batch (N = 0): zeros of ``shape`` (an empty output or input gradient,
    a zero weight gradient). Routes whose kernels would launch an empty grid, divide by the batch or sum
    into memory they never initialise return this first."""
    return backend.get_array_module(like).zeros(shape, dtype=like.dtype)


def stacked_matmul(a, b, out=None):
    """np.matmul on a stack of GEMMs, the items shared between the threads: NumPy arrays on the CPU kernels'
    (Numba's) threads, kernels/cpu_gemm.py; anything else (CuPy) backend.blas's (its own matmul)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return kernels.for_device("cpu").stacked_matmul(a, b, out=out)
    return shared_matmul(a, b, out=out)


def _grouped_matmul(a, b):
    """(g, m, k) @ (g, k, n); one plain 2-D GEMM when g == 1."""
    if a.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return stacked_matmul(a, b)


def _weight_gradient(gy_groups, col_groups):
    """gy (g, co/g, M) times col (g, K, M) transposed: (g, co/g, K), computed as (col @ gy^T)^T.

    That operand order keeps numpy's stacked matmul on BLAS (gy @ col^T ran ~25x
    slower there on AlexNet conv1's shape), and as one 2-D GEMM it is also the
    faster one: LeNet C3's (16 x 6400) @ (6400 x 150) 0.43 vs 0.76 ms, and never
    slower on the conv benchmark's shapes (OpenBLAS, one thread)."""
    if gy_groups.shape[0] == 1:
        return (col_groups[0] @ gy_groups[0].T).T[None]
    return stacked_matmul(col_groups, gy_groups.transpose(0, 2, 1)).transpose(0, 2, 1)


# ---------------------------------------------------------------- route: reference
class Reference:
    """NumPy/CuPy im2col + one batched GEMM for the whole batch: the readable baseline."""

    @staticmethod
    def forward(x, w, geo):
        n, (c_out, c_group, kh, kw), g = x.shape[0], w.shape, geo.groups
        col = im2col(x, (kh, kw), geo.stride, geo.padding, geo.dilation, geo.out_hw)
        oh, ow = geo.out_hw
        y = _grouped_matmul(w.reshape(g, c_out // g, -1), col.reshape(g, c_group * kh * kw, n * oh * ow))
        return backend.get_array_module(x).ascontiguousarray(y.reshape(c_out, n, oh, ow).transpose(1, 0, 2, 3))

    @staticmethod
    def backward_input(gy, w, x_shape, geo):
        n, c_out, oh, ow = gy.shape
        _, c_group, kh, kw = w.shape
        g = geo.groups
        gy_groups = gy.transpose(1, 0, 2, 3).reshape(g, c_out // g, n * oh * ow)
        w_t = backend.get_array_module(w).ascontiguousarray(w.reshape(g, c_out // g, -1).transpose(0, 2, 1))
        gcol = _grouped_matmul(w_t, gy_groups).reshape(c_group * g, kh, kw, n, oh, ow)
        return col2im(gcol, x_shape, geo.stride, geo.padding, geo.dilation)

    @staticmethod
    def backward_weight(gy, x, w_shape, geo):
        n, c_out, oh, ow = gy.shape
        _, c_group, kh, kw = w_shape
        g = geo.groups
        col = im2col(x, (kh, kw), geo.stride, geo.padding, geo.dilation, geo.out_hw)
        gy_groups = gy.transpose(1, 0, 2, 3).reshape(g, c_out // g, n * oh * ow)
        return _weight_gradient(gy_groups, col.reshape(g, c_group * kh * kw, n * oh * ow)).reshape(w_shape)


# ---------------------------------------------------------------- route: im2col (kernels, in batch chunks)
# Columns are built for a chunk of images at a time, so the column buffer stays small instead of
# kh*kw times the whole input, and each chunk is multiplied while its columns are still in cache. The
# result (C_out, images, oh*ow) is put in NCHW order there too; a one-image chunk is NCHW already.
#
# On the CPU the chunks are small (THREAD_COLUMN_BYTES, in one core's L2 cache) and shared between
# the threads: each thread builds a chunk's columns, multiplies them with BLAS on one thread and puts
# the result in place, so the columns never leave its core's cache, and no threaded call waits for the
# others between steps. A whole pass is one parallel Numba kernel (kernels/cpu.py's im2col_chunks_*,
# on the threads of every other kernel); where it cannot run, backend/blas.py's pool shares the chunks
# (_each_chunk), with the same numbers. conv2d forward and backward against 16 MB chunks each run by
# every thread in turn, on LeNet's C3, ResNet-20's 3x3/2 16->32 @32 and ResNet-18's stem:
# `python benchmarks/shares.py` (benchmarks/results/shares.json, quoted in docs/core.md). When the chunks cannot
# be shared evenly (a batch of one) they run one after the other, each on every thread. The GPU runs
# chunks of COLUMN_CHUNK_BYTES one after the other: its kernels and GEMM fill the device.
#
# The chunks depend on the shapes alone, never on the number of threads, and the weight gradient's
# per-chunk products are summed in chunk order: the same numbers on one thread as on several.
# Chunk size, same layers and method: 256 KB, 13.1 ms on the 16->32 layer against 11.0 (but ResNet-20's
# 3->16 stem 8.6 against 10.0); 1 and 2 MB within the noise of 512 KB.
#
# Fewer images a chunk where that keeps its GEMMs in BLAS's small-matrix path: OpenBLAS multiplies
# a product of at most SMALL_GEMM multiply-adds without packing its operands, and a layer with few
# rows and a short k pays for the packing twice over (ResNet-20's 3->16 stem, (16x27)@(27xN) on one
# thread: 10 ns a column up to N = 2048, 22 ns from N = 3072; its forward at batch 32, one or two
# images a chunk against four, 0.43-0.51 ms against 0.81; LeNet's C3, four images against eight,
# forward and backward 1.18 ms against 1.32).
THREAD_COLUMN_BYTES = 512 << 10
SMALL_GEMM = 10**6
COLUMN_CHUNK_BYTES = 16 << 20  # the GPU's

# The weight gradient multiplies gy by the very columns the forward built. On the CPU a small layer's are kept
# from the forward (each chunk's) rather than built again, where the weight needs a gradient: at most
# KEEP_COLUMN_BYTES for the whole batch, little memory next to the step's, where building the columns is a
# large part of the layer (LeNet's C3 at batch 64: 3.8 MB; forward and backward 1.07 vs 1.20 ms on two threads,
# 2.14 vs 2.44 on one). Larger layers keep only x, as every other route: their columns are kh*kw times x.
KEEP_COLUMN_BYTES = 8 << 20
Kept = namedtuple("Kept", "starts columns")  # a forward's chunks and their columns, for the same call's backward


def _chunks(n, bytes_per_image, most):
    """[(lo, hi)]: the batch in chunks of at most ``most`` column bytes, evened out (8 images at 5 a chunk: 4 + 4,
    not 5 + 3, which two threads would share unevenly)."""
    step = max(1, most // max(1, bytes_per_image))
    step = -(-n // -(-n // step)) if n else step
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _chunk_groups(a, lo, hi, g):
    """Images lo:hi of an NCHW array as (g, C/g, images*H*W): a view for one image, a cache-sized copy else."""
    xp = backend.get_array_module(a)
    c = a.shape[1]
    if hi - lo == 1:
        return a[lo].reshape(g, c // g, -1)
    return xp.ascontiguousarray(a[lo:hi].transpose(1, 0, 2, 3)).reshape(g, c // g, -1)


_OneThread = namedtuple("_OneThread", "im2col col2im")  # the CPU kernels a share of the pool runs
_Plan = namedtuple("_Plan", "chunks threads")  # [(lo, hi)] and how many threads share them


def _share_matmul(a, b):
    """A share's GEMM (inside run_shares, BLAS at one thread): np.matmul, under a name of its own so that
    benchmarks/threads.py can time it beside the other GEMM helpers."""
    return np.matmul(a, b)


def _plan_chunks(x, bytes_per_image, gemm_per_image, weight_bytes=0):
    """The chunks of x's batch and the threads that share them. On the CPU: chunks of THREAD_COLUMN_BYTES of
    columns, fewer images where a chunk's GEMM then stays within SMALL_GEMM multiply-adds (``gemm_per_image``:
    an image's), never less than ``weight_bytes``, shared between the policy's threads where they can be shared
    evenly. On the GPU: chunks of COLUMN_CHUNK_BYTES, one after the other."""
    if backend.get_array_module(x) is not np:
        return _Plan(_chunks(x.shape[0], bytes_per_image, COLUMN_CHUNK_BYTES), 1)
    most = THREAD_COLUMN_BYTES
    if 0 < gemm_per_image <= SMALL_GEMM:
        most = min(most, SMALL_GEMM // gemm_per_image * bytes_per_image)
    chunks = _chunks(x.shape[0], bytes_per_image, max(most, weight_bytes))
    return _Plan(chunks, thread_count(len(chunks)))


def _starts(chunks):
    """The chunks' bounds as the CPU chunk kernels take them: lo of each, then the last hi (int64)."""
    return np.array([lo for lo, _ in chunks] + [chunks[-1][1]], dtype=np.int64)


def _each_chunk(x, plan, work):
    """work(index, lo, hi, kern, matmul) for each chunk of images lo:hi of the plan.

    Shared between the threads (plan.threads > 1) on backend/blas.py's pool, each run with the one-thread
    kernels (``kern``: a _OneThread) and _share_matmul; else one after the other with the device's kernels and
    the threaded matmul. On the CPU the routes first try kernels/cpu.py's im2col_chunks_*: the same chunks and
    numbers on Numba's threads; this is the way where those cannot run."""
    kern = kernels.for_array(x)
    if plan.threads < 2:  # (the GPU, one thread, or too few chunks to share evenly)
        for index, (lo, hi) in enumerate(plan.chunks):
            work(index, lo, hi, kern, _grouped_matmul)
        return
    one_thread = _OneThread(kern.im2col_one_thread, kern.col2im_one_thread)

    def share(first, last):
        for index in range(first, last):
            work(index, *plan.chunks[index], one_thread, _share_matmul)
    run_shares(share, len(plan.chunks), plan.threads)


class Im2col:
    """im2col/col2im kernels (Numba on the CPU, CUDA on the GPU) + one BLAS GEMM per batch chunk."""
    needs = ("im2col", "col2im")  # the kernel functions it calls (on the CPU the one-thread twins too, which
    # compile with them: kernels/cpu.py; the chunk kernels compile apart, and the pool runs the chunks until then)

    @staticmethod
    def forward(x, w, geo):
        return Im2col._forward(x, w, geo, False)[0]

    @staticmethod
    def forward_and_save(x, w, geo):
        """(y, what the weight gradient can use: a Kept of a small layer's columns, else None)."""
        return Im2col._forward(x, w, geo, True)

    @staticmethod
    def _forward(x, w, geo, keep):
        (n, c), (c_out, c_group, kh, kw), g = x.shape[:2], w.shape, geo.groups
        oh, ow = geo.out_hw
        w_groups = w.reshape(g, c_out // g, c_group * kh * kw)
        bytes_per_image = c * kh * kw * oh * ow * x.itemsize
        plan = _plan_chunks(x, bytes_per_image, c_out // g * c_group * kh * kw * oh * ow)
        starts, xp = _starts(plan.chunks) if n else None, backend.get_array_module(x)
        # kept on the CPU where they fit and the weight gradient takes these chunks (a weight no larger than a
        # chunk's columns: _backward)
        keep = (keep and xp is np and 0 < n * bytes_per_image <= KEEP_COLUMN_BYTES
                and w.nbytes <= (plan.chunks[0][1] - plan.chunks[0][0]) * bytes_per_image)
        if plan.threads > 1:  # the chunks on Numba's threads, where they can run
            done = kernels.for_array(x).im2col_chunks_forward(x, w_groups, (kh, kw), starts, plan.threads, geo.stride,
                                                              geo.padding, geo.dilation, geo.out_hw, keep)
            if done is not None:
                y, columns = done
                return y, (Kept(starts, columns) if keep else None)
        y = xp.empty((n, c_out, oh, ow), dtype=x.dtype)
        columns = [None] * len(plan.chunks)  # each chunk's, where kept

        def chunk(index, lo, hi, kern, matmul):
            col = kern.im2col(x[lo:hi], (kh, kw), geo.stride, geo.padding, geo.dilation, geo.out_hw)
            y_chunk = matmul(w_groups, col.reshape(g, c_group * kh * kw, -1))  # (g, C_out/g, images*oh*ow)
            y[lo:hi] = y_chunk.reshape(c_out, hi - lo, oh, ow).transpose(1, 0, 2, 3)
            if keep:
                columns[index] = col
        _each_chunk(x, plan, chunk)
        return y, (Kept(starts, columns) if keep else None)

    @staticmethod
    def backward_input(gy, w, x_shape, geo):
        return Im2col._backward(gy, None, w, x_shape, w.shape, geo)[0]

    @staticmethod
    def backward_weight(gy, x, w_shape, geo, kept=None):
        return Im2col._backward(gy, x, None, x.shape, w_shape, geo, kept)[1]

    @staticmethod
    def backward(gy, x, w, geo, kept=None):
        """(gx, gw) in one pass over the chunks, each chunk's gy gathered once for both GEMMs (the numbers of
        backward_input and backward_weight, bit for bit). A weight larger than a chunk's columns gives the weight
        gradient chunks of its own size (see _backward), so then the two gradients take a pass each."""
        if math.prod(w.shape) * w.itemsize > THREAD_COLUMN_BYTES:
            return Im2col.backward_input(gy, w, x.shape, geo), Im2col.backward_weight(gy, x, w.shape, geo, kept)
        return Im2col._backward(gy, x, w, x.shape, w.shape, geo, kept)

    @staticmethod
    def _backward(gy, x, w, x_shape, w_shape, geo, kept=None):
        """(gx or None, gw or None): gx where w is given, gw where x is given (from the forward's columns where
        ``kept`` holds them for these very chunks: the same numbers as x's columns built again)."""
        xp = backend.get_array_module(gy)
        n, c, (c_out, c_group, kh, kw), g = x_shape[0], x_shape[1], w_shape, geo.groups
        oh, ow = geo.out_hw
        w_t = None if w is None else xp.ascontiguousarray(w.reshape(g, c_out // g, -1).transpose(0, 2, 1))
        # the weight gradient's chunks hold at least the weight's size: the products, one weight per chunk, then
        # take no more memory than the whole batch's columns (ResNet-50's 3x3/2 512 @14 at batch 16: one-image
        # chunks would hold 16 products of 9.4 MB)
        plan = _plan_chunks(gy, c * kh * kw * oh * ow * gy.itemsize, c_out // g * c_group * kh * kw * oh * ow,
                            0 if x is None else math.prod(w_shape) * gy.itemsize)
        done = None
        starts = _starts(plan.chunks) if n else None
        reuse = x is not None and kept is not None and n > 0 and np.array_equal(kept.starts, starts)
        if plan.threads > 1:  # the chunks on Numba's threads, where they can run
            in_one = reuse and isinstance(kept.columns, np.ndarray)  # (the chunk kernels': one array, a row each)
            done = kernels.for_array(gy).im2col_chunks_backward(gy, x, w_t, tuple(x_shape), tuple(w_shape), g, starts,
                                                                plan.threads, geo.stride, geo.padding, geo.dilation,
                                                                kept.columns if in_one else None)
        if done is not None:
            gx, parts = done  # parts: the weight gradient's products per chunk (g, c_group*kh*kw, C_out/g)
        else:
            gx = None if w is None else xp.empty(x_shape, dtype=gy.dtype)
            parts = {}  # chunk index -> its products, as above

            def chunk(index, lo, hi, kern, matmul):
                gy_chunk = _chunk_groups(gy, lo, hi, g)  # (g, C_out/g, images*oh*ow)
                if w is not None:
                    gcol = matmul(w_t, gy_chunk).reshape(c, kh, kw, hi - lo, oh, ow)
                    gx[lo:hi] = kern.col2im(gcol, (hi - lo,) + tuple(x_shape[1:]), geo.stride, geo.padding,
                                            geo.dilation)
                if x is not None:
                    if reuse:  # (a row of the chunk kernels' array holds the largest chunk's: this one's first)
                        col = kept.columns[index].reshape(-1)[:(hi - lo) * c * kh * kw * oh * ow]
                    else:
                        col = kern.im2col(x[lo:hi], (kh, kw), geo.stride, geo.padding, geo.dilation, geo.out_hw)
                    parts[index] = matmul(col.reshape(g, c_group * kh * kw, -1), gy_chunk.transpose(0, 2, 1))
            _each_chunk(gy, plan, chunk)
        if x is None:
            return gx, None
        if n == 0:
            gw = _empty_batch(gy, w_shape)
        else:  # the products summed in chunk order: the same numbers however many threads
            gw = parts[0]
            for index in range(1, len(parts)):
                gw += parts[index]
            gw = gw.transpose(0, 2, 1).reshape(w_shape)
        return gx, gw


# ---------------------------------------------------------------- route: gemm1x1
class Gemm1x1:
    """A 1x1 convolution is a GEMM per image, (C_out, C_in) @ (C_in, H*W), already NCHW:
    no im2col and no transposes. Stride s is a strided slice x[:, :, ::s, ::s] first."""

    @staticmethod
    def _strided(x, geo):
        (sy, sx), (oh, ow) = geo.stride, geo.out_hw
        if (sy, sx) == (1, 1) and x.shape[2:] == (oh, ow):
            return x
        return backend.get_array_module(x).ascontiguousarray(x[:, :, :sy * oh:sy, :sx * ow:sx])

    @staticmethod
    def forward(x, w, geo):
        xs, g, (oh, ow) = Gemm1x1._strided(x, geo), geo.groups, geo.out_hw
        n, c_out = x.shape[0], w.shape[0]
        c_in = x.shape[1]  # named, not -1: an empty batch (N = 0) leaves -1 undetermined
        if g == 1:  # (C_out, C_in) broadcast against (N, C_in, oh*ow): one BLAS GEMM per image
            y = stacked_matmul(w.reshape(c_out, -1), xs.reshape(n, c_in, oh * ow))
        else:
            y = stacked_matmul(w.reshape(g, c_out // g, -1), xs.reshape(n, g, c_in // g, oh * ow))
        return y.reshape(n, c_out, oh, ow)

    @staticmethod
    def backward_input(gy, w, x_shape, geo):
        xp, g, (oh, ow) = backend.get_array_module(gy), geo.groups, geo.out_hw
        n, c_out, c_group = gy.shape[0], w.shape[0], w.shape[1]
        w_t = xp.ascontiguousarray(w.reshape(g, c_out // g, c_group).transpose(0, 2, 1))  # (g, C_in/g, C_out/g)
        gxs = stacked_matmul(w_t[0], gy.reshape(n, c_out, oh * ow)) if g == 1 else \
            stacked_matmul(w_t, gy.reshape(n, g, c_out // g, oh * ow))
        gxs = gxs.reshape(n, g * c_group, oh, ow)
        if tuple(x_shape[2:]) == (oh, ow):
            return gxs
        (sy, sx) = geo.stride
        gx = xp.zeros(x_shape, dtype=gy.dtype)  # a strided 1x1 never reads the pixels in between
        gx[:, :, :sy * oh:sy, :sx * ow:sx] = gxs
        return gx

    @staticmethod
    def backward_weight(gy, x, w_shape, geo):
        xp, g, (oh, ow) = backend.get_array_module(x), geo.groups, geo.out_hw
        xs, n, c_out, c_in = Gemm1x1._strided(x, geo), x.shape[0], w_shape[0], x.shape[1]
        if g == 1 and oh * ow * (c_in + c_out) < c_in * c_out:
            # small maps of wide layers (ResNet's 7x7 stage): N per-image products, each as large as the
            # weight, then summed, cost more than copying gy and x channel-major (smaller than the weight)
            # for one GEMM over the whole batch: 2048x1024 @7x7, N=8: 18 vs 34 ms (one thread)
            gy_c = xp.ascontiguousarray(gy.reshape(n, c_out, oh * ow).transpose(1, 0, 2)).reshape(c_out, -1)
            x_c = xp.ascontiguousarray(xs.reshape(n, c_in, oh * ow).transpose(1, 0, 2)).reshape(c_in, -1)
            return (gy_c @ x_c.T).reshape(w_shape)
        gy_images = xp.ascontiguousarray(gy).reshape(n, g, c_out // g, oh * ow)
        # per image gy (C_out/g, oh*ow) @ x^T (oh*ow, C_in/g), summed over the batch
        x_images_t = xs.reshape(n, g, x.shape[1] // g, oh * ow).transpose(0, 1, 3, 2)
        gw = stacked_matmul(gy_images, x_images_t).sum(axis=0)
        return gw.reshape(w_shape)


# ---------------------------------------------------------------- route: window (a kernel the size of the input)
class Window:
    """A kernel as large as its unpadded input has one window, the whole image (LeNet-5's C5: 16x5x5 -> 120x1x1):
    the convolution is a fully connected layer, one GEMM each way on (N, C*kh*kw), no im2col."""

    @staticmethod
    def forward(x, w, geo):
        n, c_out = x.shape[0], w.shape[0]
        return (x.reshape(n, w[0].size) @ w.reshape(c_out, -1).T).reshape(n, c_out, 1, 1)

    @staticmethod
    def backward_input(gy, w, x_shape, geo):
        n, c_out = gy.shape[:2]
        return (gy.reshape(n, c_out) @ w.reshape(c_out, -1)).reshape(x_shape)

    @staticmethod
    def backward_weight(gy, x, w_shape, geo):
        n, c_out = gy.shape[:2]
        return (gy.reshape(n, c_out).T @ x.reshape(n, math.prod(w_shape[1:]))).reshape(w_shape)


# ---------------------------------------------------------------- route: winograd
class Winograd:
    """3x3 stride-1 convolution by Winograd minimal filtering (kernels/winograd.py, through the CPU's kernel
    module)."""
    needs = ("winograd_forward", "winograd_backward_input", "winograd_backward_weight")

    @staticmethod
    def forward(x, w, geo):
        if x.shape[0] == 0:
            return _empty_batch(x, (0, w.shape[0], *geo.out_hw))
        return kernels.for_array(x).winograd_forward(x, w, geo.padding)

    @staticmethod
    def backward_input(gy, w, x_shape, geo):
        if gy.shape[0] == 0:
            return _empty_batch(gy, x_shape)
        return kernels.for_array(gy).winograd_backward_input(gy, w, tuple(x_shape), geo.padding)

    @staticmethod
    def backward_weight(gy, x, w_shape, geo):
        if x.shape[0] == 0:
            return _empty_batch(x, w_shape)
        return kernels.for_array(x).winograd_backward_weight(gy, x, tuple(w_shape), geo.padding)


# ---------------------------------------------------------------- routes: the direct kernels
class Depthwise:
    """Direct depthwise kernels (Numba on the CPU, CUDA on the GPU): no column buffer."""
    needs = ("depthwise_forward", "depthwise_backward_input", "depthwise_backward_weight")

    @staticmethod
    def forward(x, w, geo):
        return kernels.for_array(x).depthwise_forward(x, w, geo.stride, geo.padding, geo.dilation, geo.out_hw)

    @staticmethod
    def backward_input(gy, w, x_shape, geo):
        return kernels.for_array(gy).depthwise_backward_input(gy, w, x_shape, geo.stride, geo.padding, geo.dilation)

    @staticmethod
    def backward_weight(gy, x, w_shape, geo):
        if x.shape[0] == 0:
            return _empty_batch(x, w_shape)
        return kernels.for_array(x).depthwise_backward_weight(gy, x, w_shape, geo.stride, geo.padding, geo.dilation)


class Direct:
    """The tiled CUDA dense convolution (implicit GEMM through shared memory; GPU only)."""
    needs = ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight")

    @staticmethod
    def forward(x, w, geo):
        if x.shape[0] == 0:  # the tiled grid would have no blocks along N*oh*ow
            return _empty_batch(x, (0, w.shape[0], *geo.out_hw))
        return kernels.for_array(x).conv2d_forward(x, w, geo.stride, geo.padding, geo.dilation, geo.groups,
                                                   geo.out_hw)

    @staticmethod
    def backward_input(gy, w, x_shape, geo):
        if gy.shape[0] == 0:
            return _empty_batch(gy, x_shape)
        return kernels.for_array(gy).conv2d_backward_input(gy, w, x_shape, geo.stride, geo.padding,
                                                           geo.dilation, geo.groups)

    @staticmethod
    def backward_weight(gy, x, w_shape, geo):
        return kernels.for_array(x).conv2d_backward_weight(gy, x, w_shape, geo.stride, geo.padding,
                                                           geo.dilation, geo.groups)


# ---------------------------------------------------------------- the table
# A call as the table sees it: device, dtype and shapes (x: N, C, H, W; w: C_out, C_in/groups, kh, kw).
Call = namedtuple("Call", "device dtype x_shape w_shape geo")


def _natural_out(c):
    kh, kw = c.w_shape[2:]
    return c.geo.out_hw == tuple(conv_output_size(c.x_shape[2 + a], (kh, kw)[a], c.geo.stride[a], c.geo.padding[a],
                                                  c.geo.dilation[a]) for a in range(2))


def is_1x1(c):
    return c.w_shape[2:] == (1, 1) and c.geo.padding == (0, 0)


def is_3x3_stride1(c):
    return (c.w_shape[2:] == (3, 3) and c.geo.stride == (1, 1) and c.geo.dilation == (1, 1) and c.geo.groups == 1
            and _natural_out(c))


def is_whole_window(c):
    return (c.x_shape[2:] == c.w_shape[2:] and c.geo.padding == (0, 0) and c.geo.dilation == (1, 1)
            and c.geo.groups == 1 and c.geo.out_hw == (1, 1))


def is_depthwise(c):
    """One input channel per filter (groups = C_in); an ordinary conv of a single-channel input (LeNet's
    first layer) is one too, with multiplier C_out."""
    return c.geo.groups == c.x_shape[1] and c.w_shape[1] == 1


def _always(c):
    return True


def _grouped_or_on_cpu(c):
    """A single-channel input's conv goes the depthwise way on the CPU only (measured there, see AUTO)."""
    return c.geo.groups > 1 or c.device == "cpu"


def _wide(c):
    """At least WINOGRAD_MIN_CHANNELS in and out (see AUTO)."""
    return min(c.x_shape[1], c.w_shape[0]) >= WINOGRAD_MIN_CHANNELS


WINOGRAD_MIN_CHANNELS = 16


#            route        implementation  devices          dtypes (ANY: every float) shapes it handles
ROUTES = {
    "reference": Route(Reference, ("cpu", "gpu"), ANY, _always),
    "im2col":    Route(Im2col,    ("cpu", "gpu"), KERNEL_DTYPES, _always),
    "gemm1x1":   Route(Gemm1x1,   ("cpu", "gpu"), ANY, is_1x1),
    "window":    Route(Window,    ("cpu", "gpu"), ANY, is_whole_window),
    "winograd":  Route(Winograd,  ("cpu",),       KERNEL_DTYPES, is_3x3_stride1),
    "depthwise": Route(Depthwise, ("cpu", "gpu"), KERNEL_DTYPES, is_depthwise),
    "direct":    Route(Direct,    ("gpu",),       KERNEL_DTYPES, _always),
}  # noqa: E241 (aligned so the routes read as a table)

# conv_algo='auto': the first rule whose route fits the call and whose condition holds. benchmarks/conv.py
# times each rule's route against the im2col route and torch on a layer it takes (float32, CPU); the numbers
# are in docs/kernels.md, rendered from benchmarks/results/conv_cpu.json.
AUTO = [
    # route       condition  why
    ("depthwise", _grouped_or_on_cpu, "direct kernels, no kh*kw column buffer; a single-channel input (LeNet's "
                                      "C1) is a depthwise conv with multiplier C_out"),
    ("gemm1x1",   _always, "1x1 with no padding is a plain GEMM: no im2col copy, no transpose"),
    ("window",    _always, "one window, the whole input (LeNet's C5): a fully connected layer, a GEMM each way"),
    ("winograd",  _wide,   "3x3/1 with >= 16 channels in and out: 4x fewer multiplications than im2col's GEMM; "
                           "narrower layers' transforms outweigh the smaller GEMM, and float32 keeps im2col's "
                           "rounding (Winograd's float32 error is larger: docs/kernels.md)"),
    ("im2col",    _always, "everything else: BLAS GEMMs on column chunks that fit the cache"),
    ("reference", _always, "dtypes the kernels are not built for (float16), and x and w of different dtypes"),
]  # noqa: E241


def _describe(x, w, geo, conv_input_shape=None):
    """The call as the table sees it; ``conv_input_shape``: the convolution's input shape where ``x`` is
    not that input (conv_transpose2d passes the shape of its output)."""
    return device(x), same_dtype(x, w), tuple(conv_input_shape or x.shape), tuple(w.shape), geo


CONV2D = Op("conv2d", ROUTES, describe=_describe, record=Call, auto=AUTO)


def fits(name, call):
    return CONV2D.fits(name, call)


CONV_ALGOS = tuple(ROUTES) + ("auto",)
_default_algo = "auto"


def check_algo(algo):
    if algo not in CONV_ALGOS:
        raise ValueError(f"conv_algo must be one of {CONV_ALGOS} (or None for the default "
                         f"{_default_algo!r}), got {algo!r}")
    return algo


def set_conv_algo(algo):
    """Set the default convolution route; conv_algo=None (every nn.Conv2d) uses it."""
    global _default_algo
    _default_algo = check_algo(algo)


def get_conv_algo():
    return _default_algo


def choose(algo, x, w, geo, conv_input_shape=None):
    """The route this call takes (``.name``, ``.impl``: the class above): the one asked for where it fits,
    else auto's pick (inside dispatch.reference_only(), the reference). Counted per route."""
    return CONV2D.choose(x, w, geo, conv_input_shape, algo=_default_algo if algo is None else check_algo(algo))


def choose_for(algo, call):
    """The route's name for a Call (device, dtype, shapes, geometry) without any arrays (not counted)."""
    return CONV2D.decide(algo, call)
