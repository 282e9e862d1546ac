"""Convolution by im2col + one (batched) GEMM.

im2col lays every receptive field out as a column; the convolution is then a
single matrix product per group. The column layout used here is
``(C, kh, kw, N, oh, ow)``: reshaped to ``(groups, C/groups*kh*kw, N*oh*ow)``
it is contiguous, so grouped and depthwise convolution are one batched
matmul, never a Python loop over groups.

col2im is the *adjoint* of im2col, not its inverse: overlapping windows
accumulate. Forward keeps ``x`` (not the kh*kw-times larger column buffer)
and backward rebuilds the columns, trading one im2col for memory.
"""
import numpy as np

from .. import backend, kernels
from ..autograd import Function
from . import validate
from .math import check_float


def pair(value, name="argument"):
    """An int or a pair of ints as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


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


# ---- which route a convolution takes (conv_algo) ----
#   "im2col": im2col + one batched GEMM, with the im2col/col2im kernels
#             (Numba on the CPU, CUDA on the GPU).
#   "direct": hand-written kernels, no column buffer: the depthwise kernels
#             (Numba/CUDA) for depthwise convs, the tiled CUDA convolution
#             for the rest on the GPU; on the CPU a dense conv stays on im2col
#             (BLAS's GEMM beats any direct loop there).
#   "auto":   the best per case: depthwise -> direct, everything else -> im2col.
# Dtypes the kernels do not cover (float16) take the NumPy/CuPy route above,
# which stays the reference the kernels are tested against.
CONV_ALGOS = ("im2col", "direct", "auto")
_conv_algo = "auto"


def set_conv_algo(algo):
    """Set the default conv2d route ('im2col', 'direct' or 'auto'); conv_algo=None uses it."""
    global _conv_algo
    _conv_algo = _check_algo(algo)


def get_conv_algo():
    return _conv_algo


def _check_algo(algo):
    if algo not in CONV_ALGOS:
        raise ValueError(f"conv2d: conv_algo must be one of {CONV_ALGOS} (or None for the default "
                         f"{_conv_algo!r}), got {algo!r}")
    return algo


def _conv_route(algo, x, w, groups):
    """'reference', 'im2col', 'depthwise' or 'direct' for this call."""
    if not kernels.supports(x, w):
        return "reference"
    depthwise = groups == x.shape[1] and w.shape[1] == 1 and groups > 1
    if algo == "im2col":
        return "im2col"
    if depthwise:
        return "depthwise"
    return "direct" if algo == "direct" and backend.device_of(x) == "gpu" else "im2col"


class Conv2d(Function):
    """y[n, o] = sum over the group's channels and window of w[o] * x[n] (+ b[o])."""

    def __init__(self, stride, padding, dilation, groups, out_size=None, algo="im2col"):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.out_size = out_size  # given only for 'same' with an even kernel (one more pixel bottom/right)
        self.algo = algo

    def _im2col(self, x, kernel, out_size=None):
        if self.route == "reference":
            return im2col(x, kernel, self.stride, self.padding, self.dilation, out_size)
        if out_size is None:
            out_size = tuple(conv_output_size(x.shape[2 + a], kernel[a], self.stride[a], self.padding[a],
                                              self.dilation[a]) for a in range(2))
        return kernels.for_array(x).im2col(x, kernel, self.stride, self.padding, self.dilation, out_size)

    def _col2im(self, col, x_shape):
        if self.route == "reference":
            return col2im(col, x_shape, self.stride, self.padding, self.dilation)
        return kernels.for_array(col).col2im(col, x_shape, self.stride, self.padding, self.dilation)

    def forward(self, x, w, b=None):
        self.route = _conv_route(self.algo, x, w, self.groups)
        if self.route in ("depthwise", "direct"):
            return self._direct_forward(x, w, b)
        n = x.shape[0]
        c_out, c_group, kh, kw = w.shape
        g = self.groups
        col = self._im2col(x, (kh, kw), out_size=self.out_size)
        oh, ow = col.shape[-2:]
        y = w.reshape(g, c_out // g, c_group * kh * kw) @ col.reshape(g, c_group * kh * kw, n * oh * ow)
        y = y.reshape(c_out, n, oh, ow).transpose(1, 0, 2, 3)
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        xp = backend.get_array_module(x)
        self.x = x if self.needs_input_grad[1] else None  # w's gradient needs the columns of x
        self.x_shape = x.shape
        self.w = w if self.needs_input_grad[0] else None
        self.w_shape = w.shape
        return xp.ascontiguousarray(y)

    def backward(self, gy):
        if self.route in ("depthwise", "direct"):
            return self._direct_backward(gy)
        n, c_out, oh, ow = gy.shape
        _, c_group, kh, kw = self.w_shape
        g = self.groups
        gy_groups = gy.transpose(1, 0, 2, 3).reshape(g, c_out // g, n * oh * ow)
        gx = gw = gb = None
        if self.needs_input_grad[0]:
            gcol = self.w.reshape(g, c_out // g, -1).transpose(0, 2, 1) @ gy_groups
            gcol = gcol.reshape(c_group * g, kh, kw, n, oh, ow)
            gx = self._col2im(gcol, self.x_shape)
        if self.needs_input_grad[1]:
            col = self._im2col(self.x, (kh, kw), out_size=(oh, ow))
            col = col.reshape(g, c_group * kh * kw, n * oh * ow)
            # as (col @ gy^T)^T: numpy's stacked matmul reaches BLAS only when the second
            # operand's last axis is contiguous; gy @ col^T ran ~25x slower (AlexNet conv1)
            gw = (col @ gy_groups.transpose(0, 2, 1)).transpose(0, 2, 1).reshape(self.w_shape)
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            gb = gy.sum(axis=(0, 2, 3))
        return (gx, gw, gb) if len(self.needs_input_grad) > 2 else (gx, gw)

    # the direct route: kernels straight from x and w, no column buffer
    def _direct_forward(self, x, w, b):
        kern, geometry = kernels.for_array(x), (self.stride, self.padding, self.dilation)
        out_hw = self.out_size or tuple(conv_output_size(x.shape[2 + a], w.shape[2 + a], self.stride[a],
                                                         self.padding[a], self.dilation[a]) for a in range(2))
        if self.route == "depthwise":
            y = kern.depthwise_forward(x, w, *geometry, out_hw)
        else:
            y = kern.conv2d_forward(x, w, *geometry, self.groups, out_hw)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        self.x = x if self.needs_input_grad[1] else None
        self.w = w if self.needs_input_grad[0] else None
        self.x_shape, self.w_shape = x.shape, w.shape
        return y

    def _direct_backward(self, gy):
        kern, geometry = kernels.for_array(gy), (self.stride, self.padding, self.dilation)
        groups = () if self.route == "depthwise" else (self.groups,)
        name = "depthwise" if self.route == "depthwise" else "conv2d"
        gx = gw = gb = None
        if self.needs_input_grad[0]:
            gx = getattr(kern, f"{name}_backward_input")(gy, self.w, self.x_shape, *geometry, *groups)
        if self.needs_input_grad[1]:
            gw = getattr(kern, f"{name}_backward_weight")(gy, self.x, self.w_shape, *geometry, *groups)
        if len(self.needs_input_grad) > 2 and self.needs_input_grad[2]:
            gb = gy.sum(axis=(0, 2, 3))
        return (gx, gw, gb) if len(self.needs_input_grad) > 2 else (gx, gw)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, conv_algo=None):
    """2-D convolution (cross-correlation), as torch.nn.functional.conv2d.

    x: (N, C_in, H, W); weight: (C_out, C_in/groups, kh, kw); bias: (C_out,).
    ``padding`` may be an int, a pair, 'valid' or 'same' (stride 1).
    ``conv_algo`` picks the route ('im2col', 'direct', 'auto'; None: the
    default from set_conv_algo); every route gives the same numbers.
    """
    check_float("conv2d", x, weight, bias)
    stride, padding, dilation, groups = validate.conv2d_args("conv2d", stride, padding, dilation, groups)
    validate.conv_input("conv2d", x.shape)
    algo = _conv_algo if conv_algo is None else _check_algo(conv_algo)
    if x.ndim != 4:
        raise ValueError(f"conv2d expects input of shape (N, C, H, W), got {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects weight of shape (C_out, C_in/groups, kh, kw), got {weight.shape}")
    c_in, (c_out, c_group, kh, kw) = x.shape[1], weight.shape
    if groups < 1 or c_in % groups or c_out % groups:
        raise ValueError(f"conv2d: groups={groups} must divide both in-channels ({c_in}) and "
                         f"out-channels ({c_out})")
    if c_group * groups != c_in:
        raise ValueError(f"conv2d: input has {c_in} channels but weight {weight.shape} expects "
                         f"{c_group * groups} (= {c_group} per group x groups={groups})")
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"conv2d: bias must have shape ({c_out},), got {bias.shape}")
    same = isinstance(padding, str) and padding == "same"
    padding = _resolve_padding(padding, (kh, kw), stride, dilation)
    out = list(x.shape[2:]) if same else \
        [conv_output_size(x.shape[2 + i], (kh, kw)[i], stride[i], padding[i], dilation[i]) for i in range(2)]
    if min(out) < 1:
        raise ValueError(f"conv2d: input {x.shape[2:]} (padding {padding}) is smaller than the "
                         f"dilated kernel {(kh, kw)} (dilation {dilation})")
    # 'same' with an even dilated kernel: torch pads the odd pixel at the bottom/right, which im2col
    # does when asked for an output as large as the input
    fn = Conv2d(stride, padding, dilation, groups, out_size=tuple(x.shape[2:]) if same else None, algo=algo)
    return fn(x, weight) if bias is None else fn(x, weight, bias)


def _resolve_padding(padding, kernel, stride, dilation):
    if padding == "valid":
        return 0, 0
    if padding == "same":
        if stride != (1, 1):
            raise ValueError("conv2d: padding='same' needs stride 1")
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return total[0] // 2, total[1] // 2  # an odd total puts its extra pixel bottom/right (torch)
    if isinstance(padding, str):
        raise ValueError(f"conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    return pair(padding, "padding")


class ConvTranspose2d(Function):
    """The adjoint of Conv2d's input gradient: scatter every input pixel through the kernel.

    Forward is conv2d's backward-to-input (one batched GEMM, then col2im);
    backward to the input is conv2d's forward (im2col, then GEMM), and the
    weight gradient is one more GEMM against the same columns.
    """

    def __init__(self, stride, padding, dilation, groups, out_size):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.out_size = out_size

    def forward(self, x, w, b=None):
        n, c_in, h, w_in = x.shape
        _, c_group_out, kh, kw = w.shape  # (C_in, C_out/groups, kh, kw) as torch
        g = self.groups
        x_groups = x.transpose(1, 0, 2, 3).reshape(g, c_in // g, n * h * w_in)
        col = w.reshape(g, c_in // g, c_group_out * kh * kw).transpose(0, 2, 1) @ x_groups
        col = col.reshape(g * c_group_out, kh, kw, n, h, w_in)
        y = col2im(col, (n, g * c_group_out) + self.out_size, self.stride, self.padding, self.dilation)
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        self.x = x if self.needs_input_grad[1] else None
        self.w = w if self.needs_input_grad[0] else None
        self.x_shape, self.w_shape = x.shape, w.shape
        return backend.get_array_module(x).ascontiguousarray(y)

    def backward(self, gy):
        n, c_in, h, w_in = self.x_shape
        _, c_group_out, kh, kw = self.w_shape
        g = self.groups
        has_bias = len(self.needs_input_grad) > 2
        gx = gw = gb = None
        if self.needs_input_grad[0] or self.needs_input_grad[1]:
            col = im2col(gy, (kh, kw), self.stride, self.padding, self.dilation, out_size=(h, w_in))
            col = col.reshape(g, c_group_out * kh * kw, n * h * w_in)
        if self.needs_input_grad[0]:
            gx = self.w.reshape(g, c_in // g, c_group_out * kh * kw) @ col
            gx = backend.get_array_module(gy).ascontiguousarray(
                gx.reshape(c_in, n, h, w_in).transpose(1, 0, 2, 3))
        if self.needs_input_grad[1]:
            x_groups = self.x.transpose(1, 0, 2, 3).reshape(g, c_in // g, n * h * w_in)
            gw = (col @ x_groups.transpose(0, 2, 1)).transpose(0, 2, 1).reshape(self.w_shape)  # BLAS order, as Conv2d
        if has_bias and self.needs_input_grad[2]:
            gb = gy.sum(axis=(0, 2, 3))
        return (gx, gw, gb) if has_bias else (gx, gw)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed convolution, as torch.nn.functional.conv_transpose2d (note: groups before dilation).

    x: (N, C_in, H, W); weight: (C_in, C_out/groups, kh, kw); bias: (C_out,).
    Output size: (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1.
    """
    check_float("conv_transpose2d", x, weight, bias)
    stride, padding, output_padding, dilation, groups = validate.conv_transpose2d_args(
        "conv_transpose2d", stride, padding, output_padding, dilation, groups)
    validate.conv_input("conv_transpose2d", x.shape)
    if x.ndim != 4:
        raise ValueError(f"conv_transpose2d expects input of shape (N, C, H, W), got {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"conv_transpose2d expects weight of shape (C_in, C_out/groups, kh, kw), "
                         f"got {weight.shape}")
    c_in, (c_w, c_group_out, kh, kw) = x.shape[1], weight.shape
    if groups < 1 or c_w % groups:
        raise ValueError(f"conv_transpose2d: groups={groups} must divide the in-channels of weight "
                         f"{weight.shape} ({c_w})")
    if c_in != c_w:
        raise ValueError(f"conv_transpose2d: input has {c_in} channels but weight {weight.shape} expects "
                         f"{c_w} (weight is (C_in, C_out/groups, kh, kw))")
    c_out = c_group_out * groups
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"conv_transpose2d: bias must have shape ({c_out},), got {bias.shape}")
    out = tuple((x.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * ((kh, kw)[i] - 1)
                + output_padding[i] + 1 for i in range(2))
    if min(out) < 1:
        raise ValueError(f"conv_transpose2d: output size {out} is too small (input {x.shape[2:]}, "
                         f"padding {padding}); reduce the padding")
    fn = ConvTranspose2d(stride, padding, dilation, groups, out)
    return fn(x, weight) if bias is None else fn(x, weight, bias)
