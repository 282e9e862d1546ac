"""Second derivatives of every op of the functional table (docs/ops.md) against torch's double backward in
float64, and sn.gradgradcheck of each, through conftest's compare_double_backward harness."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
import scratchnet.nn.functional as F
from scratchnet.kernels import dispatch
from conftest import CONV_CASES, POOL_CASES, TRANSPOSE_CASES, assert_close, conv_inputs

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


def normal(*shape, shift=0.0):
    return lambda rng: rng.standard_normal(shape) + shift


def positive(*shape):
    return lambda rng: rng.random(shape) + 0.5


def away_from_zero(*shape):
    """Normal values at least 0.1 from 0 (the kinks of abs, relu, leaky_relu)."""
    def make(rng):
        x = rng.standard_normal(shape)
        return np.where(np.abs(x) < 0.1, 0.5, x)
    return make


# --------------------------------------------------------------------------- math, shape, activations, linear
# (id, our op, torch's op, input makers); every float input requires grad

BROADCASTS = [((2, 3), (3,)), ((2, 1, 3), (4, 1)), ((), (2, 3))]
ELEMENTWISE = [
    *[(f"{name}{a}{b}", op, top, [normal(*a), away_from_zero(*b)]) for a, b in BROADCASTS
      for name, op, top in [("add", sn.functional.add, torch.add), ("sub", sn.functional.sub, torch.sub),
                            ("mul", sn.functional.mul, torch.mul), ("div", sn.functional.div, torch.div)]],
    ("where", lambda a, b: sn.functional.where(sn.tensor(np.arange(6).reshape(2, 3) % 2 == 0), a, b),
     lambda a, b: torch.where(torch.tensor(np.arange(6).reshape(2, 3) % 2 == 0), a, b), [normal(2, 3), normal(3)]),
    ("neg", lambda x: -x, lambda x: -x, [normal(2, 3)]),
    ("exp", lambda x: x.exp(), torch.exp, [normal(2, 3)]),
    ("log", lambda x: x.log(), torch.log, [positive(2, 3)]),
    ("sqrt", lambda x: x.sqrt(), torch.sqrt, [positive(2, 3)]),
    ("abs", lambda x: x.abs(), torch.abs, [away_from_zero(2, 3)]),
    ("clamp", lambda x: x.clamp(-0.5, 0.7), lambda x: x.clamp(-0.5, 0.7), [normal(3, 4)]),
    *[(f"pow{p}", lambda x, p=p: x ** p, lambda x, p=p: x ** p, [positive(2, 3)]) for p in (2, 3, 0.5, -1.5)],
    *[(f"matmul{a}{b}", lambda a, b: a @ b, torch.matmul, [normal(*a), normal(*b)])
      for a, b in [((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((2, 2, 3), (3, 4)),
                   ((5, 1, 2, 3), (2, 3, 4))]],
    *[(f"{name}{dim}{keep}", lambda x, f=f, dim=dim, keep=keep: f(x, dim, keep),
       lambda x, f=tf, dim=dim, keep=keep: f(x) if dim is None else f(x, dim, keepdim=keep), [normal(2, 3, 4)])
      for name, f, tf in [("sum", sn.functional.sum, torch.sum), ("mean", sn.functional.mean, torch.mean),
                          ("max", sn.functional.max, torch.amax)]
      for dim, keep in [(None, False), (1, False), ((0, 2), True)]],
    ("sum_to_size", lambda x: x.sum_to_size(2, 1), lambda x: x.sum_to_size(2, 1), [normal(2, 3)]),
    ("clone", lambda x: x.clone() * x, lambda x: x.clone() * x, [normal(2, 3)]),
]
SHAPE = [
    ("reshape", lambda x: x.reshape(3, 4) ** 2, lambda x: x.reshape(3, 4) ** 2, [normal(2, 6)]),
    ("transpose", lambda x: x.transpose(0, 2) ** 2, lambda x: x.transpose(0, 2) ** 2, [normal(2, 3, 4)]),
    ("permute", lambda x: x.permute(2, 0, 1) ** 2, lambda x: x.permute(2, 0, 1) ** 2, [normal(2, 3, 4)]),
    ("flatten", lambda x: x.flatten(1) ** 2, lambda x: x.flatten(1) ** 2, [normal(2, 3, 4)]),
    ("broadcast_to", lambda x: x.broadcast_to((2, 3, 4)) ** 2, lambda x: x.broadcast_to((2, 3, 4)) ** 2,
     [normal(3, 1)]),
    ("getitem_slices", lambda x: x[1:, ::2] ** 2, lambda x: x[1:, ::2] ** 2, [normal(3, 5)]),
    ("getitem_int", lambda x: x[1] ** 2, lambda x: x[1] ** 2, [normal(3, 5)]),
    ("getitem_repeats", lambda x: x[np.array([0, 2, 0])] ** 2, lambda x: x[torch.tensor([0, 2, 0])] ** 2,
     [normal(3, 5)]),
    ("getitem_mask", lambda x: x[np.array([True, False, True])] ** 2,
     lambda x: x[torch.tensor([True, False, True])] ** 2, [normal(3, 5)]),
    ("cat", lambda a, b: sn.cat([a, b * a[:, :1]], 1) ** 2, lambda a, b: torch.cat([a, b * a[:, :1]], 1) ** 2,
     [normal(2, 3), normal(2, 2)]),
    ("split", lambda x: tuple(p ** 2 for p in sn.split(x, [1, 3], 1)),
     lambda x: tuple(p ** 2 for p in torch.split(x, [1, 3], 1)), [normal(2, 4)]),
    ("stack", lambda a, b: sn.stack([a, a * b], 1) ** 2, lambda a, b: torch.stack([a, a * b], 1) ** 2,
     [normal(2, 3), normal(2, 3)]),
]
ACTIVATION = [
    ("relu", F.relu, TF.relu, [away_from_zero(3, 4)]),
    ("leaky_relu", F.leaky_relu, TF.leaky_relu, [away_from_zero(3, 4)]),
    ("leaky_relu_0.1", lambda x: F.leaky_relu(x, 0.1), lambda x: TF.leaky_relu(x, 0.1), [away_from_zero(3, 4)]),
    ("sigmoid", F.sigmoid, torch.sigmoid, [normal(3, 4)]),
    ("tanh", F.tanh, torch.tanh, [normal(3, 4)]),
    ("silu", F.silu, TF.silu, [normal(3, 4)]),
    *[(f"{name}_{dim}", lambda x, f=f, dim=dim: f(x, dim), lambda x, f=tf, dim=dim: f(x, dim), [normal(3, 4, 2)])
      for name, f, tf in [("softmax", F.softmax, TF.softmax), ("log_softmax", F.log_softmax, TF.log_softmax)]
      for dim in (0, 1, -1)],
    *[(f"linear{shape}{bias}", lambda x, w, b=None: F.linear(x, w, b), lambda x, w, b=None: TF.linear(x, w, b),
       [normal(*shape), normal(5, 4)] + ([normal(5)] if bias else [])) for shape in [(4,), (3, 4), (2, 3, 4)]
      for bias in (True, False)],
]


@pytest.mark.parametrize("name,op,torch_op,makers", ELEMENTWISE + SHAPE + ACTIVATION,
                         ids=[case[0] for case in ELEMENTWISE + SHAPE + ACTIVATION])
def test_double_backward_matches_torch(name, op, torch_op, makers, compare_double_backward, rng):
    compare_double_backward(op, torch_op, [make(rng) for make in makers])


# --------------------------------------------------------------------------- convolution, every route

ROUTE_CASES = [  # a case for each route, forced with conv_algo (auto picks them too, by shape)
    ("reference", (2, 4, 6, 6), (6, 3, 3), dict(groups=2, padding=1, stride=2)),
    ("im2col", (2, 4, 6, 6), (6, 3, 3), dict(groups=2, padding=1, dilation=2)),
    ("gemm1x1", (2, 4, 5, 5), (6, 1, 1), dict(groups=2, stride=2)),
    ("window", (2, 3, 5, 5), (4, 5, 5), dict()),
    ("winograd", (1, 32, 4, 4), (32, 3, 3), dict(padding=1)),
    ("depthwise", (2, 3, 6, 6), (6, 3, 3), dict(groups=3, padding=1, dilation=(1, 2))),
]


@pytest.mark.parametrize("x_shape,w_shape,options", CONV_CASES)
def test_conv2d_double_backward(x_shape, w_shape, options, compare_double_backward, rng):
    compare_double_backward(F.conv2d, TF.conv2d, conv_inputs(rng, x_shape, w_shape, options), **options)


@pytest.mark.parametrize("route,x_shape,w_shape,options", ROUTE_CASES, ids=[c[0] for c in ROUTE_CASES])
def test_conv2d_double_backward_on_every_route(route, x_shape, w_shape, options, compare_double_backward, rng):
    x, w, b = conv_inputs(rng, x_shape, w_shape, options)
    probe = F.conv2d(sn.tensor(x, requires_grad=True), sn.tensor(w), conv_algo=route, **options)
    assert probe.creator.route == route  # the route really takes this case
    compare_double_backward(lambda *a: F.conv2d(*a, conv_algo=route, **options),
                            lambda *a: TF.conv2d(*a, **options), [x, w, b])


def test_the_array_routes_double_backward(compare_double_backward, rng):
    """Max pooling, ReLU and batch norm where the CPU kernels do not go (the GPU, float16): their array code,
    forced with dispatch.reference_only() (every call counted on the reference route, the products of their
    double backward's formulas too)."""
    x = rng.standard_normal((2, 3, 5, 6))
    with dispatch.reference_only(), dispatch.recording() as taken:
        assert F.max_pool2d(sn.tensor(x, requires_grad=True), 3, 2).creator.plane_argmax is None
        compare_double_backward(lambda x: F.max_pool2d(x, 3, 2, 1) ** 2, lambda x: TF.max_pool2d(x, 3, 2, 1) ** 2,
                                [x])
        compare_double_backward(lambda x: F.relu(x) ** 2, lambda x: TF.relu(x) ** 2, [x])
        compare_double_backward(lambda x, w, b: F.batch_norm(x, None, None, w, b, True) ** 2,
                                lambda x, w, b: TF.batch_norm(x, None, None, w, b, True) ** 2,
                                [x, rng.standard_normal(3), rng.standard_normal(3)])
    assert {op for op, _ in taken} == {"max_pool2d", "relu", "batch_norm", "mul"}
    assert {route for _, route in taken} == {"reference"}


@pytest.mark.parametrize("x_shape,w_shape,options", TRANSPOSE_CASES)
def test_conv_transpose2d_double_backward(x_shape, w_shape, options, compare_double_backward, rng):
    compare_double_backward(F.conv_transpose2d, TF.conv_transpose2d,
                            conv_inputs(rng, x_shape, w_shape, options, transposed=True), **options)


# --------------------------------------------------------------------------- pooling and normalisation


@pytest.mark.parametrize("options", POOL_CASES + [dict(kernel_size=2, stride=1, dilation=2)])
def test_max_pool2d_double_backward(options, compare_double_backward, rng):
    compare_double_backward(lambda x: F.max_pool2d(x, **options) ** 2, lambda x: TF.max_pool2d(x, **options) ** 2,
                            [rng.standard_normal((2, 3, 7, 8))])


@pytest.mark.parametrize("options", POOL_CASES + [dict(kernel_size=3, stride=2, padding=1, divisor_override=4)])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_double_backward(options, count_include_pad, compare_double_backward, rng):
    options = dict(options, count_include_pad=count_include_pad)
    compare_double_backward(lambda x: F.avg_pool2d(x, **options) ** 2, lambda x: TF.avg_pool2d(x, **options) ** 2,
                            [rng.standard_normal((2, 3, 7, 8))])


@pytest.mark.parametrize("output_size", [1, 2, (3, 4), (2, None), 0])
def test_adaptive_avg_pool2d_double_backward(output_size, compare_double_backward, rng):
    """Each way adaptive pooling goes: a mean (1), an average pool (equal bins), the bin matrices."""
    if output_size == 0:
        pytest.skip("an empty output has no derivatives to compare")
    compare_double_backward(lambda x: F.adaptive_avg_pool2d(x, output_size) ** 2,
                            lambda x: TF.adaptive_avg_pool2d(x, output_size) ** 2, [rng.standard_normal((2, 3, 6, 7))])


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (2, 3, 4, 5)])  # (N, C): the array route; else kernels
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_double_backward(shape, training, affine, compare_double_backward, rng):
    x = rng.standard_normal(shape) * 3 + 2
    w, b = (rng.standard_normal(3), rng.standard_normal(3)) if affine else (None, None)
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5
    compare_double_backward(lambda x, m, v, w, b: F.batch_norm(x, m, v, w, b, training, eps=1e-3) ** 2,
                            lambda x, m, v, w, b: TF.batch_norm(x, m, v, w, b, training, eps=1e-3) ** 2,
                            [x, mean, var, w, b], constants=(1, 2))


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_local_response_norm_double_backward(size, compare_double_backward, rng):
    compare_double_backward(lambda x: F.local_response_norm(x, size, alpha=0.1, beta=0.75, k=2.0),
                            lambda x: TF.local_response_norm(x, size, alpha=0.1, beta=0.75, k=2.0),
                            [rng.standard_normal((2, 6, 3, 3))])


