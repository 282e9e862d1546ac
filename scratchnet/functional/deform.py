"""deform_conv2d: deformable convolution v1 (Dai et al. 2017) and v2 (Zhu et al. 2019), as torchvision.ops.

A convolution whose taps sample the input at learned fractional offsets (bilinear interpolation),
each tap's sample optionally scaled by a learned modulation mask (v2). How it is computed (the
deformable im2col, the GEMMs, the adjoints, the routes) is deform_routes.py; this file holds the
argument checks, the autograd Function, and its differentiable backward: the reference route's
formulas written with scratchnet's differentiable ops, so that second derivatives pass through.
"""
from .. import backend
from ..autograd import Function, Tensor
from . import deform_routes, validate
from .conv import bias_gradient
from .conv_routes import conv_output_size
from .math import check_float, where
from .shape import IndexAdd, stack

OP = "deform_conv2d"


class DeformConv2d(Function):
    """y = W @ columns(x sampled at the offset grid, times the mask) (+ b), and its five gradients.

    Inputs in order: x, offset, weight, then the mask and the bias where given. Forward keeps the
    inputs, not the kh*kw-times larger columns; backward rebuilds the columns for the weight gradient.
    The route (deform_routes.choose: the op's dispatch table) is picked once per call; ``self.route`` tells
    which, ``self.columns`` is what runs (the device's kernel module, or the reference). Under
    create_graph=True, ``differentiable_backward`` computes the same five gradients from Tensors
    (``_differentiable_gradients``), whatever the route.
    """

    saved_inputs = {"x": 0, "offset": 1, "w": 2, "mask": 3}  # (self.mask is None without a mask)

    def __init__(self, geo, has_mask, has_bias):
        self.geo, self.has_mask, self.has_bias = geo, has_mask, has_bias

    def forward(self, x, offset, w, *optional):
        mask = optional[0] if self.has_mask else None
        chosen = deform_routes.choose(x, offset, w, mask)
        self.route, self.columns = chosen.name, chosen.impl
        if x.shape[0] == 0:  # an empty batch: an empty output, as torchvision
            y = backend.get_array_module(x).zeros((0, w.shape[0]) + tuple(self.geo.out_hw), dtype=x.dtype)
        else:
            y = deform_routes.forward(self.columns, x, offset, mask, w, self.geo)
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
            gx, goffset, gmask, gw = deform_routes.backward(self.columns, gy, x, offset, mask, w, self.geo, wanted)
        grads = [gx, goffset, gw]
        if self.has_mask:
            grads.append(gmask)
        if self.has_bias:
            grads.append(bias_gradient(gy) if needs[-1] else None)
        return tuple(grads)

    def differentiable_backward(self, gy):
        needs = self.needs_input_grad  # x, offset, weight, [mask], [bias]
        x, offset, w = self.saved_input(0), self.saved_input(1), self.saved_input(2)
        mask = self.saved_input(3) if self.has_mask else None
        wanted = (needs[0], needs[1], self.has_mask and needs[3], needs[2])  # x, offset, mask, w
        gx, goffset, gmask, gw = _differentiable_gradients(gy, x, offset, mask, w, self.geo, wanted)
        grads = [gx, goffset, gw]
        if self.has_mask:
            grads.append(gmask)
        if self.has_bias:
            grads.append(gy.sum((0, 2, 3)) if needs[-1] else None)
        return tuple(grads)


# ---------------------------------------------------------------- the differentiable backward
# deform_routes.backward with the reference's sampling (deform_im2col, deform_col2im, deform_col2im_coord),
# line for line, on Tensors. What the offset's values decide is held constant, as it is wherever the
# derivative exists: the floored sample positions, which of their four neighbours lie in the image, and
# torchvision's inside rule. Everything else is differentiable: the fractional parts ly, lx (the offset
# plus those constants) and the bilinear weights made of them, the neighbours' values (x[index]: getitem,
# whose adjoint IndexAdd is the input gradient's scatter), the mask, the weight and gy.


