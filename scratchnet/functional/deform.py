"""deform_conv2d: deformable convolution v1 (Dai et al. 2017) and v2 (Zhu et al. 2019), as torchvision.ops.

A convolution whose taps sample the input at learned fractional offsets (bilinear interpolation),
each tap's sample optionally scaled by a learned modulation mask (v2). How it is computed (the
deformable im2col, the GEMMs, the adjoints, the routes) is deform_routes.py; this file holds the
argument checks and the autograd Function.
"""
from .. import backend
from ..autograd import Function, Tensor
from . import deform_routes, validate
from .conv_routes import conv_output_size
from .math import check_float

OP = "deform_conv2d"


class DeformConv2d(Function):
    """y = W @ columns(x sampled at the offset grid, times the mask) (+ b), and its five gradients.

    Inputs in order: x, offset, weight, then the mask and the bias where given. Forward keeps the
    inputs, not the kh*kw-times larger columns; backward rebuilds the columns for the weight gradient.
    The route (deform_routes.choose) is picked once per call; ``self.route`` tells which. It has no
    differentiable backward yet: create_graph=True through it raises, naming it.
    """

    saved_inputs = {"x": 0, "offset": 1, "w": 2, "mask": 3}  # (self.mask is None without a mask)

    def __init__(self, geo, has_mask, has_bias):
        self.geo, self.has_mask, self.has_bias = geo, has_mask, has_bias

    def forward(self, x, offset, w, *optional):
        mask = optional[0] if self.has_mask else None
        self.route = deform_routes.choose(x, offset, w, mask)
        if x.shape[0] == 0:  # an empty batch: an empty output, as torchvision
            y = backend.get_array_module(x).zeros((0, w.shape[0]) + tuple(self.geo.out_hw), dtype=x.dtype)
        else:
            y = deform_routes.forward(deform_routes.ROUTES[self.route], x, offset, mask, w, self.geo)
        if self.has_bias:
            y += optional[-1].reshape(1, -1, 1, 1)
        self.x, self.offset, self.mask, self.w = x, offset, mask, w
        return y

    def backward(self, gy):
        x, offset, mask, w = self.x, self.offset, self.mask, self.w
        needs = self.needs_input_grad  # x, offset, weight, [mask], [bias]
        wanted = (needs[0], needs[1], self.has_mask and needs[3], needs[2])  # the route's order: x, offset, mask, w
        if x.shape[0] == 0:  # nothing was sampled: zero gradients (torchvision's too)
            xp = backend.get_array_module(gy)
            gx, goffset, gmask, gw = (xp.zeros_like(a) if want else None
                                      for a, want in zip((x, offset, mask, w), wanted))
        else:
            gx, goffset, gmask, gw = deform_routes.backward(deform_routes.ROUTES[self.route], gy, x, offset, mask, w,
                                                            self.geo, wanted)
        grads = [gx, goffset, gw]
        if self.has_mask:
            grads.append(gmask)
        if self.has_bias:
            grads.append(gy.sum(axis=(0, 2, 3)) if needs[-1] else None)
        return tuple(grads)


def deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """Deformable convolution, as torchvision.ops.deform_conv2d (v2 with a mask, v1 without).

    input (N, C_in, H, W); offset (N, 2*offset_groups*kh*kw, out_h, out_w): a (dy, dx) pair per kernel
    tap, per offset group (offset_groups read from its channels, dividing C_in); weight
    (C_out, C_in/groups, kh, kw) (groups read from its shape); bias (C_out,); mask
    (N, offset_groups*kh*kw, out_h, out_w). stride, padding, dilation: ints or pairs. The output is
    (N, C_out, out_h, out_w), out_h and out_w as conv2d's.
    """
    check_float(OP, input, offset, weight, bias, mask)
    _same_dtype_and_device(input, offset=offset, weight=weight, bias=bias, mask=mask)
    stride = validate.at_least(OP, "stride", stride, 1, "non-positive stride is not supported")
    padding = validate.at_least(OP, "padding", padding, 0, "negative padding is not supported")
    dilation = validate.at_least(OP, "dilation", dilation, 1, "non-positive dilation is not supported")
    geo = _geometry(input.shape, weight.shape, stride, padding, dilation)
    (n, c_in), (kh, kw), out_hw = input.shape[:2], geo.kernel, geo.out_hw
    taps = kh * kw
    if len(offset.shape) != 4 or offset.shape[1] == 0 or offset.shape[1] % (2 * taps) \
            or c_in % (offset.shape[1] // (2 * taps)):
        raise ValueError(f"{OP}: offset must have shape (N, 2*offset_groups*kh*kw, out_h, out_w) = "
                         f"({n}, {2 * taps}*offset_groups, {out_hw[0]}, {out_hw[1]}) with offset_groups dividing the "
                         f"input's {c_in} channels, got {tuple(offset.shape)}")
    offset_groups = offset.shape[1] // (2 * taps)
    _check_shape("offset", offset.shape, (n, 2 * offset_groups * taps) + out_hw,
                 "(N, 2*offset_groups*kh*kw, out_h, out_w)")
    if mask is not None:
        _check_shape("mask", mask.shape, (n, offset_groups * taps) + out_hw, "(N, offset_groups*kh*kw, out_h, out_w)")
    if bias is not None:
        _check_shape("bias", bias.shape, (weight.shape[0],), "(C_out,)")
    fn = DeformConv2d(geo, mask is not None, bias is not None)
    return fn(input, offset, weight, *[a for a in (mask, bias) if a is not None])


def _check_shape(name, shape, expected, layout):
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{OP}: {name} must have shape {layout} = {tuple(expected)}, got {tuple(shape)}")


def _same_dtype_and_device(input, **others):
    for name, tensor in others.items():
        if tensor is None:
            continue
        if tensor.dtype != input.dtype:
            raise TypeError(f"{OP}: {name} is {tensor.dtype} but the input is {input.dtype}; give every tensor the "
                            f"input's dtype ({name}.to(dtype=...))")
        device, input_device = _device(tensor), _device(input)
        if device != input_device:
            raise ValueError(f"{OP}: {name} is on the {device} but the input on the {input_device}; move it with "
                             f"{name}.to({input_device!r})")


def _device(tensor):
    return tensor.device if isinstance(tensor, Tensor) else backend.device_of(tensor)


def _geometry(x_shape, w_shape, stride, padding, dilation):
    """The checked input and weight as a Geometry; groups come from the weight's shape (C_in / weight.shape[1]),
    as torchvision reads them."""
    if len(x_shape) != 4:
        raise ValueError(f"{OP} expects input of shape (N, C_in, H, W), got {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"{OP} expects weight of shape (C_out, C_in/groups, kh, kw), got {tuple(w_shape)}")
    validate.conv_input(OP, x_shape)
    c_in, (c_out, c_group, kh, kw) = x_shape[1], w_shape
    if c_group == 0 or c_in % c_group or c_out % (c_in // c_group):
        raise ValueError(f"{OP}: weight must have shape (C_out, C_in/groups, kh, kw) with groups dividing C_in = "
                         f"{c_in} and C_out, got {tuple(w_shape)}")
    out_hw = tuple(conv_output_size(x_shape[2 + a], (kh, kw)[a], stride[a], padding[a], dilation[a]) for a in range(2))
    if min(out_hw) < 1:
        raise ValueError(f"{OP}: input {tuple(x_shape[2:])} (padding {padding}) is smaller than the dilated kernel "
                         f"{(kh, kw)} (dilation {dilation})")
    return deform_routes.Geometry((kh, kw), stride, padding, dilation, c_in // c_group, out_hw)