def test_dropout_double_backward(compare_double_backward, rng):
    """torch draws its own masks: its twin multiplies by the scaled mask scratchnet drew."""
    x = rng.standard_normal((3, 4))
    sn.manual_seed(5)
    scale = F.dropout(sn.tensor(np.ones((3, 4))), 0.3).numpy()

    def dropped(x):
        sn.manual_seed(5)
        return F.dropout(x, 0.3) ** 2
    compare_double_backward(dropped, lambda x: (x * torch.tensor(scale)) ** 2, [x])


# --------------------------------------------------------------------------- losses

CLASS_SHAPES = [((6, 4), (6,)), ((3, 4, 2, 3), (3, 2, 3)), ((4,), ())]


@pytest.mark.parametrize("x_shape,t_shape", CLASS_SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,label_smoothing,ignore", [(False, 0.0, False), (True, 0.2, True)])
def test_cross_entropy_and_nll_double_backward(x_shape, t_shape, reduction, weighted, label_smoothing, ignore,
                                               compare_double_backward, rng):
    x = rng.standard_normal(x_shape)
    target = rng.integers(0, 4, t_shape)
    if ignore and target.size > 1:
        target.reshape(-1)[0] = -100
    weight = rng.random(4) + 0.5 if weighted else None
    options = dict(weight=None if weight is None else weight, reduction=reduction)

    def ours(loss):
        return lambda x, t: loss(x, t, weight=None if weight is None else sn.tensor(weight), reduction=reduction,
                                 **extra)

    def theirs(loss):
        return lambda x, t: loss(x, t, weight=None if weight is None else torch.tensor(weight), reduction=reduction,
                                 **extra)
    del options
    extra = dict(label_smoothing=label_smoothing)
    compare_double_backward(ours(F.cross_entropy), theirs(TF.cross_entropy), [x, target])
    extra = {}
    compare_double_backward(lambda x, t: ours(F.nll_loss)(F.log_softmax(x, 1 if x.ndim > 1 else 0), t),
                            lambda x, t: theirs(TF.nll_loss)(TF.log_softmax(x, 1 if x.ndim > 1 else 0), t),
                            [x, target])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_double_backward(reduction, compare_double_backward, rng):
    compare_double_backward(lambda a, b: F.mse_loss(a, b, reduction=reduction),
                            lambda a, b: TF.mse_loss(a, b, reduction=reduction),
                            [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))])


