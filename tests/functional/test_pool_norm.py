"""Pooling and normalisation against torch (values, gradients, running stats) and gradcheck."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
import scratchnet.nn.functional as F
from scratchnet.functional import norm
from conftest import POOL_CASES, assert_close

@pytest.mark.parametrize("options", POOL_CASES + [dict(kernel_size=2, stride=1, dilation=2),
                                                  dict(kernel_size=3, stride=2, padding=1, dilation=(2, 1),
                                                       ceil_mode=True)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_pool2d_matches_torch(options, dtype, compare, rng):
    x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    compare(F.max_pool2d, TF.max_pool2d, [x], **options)


def test_max_pool2d_ties_go_to_the_first_maximum(compare):
    """Equal values in a window (ReLU zeros!): torch sends the whole gradient to the first, row-major."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = 5.0  # shared by two overlapping windows
    compare(F.max_pool2d, TF.max_pool2d, [x], kernel_size=3, stride=1)


def test_max_pool2d_nan_windows_like_torch():
    """A NaN wins its window (torch's kernel takes every NaN it meets: the last one gets the gradient)."""
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 4))
    x[0, 0, 0, 1] = x[0, 0, 1, 1] = np.nan
    xs, xt = sn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (y, idx), (y_ref, idx_ref) = F.max_pool2d(xs, 2, 1, return_indices=True), TF.max_pool2d(xt, 2, 1,
                                                                                           return_indices=True)
    np.testing.assert_array_equal(y.data, y_ref.detach().numpy())  # NaN positions equal too
    np.testing.assert_array_equal(idx.data, idx_ref.numpy())
    y.sum().backward()
    y_ref.sum().backward()
    np.testing.assert_array_equal(xs.grad, xt.grad.numpy())


def test_max_pool2d_return_indices(rng):
    x = rng.standard_normal((2, 3, 7, 8))
    for options in POOL_CASES:
        y, idx = F.max_pool2d(sn.tensor(x), return_indices=True, **options)
        y_ref, idx_ref = TF.max_pool2d(torch.tensor(x), return_indices=True, **options)
        np.testing.assert_array_equal(y.data, y_ref.numpy())
        np.testing.assert_array_equal(idx.data, idx_ref.numpy())
        assert idx.dtype == np.int64


