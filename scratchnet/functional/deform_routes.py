"""How a deformable convolution is computed: deformable im2col, one batched GEMM, and their adjoints.

A deformable convolution is a convolution whose im2col reads each tap at a learned, fractional
position. Tap k = (i, j) of output pixel (oy, ox) samples the input at

    y = oy * stride_y - padding_y + i * dilation_y + dy[k, oy, ox]
    x = ox * stride_x - padding_x + j * dilation_x + dx[k, oy, ox]

by bilinear interpolation, times the modulation mask[k, oy, ox] (DCNv2; 1 without a mask). The
offsets (dy, dx) and the mask are shared by the channels of one offset group. Everything after the
sampling is conv_routes' im2col route: columns ``(C, kh, kw, N, oh, ow)``, reshaped to
``(groups, C/groups*kh*kw, N*oh*ow)``, and one batched GEMM with the weight.

Backward: the output gradient through the weight gives the column gradient ``gcol`` (one GEMM), and
the weight gradient is ``gy @ col^T`` (one GEMM). Three column functions do the rest:

    deform_im2col(x, offset, mask, kernel, stride, padding, dilation, out_hw)  -> col
    deform_col2im(gcol, offset, mask, x_shape, stride, padding, dilation)     -> gx   (the adjoint: scatter)
    deform_col2im_coord(gcol, x, offset, mask, stride, padding, dilation)     -> (goffset, gmask)

Bilinear sampling follows torchvision's kernel (torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp):
  - a sample counts only when -1 < y < H and -1 < x < W; outside it reads 0;
  - inside, its four neighbours floor/floor+1 in y and x are weighted (1-ly)(1-lx), (1-ly)lx, ly(1-lx),
    ly lx (ly = y - floor(y)); a neighbour outside the image reads 0;
  - the offset gradient is the derivative of that interpolation,
    d/dy = (1-lx)(v10 - v00) + lx (v11 - v01),  d/dx = (1-ly)(v01 - v00) + ly (v11 - v10),
    with each neighbour outside the image read as 0 but *without* the -1 < y rule: a sample exactly
    on y = -1 (or x = -1) reads 0 yet has the one-sided derivative from the inside;
  - the mask gradient is the sum over the group's channels of gcol times the unmodulated sample.

Two routes give these three functions, side by side in ``DEFORM_CONV2D``, the op's table in the one
dispatch mechanism every op with kernels uses (kernels/dispatch.py): the kernels ('im2col':
kernels/cpu_deform.py with Numba on the CPU, kernels/deform.cu on the GPU, float32 and float64, the
functions kernels/interface.py declares for both devices) and the NumPy/CuPy code below ('reference',
readable, any float dtype, either device). ``choose`` picks one per call, and each route offers the
three functions under the same names.
"""
from collections import namedtuple

import numpy as np

from .. import backend
from ..kernels.dispatch import ANY, KERNEL_DTYPES, KERNELS, Op, Route, device, same_dtype
from .conv_routes import _grouped_matmul, _weight_gradient, get_conv_algo

Geometry = namedtuple("Geometry", "kernel stride padding dilation groups out_hw")


# ---------------------------------------------------------------- the reference: sampling in NumPy/CuPy


