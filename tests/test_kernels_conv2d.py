"""conv2d's routes (conv_algo='im2col' | 'direct' | 'auto') against torch and
each other, float64 gradient checks through every route (the Numba kernels on
the CPU, the CUDA kernels on a GPU), and the global default's setter.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
import scratchnet.functional as F
from scratchnet import backend
from scratchnet.functional import conv

ALGOS = ["im2col", "direct", "auto"]

# (x shape, weight shape, options): dense, grouped, depthwise (multiplier 1 and 2), strided/dilated,
# and padding='same' with even kernels (the odd pixel padded bottom/right, as torch)
CASES = [
    ((2, 3, 6, 5), (4, 3, 3, 3), dict(stride=1, padding=1)),
    ((1, 4, 7, 6), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
    ((2, 3, 6, 7), (3, 1, 3, 3), dict(stride=1, padding=1, groups=3)),
    ((1, 2, 9, 8), (4, 1, 3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)),
    ((1, 2, 5, 6), (3, 2, 2, 4), dict(padding="same")),
    ((1, 3, 5, 4), (3, 1, 4, 2), dict(padding="same", groups=3)),
]
IDS = ["dense", "grouped", "depthwise", "depthwise-m2", "same-even", "depthwise-same-even"]


def _tensors(x_shape, w_shape, dtype, rng, device="cpu"):
    arrays = [rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, w_shape[:1])]
    return [sn.tensor(a, requires_grad=True, device=device) for a in arrays]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own note on its copy
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_route_matches_torch(case, algo, dtype, device, rng):
    x_shape, w_shape, options = case
    x, w, b = _tensors(x_shape, w_shape, dtype, rng, device)
    y = F.conv2d(x, w, b, conv_algo=algo, **options)
    gy = rng.standard_normal(y.shape).astype(dtype)
    y.backward(backend.to_device(gy, device))
    xt, wt, bt = (torch.tensor(backend.to_numpy(t.data), requires_grad=True) for t in (x, w, b))
    yt = TF.conv2d(xt, wt, bt, **options)
    yt.backward(torch.tensor(gy))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), **tol)
    for t, ref in ((x, xt), (w, wt), (b, bt)):
        np.testing.assert_allclose(backend.to_numpy(t.grad), ref.grad.numpy(), **tol)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_route_gradchecks(case, algo, device, rng):
    x_shape, w_shape, options = case
    x, w, b = _tensors(x_shape, w_shape, np.float64, rng, device)
    assert sn.gradcheck(lambda x, w, b: F.conv2d(x, w, b, conv_algo=algo, **options), [x, w, b])


def test_auto_sends_depthwise_to_the_direct_kernel(monkeypatch, rng):
    calls = []
    from scratchnet.kernels import cpu
    original = cpu.depthwise_forward
    monkeypatch.setattr(cpu, "depthwise_forward", lambda *a: calls.append(1) or original(*a))
    x, w, _ = _tensors((1, 3, 5, 5), (3, 1, 3, 3), np.float64, rng)
    F.conv2d(x, w, padding=1, groups=3, conv_algo="auto")
    assert calls == [1]
    F.conv2d(x, w, padding=1, groups=3, conv_algo="im2col")
    assert calls == [1]


def test_global_default_and_bad_names(rng):
    x, w, _ = _tensors((1, 2, 4, 4), (2, 1, 3, 3), np.float64, rng)
    expected = F.conv2d(x, w, groups=2, conv_algo="im2col").numpy()
    previous = conv.get_conv_algo()
    try:
        for algo in ALGOS:
            conv.set_conv_algo(algo)
            assert conv.get_conv_algo() == algo
            np.testing.assert_allclose(F.conv2d(x, w, groups=2).numpy(), expected, rtol=1e-12)
    finally:
        conv.set_conv_algo(previous)
    with pytest.raises(ValueError, match="conv_algo must be one of"):
        conv.set_conv_algo("winograd")
    with pytest.raises(ValueError, match="conv_algo must be one of"):
        F.conv2d(x, w, groups=2, conv_algo="fft")