@pytest.mark.parametrize("options", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_avg_pool2d_matches_torch(options, count_include_pad, dtype, compare, rng):
    x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    compare(F.avg_pool2d, TF.avg_pool2d, [x], count_include_pad=count_include_pad, **options)


def test_avg_pool2d_divisors_at_the_edges():
    """On ones, the output shows the divisor: padded zeros count with count_include_pad, but a ceil_mode
    window hanging past the padding is divided by its clipped size even then (torch's rule)."""
    ones = sn.tensor(np.ones((1, 1, 4, 4)))
    y = F.avg_pool2d(ones, 3, stride=2, padding=1, ceil_mode=False, count_include_pad=True)
    np.testing.assert_allclose(y.data[0, 0], [[4 / 9, 6 / 9], [6 / 9, 1.0]])
    y = F.avg_pool2d(ones, 3, stride=2, padding=1, count_include_pad=False)
    np.testing.assert_allclose(y.data[0, 0], np.ones((2, 2)))
    # 5 wide, kernel 2, stride 2, ceil: the last window covers column 4 only (no padding): 1/1, not 1/2
    y = F.avg_pool2d(sn.tensor(np.ones((1, 1, 5, 5))), 2, ceil_mode=True, count_include_pad=True)
    np.testing.assert_allclose(y.data[0, 0], np.ones((3, 3)))
    assert_close(y, TF.avg_pool2d(torch.ones(1, 1, 5, 5, dtype=torch.float64), 2, ceil_mode=True))


def test_avg_pool2d_divisor_override(rng, compare):
    x = rng.standard_normal((1, 2, 6, 5))
    compare(F.avg_pool2d, TF.avg_pool2d, [x], kernel_size=3, stride=2, padding=1,
            ceil_mode=True, divisor_override=4)


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("options", [POOL_CASES[i] for i in (1, 2, 4, 6)])
def test_pool_gradcheck(pool, options, rng):
    x = sn.tensor(rng.standard_normal((1, 2, 7, 6)), requires_grad=True)
    op = F.max_pool2d if pool == "max" else F.avg_pool2d
    assert sn.gradcheck(lambda x: op(x, **options), [x])


@pytest.mark.parametrize("call,message", [
    (lambda x: F.max_pool2d(x, 3, padding=2), "pad should be at most half of effective kernel size"),
    (lambda x: F.avg_pool2d(x, 2, padding=(0, 2)), "pad should be at most half of effective kernel size"),
    (lambda x: F.max_pool2d(x[0], 2), r"expects input of shape \(N, C, H, W\)"),
    (lambda x: F.max_pool2d(x, 9), "too small"),
    (lambda x: F.max_pool2d(x, 2, stride=0), "stride"),
    (lambda x: F.avg_pool2d(x.long(), 2), "needs floating-point"),
    (lambda x: F.adaptive_avg_pool2d(x, (2, 2, 2)), "int or a pair"),
    (lambda x: F.adaptive_avg_pool2d(x, -1), "greater than or equal to 0"),  # 0 is allowed: an empty output
])
def test_pool_errors(call, message, rng):
    x = sn.tensor(rng.standard_normal((1, 2, 5, 5)))
    with pytest.raises((ValueError, TypeError), match=message):
        call(x)


@pytest.mark.parametrize("output_size", [1, (1, 1), 2, (3, 4), (None, 3), (2, None), 5, (7, 1), (4, 2)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adaptive_avg_pool2d_matches_torch(output_size, dtype, compare, rng):
    # 6x8 input: 2 and (3, 4) divide evenly (the avg_pool fast path); 5, (7, 1) give overlapping uneven bins
    x = rng.standard_normal((2, 3, 6, 8)).astype(dtype)
    compare(F.adaptive_avg_pool2d, TF.adaptive_avg_pool2d, [x], output_size=output_size)


@pytest.mark.parametrize("output_size", [1, 2, (4, 3), (5, 2)])
def test_adaptive_avg_pool2d_gradcheck(output_size, rng):
    x = sn.tensor(rng.standard_normal((1, 2, 6, 4)), requires_grad=True)
    assert sn.gradcheck(lambda x: F.adaptive_avg_pool2d(x, output_size), [x])


# --------------------------------------------------------------------------- batch norm


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (2, 3, 4, 5)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_norm_matches_torch(shape, training, affine, dtype, compare, rng):
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    w, b = (rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)) if affine else (None, None)
    mean, var = rng.standard_normal(3).astype(dtype), (rng.random(3) + 0.5).astype(dtype)
    run = compare(F.batch_norm, TF.batch_norm, [x, mean, var, w, b], constants=(1, 2), training=training,
                  momentum=0.3, eps=1e-3)
    # running statistics: updated in place (unbiased variance) when training, untouched otherwise
    for i in (1, 2):
        assert_close(run.ours[i], run.theirs[i], what=("running_mean", "running_var")[i - 1])


def test_batch_norm_updates_the_module_buffers_in_place(rng):
    """The module's buffer arrays themselves change (no rebinding), so views and state_dicts see it."""
    mean, var = sn.tensor(np.zeros(2)), sn.tensor(np.ones(2))
    mean_array, var_array = mean.data, var.data
    x = rng.standard_normal((6, 2)) + 4
    F.batch_norm(sn.tensor(x), mean, var, training=True, momentum=0.5)
    assert mean.data is mean_array and var.data is var_array
    np.testing.assert_allclose(mean_array, 0.5 * x.mean(axis=0))
    np.testing.assert_allclose(var_array, 0.5 + 0.5 * x.var(axis=0, ddof=1))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 3)])
def test_batch_norm_gradcheck(training, shape, rng):
    x = sn.tensor(rng.standard_normal(shape), requires_grad=True)
    w = sn.tensor(rng.standard_normal(3), requires_grad=True)
    b = sn.tensor(rng.standard_normal(3), requires_grad=True)
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5

    def fn(x, w, b):  # fresh buffers each call, so the in-place update cannot leak between evaluations
        return F.batch_norm(x, sn.tensor(mean), sn.tensor(var), w, b, training)
    assert sn.gradcheck(fn, [x, w, b])
    assert sn.gradcheck(lambda x: F.batch_norm(x, None, None, training=True), [x])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("layout", ["NCHW", "NCL", "transposed", "empty"])