# --------------------------------------------------------------------------- casts, and what has no double backward


def test_to_dtype_double_backward_in_float32(rng):
    x = rng.standard_normal((2, 3))
    ours, theirs = sn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    results = []
    for t, lib in ((ours, sn), (theirs, torch)):
        y = (t.float() ** 3).sum()
        (g,) = lib.autograd.grad(y, t, create_graph=True)
        (h,) = lib.autograd.grad(g.sum(), t)
        results.append((g, h))
    for a, b in zip(*results):
        assert a.dtype == np.float64
        assert_close(a, b.detach().numpy(), dict(rtol=1e-6, atol=1e-6))  # a float32 step in the middle


def test_an_op_without_a_differentiable_backward_says_so():
    class Square(sn.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gy):
            return (2 * self.x * gy,)

    x = sn.tensor([1.0, 2.0], requires_grad=True)
    y = Square()(x).sum()
    with pytest.raises(RuntimeError, match="Square has no differentiable backward, so backward with "
                                           "create_graph=True cannot pass through it"):
        sn.autograd.grad(y, x, create_graph=True)
    assert sn.autograd.grad(Square()(x).sum(), x)[0].numpy().tolist() == [2.0, 4.0]  # first order is fine


# --------------------------------------------------------------------------- third derivatives
# The ops a differentiable backward creates (a convolution's weight gradient, max pooling's scatter, average
# pooling's adjoint, indexing's scatter, LRN's window sum, where, sum_to_size) have differentiable backwards of
# their own: a third derivative goes through them.

