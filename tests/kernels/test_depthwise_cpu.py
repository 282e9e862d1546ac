"""The Numba depthwise kernels (kernels/cpu_depthwise.py, through kernels/cpu.py) against torch, on the geometries their
phase-buffer layout treats differently: stride 2 and 3 (several phases, some without a
tap when the kernel is smaller than the stride), dilation, channel multipliers, padding
that differs per axis, 5x5, odd and one-pixel sizes, N=1, input rows and columns no
window reaches, an output larger than the padded input ('same' with an even kernel),
planes wide enough to be cut into several row blocks, and more planes than prange chunks
(so one chunk's buffers are reused across planes). tests/kernels/test_kernels.py runs the shared
kernel API on every implementation; this file covers the CPU layout's own edge cases.
"""
import numpy as np
import pytest

import scratchnet as sn
import scratchnet.functional as F
from conftest import assert_close, torch_conv2d
from scratchnet.functional.conv import conv_output_size
from scratchnet.kernels import cpu

# (x shape, multiplier, kernel, stride, padding, dilation, extra output rows/columns)
CASES = {
    "3x3": ((2, 3, 7, 6), 1, (3, 3), (1, 1), (1, 1), (1, 1), (0, 0)),
    "stride2": ((2, 2, 9, 8), 1, (3, 3), (2, 2), (1, 1), (1, 1), (0, 0)),
    "stride-2x3": ((1, 2, 11, 10), 1, (3, 3), (2, 3), (1, 1), (1, 1), (0, 0)),
    "dilation2": ((2, 2, 9, 7), 1, (3, 3), (1, 1), (2, 2), (2, 2), (0, 0)),
    "dilation2-stride2": ((1, 3, 10, 9), 1, (3, 3), (2, 2), (2, 1), (2, 2), (0, 0)),
    "multiplier2": ((2, 3, 6, 5), 2, (3, 3), (1, 1), (1, 1), (1, 1), (0, 0)),
    "multiplier3-stride2": ((1, 2, 7, 8), 3, (3, 2), (2, 1), (1, 0), (1, 2), (0, 0)),
    "padding-per-axis": ((2, 2, 6, 9), 1, (3, 5), (1, 1), (0, 2), (1, 1), (0, 0)),
    "5x5": ((1, 3, 11, 9), 1, (5, 5), (1, 1), (2, 2), (1, 1), (0, 0)),
    "5x5-stride2": ((2, 2, 12, 11), 1, (5, 5), (2, 2), (2, 2), (1, 1), (0, 0)),
    "odd-tiny": ((3, 1, 1, 3), 1, (1, 3), (1, 1), (0, 1), (1, 1), (0, 0)),
    "1x1-stride2": ((2, 2, 5, 6), 1, (1, 1), (2, 2), (0, 0), (1, 1), (0, 0)),  # phases with no tap
    "unreached-rows": ((1, 2, 8, 8), 1, (3, 3), (3, 3), (0, 0), (1, 1), (0, 0)),  # last rows/cols in no window
    "padding-past-kernel": ((1, 2, 4, 5), 1, (2, 2), (1, 1), (3, 2), (1, 1), (0, 0)),
    "same-even": ((2, 2, 5, 6), 1, (4, 2), (1, 1), (1, 0), (1, 1), (1, 1)),  # one more row/col at the end
    "row-blocks": ((1, 1, 45, 70), 1, (3, 3), (1, 1), (1, 1), (1, 1), (0, 0)),  # 72 wide: 28 rows a block
    "many-planes": ((3, 100, 4, 5), 1, (3, 3), (1, 2), (1, 1), (1, 1), (0, 0)),  # 300 planes > 256 chunks
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_depthwise_kernels_match_torch(case, dtype, rng):
    x_shape, mult, kernel, stride, padding, dilation, extra = CASES[case]
    c = x_shape[1]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((c * mult, 1) + kernel).astype(dtype)
    out_hw = tuple(conv_output_size(x_shape[2 + a], kernel[a], stride[a], padding[a], dilation[a]) + extra[a]
                   for a in range(2))
    y_ref, grads = torch_conv2d(x, w, stride, padding, dilation, groups=c, extra=extra)
    assert y_ref.shape[2:] == out_hw
    gy = rng.standard_normal(y_ref.shape).astype(dtype)
    gx_ref, gw_ref = grads(gy)
    y = cpu.depthwise_forward(x, w, stride, padding, dilation, out_hw)
    gx = cpu.depthwise_backward_input(gy, w, x.shape, stride, padding, dilation)
    gw = cpu.depthwise_backward_weight(gy, x, w.shape, stride, padding, dilation)
    assert_close(y, y_ref, what="y")
    assert_close(gx, gx_ref, what="gx")
    assert_close(gw, gw_ref, what="gw")


def test_depthwise_kernels_on_non_contiguous_inputs(rng):
    """Views (a channel slice, a transposed copy) give the same numbers as their contiguous copies."""
    x = rng.standard_normal((2, 6, 7, 7))[:, ::2]
    w = rng.standard_normal((3, 1, 3, 3)).transpose(0, 1, 3, 2)
    geometry = ((2, 1), (1, 1), (1, 2))
    y = cpu.depthwise_forward(x, w, *geometry, (4, 5))
    np.testing.assert_array_equal(y, cpu.depthwise_forward(x.copy(), w.copy(), *geometry, (4, 5)))
    gy = rng.standard_normal(y.shape)[:, :, :, ::-1]
    np.testing.assert_array_equal(cpu.depthwise_backward_input(gy, w, x.shape, *geometry),
                                  cpu.depthwise_backward_input(gy.copy(), w.copy(), x.shape, *geometry))
    np.testing.assert_array_equal(cpu.depthwise_backward_weight(gy, x, w.shape, *geometry),
                                  cpu.depthwise_backward_weight(gy.copy(), x.copy(), w.shape, *geometry))


def test_depthwise_conv2d_gradcheck_through_the_kernels(monkeypatch, rng):
    """float64 gradcheck of conv2d where it takes these kernels (stride, dilation, multiplier 2, bias)."""
    calls = []
    for name in ("depthwise_forward", "depthwise_backward_input", "depthwise_backward_weight"):
        original = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    x = sn.tensor(rng.standard_normal((2, 2, 7, 6)), requires_grad=True)
    w = sn.tensor(rng.standard_normal((4, 1, 3, 2)), requires_grad=True)
    b = sn.tensor(rng.standard_normal(4), requires_grad=True)
    options = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    assert sn.gradcheck(lambda x, w, b: F.conv2d(x, w, b, **options), [x, w, b])
    assert {"depthwise_forward", "depthwise_backward_input", "depthwise_backward_weight"} <= set(calls)


@pytest.mark.parametrize("case", ["stride-2x3", "unreached-rows", "1x1-stride2", "same-even", "multiplier3-stride2"])
def test_depthwise_kernels_write_every_output_element(case, rng):
    """The kernels fill outputs allocated with np.empty: run them on NaN-filled outputs, nothing may stay NaN."""
    x_shape, mult, kernel, stride, padding, dilation, extra = CASES[case]
    geometry = (*stride, *padding, *dilation)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((x_shape[1] * mult, 1) + kernel)
    out_hw = tuple(conv_output_size(x_shape[2 + a], kernel[a], stride[a], padding[a], dilation[a]) + extra[a]
                   for a in range(2))
    y = np.full((x_shape[0], w.shape[0]) + out_hw, np.nan)
    cpu._depthwise_forward(x, w, y, *geometry)
    gy = rng.standard_normal(y.shape)
    gx, gw = np.full(x.shape, np.nan), np.full(w.shape, np.nan)
    cpu._depthwise_backward_input(gy, w, gx, *geometry)
    cpu._depthwise_backward_weight(gy, x, gw, *geometry)
    for out in (y, gx, gw):
        assert np.isfinite(out).all()
