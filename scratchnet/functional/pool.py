"""Pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d (torch's numbers, rounding and divisors).

Max and average pooling are built on conv's ``im2col``: the columns
(C, kh, kw, N, oh, ow) hold every window, so pooling is a reduction over the
kernel axes and its backward is ``col2im`` (the adjoint: overlapping windows,
as in AlexNet's 3x3/2 pool, add up). Output sizes come from the same
``conv_output_size`` as convolution, so pooled and convolved branches agree
(Inception's concat depends on it).

torch's rules kept here:

* ``ceil_mode`` adds a last window that may hang off the bottom/right edge,
  but only if it starts inside the input or its left padding.
* max pooling pads with -inf and sends the gradient to the first maximum of
  each window (row-major order inside the window), as torch does (and, like
  torch, to the last NaN of a window holding NaNs).
* average pooling divides a window by its size clipped to the padded input
  (``count_include_pad=True``) or to the real input (``False``); a ceil_mode
  window hanging past the padding is divided by the clipped size even with
  ``count_include_pad=True``. ``divisor_override`` replaces the divisor.
* padding may be at most half the kernel.

Both backwards are linear in the gradient with what forward found held
constant (which input is each window's maximum; each window's divisor), so
their differentiable backwards are ops of their own: max pooling's scatters
the gradient to the maxima (PlaneScatterAdd, whose adjoint gathers it back),
average pooling's spreads each window's gradient (AvgPool2dAdjoint, whose
adjoint is average pooling again).
"""
from .. import backend, kernels
from ..autograd import Function, Tensor
from . import validate
from .conv import col2im, conv_output_size, im2col
from .math import check_float, mean


