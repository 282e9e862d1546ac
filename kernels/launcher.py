"""The CUDA kernels' Python API, written once for any launcher.

``KernelAPI(xp, run)`` allocates outputs with ``xp`` and hands each launch to
``run(kernel, dtype, launch, args)``: kernels/cuda.py runs it with CuPy on a
GPU, kernels/emulator.py with NumPy buffers on the CPU emulator. Both get the
grid/block from launch.launch_config and the argument list built here, so the
emulator tests exercise exactly what a GPU would run.
"""
import numpy as np

from .launch import MAX_BLOCKS, geometry, int_params, launch_config


class KernelAPI:
    def __init__(self, xp, run, max_blocks=MAX_BLOCKS):
        self.xp, self._run, self._max_blocks = xp, run, max_blocks

    def _launch(self, kernel, arrays, sizes, extra=()):
        dtype = np.dtype(arrays[0].dtype)
        ints = tuple(np.int32(sizes[name]) for name in int_params(kernel))
        self._run(kernel, dtype, launch_config(kernel, self._max_blocks, **sizes), tuple(arrays) + ints + tuple(extra))

    def _contiguous(self, *arrays):
        return [self.xp.ascontiguousarray(a) for a in arrays]

    # ---- direct convolution (conv.cu) ----
    def conv2d_forward(self, x, w, stride, padding, dilation, groups, out_hw):
        x, w = self._contiguous(x, w)
        s = geometry(x.shape, w.shape, out_hw, stride, padding, dilation, groups)
        y = self.xp.empty((s["N"], s["CO"], s["OH"], s["OW"]), dtype=x.dtype)
        self._launch("conv2d_forward", (x, w, y), s)
        return y

    def conv2d_backward_input(self, gy, w, x_shape, stride, padding, dilation, groups):
        gy, w = self._contiguous(gy, w)
        s = geometry(x_shape, w.shape, gy.shape[2:], stride, padding, dilation, groups)
        gx = self.xp.empty(x_shape, dtype=gy.dtype)
        self._launch("conv2d_backward_input", (gy, w, gx), s)
        return gx

    def conv2d_backward_weight(self, gy, x, w_shape, stride, padding, dilation, groups):
        gy, x = self._contiguous(gy, x)
        s = geometry(x.shape, w_shape, gy.shape[2:], stride, padding, dilation, groups)
        gw = self.xp.empty(w_shape, dtype=x.dtype)
        self._launch("conv2d_backward_weight", (gy, x, gw), s)
        return gw

    # ---- depthwise convolution (depthwise.cu) ----
    def depthwise_forward(self, x, w, stride, padding, dilation, out_hw):
        x, w = self._contiguous(x, w)
        s = geometry(x.shape, w.shape, out_hw, stride, padding, dilation)
        y = self.xp.empty((s["N"], s["CO"], s["OH"], s["OW"]), dtype=x.dtype)
        self._launch("depthwise_forward", (x, w, y), s)
        return y

    def depthwise_backward_input(self, gy, w, x_shape, stride, padding, dilation):
        gy, w = self._contiguous(gy, w)
        s = geometry(x_shape, w.shape, gy.shape[2:], stride, padding, dilation)
        gx = self.xp.empty(x_shape, dtype=gy.dtype)
        self._launch("depthwise_backward_input", (gy, w, gx), s)
        return gx

    def depthwise_backward_weight(self, gy, x, w_shape, stride, padding, dilation):
        gy, x = self._contiguous(gy, x)
        s = geometry(x.shape, w_shape, gy.shape[2:], stride, padding, dilation)
        gw = self.xp.empty(w_shape, dtype=x.dtype)
        self._launch("depthwise_backward_weight", (gy, x, gw), s)
        return gw

    # ---- im2col / col2im (im2col.cu), layout (C, kh, kw, N, oh, ow) ----
    def im2col(self, x, kernel, stride, padding, dilation, out_hw, pad_value=0):
        (x,) = self._contiguous(x)
        s = geometry(x.shape, (1, 1) + tuple(kernel), out_hw, stride, padding, dilation)
        col = self.xp.empty((s["C"], s["KH"], s["KW"], s["N"], s["OH"], s["OW"]), dtype=x.dtype)
        self._launch("im2col", (x, col), s, extra=(x.dtype.type(pad_value),))
        return col

    def col2im(self, col, x_shape, stride, padding, dilation):
        (col,) = self._contiguous(col)
        _, kh, kw, _, oh, ow = col.shape
        s = geometry(x_shape, (1, 1, kh, kw), (oh, ow), stride, padding, dilation)
        x = self.xp.empty(x_shape, dtype=col.dtype)
        self._launch("col2im", (col, x), s)
        return x

    # ---- deformable convolution (deform.cu), columns (C, kh, kw, N, oh, ow); mask None for v1 ----
    def _deform_sizes(self, x_shape, kernel, out_hw, stride, padding, dilation, offset, mask):
        s = geometry(x_shape, (1, 1) + tuple(kernel), out_hw, stride, padding, dilation)
        s.update(G=offset.shape[1] // (2 * s["KH"] * s["KW"]), USE_MASK=int(mask is not None))
        return s

    def _mask_arg(self, mask, dtype):
        """The mask, or a 1-element stand-in the kernels never read."""
        return self.xp.ones(1, dtype=dtype) if mask is None else self.xp.ascontiguousarray(mask)

    def deform_im2col(self, x, offset, mask, kernel, stride, padding, dilation, out_hw):
        x, offset = self._contiguous(x, offset)
        s = self._deform_sizes(x.shape, kernel, out_hw, stride, padding, dilation, offset, mask)
        col = self.xp.empty((s["C"], s["KH"], s["KW"], s["N"], s["OH"], s["OW"]), dtype=x.dtype)
        self._launch("deform_im2col", (x, offset, self._mask_arg(mask, x.dtype), col), s)
        return col

    def deform_col2im(self, gcol, offset, mask, x_shape, stride, padding, dilation):
        gcol, offset = self._contiguous(gcol, offset)
        _, kh, kw, _, oh, ow = gcol.shape
        s = self._deform_sizes(x_shape, (kh, kw), (oh, ow), stride, padding, dilation, offset, mask)
        gx = self.xp.zeros(x_shape, dtype=gcol.dtype)  # the kernel adds into it (atomicAdd)
        self._launch("deform_col2im", (gcol, offset, self._mask_arg(mask, gcol.dtype), gx), s)
        return gx

    def deform_col2im_coord(self, gcol, x, offset, mask, stride, padding, dilation):
        """(goffset, gmask); gmask is None without a mask."""
        gcol, x, offset = self._contiguous(gcol, x, offset)
        _, kh, kw, _, oh, ow = gcol.shape
        s = self._deform_sizes(x.shape, (kh, kw), (oh, ow), stride, padding, dilation, offset, mask)
        goffset = self.xp.empty(offset.shape, dtype=gcol.dtype)
        gmask = self.xp.empty(mask.shape if mask is not None else (1,), dtype=gcol.dtype)
        self._launch("deform_col2im_coord", (gcol, x, offset, self._mask_arg(mask, gcol.dtype), goffset, gmask), s)
        return goffset, (gmask if mask is not None else None)

    # ---- max pooling (pool.cu) ----
    def max_pool2d_forward(self, x, kernel, stride, padding, dilation, out_hw):
        """(y, argmax): argmax is the int64 flat index inside each (n, c) plane."""
        (x,) = self._contiguous(x)
        s = geometry(x.shape, (1, 1) + tuple(kernel), out_hw, stride, padding, dilation)
        y = self.xp.empty((s["N"], s["C"], s["OH"], s["OW"]), dtype=x.dtype)
        argmax = self.xp.empty(y.shape, dtype=np.int64)
        self._launch("max_pool2d_forward", (x, y, argmax), s)
        return y, argmax

    def max_pool2d_backward(self, gy, argmax, x_shape):
        gy, argmax = self._contiguous(gy, argmax)
        s = geometry(x_shape, (1, 1, 1, 1), gy.shape[2:], (1, 1), (0, 0), (1, 1))
        gx = self.xp.zeros(x_shape, dtype=gy.dtype)
        self._launch("max_pool2d_backward", (gy, argmax, gx), s)
        return gx


API_NAMES = [name for name in vars(KernelAPI) if not name.startswith("_")]
