"""conv2d and conv_transpose2d as autograd Functions; how they are computed is conv_routes.py's table.

Conv2d picks its route once per call (conv_routes.choose: the NumPy
reference, the im2col kernels, 1x1 as a GEMM, Winograd, the direct depthwise
and CUDA kernels) and runs that route's forward, backward_input and
backward_weight. ConvTranspose2d is the same three functions with the roles
swapped: its forward is the convolution's input gradient. Forward keeps ``x``
(not a kh*kw-times larger column buffer) and backward rebuilds what it needs;
a route may offer ``forward_and_save``, whose second result its backward takes
as ``kept`` (the im2col route: a small layer's columns, conv_routes.py).

The double backward of a convolution is convolutions again: the input gradient
is a transposed convolution of gy by w (ConvTranspose2d), the weight gradient
the op ConvWeightGrad(gy, x), and each of the three is linear in each input, so
their differentiable backwards are made of the same three ops, with the same
geometry on the same route.
"""
import math

from .. import backend
from ..autograd import Function
from . import validate
from .conv_routes import (  # noqa: F401 (re-exported: im2col, col2im, conv_output_size for pooling; the setters)
    CONV_ALGOS, ROUTES, Geometry, check_algo, choose, col2im, conv_output_size, get_conv_algo, im2col,
    set_conv_algo)
from .math import check_float


def bias_gradient(gy):
    """gy (N, C, H, W) summed over the batch and the pixels: one GEMV, (N*C, H*W) @ ones, then the N rows of each
    channel. NumPy's gy.sum(axis=(0, 2, 3)) takes three times as long on a conv's gradient (LeNet C3's
    64x16x10x10: 38 vs 9 us; ResNet-20's 32x16x32x32: 89 vs 26 us). Half precision keeps NumPy's sum (its
    matmul has no BLAS and would add in float16)."""
    if gy.dtype.itemsize < 4:
        return gy.sum(axis=(0, 2, 3))
    n, c = gy.shape[:2]
    pixels = math.prod(gy.shape[2:])
    ones = backend.get_array_module(gy).ones(pixels, dtype=gy.dtype)
    return (gy.reshape(n * c, pixels) @ ones).reshape(n, c).sum(axis=0)