def test_batch_norm_kernels_match_torch(layout, affine, training, dtype, rng):
    """The CPU kernels (kernels/cpu_norm.py) against torch, forward and every gradient, also on a
    non-contiguous input and an empty batch; the running statistics updated alike."""
    shape = {"NCHW": (3, 4, 5, 6), "NCL": (5, 4, 7), "transposed": (3, 4, 6, 5), "empty": (0, 4, 2, 2)}[layout]
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    if layout == "transposed":
        x = x.transpose(0, 1, 3, 2)  # a view with the last two axes swapped
    w, b = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    mean, var = rng.standard_normal(4).astype(dtype), (rng.random(4) + 0.5).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    ours = [sn.tensor(a, requires_grad=True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    stats = [sn.tensor(mean.copy()), sn.tensor(var.copy())]
    stats_t = [torch.tensor(mean.copy()), torch.tensor(var.copy())]
    affine_ours, affine_theirs = (ours[1:], theirs[1:]) if affine else ([None, None], [None, None])
    y = F.batch_norm(ours[0], *stats, *affine_ours, training=training, momentum=0.3)
    y_t = TF.batch_norm(theirs[0], *stats_t, *affine_theirs, training=training, momentum=0.3)
    assert_close(y, y_t, what="output")
    y.backward(gy)
    y_t.backward(torch.tensor(gy))
    for name, t, t_ref in zip(("x", "weight", "bias")[:3 if affine else 1], ours, theirs):
        assert_close(t.grad, t_ref.grad, what=f"gradient of {name}")
    for name, s, s_ref in zip(("running_mean", "running_var"), stats, stats_t):
        assert_close(s, s_ref, what=name)


def test_batch_norm_kernels_equal_the_array_code(rng, monkeypatch):
    """The kernels compute what the array code does (the GPU's, float16's, (N, C)'s), to rounding."""
    x = sn.tensor(rng.standard_normal((4, 3, 5, 5)) * 2 + 1, requires_grad=True)
    w, b = (sn.tensor(rng.standard_normal(3), requires_grad=True) for _ in range(2))
    gy = rng.standard_normal(x.shape)
    results = []
    for on_kernels in (True, False):
        if not on_kernels:
            monkeypatch.setattr(norm.kernels, "supports", lambda *arrays: False)
        for t in (x, w, b):
            t.grad = None
        y = F.batch_norm(x, None, None, w, b, training=True)
        y.backward(gy)
        results.append([y.numpy(), x.grad, w.grad, b.grad])
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


def test_batch_norm_errors(rng):
    stats = sn.tensor(np.zeros(3)), sn.tensor(np.ones(3))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(sn.tensor(rng.standard_normal((1, 3))), *stats, training=True)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(4,\)"):
        F.batch_norm(sn.tensor(rng.standard_normal((2, 4))), *stats)
    with pytest.raises(ValueError, match="needs running_mean"):
        F.batch_norm(sn.tensor(rng.standard_normal((2, 3))), None, None, training=False)
    # eval with a single sample is fine (running statistics)
    assert F.batch_norm(sn.tensor(rng.standard_normal((1, 3))), *stats).shape == (1, 3)


# --------------------------------------------------------------------------- local response norm


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_local_response_norm_matches_torch(size, dtype, compare, rng):
    x = (rng.standard_normal((2, 6, 3, 4)) * 4).astype(dtype)  # large activations: the norm matters
    compare(F.local_response_norm, TF.local_response_norm, [x], size=size, alpha=0.05,
            beta=0.75, k=2.0)


def test_local_response_norm_alexnet_constants(rng):
    """The paper's k=2, n=5, alpha=1e-4, beta=0.75 (alpha not divided by n), written out by hand."""
    x = rng.standard_normal((1, 7, 2, 2)) * 30
    y = F.local_response_norm(sn.tensor(x), size=5, alpha=5 * 1e-4, beta=0.75, k=2.0).data
    squares = np.pad(x ** 2, ((0, 0), (2, 2), (0, 0), (0, 0)))
    expected = np.stack([x[:, c] / (2 + 1e-4 * squares[:, c:c + 5].sum(axis=1)) ** 0.75 for c in range(7)], 1)
    np.testing.assert_allclose(y, expected, rtol=1e-12)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_local_response_norm_gradcheck(size, rng):
    x = sn.tensor(rng.standard_normal((1, 5, 2, 3)), requires_grad=True)
    assert sn.gradcheck(lambda x: F.local_response_norm(x, size, alpha=0.5, beta=0.75, k=1.0), [x])


def test_local_response_norm_errors(rng):
    with pytest.raises(ValueError, match="3 or more dims"):
        F.local_response_norm(sn.tensor(rng.standard_normal((2, 3))), 2)
    with pytest.raises(ValueError, match="positive int"):
        F.local_response_norm(sn.tensor(rng.standard_normal((2, 3, 4))), 0)
