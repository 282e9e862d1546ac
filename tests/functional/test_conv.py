"""conv2d and conv_transpose2d against torch (forward and gradients) and the numeric gradient check."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
import scratchnet.nn.functional as F
from conftest import CONV_CASES, TRANSPOSE_CASES, assert_close, conv_inputs, tol_for_sums
from scratchnet.functional.conv import col2im, conv_output_size, im2col

# torch's own note that it copies the input for padding='same' with an even kernel
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def gradcheck_inputs(rng, x_shape, w_shape, options, transposed=False):
    """Float64 tensors for sn.gradcheck: one image of the case, a weight and a bias."""
    arrays = conv_inputs(rng, (1,) + x_shape[1:], w_shape, options, transposed=transposed)
    return [sn.tensor(a, requires_grad=True) for a in arrays]


@pytest.mark.parametrize("x_shape,w_shape,options", CONV_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv2d_matches_torch(x_shape, w_shape, options, dtype, with_bias, compare, rng):
    compare(F.conv2d, TF.conv2d, conv_inputs(rng, x_shape, w_shape, options, dtype, with_bias), **options)


@pytest.mark.parametrize("x_shape,w_shape,options", [CONV_CASES[i] for i in (1, 2, 4, 5, 7, 10, 11)])
def test_conv2d_gradcheck(x_shape, w_shape, options, rng):
    inputs = gradcheck_inputs(rng, x_shape, w_shape, options)
    assert sn.gradcheck(lambda x, w, b: F.conv2d(x, w, b, **options), inputs)


def test_conv2d_only_weight_needs_grad(rng):
    """A frozen input (the first layer) still gets a correct weight gradient, and no input gradient."""
    x = sn.tensor(rng.standard_normal((2, 3, 5, 5)))
    w = sn.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    w_ref = torch.tensor(w.data, requires_grad=True)
    TF.conv2d(torch.tensor(x.data), w_ref, padding=1).sum().backward()
    assert_close(w.grad, w_ref.grad)
    assert x.grad is None


@pytest.mark.parametrize("call,message", [
    (lambda x, w: F.conv2d(x, w[:, :2]), "input has 3 channels but weight"),
    (lambda x, w: F.conv2d(x, w, groups=2), "groups=2 must divide"),
    (lambda x, w: F.conv2d(x.long(), w), "needs floating-point"),
    (lambda x, w: F.conv2d(x[0], w), r"expects input of shape \(N, C, H, W\)"),
    (lambda x, w: F.conv2d(x, w, sn.tensor(np.zeros(3))), r"bias must have shape \(4,\)"),
    (lambda x, w: F.conv2d(x, w, stride=2, padding="same"), "padding='same' is not supported for strided convolutions"),  # torch's words
    (lambda x, w: F.conv2d(x[:, :, :2, :2], w), "smaller than the dilated kernel"),
    (lambda x, w: F.conv2d(x, w, padding="full"), "Invalid padding string 'full', should be one of"),
])
def test_conv2d_errors(call, message, rng):
    x = sn.tensor(rng.standard_normal((1, 3, 5, 5)))
    w = sn.tensor(rng.standard_normal((4, 3, 3, 3)))
    with pytest.raises((ValueError, TypeError), match=message):
        call(x, w)


def test_col2im_is_the_adjoint_of_im2col(rng):
    """<im2col(x), c> == <x, col2im(c)>: col2im accumulates overlaps, it does not invert."""
    x = rng.standard_normal((2, 3, 7, 6))
    geometry = dict(kernel=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    col = im2col(x, **geometry)
    c = rng.standard_normal(col.shape)
    back = col2im(c, x.shape, geometry["stride"], geometry["padding"], geometry["dilation"])
    np.testing.assert_allclose((col * c).sum(), (x * back).sum(), rtol=1e-12)
    # overlapping windows: col2im(im2col(x)) counts each pixel once per window holding it
    ones = col2im(im2col(np.ones((1, 1, 5, 5)), (3, 3), (1, 1), (0, 0), (1, 1)), (1, 1, 5, 5),
                  (1, 1), (0, 0), (1, 1))
    assert ones[0, 0, 2, 2] == 9 and ones[0, 0, 0, 0] == 1


@pytest.mark.parametrize("size,kernel,stride,padding,dilation,ceil,expected", [
    (227, 11, 4, 0, 1, False, 55),  # AlexNet conv1
    (55, 3, 2, 0, 1, False, 27),  # AlexNet overlapping pool
    (112, 3, 2, 0, 1, True, 56),  # GoogLeNet pools use ceil_mode
    (4, 2, 2, 1, 1, True, 3),  # the extra ceil window starts inside the input: kept
    (5, 3, 3, 1, 1, True, 2),  # it would start in the right padding: dropped (torch's rule)
    (5, 3, 3, 1, 1, False, 2),
])
def test_conv_output_size(size, kernel, stride, padding, dilation, ceil, expected):
    assert conv_output_size(size, kernel, stride, padding, dilation, ceil_mode=ceil) == expected


@pytest.mark.parametrize("x_shape,w_shape,options", TRANSPOSE_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_transpose2d_matches_torch(x_shape, w_shape, options, dtype, with_bias, compare, rng):
    x, w, b = conv_inputs(rng, x_shape, w_shape, options, dtype, with_bias, transposed=True)
    # the bias gradient sums N*OH*OW values: in float32 with a (2, 3) stride, where the sum cancels to 0.048,
    # torch lands 1.9e-6 from the float64 sum and scratchnet 0.4e-6, beyond TOL's atol (tol_for_sums says why)
    out_pixels = TF.conv_transpose2d(torch.tensor(x), torch.tensor(w), **options)[:, 0].numel()
    compare(F.conv_transpose2d, TF.conv_transpose2d, [x, w, b], tol=tol_for_sums(dtype, out_pixels), **options)


@pytest.mark.parametrize("x_shape,w_shape,options", TRANSPOSE_CASES[1:5])
def test_conv_transpose2d_gradcheck(x_shape, w_shape, options, rng):
    inputs = gradcheck_inputs(rng, x_shape, w_shape, options, transposed=True)
    assert sn.gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, **options), inputs)


def test_conv_transpose2d_is_the_adjoint_of_conv2d(rng):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)> for the same weight tensor."""
    x = sn.tensor(rng.standard_normal((2, 4, 7, 6)))
    w = sn.tensor(rng.standard_normal((6, 2, 3, 3)))
    options = dict(stride=2, padding=1, dilation=1, groups=2)
    y = F.conv2d(x, w, **options)
    r = sn.tensor(rng.standard_normal(y.shape))
    back = F.conv_transpose2d(r, w, output_padding=(0, 1), **options)  # output_padding restores 7x6
    assert back.shape == x.shape
    np.testing.assert_allclose((y.data * r.data).sum(), (x.data * back.data).sum(), rtol=1e-12)


@pytest.mark.parametrize("call,message", [
    (lambda x, w: F.conv_transpose2d(x[:, :2], w), "input has 2 channels but weight"),
    (lambda x, w: F.conv_transpose2d(x, w, groups=2), "groups=2 must divide"),
    (lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=2), "output_padding"),
    (lambda x, w: F.conv_transpose2d(x.long(), w), "needs floating-point"),
    (lambda x, w: F.conv_transpose2d(x, w, sn.tensor(np.zeros(3))), r"bias must have shape \(2,\)"),
    (lambda x, w: F.conv_transpose2d(x, w, padding=4), "too small"),
])
def test_conv_transpose2d_errors(call, message, rng):
    x = sn.tensor(rng.standard_normal((1, 3, 3, 3)))
    w = sn.tensor(rng.standard_normal((3, 2, 3, 3)))
    with pytest.raises((ValueError, TypeError), match=message):
        call(x, w)
