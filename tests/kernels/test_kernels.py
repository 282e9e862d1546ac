"""The kernels (raw arrays in and out) against torch and the NumPy im2col route (the deformable ones against the
NumPy deformable route, functional/deform_routes.py).

One API, three implementations, each test run on all of them:
  numba     kernels/cpu.py
  emulator  the exact CUDA sources on the CPU emulator (g++ + kernels/cuda_emu.h)
            with the grid/block kernels/launch.py gives a GPU, on guarded
            buffers, with outputs that start as NaN; once in launch order,
            once in a shuffled thread/block order with the grid-stride
            kernels capped at 2 blocks (so their loops run several times)
  cuda      kernels/cuda.py on a real GPU (skipped without one)
over odd sizes, partial tiles, stride, padding, dilation, groups and depthwise
multipliers, in float32 and float64.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from conftest import assert_close, assert_within_scale, tol_for_sums, torch_conv2d
from scratchnet.functional.conv import col2im, conv_output_size, im2col
from scratchnet import backend
from scratchnet.kernels import cpu
from scratchnet.kernels import emulator as emulation

@pytest.fixture(scope="session")
def emu():
    """One emulator per test session: every source compiled once per dtype, into a cache outside the repo."""
    emulator = emulation.Emulator()
    emulator.build_all()
    return emulator


class Implementation:
    """Calls one kernel API on NumPy inputs and returns NumPy results, once per variant."""

    def __init__(self, apis, device="cpu"):
        self.apis, self.device = apis, device

    def __call__(self, name, *args):
        args = [backend.to_device(a, self.device) if isinstance(a, np.ndarray) else a for a in args]
        for api in self.apis:
            out = getattr(api, name)(*args)
            if isinstance(out, tuple):  # several results, None where a kernel has nothing to return
                yield tuple(None if o is None else backend.to_numpy(o) for o in out)
            else:
                yield backend.to_numpy(out)


GPU = pytest.param("cuda", marks=pytest.mark.gpu)


@pytest.fixture(params=["numba", "emulator", GPU])
def impl(request):
    """Every implementation of the shared API."""
    return _implementation(request)


@pytest.fixture(params=["emulator", GPU])
def cuda_impl(request):
    """The CUDA sources only (the direct dense convolution has no CPU kernel: im2col + BLAS is faster)."""
    return _implementation(request)


def _implementation(request):
    if request.param == "numba":
        return Implementation([cpu])
    if request.param == "emulator":
        if emulation.compiler() is None:
            pytest.skip("the CUDA emulator needs g++")
        emu = request.getfixturevalue("emu")
        return Implementation([emu.device(0), emu.device(7, max_blocks=2)])  # as launched; shuffled, capped
    from scratchnet.kernels import cuda
    return Implementation([cuda], "gpu")


def _out_hw(x_shape, kernel, stride, padding, dilation):
    return tuple(conv_output_size(x_shape[2 + a], kernel[a], stride[a], padding[a], dilation[a]) for a in range(2))


# (x shape, out channels, kernel, stride, padding, dilation, groups)
CONV_CASES = [
    ((2, 3, 5, 7), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((1, 4, 9, 8), 6, (3, 2), (2, 1), (1, 0), (1, 2), 2),       # groups, dilation, anisotropic
    ((3, 2, 6, 5), 17, (1, 1), (1, 1), (0, 0), (1, 1), 1),      # 1x1, a partial 17th row of tiles
    ((2, 6, 11, 10), 6, (5, 5), (2, 3), (2, 2), (1, 1), 3),     # large kernel, odd strides
    ((1, 20, 5, 4), 3, (3, 3), (1, 1), (1, 1), (2, 2), 1),      # K = 180: several k-slices, last partial
    ((2, 4, 6, 6), 8, (3, 3), (1, 1), (1, 1), (1, 1), 4),       # depthwise (multiplier 2) as grouped conv
    ((2, 3, 9, 11), 5, (3, 2), (2, 1), (2, 1), (1, 3), 1),      # stride, padding, dilation all differ per axis
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-g{c[6]}")
def test_direct_conv_forward_and_backward(cuda_impl, case, dtype, rng):
    impl = cuda_impl
    x_shape, c_out, kernel, stride, padding, dilation, groups = case
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((c_out, x_shape[1] // groups) + kernel).astype(dtype)
    out_hw = _out_hw(x_shape, kernel, stride, padding, dilation)
    y_ref, grads = torch_conv2d(x, w, stride, padding, dilation, groups)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    gx_ref, gw_ref = grads(gy)
    for y in impl("conv2d_forward", x, w, stride, padding, dilation, groups, out_hw):
        assert_close(y, y_ref, what="y")
    for gx in impl("conv2d_backward_input", gy, w, x.shape, stride, padding, dilation, groups):
        assert_close(gx, gx_ref, what="gx")
    for gw in impl("conv2d_backward_weight", gy, x, w.shape, stride, padding, dilation, groups):
        assert_close(gw, gw_ref, tol_for_sums(dtype, gy.size // gy.shape[1]), what="gw")  # sums N*OH*OW products


# (x shape, multiplier, kernel, stride, padding, dilation)
DEPTHWISE_CASES = [
    ((2, 3, 7, 6), 1, (3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 2, 9, 8), 3, (3, 5), (2, 1), (1, 2), (2, 1)),
    ((3, 5, 4, 5), 2, (2, 2), (2, 2), (0, 0), (1, 1)),
    ((1, 1, 17, 3), 1, (5, 1), (1, 1), (2, 0), (1, 1)),
    ((2, 2, 19, 18), 1, (3, 3), (1, 1), (1, 1), (1, 1)),  # N*OH*OW = 684 > the 256 reducing threads
    ((1, 3, 10, 9), 2, (3, 3), (1, 2), (0, 2), (2, 1)),   # stride, padding, dilation all differ per axis
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-m{c[1]}")
def test_depthwise_forward_and_backward(impl, case, dtype, rng):
    x_shape, mult, kernel, stride, padding, dilation = case
    c = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((c * mult, 1) + kernel).astype(dtype)
    out_hw = _out_hw(x_shape, kernel, stride, padding, dilation)
    y_ref, grads = torch_conv2d(x, w, stride, padding, dilation, c)
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    gx_ref, gw_ref = grads(gy)
    for y in impl("depthwise_forward", x, w, stride, padding, dilation, out_hw):
        assert_close(y, y_ref, what="y")
    for gx in impl("depthwise_backward_input", gy, w, x.shape, stride, padding, dilation):
        assert_close(gx, gx_ref, what="gx")
    for gw in impl("depthwise_backward_weight", gy, x, w.shape, stride, padding, dilation):
        assert_close(gw, gw_ref, tol_for_sums(dtype, gy.size // gy.shape[1]), what="gw")  # sums N*OH*OW products


# (x shape, kernel, stride, padding, dilation)
COL_CASES = [
    ((2, 3, 5, 7), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 2, 9, 8), (3, 2), (2, 3), (2, 1), (2, 1)),
    ((3, 1, 4, 4), (1, 1), (1, 1), (0, 0), (1, 1)),
    ((1, 3, 12, 11), (11, 11), (4, 4), (2, 2), (1, 1)),  # AlexNet conv1's geometry, shrunk
    ((1, 2, 9, 10), (2, 3), (1, 2), (1, 0), (3, 1)),     # stride, padding, dilation all differ per axis
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", COL_CASES, ids=lambda c: "x".join(map(str, c[0])) + "-k" + "x".join(map(str, c[1])))
def test_im2col_and_col2im_match_the_numpy_route(impl, case, dtype, rng):
    x_shape, kernel, stride, padding, dilation = case
    x = rng.standard_normal(x_shape).astype(dtype)
    out_hw = _out_hw(x_shape, kernel, stride, padding, dilation)
    col_ref = im2col(x, kernel, stride, padding, dilation)
    for col in impl("im2col", x, kernel, stride, padding, dilation, out_hw):
        np.testing.assert_array_equal(col, col_ref)  # a copy: exact, same layout
    for col in impl("im2col", x, kernel, stride, padding, dilation, out_hw, -np.inf):
        np.testing.assert_array_equal(col, im2col(x, kernel, stride, padding, dilation, pad_value=-np.inf))
    gcol = rng.standard_normal(col_ref.shape).astype(dtype)
    for gx in impl("col2im", gcol, x.shape, stride, padding, dilation):
        assert_close(gx, col2im(gcol, x.shape, stride, padding, dilation), what="gx")


# (x shape, kernel, stride, padding, dilation, ceil_mode)
POOL_CASES = [
    ((2, 3, 6, 7), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 2, 7, 7), (3, 3), (2, 2), (1, 1), (1, 1), True),    # overlapping windows, ceil mode
    ((2, 1, 9, 8), (3, 2), (1, 2), (1, 1), (2, 1), False),   # dilation
    ((1, 4, 5, 5), (3, 3), (2, 2), (0, 0), (1, 1), True),    # a last window hanging past the edge
    ((1, 2, 9, 10), (3, 2), (2, 1), (1, 0), (2, 1), False),  # stride, padding, dilation all differ per axis
    ((2, 2, 7, 5), (2, 2), (2, 2), (0, 0), (1, 1), True),    # 2x2/2 with a last window past the edge
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("values", ["normal", "ties", "nan"])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-ceil{int(c[5])}")
def test_max_pool_forward_backward_with_argmax(impl, case, values, dtype, rng):
    x_shape, kernel, stride, padding, dilation, ceil_mode = case
    # ties: small integers, so windows hold equal maxima and the first must win;
    # nan: some NaNs, which win over numbers and the last of which wins (torch's rules)
    x = (rng.integers(0, 3, x_shape) if values == "ties" else rng.standard_normal(x_shape)).astype(dtype)
    if values == "nan":
        x[rng.random(x_shape) < 0.15] = np.nan
    out_hw = tuple(conv_output_size(x_shape[2 + a], kernel[a], stride[a], padding[a], dilation[a], ceil_mode)
                   for a in range(2))
    xt = torch.tensor(x, requires_grad=True)
    yt, it = TF.max_pool2d(xt, kernel, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)
    gy = rng.standard_normal(yt.shape).astype(dtype)
    yt.backward(torch.tensor(gy))
    for y, argmax in impl("max_pool2d_forward", x, kernel, stride, padding, dilation, out_hw):
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(argmax, it.numpy())
    for gx in impl("max_pool2d_backward", gy, it.numpy(), x.shape):
        assert_close(gx, xt.grad.numpy(), what="gx")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (3, 2, 7, 9)], ids=["even", "odd"])  # odd: the last row/col unread
def test_unrolled_2x2_max_pool_equals_the_general_kernel(shape, dtype, rng):
    """kernels/cpu.py's 2x2 stride-2 fast path gives the general kernel's maxima and argmax, bit for bit,
    with ties (the first maximum wins) and NaNs (the last NaN wins)."""
    x = rng.integers(0, 3, shape).astype(dtype)
    x[rng.random(shape) < 0.15] = np.nan
    out = shape[:2] + (shape[2] // 2, shape[3] // 2)
    y, argmax = np.empty(out, dtype), np.empty(out, np.int64)
    cpu._max_pool2x2_forward(x, y, argmax)
    y_ref, argmax_ref = np.empty(out, dtype), np.empty(out, np.int64)
    cpu._max_pool2d_forward(x, y_ref, argmax_ref, 2, 2, 2, 2, 0, 0, 1, 1)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    assert np.isnan(y).any() and not np.isnan(y).all()  # windows with NaNs and windows of tied numbers


def test_max_pool_backward_many_windows_on_one_pixel(impl):
    """1089 overlapping windows pick the same pixel: their gradients must all arrive. The
    emulator cannot see a lost update (threads switch only at barriers); on a GPU this is the
    test a plain `+=` in place of atomicAdd fails."""
    x = np.zeros((1, 1, 64, 64))
    x[0, 0, 32, 32] = 1.0
    kernel, stride, padding, dilation = (33, 33), (1, 1), (16, 16), (1, 1)
    out_hw = _out_hw(x.shape, kernel, stride, padding, dilation)
    for y, argmax in impl("max_pool2d_forward", x, kernel, stride, padding, dilation, out_hw):
        gy = np.ones_like(y)
        assert (argmax == 32 * 64 + 32).sum() == 33 * 33
        for gx in impl("max_pool2d_backward", gy, argmax, x.shape):
            assert gx[0, 0, 32, 32] == 33 * 33 and gx.sum() == gy.size


# ---------------------------------------------------------------- deformable convolution (cpu_deform.py, deform.cu)
# (x shape, kernel, stride, padding, dilation, offset groups, mask, offsets): the NumPy reference of
# functional/deform_routes.py (itself equal to torchvision's numbers, tests/functional/test_deform.py) is
# the answer; 'edges' puts samples exactly on -1, -0.5, H-1, H (torchvision's borders) and on integers.
DEFORM_CASES = [
    ((2, 4, 6, 7), (3, 3), (1, 1), (1, 1), (1, 1), 1, True, "normal"),
    ((1, 6, 7, 5), (3, 2), (2, 1), (1, 0), (1, 2), 3, False, "normal"),       # everything differs per axis
    ((2, 4, 5, 6), (2, 3), (1, 2), (0, 1), (2, 1), 2, True, "edges"),
    ((3, 2, 4, 4), (1, 1), (1, 1), (0, 0), (1, 1), 2, True, "far"),          # most samples outside the image
    ((1, 40, 5, 5), (3, 3), (1, 1), (1, 1), (1, 1), 1, True, "normal"),      # > 32 channels: two channel blocks
    ((2, 3, 17, 16), (3, 3), (1, 1), (1, 1), (1, 1), 1, False, "normal"),    # 17*16 > 256 threads of a block
]


def _deform_arrays(case, dtype, rng):
    x_shape, kernel, stride, padding, dilation, groups, use_mask, kind = case
    n, c = x_shape[:2]
    out_hw = _out_hw(x_shape, kernel, stride, padding, dilation)
    shape = (n, 2 * groups * kernel[0] * kernel[1]) + out_hw
    offset = rng.standard_normal(shape) * (6 if kind == "far" else 1.5)
    if kind == "edges":  # exact positions: integers, halves, -1 and the far border
        offset = rng.choice(np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, float(max(x_shape[2:]))]), shape)
    mask = rng.uniform(-0.5, 1.5, (n, groups * kernel[0] * kernel[1]) + out_hw).astype(dtype) if use_mask else None
    return rng.standard_normal(x_shape).astype(dtype), offset.astype(dtype), mask, out_hw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DEFORM_CASES, ids=lambda c: "x".join(map(str, c[0])) + f"-g{c[5]}-{c[7]}")
def test_deformable_columns_and_their_adjoints_match_the_numpy_route(impl, case, dtype, rng):
    from scratchnet.functional import deform_routes as reference
    _, kernel, stride, padding, dilation, *_ = case
    x, offset, mask, out_hw = _deform_arrays(case, dtype, rng)
    col_ref = reference.deform_im2col(x, offset, mask, kernel, stride, padding, dilation, out_hw)
    gcol = rng.standard_normal(col_ref.shape).astype(dtype)
    gx_ref = reference.deform_col2im(gcol, offset, mask, x.shape, stride, padding, dilation)
    goffset_ref, gmask_ref = reference.deform_col2im_coord(gcol, x, offset, mask, stride, padding, dilation)
    # float32: sample positions and sums rounded in each implementation's own order (Numba's positions in float64)
    check = assert_close if dtype == np.float64 else lambda a, b, what: assert_within_scale(a, b, 1e-5, what)
    for col in impl("deform_im2col", x, offset, mask, kernel, stride, padding, dilation, out_hw):
        check(col, col_ref, what="columns")
    for gx in impl("deform_col2im", gcol, offset, mask, x.shape, stride, padding, dilation):
        check(gx, gx_ref, what="gx")
    for goffset, gmask in impl("deform_col2im_coord", gcol, x, offset, mask, stride, padding, dilation):
        check(goffset, goffset_ref, what="goffset")
        if mask is None:
            assert gmask is None
        else:
            check(gmask, gmask_ref, what="gmask")


def test_deformable_input_gradient_many_samples_on_one_pixel(impl):
    """Every tap of every output pixel samples pixel (3, 4) exactly: 5*6*9 column entries scatter into one
    pixel, each adding 1. A plain `+=` in place of atomicAdd loses updates on a GPU (never in the emulator,
    whose threads switch only at barriers)."""
    x_shape, kernel, out_hw = (1, 2, 7, 8), (3, 3), (5, 6)
    taps = np.arange(9)
    base_y = (taps // 3)[:, None, None] + np.arange(5)[None, :, None]
    base_x = (taps % 3)[:, None, None] + np.arange(6)[None, None, :]
    offset = np.stack([np.broadcast_to(3.0 - base_y, (9, 5, 6)), np.broadcast_to(4.0 - base_x, (9, 5, 6))], axis=1)
    offset = offset.reshape(1, 18, 5, 6)
    gcol = np.ones((2, 3, 3, 1) + out_hw)
    for gx in impl("deform_col2im", gcol, offset, None, x_shape, (1, 1), (0, 0), (1, 1)):
        assert (gx[:, :, 3, 4] == 5 * 6 * 9).all() and gx.sum() == gcol.size