THIRD_ORDER = [
    ("conv2d", lambda x, w: F.conv2d(x, w, padding=1, groups=2) ** 2, lambda x, w: TF.conv2d(x, w, padding=1, groups=2) ** 2,
     [normal(2, 4, 5, 5), normal(4, 2, 3, 3)]),
    ("conv2d_depthwise", lambda x, w: F.conv2d(x, w, groups=3, stride=2) ** 2,
     lambda x, w: TF.conv2d(x, w, groups=3, stride=2) ** 2, [normal(1, 3, 6, 6), normal(6, 1, 3, 3)]),
    ("conv_transpose2d", lambda x, w: F.conv_transpose2d(x, w, stride=2) ** 2,
     lambda x, w: TF.conv_transpose2d(x, w, stride=2) ** 2, [normal(1, 2, 3, 3), normal(2, 3, 3, 3)]),
    ("max_pool2d", lambda x: F.max_pool2d(x, 3, 2) ** 3, lambda x: TF.max_pool2d(x, 3, 2) ** 3, [normal(1, 2, 7, 7)]),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 3, 2, 1) ** 3, lambda x: TF.avg_pool2d(x, 3, 2, 1) ** 3,
     [normal(1, 2, 7, 7)]),
    ("getitem", lambda x: x[np.array([0, 2, 0])] ** 3, lambda x: x[torch.tensor([0, 2, 0])] ** 3, [normal(3, 4)]),
    ("lrn", lambda x: F.local_response_norm(x, 3, alpha=0.1, k=2.0), lambda x: TF.local_response_norm(x, 3, alpha=0.1, k=2.0),
     [normal(1, 4, 2, 2)]),
    ("relu", lambda x: F.relu(x) ** 3, lambda x: TF.relu(x) ** 3, [away_from_zero(3, 4)]),
    ("broadcast_add", lambda a, b: (a + b) ** 3, lambda a, b: (a + b) ** 3, [normal(2, 3), normal(3)]),
    # torch's fused batch norm gets its own third derivative wrong (it differs from the same formula
    # composed of torch ops, which matches scratchnet's to 1e-12): the reference here is that composition
    ("batch_norm", lambda x, w: F.batch_norm(x, None, None, w, None, True) ** 2,
     lambda x, w: torch_batch_norm_composed(x, w) ** 2, [normal(3, 2, 2, 2), normal(2)]),
    ("cross_entropy", lambda x, t: F.cross_entropy(x, t), lambda x, t: TF.cross_entropy(x, t),
     [normal(4, 3), lambda rng: np.array([0, 2, 1, 2])]),
]