def _differentiable_gradients(gy, x, offset, mask, w, geo, needs):
    """(gx, goffset, gmask, gw) as Tensors, each computed only where ``needs`` (that order) asks."""
    xp = backend.get_array_module(x.data)
    n, c, h, width = x.shape
    (c_out, c_group, kh, kw), groups = w.shape, geo.groups
    taps, pixels = kh * kw, geo.out_hw[0] * geo.out_hw[1]
    og = offset.shape[1] // (2 * taps)  # offset groups
    per_group = (n, og, c // og, taps, pixels)  # the layout the sampling works in
    k = c_group * taps

    # where each tap samples, (N, offset groups, taps, pixels): the grid plus the offset, as the forward
    base_y, base_x = (xp.asarray(b, dtype=offset.dtype) for b in
                      deform_routes.grid(geo.kernel, geo.stride, geo.padding, geo.dilation, geo.out_hw))
    pairs = offset.reshape(n, og, taps, 2, pixels)
    y, x_pos = pairs[:, :, :, 0] + base_y, pairs[:, :, :, 1] + base_x
    corners, inside, _ = deform_routes._neighbours(y.data, x_pos.data, h, width)
    ly, lx = y - xp.floor(y.data), x_pos - xp.floor(x_pos.data)  # the floors: constants
    ly, lx = ly.reshape(n, og, 1, taps, pixels), lx.reshape(n, og, 1, taps, pixels)
    hy, hx = 1 - ly, 1 - lx
    weights = (hy * hx, hy * lx, ly * hx, ly * lx)  # torchvision's order, as deform_routes._neighbours
    inside = inside.reshape(n, og, 1, taps, pixels)

    # each neighbour's flat position in x, (N, G, C/G, taps*pixels), and whether it lies in the image
    plane_start = (xp.arange(n * c) * (h * width)).reshape(n, og, c // og, 1)
    flat = [plane_start + index.reshape(n, og, 1, taps * pixels) for index, _, _ in corners]
    valid = [v.reshape(n, og, 1, taps, pixels) for _, v, _ in corners]
    if needs[1] or needs[2] or needs[3]:  # their values, (N, G, C/G, taps, pixels), 0 outside: gathers from x
        x_flat = x.reshape(-1)
        v00, v01, v10, v11 = (where(ok, x_flat[index].reshape(per_group), 0) for index, ok in zip(flat, valid))

    # the column gradient: the weight's transpose times gy, one GEMM per group, in the per-group layout
    gy_groups = gy.permute(1, 0, 2, 3).reshape(groups, c_out // groups, n * pixels)
    gx = goffset = gmask = gw = None
    if needs[0] or needs[1] or needs[2]:
        gcol = w.reshape(groups, c_out // groups, k).transpose(1, 2) @ gy_groups  # (g, K, N*oh*ow)
        g = gcol.reshape(c, kh, kw, n, *geo.out_hw).permute(3, 0, 1, 2, 4, 5).reshape(per_group)
        m = None if mask is None else mask.reshape(n, og, 1, taps, pixels)
        if needs[0]:  # deform_col2im: each sample's gradient scattered back to its four neighbours
            gm = g if m is None else g * m
            gx = sum(IndexAdd(index, (n * c * h * width,))(
                where(ok & inside, weight * gm, 0).reshape(n, og, c // og, taps * pixels))
                for index, ok, weight in zip(flat, valid, weights)).reshape(x.shape)
        if needs[1]:  # deform_col2im_coord: the interpolation's derivative (no inside rule: torchvision's)
            d_y = (g * ((1 - lx) * (v10 - v00) + lx * (v11 - v01))).sum(2)  # (N, G, taps, pixels)
            d_x = (g * ((1 - ly) * (v01 - v00) + ly * (v11 - v10))).sum(2)
            if m is not None:
                d_y, d_x = d_y * m.reshape(d_y.shape), d_x * m.reshape(d_x.shape)
            goffset = stack([d_y, d_x], 3).reshape(offset.shape)
    if needs[2] or needs[3]:  # the columns before the mask (deform_im2col)
        sample = where(inside, sum(weight * v for weight, v in zip(weights, (v00, v01, v10, v11))), 0)
    if needs[2]:
        gmask = (g * sample).sum(2).reshape(mask.shape)
    if needs[3]:  # the columns, then the weight gradient gy @ columns^T
        col = sample if mask is None else mask.reshape(n, og, 1, taps, pixels) * sample
        col = col.reshape(n, c, kh, kw, *geo.out_hw).permute(1, 2, 3, 0, 4, 5).reshape(groups, k, n * pixels)
        gw = (gy_groups @ col.transpose(1, 2)).reshape(w.shape)
    return gx, goffset, gmask, gw


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