def grid(kernel, stride, padding, dilation, out_hw):
    """The regular convolution grid, the integers torchvision adds the offsets to: (y, x), NumPy int
    arrays, each (kh*kw, oh*ow)."""
    (kh, kw), (sy, sx), (ph, pw), (dy, dx), (oh, ow) = kernel, stride, padding, dilation, out_hw
    taps = np.arange(kh * kw)
    base_y = (taps // kw * dy)[:, None, None] + (np.arange(oh) * sy - ph)[None, :, None]  # (taps, oh, 1)
    base_x = (taps % kw * dx)[:, None, None] + (np.arange(ow) * sx - pw)[None, None, :]  # (taps, 1, ow)
    shape = (kh * kw, oh, ow)
    return np.broadcast_to(base_y, shape).reshape(kh * kw, -1), np.broadcast_to(base_x, shape).reshape(kh * kw, -1)


def _sample_points(offset, kernel, stride, padding, dilation, out_hw):
    """Where every tap samples: (y, x), each (N, offset groups, kh*kw, oh*ow), in the offset's dtype."""
    xp = backend.get_array_module(offset)
    taps, pixels = kernel[0] * kernel[1], out_hw[0] * out_hw[1]
    n, groups = offset.shape[0], offset.shape[1] // (2 * taps)
    pairs = offset.reshape(n, groups, taps, 2, pixels)  # (dy, dx) of each tap, per offset group
    base_y, base_x = grid(kernel, stride, padding, dilation, out_hw)
    y = xp.asarray(base_y, dtype=offset.dtype) + pairs[:, :, :, 0]
    x = xp.asarray(base_x, dtype=offset.dtype) + pairs[:, :, :, 1]
    return y, x


def _neighbours(y, x, h, w):
    """The four pixels around each sample point, in torchvision's order (floor/floor, floor/ceil,
    ceil/floor, ceil/ceil), each as (flat index in its plane, inside the image?, bilinear weight);
    also ``inside``: torchvision's rule for whether a sample reads anything (-1 < y < H, -1 < x < W)."""
    xp = backend.get_array_module(y)
    y0, x0 = xp.floor(y), xp.floor(x)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    corners = []
    for cy, cx, weight in ((y0, x0, hy * hx), (y0, x0 + 1, hy * lx), (y0 + 1, x0, ly * hx), (y0 + 1, x0 + 1, ly * lx)):
        valid = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
        corners.append((xp.where(valid, cy * w + cx, 0), valid, weight))
    inside = (y > -1) & (y < h) & (x > -1) & (x < w)
    return corners, inside, (ly, lx)


def _gather(planes, index, valid):
    """planes (N, G, C/G, H*W) read at index (N, G, taps, pixels): (N, G, C/G, taps*pixels); 0 where not valid."""
    xp = backend.get_array_module(planes)
    n, g, taps, pixels = index.shape
    values = xp.take_along_axis(planes, index.reshape(n, g, 1, taps * pixels), axis=3)
    return xp.where(valid.reshape(n, g, 1, taps * pixels), values, 0).reshape(planes.shape[:3] + (taps, pixels))


def _columns_layout(per_group, kernel, out_hw):
    """(N, G, C/G, taps, pixels) -> the column layout (C, kh, kw, N, oh, ow)."""
    n, g, cg = per_group.shape[:3]
    return per_group.reshape(n, g * cg, kernel[0], kernel[1], out_hw[0], out_hw[1]).transpose(1, 2, 3, 0, 4, 5)


def _per_group(col, groups):
    """The column layout (C, kh, kw, N, oh, ow) -> (N, G, C/G, taps, pixels), G offset groups."""
    c, kh, kw, n, oh, ow = col.shape
    return col.transpose(3, 0, 1, 2, 4, 5).reshape(n, groups, c // groups, kh * kw, oh * ow)


def deform_im2col(x, offset, mask, kernel, stride, padding, dilation, out_hw):
    """Columns (C, kh, kw, N, oh, ow): every tap's bilinear sample at its offset position, times its mask."""
    n, c, h, w = x.shape
    groups = offset.shape[1] // (2 * kernel[0] * kernel[1])
    y, x_pos = _sample_points(offset, kernel, stride, padding, dilation, out_hw)
    corners, inside, _ = _neighbours(y, x_pos, h, w)
    planes = x.reshape(n, groups, c // groups, h * w)
    value = 0
    for index, valid, weight in corners:  # torchvision's w1*v1 + w2*v2 + w3*v3 + w4*v4
        value = value + weight[:, :, None] * _gather(planes, index, valid & inside)
    if mask is not None:
        value = mask.reshape(n, groups, 1, *y.shape[2:]) * value
    return _columns_layout(value, kernel, out_hw)


def deform_col2im(gcol, offset, mask, x_shape, stride, padding, dilation):
    """The adjoint of deform_im2col in x: every column entry's gradient added back to the four pixels it
    was interpolated from (overlapping samples accumulate)."""
    xp = backend.get_array_module(gcol)
    c, kh, kw, _, oh, ow = gcol.shape
    n, _, h, w = x_shape
    groups = offset.shape[1] // (2 * kh * kw)
    y, x_pos = _sample_points(offset, (kh, kw), stride, padding, dilation, (oh, ow))
    corners, inside, _ = _neighbours(y, x_pos, h, w)
    g = _per_group(gcol, groups)  # (N, G, C/G, taps, pixels)
    if mask is not None:
        g = g * mask.reshape(n, groups, 1, kh * kw, oh * ow)
    gx = xp.zeros(n * c * h * w, dtype=gcol.dtype)
    plane_start = (xp.arange(n * c) * (h * w)).reshape(n, groups, c // groups, 1, 1)
    for index, valid, weight in corners:
        keep = (valid & inside)[:, :, None]
        contribution = xp.where(keep, weight[:, :, None] * g, 0)
        xp.add.at(gx, (plane_start + index[:, :, None]).reshape(-1), contribution.reshape(-1))
    return gx.reshape(x_shape)


def deform_col2im_coord(gcol, x, offset, mask, stride, padding, dilation):
    """(goffset, gmask): the gradients of the columns' sample positions and modulation; gmask is None
    without a mask. Sums over the channels of each offset group."""
    c, kh, kw, n, oh, ow = gcol.shape
    h, w = x.shape[2:]
    groups = offset.shape[1] // (2 * kh * kw)
    y, x_pos = _sample_points(offset, (kh, kw), stride, padding, dilation, (oh, ow))
    corners, inside, (ly, lx) = _neighbours(y, x_pos, h, w)
    planes = x.reshape(n, groups, c // groups, h * w)
    v00, v01, v10, v11 = (_gather(planes, index, valid) for index, valid, _ in corners)
    ly, lx = ly[:, :, None], lx[:, :, None]
    g = _per_group(gcol, groups)
    d_y = (g * ((1 - lx) * (v10 - v00) + lx * (v11 - v01))).sum(axis=2)  # (N, G, taps, pixels)
    d_x = (g * ((1 - ly) * (v01 - v00) + ly * (v11 - v10))).sum(axis=2)
    gmask = None
    if mask is not None:
        m = mask.reshape(d_y.shape)
        d_y, d_x = d_y * m, d_x * m
        sample = sum(weight[:, :, None] * v for (_, _, weight), v in zip(corners, (v00, v01, v10, v11)))
        gmask = (g * (sample * inside[:, :, None])).sum(axis=2).reshape(mask.shape)
    xp = backend.get_array_module(gcol)
    goffset = xp.stack([d_y, d_x], axis=3)  # (N, G, taps, (dy, dx), pixels)
    return goffset.reshape(offset.shape), gmask


# ---------------------------------------------------------------- the GEMMs every route shares


def forward(columns, x, offset, mask, w, geo):
    """y (N, C_out, oh, ow) = the grouped weight times the deformable columns (one batched GEMM).
    ``columns``: the chosen route's implementation (the device's kernel module, or Reference)."""
    xp = backend.get_array_module(x)
    n, (c_out, c_group, kh, kw), g = x.shape[0], w.shape, geo.groups
    oh, ow = geo.out_hw
    col = columns.deform_im2col(x, offset, mask, geo.kernel, geo.stride, geo.padding, geo.dilation, geo.out_hw)
    y = _grouped_matmul(w.reshape(g, c_out // g, c_group * kh * kw), col.reshape(g, c_group * kh * kw, n * oh * ow))
    return xp.ascontiguousarray(y.reshape(c_out, n, oh, ow).transpose(1, 0, 2, 3))


def backward(columns, gy, x, offset, mask, w, geo, needs):
    """(gx, goffset, gmask, gw): each computed only where ``needs`` (four booleans, that order) asks."""
    xp = backend.get_array_module(gy)
    n, (c_out, c_group, kh, kw), g = x.shape[0], w.shape, geo.groups
    k = c_group * kh * kw
    gy_groups = xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(g, c_out // g, -1)  # (g, C_out/g, N*oh*ow)
    gx = goffset = gmask = gw = None
    if needs[0] or needs[1] or needs[2]:
        w_t = xp.ascontiguousarray(w.reshape(g, c_out // g, k).transpose(0, 2, 1))  # (g, K, C_out/g)
        gcol = _grouped_matmul(w_t, gy_groups).reshape((g * c_group, kh, kw, n) + tuple(geo.out_hw))
        if needs[0]:
            gx = columns.deform_col2im(gcol, offset, mask, x.shape, geo.stride, geo.padding, geo.dilation)
        if needs[1] or needs[2]:
            goffset, gmask = columns.deform_col2im_coord(gcol, x, offset, mask, geo.stride, geo.padding, geo.dilation)
    if needs[3]:
        col = columns.deform_im2col(x, offset, mask, geo.kernel, geo.stride, geo.padding, geo.dilation, geo.out_hw)
        gw = _weight_gradient(gy_groups, col.reshape(g, k, -1)).reshape(w.shape)
    return gx, goffset, gmask, gw


# ---------------------------------------------------------------- the routes


class Reference:
    """The NumPy/CuPy sampling above, under the kernel interface's names: readable, any float dtype, either
    device."""
    deform_im2col = staticmethod(deform_im2col)
    deform_col2im = staticmethod(deform_col2im)
    deform_col2im_coord = staticmethod(deform_col2im_coord)


def _describe(x, offset, w, mask):
    return device(x), same_dtype(x, offset, w, mask)


DEFORM_CONV2D = Op("deform_conv2d", describe=_describe,
                   needs=("deform_im2col", "deform_col2im", "deform_col2im_coord"), routes={
    #              implementation    devices          dtypes         fits
    "im2col":      Route(KERNELS,   ("cpu", "gpu"),  KERNEL_DTYPES, None),  # Numba (CPU) / deform.cu (GPU)
    "reference":   Route(Reference, ("cpu", "gpu"),  ANY,           None),  # the array code above
})  # noqa: E241,E128 (aligned so the routes read as a table)


def choose(x, offset, w, mask=None):
    """The route this call takes (a dispatch Chosen: ``.name``, ``.impl``), counted: the kernels for float32
    and float64 (x, offset, weight and mask alike), else the reference; set_conv_algo('reference') (or
    dispatch.reference_only()) asks for the reference everywhere, as it does for conv2d."""
    algo = get_conv_algo()
    return DEFORM_CONV2D.choose(x, offset, w, mask, algo=algo if algo in DEFORM_CONV2D.routes else "auto")
