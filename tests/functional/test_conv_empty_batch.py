"""An empty batch (N = 0) through every convolution route gives torch's shapes and zero gradients; a
kernel with no taps is refused in one sentence."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
import scratchnet.nn.functional as F
from conftest import compare_with_torch
from scratchnet.functional import conv_routes
from scratchnet.functional.conv_routes import ROUTES, Geometry

# route: (input shape, weight shape, padding, groups) of a call that route takes
ROUTE_CALLS = {
    "reference": ((0, 4, 8, 8), (6, 4, 3, 3), 1, 1),
    "im2col": ((0, 4, 8, 8), (6, 2, 3, 3), 1, 2),
    "gemm1x1": ((0, 4, 8, 8), (6, 4, 1, 1), 0, 1),
    "window": ((0, 4, 5, 5), (6, 4, 5, 5), 0, 1),
    "winograd": ((0, 32, 6, 6), (32, 32, 3, 3), 1, 1),
    "depthwise": ((0, 4, 8, 8), (8, 1, 3, 3), 1, 4),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("route", sorted(ROUTE_CALLS))
def test_an_empty_batch_through_every_route(route, dtype, rng):
    x_shape, w_shape, padding, groups = ROUTE_CALLS[route]
    x = np.zeros(x_shape, dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    out_hw = tuple(x_shape[2 + a] + 2 * padding - w_shape[2 + a] + 1 for a in range(2))
    geo = Geometry((1, 1), (padding, padding), (1, 1), groups, out_hw)
    assert conv_routes.choose(route, x, w, geo) == route  # the call is one this route takes
    compared = compare_with_torch(lambda *a: F.conv2d(*a, padding=padding, groups=groups, conv_algo=route),
                                  lambda *a: TF.conv2d(*a, padding=padding, groups=groups), [x, w, b])
    gw = compared.ours[1].grad
    gw = gw.numpy() if isinstance(gw, sn.Tensor) else np.asarray(gw)
    assert gw.shape == w_shape and not gw.any()  # exactly zero, never uninitialised memory
    # the route's own three functions, as the dispatch calls them
    impl = ROUTES[route].impl
    gy = np.zeros((0, w_shape[0], *out_hw), dtype)
    assert impl.forward(x, w, geo).shape == gy.shape
    assert impl.backward_input(gy, w, x_shape, geo).shape == x_shape
    gw = impl.backward_weight(gy, x, w_shape, geo)
    assert gw.shape == w_shape and gw.dtype == dtype and not gw.any()


def test_a_kernel_without_taps_is_refused_as_torch_refuses_it():
    x = sn.tensor(np.zeros((1, 2, 4, 4)))
    for weight, op, top in ((np.zeros((3, 2, 0, 3)), F.conv2d, TF.conv2d),
                            (np.zeros((2, 3, 3, 0)), F.conv_transpose2d, TF.conv_transpose2d)):
        with pytest.raises(RuntimeError, match="kernel size should be greater than zero"):
            top(torch.zeros(1, 2, 4, 4, dtype=torch.float64), torch.tensor(weight))
        with pytest.raises(ValueError, match=r"kernel size should be greater than zero, but the weight "
                                             rf"\({', '.join(map(str, weight.shape))}\) has a "
                                             rf"{weight.shape[2]}x{weight.shape[3]} kernel"):
            op(x, sn.tensor(weight))