def pair(value, name="argument"):
    """An int or a pair of ints as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


class Conv2d(Function):
    """y[n, o] = sum over the group's channels and window of w[o] * x[n] (+ b[o]).

    The route is chosen once per call (conv_routes.choose); forward and
    backward then run that route's functions, side by side in conv_routes.py.
    """

    saved_inputs = {"x": 0, "w": 1}

    def __init__(self, stride, padding, dilation, groups, out_size=None, algo=None):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.out_size = out_size  # given only for 'same' with an even kernel (one more pixel bottom/right)
        self.algo = algo  # None: the default from set_conv_algo

    def forward(self, x, w, b=None):
        out_hw = self.out_size or tuple(conv_output_size(x.shape[2 + a], w.shape[2 + a], self.stride[a],
                                                         self.padding[a], self.dilation[a]) for a in range(2))
        self.geo = Geometry(self.stride, self.padding, self.dilation, self.groups, tuple(out_hw))
        chosen = choose(self.algo, x, w, self.geo)
        self.route, self.impl = chosen.name, chosen.impl
        if self.needs_input_grad[1] and hasattr(self.impl, "forward_and_save"):  # (work its weight gradient reuses)
            y, self.kept = self.impl.forward_and_save(x, w, self.geo)
        else:
            y, self.kept = self.impl.forward(x, w, self.geo), None
        if b is not None:
            y += b.reshape(1, -1, 1, 1)  # routes return a fresh array
        self.x = x if self.needs_input_grad[1] else None  # w's gradient needs x
        self.w = w if self.needs_input_grad[0] else None  # x's gradient needs w
        self.x_shape, self.w_shape = x.shape, w.shape
        return backend.get_array_module(y).ascontiguousarray(y)

    def backward(self, gy):
        route, needs = self.impl, self.needs_input_grad
        kept = {} if self.kept is None else {"kept": self.kept}
        if needs[0] and needs[1] and hasattr(route, "backward"):  # a route that computes both at once
            gx, gw = route.backward(gy, self.x, self.w, self.geo, **kept)
        else:
            gx = route.backward_input(gy, self.w, self.x_shape, self.geo) if needs[0] else None
            gw = route.backward_weight(gy, self.x, self.w_shape, self.geo, **kept) if needs[1] else None
        if len(needs) == 2:
            return gx, gw
        return gx, gw, (bias_gradient(gy) if needs[2] else None)

    def differentiable_backward(self, gy):
        needs = self.needs_input_grad
        gx = _input_gradient(self.geo, self.route, self.x_shape)(gy, self.saved_input(1)) if needs[0] else None
        gw = ConvWeightGrad(self.geo, self.route, self.w_shape)(gy, self.saved_input(0)) if needs[1] else None
        return (gx, gw) if len(needs) == 2 else (gx, gw, gy.sum((0, 2, 3)) if needs[2] else None)


def _convolution(geo, route):
    """The convolution of this geometry on this route, as a Function of (x, w)."""
    return Conv2d(geo.stride, geo.padding, geo.dilation, geo.groups, out_size=geo.out_hw, algo=route)


def _input_gradient(geo, route, x_shape):
    """The input gradient of that convolution, as a Function of (gy, w): a transposed convolution."""
    return ConvTranspose2d(geo.stride, geo.padding, geo.dilation, geo.groups, out_size=tuple(x_shape[2:]), algo=route)


class ConvWeightGrad(Function):
    """gw = the weight gradient of a convolution (``geo``, ``route``) for output gradient gy and input x.

    Linear in gy (its adjoint: convolve x with the incoming ggw) and in x (a transposed convolution of gy
    by ggw): the op a convolution's weight gradient becomes when backward is differentiated.
    """

    saved_inputs = {"gy": 0, "x": 1}

    def __init__(self, geo, route, w_shape):
        self.geo, self.route, self.w_shape = geo, route, tuple(w_shape)

    def forward(self, gy, x):
        self.gy = gy if self.needs_input_grad[1] else None  # x's gradient needs gy
        self.x = x if self.needs_input_grad[0] else None  # gy's gradient needs x
        self.x_shape = x.shape
        return ROUTES[self.route].impl.backward_weight(gy, x, self.w_shape, self.geo)

    def backward(self, ggw):
        route = ROUTES[self.route].impl
        g_gy = route.forward(self.x, ggw, self.geo) if self.needs_input_grad[0] else None
        g_x = route.backward_input(self.gy, ggw, self.x_shape, self.geo) if self.needs_input_grad[1] else None
        return g_gy, g_x

    def differentiable_backward(self, ggw):
        needs = self.needs_input_grad
        g_gy = _convolution(self.geo, self.route)(self.saved_input(1), ggw) if needs[0] else None
        g_x = _input_gradient(self.geo, self.route, self.x_shape)(self.saved_input(0), ggw) if needs[1] else None
        return g_gy, g_x


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, conv_algo=None):
    """2-D convolution (cross-correlation), as torch.nn.functional.conv2d.

    x: (N, C_in, H, W); weight: (C_out, C_in/groups, kh, kw); bias: (C_out,).
    ``padding`` may be an int, a pair, 'valid' or 'same' (stride 1).
    ``conv_algo`` picks the route: one of conv_routes.ROUTES ('reference',
    'im2col', 'gemm1x1', 'window', 'winograd', 'depthwise', 'direct') where it fits the
    call, else 'auto''s pick; None: the default from set_conv_algo. Every
    route gives the same numbers.
    """
    check_float("conv2d", x, weight, bias)
    stride, padding, dilation, groups = validate.conv2d_args("conv2d", stride, padding, dilation, groups)
    validate.conv_input("conv2d", x.shape)
    algo = None if conv_algo is None else check_algo(conv_algo)  # None: set_conv_algo's default
    if x.ndim != 4:
        raise ValueError(f"conv2d expects input of shape (N, C, H, W), got {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects weight of shape (C_out, C_in/groups, kh, kw), got {weight.shape}")
    validate.conv_kernel("conv2d", weight.shape)
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
    padding = _resolve_padding(padding, (kh, kw), dilation)
    out = list(x.shape[2:]) if same else \
        [conv_output_size(x.shape[2 + i], (kh, kw)[i], stride[i], padding[i], dilation[i]) for i in range(2)]
    if min(out) < 1:
        raise ValueError(f"conv2d: input {x.shape[2:]} (padding {padding}) is smaller than the "
                         f"dilated kernel {(kh, kw)} (dilation {dilation})")
    # 'same' with an even dilated kernel: torch pads the odd pixel at the bottom/right, which im2col
    # does when asked for an output as large as the input
    fn = Conv2d(stride, padding, dilation, groups, out_size=tuple(x.shape[2:]) if same else None, algo=algo)
    return fn(x, weight) if bias is None else fn(x, weight, bias)


def _resolve_padding(padding, kernel, dilation):
    """A checked padding (validate.conv_padding: 'valid', 'same' at stride 1, or a pair) as a pair."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return total[0] // 2, total[1] // 2  # an odd total puts its extra pixel bottom/right (torch)
    return padding


