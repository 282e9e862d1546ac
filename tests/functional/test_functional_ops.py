"""Activations, linear, dropout and losses against torch; gradients through residual and concat joins."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
import scratchnet.nn.functional as F
from conftest import assert_close, compare_with_torch

# --------------------------------------------------------------------------- activations

ACTIVATIONS = [
    ("relu", F.relu, TF.relu),
    # (x * 1: not a leaf, which in place is refused)
    ("relu_inplace", lambda x: F.relu(x * 1, inplace=True), lambda x: TF.relu(x * 1, inplace=True)),
    ("leaky_relu", F.leaky_relu, TF.leaky_relu),
    ("leaky_relu_0.1", lambda x: F.leaky_relu(x, 0.1), lambda x: TF.leaky_relu(x, 0.1)),  # YOLOv1
    ("sigmoid", F.sigmoid, torch.sigmoid),
    ("tanh", F.tanh, torch.tanh),
    ("silu", F.silu, TF.silu),
    ("softmax_last", lambda x: F.softmax(x, -1), lambda x: TF.softmax(x, -1)),
    ("softmax_0", lambda x: F.softmax(x, 0), lambda x: TF.softmax(x, 0)),
    ("softmax_1", lambda x: F.softmax(x, 1), lambda x: TF.softmax(x, 1)),
    ("log_softmax_1", lambda x: F.log_softmax(x, 1), lambda x: TF.log_softmax(x, 1)),
    ("log_softmax_last", lambda x: F.log_softmax(x, -1), lambda x: TF.log_softmax(x, -1)),
]


@pytest.mark.parametrize("name,op,torch_op", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activation_matches_torch(name, op, torch_op, dtype, compare, rng):
    x = (rng.standard_normal((3, 4, 5)) * 3).astype(dtype)
    x[0, 0, :2] = 0.0  # the kink of relu/leaky_relu: torch's subgradient there
    compare(op, torch_op, [x])


@pytest.mark.parametrize("name,op,torch_op", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_gradcheck(name, op, torch_op, rng):
    x = rng.standard_normal((3, 4))
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences off the relu kink
    assert sn.gradcheck(op, [sn.tensor(x, requires_grad=True)])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])  # float16: the array code's route
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_relu_in_place_writes_the_same_numbers_into_x_itself(dtype, layout, device):
    """torch's rule in place too: NaN passes (value and gradient), -inf and -0.0 become 0; a strided x is
    written through (its own memory changes); the gradient is the out-of-place one, bit for bit."""
    values = np.array([[-2.0, -0.0, 0.0, np.nan, -np.inf, np.inf, 3.0, -1e-30]], dtype=dtype)
    values = np.concatenate([values, -values]).astype(dtype)
    if layout == "transposed":
        values = np.ascontiguousarray(values.T).T  # (2, 8), F-ordered
    expected = F.relu(sn.tensor(values, device=device)).numpy()
    x = sn.tensor(values.copy(order="K"), device=device)
    array = x.data
    assert x.relu_() is x and F.relu(x, inplace=True) is x and x.data is array and x._version == 2
    np.testing.assert_array_equal(x.numpy(), expected)
    assert np.signbit(x.numpy()[~np.isnan(x.numpy())]).sum() == 0  # no -0.0 left
    theirs = torch.tensor(values.astype(np.float64)).relu_()
    np.testing.assert_array_equal(x.numpy().astype(np.float64), theirs.numpy())
    grads = []
    for inplace in (False, True):
        leaf = sn.tensor(values, requires_grad=True, device=device)
        h = leaf * 1
        F.relu(h, inplace=inplace).backward(sn.tensor(np.full(values.shape, 3.0, dtype), device=device))
        grads.append(leaf.grad.numpy())
    np.testing.assert_array_equal(*grads)


def test_relu_in_place_follows_torch_rules(rng):
    """Refused on a leaf that requires grad; recorded on a non-leaf; a backward that kept x refuses."""
    for lib, relu in ((sn, F.relu), (torch, TF.relu)):
        leaf = lib.tensor(rng.standard_normal(4), requires_grad=True)
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
            relu(leaf, inplace=True)
        h = leaf * 2
        kept = h * h  # the product keeps its inputs for backward
        relu(h, inplace=True)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            kept.sum().backward()


def test_relu_module_in_place_writes_its_input(rng):
    x = rng.standard_normal((2, 3))
    for inplace in (False, True):
        t = sn.tensor(x.copy())
        y = sn.nn.ReLU(inplace=inplace)(t)
        assert (y is t) == inplace and (t.numpy() == np.maximum(x, 0)).all() == inplace
        np.testing.assert_array_equal(y.numpy(), np.maximum(x, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_are_stable_at_extremes(dtype, device):
    x = np.array([[-1000.0, -80.0, 0.0, 80.0, 1000.0]], dtype=dtype)
    for op, torch_op in [(F.sigmoid, torch.sigmoid), (F.silu, TF.silu), (lambda t: F.softmax(t, 1),
                         lambda t: TF.softmax(t, 1)), (lambda t: F.log_softmax(t, 1), lambda t: TF.log_softmax(t, 1))]:
        y = op(sn.tensor(x, device=device))
        assert np.isfinite(y.numpy()).all()
        assert_close(y, torch_op(torch.tensor(x)))


def test_softmax_dim_none_means_last_axis(rng):
    x = sn.tensor(rng.standard_normal((2, 3, 4)))
    np.testing.assert_allclose(F.softmax(x).data, F.softmax(x, -1).data)
    np.testing.assert_allclose(F.log_softmax(x).data, F.log_softmax(x, 2).data)
    with pytest.raises(ValueError, match="out of range"):
        F.softmax(x, 3)
    with pytest.raises(TypeError, match="needs floating-point"):
        F.sigmoid(x.long())


# --------------------------------------------------------------------------- linear


@pytest.mark.parametrize("x_shape", [(4,), (3, 4), (2, 3, 4)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_matches_torch(x_shape, with_bias, dtype, compare, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((5, 4)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype) if with_bias else None
    compare(F.linear, TF.linear, [x, w, b])


def test_linear_gradcheck_and_errors(rng):
    x, w, b = (sn.tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3, 4), (5, 4), (5,)])
    assert sn.gradcheck(F.linear, [x, w, b])
    with pytest.raises(ValueError, match="expects 4 features"):
        F.linear(sn.tensor(np.zeros((2, 3))), w)
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        F.linear(x, w, sn.tensor(np.zeros(4)))
    with pytest.raises(ValueError, match="weight must be"):
        F.linear(x, sn.tensor(np.zeros(4)))


# --------------------------------------------------------------------------- dropout


def test_dropout_inverted_scaling_and_gradient(device):
    x = sn.tensor(np.ones((200, 50)), requires_grad=True, device=device)
    y = F.dropout(x, 0.3)
    values = np.unique(y.numpy())
    np.testing.assert_allclose(values, [0.0, 1 / 0.7])
    kept = (y.numpy() != 0).mean()
    assert abs(kept - 0.7) < 0.02  # 10000 draws: 5 standard deviations is 0.023
    y.sum().backward()
    np.testing.assert_allclose(sn.backend.to_numpy(x.grad), y.numpy())  # the same mask, the same scale


def test_dropout_repeatable_with_manual_seed(device):
    x = sn.tensor(np.ones((8, 8)), device=device)
    sn.manual_seed(7)
    first = F.dropout(x, 0.5).numpy()
    second = F.dropout(x, 0.5).numpy()
    sn.manual_seed(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)
    assert not np.array_equal(first, second)


def test_dropout_edge_cases(rng):
    x = sn.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    y = F.dropout(x, 1.0)
    np.testing.assert_array_equal(y.data, 0.0)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, 0.0)
    assert F.dropout(sn.tensor(np.ones(4, dtype=np.float32)), 0.5).dtype == np.float32
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            F.dropout(x, p)


def test_dropout_gradcheck():
    x = sn.tensor(np.random.default_rng(0).standard_normal((4, 5)), requires_grad=True)

    def fn(x):
        sn.manual_seed(3)  # the same mask on every evaluation
        return F.dropout(x, 0.4)
    assert sn.gradcheck(fn, [x])


# --------------------------------------------------------------------------- losses

CLASS_SHAPES = [((6, 4), (6,)), ((3, 4, 2, 3), (3, 2, 3)), ((4,), ())]  # (N, C), per-pixel, unbatched


def class_problem(rng, x_shape, t_shape, dtype=np.float64):
    x = (rng.standard_normal(x_shape) * 2).astype(dtype)
    t = rng.integers(0, 4, t_shape).astype(np.int64)
    if t.ndim:
        t.flat[1] = -100  # one ignored entry
    return x, t


@pytest.mark.parametrize("x_shape,t_shape", CLASS_SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_matches_torch(x_shape, t_shape, reduction, weighted, label_smoothing, dtype, compare, rng):
    x, t = class_problem(rng, x_shape, t_shape, dtype)
    w = (rng.random(4) + 0.2).astype(dtype) if weighted else None

    def ours(x, t, w):
        return F.cross_entropy(x, t, w, reduction=reduction, label_smoothing=label_smoothing)

    def theirs(x, t, w):
        return TF.cross_entropy(x, t, w, reduction=reduction, label_smoothing=label_smoothing)
    compare(ours, theirs, [x, t, w], constants=(2,))


@pytest.mark.parametrize("x_shape,t_shape", CLASS_SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_torch(x_shape, t_shape, reduction, weighted, compare, rng):
    x, t = class_problem(rng, x_shape, t_shape)
    w = rng.random(4) + 0.2 if weighted else None
    compare(lambda x, t, w: F.nll_loss(x, t, w, reduction=reduction),
            lambda x, t, w: TF.nll_loss(x, t, w, reduction=reduction), [x, t, w], constants=(2,))


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_class_loss_gradcheck(loss, reduction, rng):
    x, t = class_problem(rng, (3, 4, 2, 2), (3, 2, 2))
    t[t == -100] = 2  # ignore a real class this time
    w = sn.tensor(rng.random(4) + 0.2)
    options = dict(reduction=reduction, ignore_index=2)
    if loss == "cross_entropy":
        options["label_smoothing"] = 0.1
    op = getattr(F, loss)
    assert sn.gradcheck(lambda x: op(x, sn.tensor(t), w, **options), [sn.tensor(x, requires_grad=True)])


def test_cross_entropy_all_ignored_is_nan_like_torch():
    x, t = np.zeros((2, 3)), np.full(2, -100)
    ours = F.cross_entropy(sn.tensor(x), sn.tensor(t)).item()
    assert np.isnan(ours) and np.isnan(TF.cross_entropy(torch.tensor(x), torch.tensor(t)).item())


def test_cross_entropy_huge_logits_stay_finite():
    x = sn.tensor(np.array([[1000.0, -1000.0, 0.0]]), requires_grad=True)
    loss = F.cross_entropy(x, sn.tensor(np.array([1])))
    assert loss.item() == 2000.0
    loss.backward()
    np.testing.assert_allclose(x.grad, [[1.0, -1.0, 0.0]])


@pytest.mark.parametrize("call,error,message", [
    (lambda x: F.cross_entropy(x, sn.tensor(np.zeros(3))), TypeError, "integer class indices"),
    (lambda x: F.cross_entropy(x, sn.tensor(np.array([0, 4, 1]))), ValueError, r"class 4, outside \[0, 4\)"),
    (lambda x: F.cross_entropy(x, sn.tensor(np.array([0, -1, 1]))), ValueError, "class -1"),
    (lambda x: F.cross_entropy(x, sn.tensor(np.array([0, 1]))), ValueError, r"needs target of shape \(3,\)"),
    (lambda x: F.nll_loss(x, sn.tensor(np.array([[0], [1], [1]]))), ValueError, "needs target of shape"),
    (lambda x: F.cross_entropy(x[0], sn.tensor(np.array([1]))), ValueError, "needs a 0-d target"),
    (lambda x: F.cross_entropy(x[0, 0], sn.tensor(np.array(1))), ValueError, "got a 0-d tensor"),
    (lambda x: F.cross_entropy(x, sn.tensor(np.array([0, 1, 1])), reduction="avg"), ValueError, "reduction"),
    (lambda x: F.cross_entropy(x, sn.tensor(np.array([0, 1, 1])), sn.tensor(np.ones(3))), ValueError,
     r"weight must have shape \(4,\)"),
    (lambda x: F.mse_loss(x, sn.tensor(np.zeros((3, 1)))), ValueError, "must have the same shape"),
    (lambda x: F.mse_loss(x, sn.tensor(np.zeros((3, 4), dtype=np.int64))), TypeError, "floating-point"),
])
def test_loss_errors(call, error, message, rng):
    with pytest.raises(error, match=message):
        call(sn.tensor(rng.standard_normal((3, 4))))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mse_loss_matches_torch(reduction, dtype, compare, rng):
    x, y = rng.standard_normal((2, 3, 4)).astype(dtype), rng.standard_normal((2, 3, 4)).astype(dtype)
    compare(lambda a, b: F.mse_loss(a, b, reduction), lambda a, b: TF.mse_loss(a, b, reduction=reduction), [x, y])
    a, b = (sn.tensor(v.astype(np.float64), requires_grad=True) for v in (x, y))
    assert sn.gradcheck(lambda a, b: F.mse_loss(a, b, reduction), [a, b])


# --------------------------------------------------------------------------- joins: residual + and concat


def test_gradient_through_residual_join(rng):
    """y = relu(conv(x)) + x: x's gradient is the sum of the skip path and the conv path."""
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((3, 3, 3, 3)) * 0.3
    compare_with_torch(lambda x, w: F.relu(F.conv2d(x, w, padding=1)) + x,
                       lambda x, w: TF.relu(TF.conv2d(x, w, padding=1)) + x, [x, w], gradcheck=True)


def test_gradient_through_concat_join(rng):
    """y = cat([conv1x1(x), maxpool(x)], 1), an Inception-style join: each branch gets its slice back."""
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 1, 1))

    def branches(x, w, F, cat):
        a = F.conv2d(x, w)
        b = F.max_pool2d(x, 3, stride=1, padding=1)
        return cat([a, b], 1)
    joined = compare_with_torch(lambda x, w: branches(x, w, F, sn.cat), lambda x, w: branches(x, w, TF, torch.cat),
                                [x, w], gradcheck=True)
    assert joined.y.shape == (2, 7, 6, 6)


def test_tensors_hash_by_identity_while_eq_compares_elements():
    """tensor_methods attaches an elementwise __eq__ after the class is made; the identity hash stays, so
    tensors can key dicts and sets (the autograd walk does) as torch's do."""
    a, b = sn.tensor([1.0, 2.0]), sn.tensor([1.0, 2.0])
    assert hash(a) == id(a) and len({a, b}) == 2 and {a: "a"}[a] == "a"
    np.testing.assert_array_equal((a == b).numpy(), [True, True])