def torch_batch_norm_composed(x, w, eps=1e-5):
    """Training-mode batch norm of (N, C, H, W) from torch's elementwise ops and reductions."""
    centred = x - x.mean((0, 2, 3), keepdim=True)
    return centred * ((centred * centred).mean((0, 2, 3), keepdim=True) + eps) ** -0.5 * w.reshape(1, -1, 1, 1)


def test_torch_fused_batch_norm_third_derivative_is_what_differs(compare_double_backward, rng):
    """Why the composition above: against torch's fused op the second derivatives agree, the third not."""
    x, w = rng.standard_normal((3, 2, 2, 2)), rng.standard_normal(2)
    op = lambda x, w: F.batch_norm(x, None, None, w, None, True) ** 2  # noqa: E731
    fused = lambda x, w: TF.batch_norm(x, None, None, w, None, True) ** 2  # noqa: E731
    compare_double_backward(op, fused, [x, w], order=2, gradgradcheck=False)
    with pytest.raises(AssertionError, match="derivative 3 w.r.t. input 0"):
        compare_double_backward(op, fused, [x, w], order=3, gradgradcheck=False)


@pytest.mark.parametrize("name,op,torch_op,makers", THIRD_ORDER, ids=[case[0] for case in THIRD_ORDER])
def test_third_derivatives_match_torch(name, op, torch_op, makers, compare_double_backward, rng):
    compare_double_backward(op, torch_op, [make(rng) for make in makers], order=3, gradgradcheck=False)