class ConvTranspose2d(Function):
    """The adjoint of Conv2d's input gradient: scatter every input pixel through the kernel.

    Read the weight (C_in, C_out/groups, kh, kw) as the weight of the convolution
    that maps the output back to the input; then forward is that convolution's
    backward_input, the input gradient is its forward and the weight gradient
    its backward_weight with the two activations swapped: one route table
    (conv_routes.py) serves both ops.
    """

    saved_inputs = {"x": 0, "w": 1}

    def __init__(self, stride, padding, dilation, groups, out_size, algo=None):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.out_size = out_size
        self.algo = algo  # None: the default from set_conv_algo

    def forward(self, x, w, b=None):
        n, _, h, w_in = x.shape
        self.y_shape = (n, w.shape[1] * self.groups) + tuple(self.out_size)  # the convolution's input
        self.geo = Geometry(self.stride, self.padding, self.dilation, self.groups, (h, w_in))
        chosen = choose(self.algo, x, w, self.geo, conv_input_shape=self.y_shape)
        self.route, self.impl = chosen.name, chosen.impl
        y = self.impl.backward_input(x, w, self.y_shape, self.geo)
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        self.x = x if self.needs_input_grad[1] else None
        self.w = w if self.needs_input_grad[0] else None
        self.w_shape = w.shape
        return backend.get_array_module(y).ascontiguousarray(y)

    def backward(self, gy):
        route = self.impl
        gx = route.forward(gy, self.w, self.geo) if self.needs_input_grad[0] else None
        gw = route.backward_weight(self.x, gy, self.w_shape, self.geo) if self.needs_input_grad[1] else None
        if len(self.needs_input_grad) == 2:
            return gx, gw
        return gx, gw, (bias_gradient(gy) if self.needs_input_grad[2] else None)

    def differentiable_backward(self, gy):
        needs = self.needs_input_grad
        gx = _convolution(self.geo, self.route)(gy, self.saved_input(1)) if needs[0] else None
        gw = ConvWeightGrad(self.geo, self.route, self.w_shape)(self.saved_input(0), gy) if needs[1] else None
        return (gx, gw) if len(needs) == 2 else (gx, gw, gy.sum((0, 2, 3)) if needs[2] else None)


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
    validate.conv_kernel("conv_transpose2d", weight.shape)
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