def pool_geometry(op, shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Validate the options for an input of ``shape`` (N, C, H, W); return the pairs and the output size."""
    if len(shape) != 4:
        raise ValueError(f"{op} expects input of shape (N, C, H, W), got {shape}")
    kernel, stride, padding, dilation = validate.pool2d_args(op, kernel_size, stride, padding, dilation)
    out = tuple(conv_output_size(shape[2 + i], kernel[i], stride[i], padding[i], dilation[i], ceil_mode)
                for i in range(2))
    if min(out) < 1:
        raise ValueError(f"{op}: input {shape} is too small for kernel_size={kernel}, dilation={dilation}, "
                         f"padding={padding} (output size would be {out})")
    return kernel, stride, padding, dilation, out


def _window_argmax(col, y):
    """Which entry along axis 1 is the window's max ``y``: torch's choice, the first maximum, or the last NaN.

    A few elementwise passes over the kernel positions (NumPy's strided argmax
    over axis 1 is several times slower).
    """
    xp = backend.get_array_module(col)
    index = xp.zeros(y.shape, dtype=xp.int64)
    for k in range(col.shape[1] - 1, -1, -1):  # backwards, so the first match is written last
        index[col[:, k] == y] = k
    if bool(xp.isnan(y).any()):  # torch's kernel takes every NaN it meets, so the last one wins
        for k in range(col.shape[1]):
            index[xp.isnan(col[:, k])] = k
    return index


class MaxPool2d(Function):
    def __init__(self, kernel, stride, padding, dilation, out_size):
        self.kernel, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        self.out_size = out_size

    def forward(self, x):
        self.x_shape = x.shape
        self.plane_argmax = None
        if kernels.supports(x):  # the Numba / CUDA max-pool kernels (same rules, argmax per plane)
            y, self.plane_argmax = kernels.for_array(x).max_pool2d_forward(
                x, self.kernel, self.stride, self.padding, self.dilation, self.out_size)
            return y
        xp = backend.get_array_module(x)
        n, c = x.shape[:2]
        kh, kw = self.kernel
        oh, ow = self.out_size
        col = im2col(x, self.kernel, self.stride, self.padding, self.dilation, self.out_size,
                     pad_value=-xp.inf).reshape(c, kh * kw, n, oh, ow)
        y = col.max(axis=1)
        self.argmax = _window_argmax(col, y)
        self.x_shape = x.shape
        return xp.ascontiguousarray(y.transpose(1, 0, 2, 3))

    def backward(self, gy):
        if self.plane_argmax is not None:
            return (kernels.for_array(gy).max_pool2d_backward(gy, self.plane_argmax, self.x_shape),)
        xp = backend.get_array_module(gy)
        c, n, oh, ow = self.argmax.shape
        kh, kw = self.kernel
        # one-hot over the window positions: an elementwise scatter that runs on any device
        onehot = xp.arange(kh * kw).reshape(1, -1, 1, 1, 1) == self.argmax[:, None]
        gcol = (onehot * gy.transpose(1, 0, 2, 3)[:, None]).reshape(c, kh, kw, n, oh, ow)
        return (col2im(gcol, self.x_shape, self.stride, self.padding, self.dilation),)

    def differentiable_backward(self, gy):  # which input is the maximum is constant where the derivative exists
        return (PlaneScatterAdd(self.indices(), self.x_shape)(gy),)

    def indices(self):
        """torch's return_indices: each maximum's flat position h * W + w in its input plane."""
        if self.plane_argmax is not None:
            return self.plane_argmax
        xp = backend.get_array_module(self.argmax)
        kh, kw = self.kernel
        (sy, sx), (py, px), (dy, dx) = self.stride, self.padding, self.dilation
        oh, ow = self.out_size
        rows = xp.arange(oh).reshape(-1, 1) * sy - py + (self.argmax // kw) * dy
        cols = xp.arange(ow) * sx - px + (self.argmax % kw) * dx
        return (rows * self.x_shape[3] + cols).transpose(1, 0, 2, 3).astype(xp.int64)


class PlaneScatterAdd(Function):
    """(N, C, H, W) zeros with each g[n, c, i, j] added at flat position indices[n, c, i, j] of plane (n, c)."""

    def __init__(self, indices, x_shape):
        self.indices, self.x_shape = indices, tuple(x_shape)

    def forward(self, g):
        xp = backend.get_array_module(g)
        n, c, h, w = self.x_shape
        gx = xp.zeros((n * c, h * w), dtype=g.dtype)
        xp.add.at(gx, (xp.arange(n * c).reshape(-1, 1), self.indices.reshape(n * c, -1)), g.reshape(n * c, -1))
        return gx.reshape(self.x_shape)

    def backward(self, ggx):
        return (_plane_gather(ggx, self.indices),)

    def differentiable_backward(self, ggx):
        return (PlaneGather(self.indices)(ggx),)


class PlaneGather(Function):
    """out[n, c, i, j] = x[n, c] at flat position indices[n, c, i, j] (the adjoint of PlaneScatterAdd)."""

    def __init__(self, indices):
        self.indices = indices

    def forward(self, x):
        self.x_shape = x.shape
        return _plane_gather(x, self.indices)

    def backward(self, gy):
        return (PlaneScatterAdd(self.indices, self.x_shape).forward(gy),)

    def differentiable_backward(self, gy):
        return (PlaneScatterAdd(self.indices, self.x_shape)(gy),)


def _plane_gather(x, indices):
    n, c = x.shape[:2]
    planes = x.reshape(n * c, -1)
    return backend.get_array_module(x).take_along_axis(planes, indices.reshape(n * c, -1), axis=1).reshape(
        indices.shape)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over each window, as torch.nn.functional.max_pool2d (stride defaults to kernel_size).

    With ``return_indices=True`` also returns an int64 tensor of each maximum's
    flat index h * W + w in its (H, W) plane, as torch does.
    """
    check_float("max_pool2d", x)
    kernel, stride, padding, dilation, out = pool_geometry("max_pool2d", x.shape, kernel_size, stride, padding,
                                                           dilation, ceil_mode)
    fn = MaxPool2d(kernel, stride, padding, dilation, out)
    y = fn(x)
    return (y, Tensor(fn.indices())) if return_indices else y


def _window_counts(xp, size, kernel, stride, padding, out, include_pad):
    """How many input (or padded-input) positions each window covers along one axis (torch's rule)."""
    start = xp.arange(out) * stride - padding
    end = xp.minimum(start + kernel, size + padding)  # never past the right padding
    if include_pad:
        return end - start
    return xp.minimum(end, size) - xp.maximum(start, 0)


class AvgPool2d(Function):
    def __init__(self, kernel, stride, padding, out_size, count_include_pad, divisor_override, divisor=None):
        self.kernel, self.stride, self.padding, self.out_size = kernel, stride, padding, out_size
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override
        self.divisor = divisor  # each window's divisor when already known (AvgPool2dAdjoint's adjoint)

    def forward(self, x):
        self.x_shape = x.shape
        if self.divisor is None:
            self.divisor = self._divisor(x)
        return _avg_pool(x, self.kernel, self.stride, self.padding, self.out_size, self.divisor)

    def _divisor(self, x):
        if self.divisor_override:
            return x.dtype.type(self.divisor_override)
        xp = backend.get_array_module(x)
        counts = [_window_counts(xp, x.shape[2 + i], self.kernel[i], self.stride[i], self.padding[i],
                                 self.out_size[i], self.count_include_pad) for i in range(2)]
        return (counts[0].reshape(-1, 1) * counts[1]).astype(x.dtype)

    def backward(self, gy):
        return (_avg_pool_adjoint(gy, self.x_shape, self.kernel, self.stride, self.padding, self.divisor),)

    def differentiable_backward(self, gy):
        return (AvgPool2dAdjoint(self.x_shape, self.kernel, self.stride, self.padding, self.divisor)(gy),)


class AvgPool2dAdjoint(Function):
    """Average pooling's backward as an op: each window's gradient / its divisor, spread over the window."""

    def __init__(self, x_shape, kernel, stride, padding, divisor):
        self.x_shape, self.kernel, self.stride, self.padding, self.divisor = x_shape, kernel, stride, padding, divisor

    def forward(self, gy):
        self.out_size = gy.shape[2:]
        return _avg_pool_adjoint(gy, self.x_shape, self.kernel, self.stride, self.padding, self.divisor)

    def backward(self, ggx):
        return (_avg_pool(ggx, self.kernel, self.stride, self.padding, self.out_size, self.divisor),)

    def differentiable_backward(self, ggx):
        return (AvgPool2d(self.kernel, self.stride, self.padding, self.out_size, None, None, self.divisor)(ggx),)


def _avg_pool(x, kernel, stride, padding, out_size, divisor):
    xp = backend.get_array_module(x)
    n, c = x.shape[:2]
    oh, ow = out_size
    col = im2col(x, kernel, stride, padding, (1, 1), out_size)
    sums = col.reshape(c, kernel[0] * kernel[1], n, oh, ow).sum(axis=1)  # no -1: N may be 0
    return xp.ascontiguousarray((sums / divisor).transpose(1, 0, 2, 3))


def _avg_pool_adjoint(gy, x_shape, kernel, stride, padding, divisor):
    xp = backend.get_array_module(gy)
    n, c, oh, ow = gy.shape
    kh, kw = kernel
    share = (gy / divisor).transpose(1, 0, 2, 3)  # each window's gradient, spread evenly
    gcol = xp.broadcast_to(share[:, None, None], (c, kh, kw, n, oh, ow))
    return col2im(gcol, x_shape, stride, padding, (1, 1))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over each window, as torch.nn.functional.avg_pool2d (divisors explained in the module doc)."""
    divisor_override = validate.divisor_override("avg_pool2d", divisor_override)
    check_float("avg_pool2d", x)
    kernel, stride, padding, _, out = pool_geometry("avg_pool2d", x.shape, kernel_size, stride, padding, 1, ceil_mode)
    return AvgPool2d(kernel, stride, padding, out, count_include_pad, divisor_override)(x)


class AdaptiveAvgPool2d(Function):
    """Mean over torch's bins [floor(i*H/out), ceil((i+1)*H/out)): y = A_h x A_w^T with averaging matrices."""

    def __init__(self, out_size):
        self.out_size = out_size

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.a_h, self.a_w = (_bin_matrix(xp, x.shape[2 + i], self.out_size[i], x.dtype) for i in range(2))
        return self.a_h @ x @ self.a_w.T

    def backward(self, gy):
        return (self.a_h.T @ gy @ self.a_w,)

    def differentiable_backward(self, gy):
        return (Tensor(self.a_h.T) @ gy @ Tensor(self.a_w),)


def _bin_matrix(xp, size, out, dtype):
    """(out, size) matrix whose row i averages bin i of an axis of length ``size``."""
    i = xp.arange(out).reshape(-1, 1)
    start, end = (i * size) // out, -((-(i + 1) * size) // out)
    position = xp.arange(size)
    inside = (position >= start) & (position < end)
    return (inside / (end - start)).astype(dtype)


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size (int or pair; None keeps that input size), as torch."""
    check_float("adaptive_avg_pool2d", x)
    sizes = validate.adaptive_output_size("adaptive_avg_pool2d", output_size)
    if x.ndim != 4:
        raise ValueError(f"adaptive_avg_pool2d expects input of shape (N, C, H, W), got {x.shape}")
    if min(x.shape[1:]) < 1:  # torch: N may be 0, the other dims not
        raise ValueError(f"adaptive_avg_pool2d(): Expected input to have non-zero size for non-batch dimensions, "
                         f"but input has sizes {x.shape}")
    out = tuple(x.shape[2 + i] if s is None else s for i, s in enumerate(sizes))
    h, w = x.shape[2:]
    if min(out) == 0:  # torch allows an empty output size
        return AdaptiveAvgPool2d(out)(x)
    if out == (1, 1):  # global average pooling (GoogLeNet, ResNet, SENet's squeeze)
        return mean(x, (2, 3), keepdim=True)
    if h % out[0] == 0 and w % out[1] == 0:  # equal bins: a plain average pool
        kernel = (h // out[0], w // out[1])
        return avg_pool2d(x, kernel, kernel)
    return AdaptiveAvgPool2d(out)(x)
