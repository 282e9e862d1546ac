"""Tensor math and shape ops (functional/math.py, shape.py) against NumPy/torch, gradchecks, broadcasting gradients, errors."""
import numpy as np
import pytest
import torch

import scratchnet as sn
import scratchnet.nn.functional as F

BINARY = [
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b), ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b),
]
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 3))]


@pytest.mark.parametrize("name,op", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("shapes", BROADCAST_SHAPES)
def test_binary_ops_and_broadcast_gradients(name, op, shapes, compare, rng):
    """The gradient of a broadcast operand is summed back to its own shape (sum_to)."""
    a, b = rng.standard_normal(shapes[0]), rng.uniform(0.5, 2.0, shapes[1])
    compare(op, op, [a, b], gradcheck=True)


def test_functional_names_match_operators(rng):
    a, b = sn.tensor(rng.standard_normal((2, 3))), sn.tensor(rng.uniform(1, 2, (3,)))
    for fn, op in [(F.add, np.add), (F.sub, np.subtract), (F.mul, np.multiply), (F.div, np.divide)]:
        np.testing.assert_array_equal(fn(a, b).data, op(a.data, b.data))
    np.testing.assert_array_equal((2.0 - a).data, 2.0 - a.data)  # reflected operators with scalars
    np.testing.assert_array_equal((1.0 / b).data, 1.0 / b.data)
    assert (a * 2.0).dtype == a.dtype and (sn.tensor(np.ones(2, np.float32)) * 2.0).dtype == np.float32


UNARY = [
    ("neg", lambda x: -x, lambda x: -x),
    ("pow2", lambda x: x ** 2, lambda x: x ** 2),
    ("pow_half", lambda x: F.pow(x, 0.5), lambda x: torch.pow(x, 0.5)),
    ("pow_neg", lambda x: x ** -1.5, lambda x: x ** -1.5),
    ("exp", F.exp, torch.exp), ("log", F.log, torch.log), ("sqrt", F.sqrt, torch.sqrt),
    ("abs", F.abs, torch.abs),
    ("clamp", lambda x: F.clamp(x, 0.8, 1.5), lambda x: torch.clamp(x, 0.8, 1.5)),
    ("clamp_min", lambda x: x.clamp(min=1.0), lambda x: x.clamp(min=1.0)),
]


@pytest.mark.parametrize("name,op,torch_op", UNARY, ids=[u[0] for u in UNARY])
def test_unary_ops(name, op, torch_op, compare, rng):
    x = rng.uniform(0.5, 2.0, (3, 4))  # positive for log/sqrt/pow; abs gets negatives below
    if name in ("abs", "neg"):
        x = x * rng.choice([-1, 1], x.shape)
    compare(op, torch_op, [x], gradcheck=True)


REDUCTIONS = [
    ("sum_all", lambda x: x.sum(), lambda x: x.sum()),
    ("sum_1", lambda x: x.sum(1), lambda x: x.sum(1)),
    ("sum_keep", lambda x: F.sum(x, (0, 2), keepdim=True), lambda x: x.sum((0, 2), keepdim=True)),
    ("sum_neg", lambda x: x.sum(-1), lambda x: x.sum(-1)),
    ("mean_all", lambda x: x.mean(), lambda x: x.mean()),
    ("mean_02", lambda x: F.mean(x, (0, 2)), lambda x: x.mean((0, 2))),
    ("mean_keep", lambda x: x.mean(1, keepdim=True), lambda x: x.mean(1, keepdim=True)),
    ("max_all", lambda x: x.max(), lambda x: x.amax()),
    ("max_1", lambda x: x.max(1), lambda x: x.amax(1)),
    ("max_keep", lambda x: F.max(x, -1, keepdim=True), lambda x: x.amax(-1, keepdim=True)),
]


@pytest.mark.parametrize("name,op,torch_op", REDUCTIONS, ids=[r[0] for r in REDUCTIONS])
def test_reductions(name, op, torch_op, compare, rng):
    compare(op, torch_op, [rng.standard_normal((2, 3, 4))], gradcheck=True)


def test_max_ties_share_the_gradient_like_amax(compare):
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]])
    compare(lambda t: t.max(1), lambda t: t.amax(1), [x])


MATMUL_SHAPES = [((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((5, 2, 3), (5, 3, 4)),
                 ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)), ((2, 1, 2, 3), (4, 3, 2)), ((3,), (5, 3, 2)),
                 ((5, 2, 3), (3,))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
def test_matmul(shapes, compare, rng):
    compare(lambda a, b: a @ b, torch.matmul, [rng.standard_normal(s) for s in shapes], gradcheck=True)


def test_matmul_errors():
    with pytest.raises(ValueError, match="do not line up"):
        F.matmul(sn.tensor(np.zeros((2, 3))), sn.tensor(np.zeros((4, 2))))
    with pytest.raises(ValueError, match="at least one dimension"):
        F.matmul(sn.tensor(np.zeros(())), sn.tensor(np.zeros(3)))


SHAPE_OPS = [
    ("reshape", lambda x: x.reshape(6, 4), lambda x: x.reshape(6, 4)),
    ("reshape_minus1", lambda x: F.reshape(x, (-1, 3)), lambda x: x.reshape(-1, 3)),
    ("view", lambda x: x.view(4, 6), lambda x: x.view(4, 6)),
    ("transpose", lambda x: x.transpose(0, 2), lambda x: x.transpose(0, 2)),
    ("transpose_neg", lambda x: F.transpose(x, -1, 1), lambda x: x.transpose(-1, 1)),
    ("T", lambda x: x.T, lambda x: x.permute(2, 1, 0)),
    ("permute", lambda x: x.permute(1, 2, 0), lambda x: x.permute(1, 2, 0)),
    ("permute_tuple", lambda x: F.permute(x, (2, 0, 1)), lambda x: x.permute(2, 0, 1)),
    ("flatten", lambda x: x.flatten(), lambda x: x.flatten()),
    ("flatten_1", lambda x: F.flatten(x, 1), lambda x: x.flatten(1)),
    ("flatten_mid", lambda x: F.flatten(x, 0, 1), lambda x: x.flatten(0, 1)),
    ("broadcast_to", lambda x: x[:, :1].broadcast_to((2, 5, 4)), lambda x: x[:, :1].broadcast_to((2, 5, 4))),
]


@pytest.mark.parametrize("name,op,torch_op", SHAPE_OPS, ids=[s[0] for s in SHAPE_OPS])
def test_shape_ops(name, op, torch_op, compare, rng):
    compare(op, torch_op, [rng.standard_normal((2, 3, 4))], gradcheck=True)


INDEXES = [
    ("int", lambda x: x[1]),
    ("slice", lambda x: x[:, 1:3]),
    ("step", lambda x: x[1::2, ::2]),
    ("mixed", lambda x: x[1, :, 2]),
    ("numpy_int", lambda x: x[np.int64(-1), ::2]),
    ("ellipsis_none", lambda x: x[..., None, 1]),
    ("int_array_repeats", lambda x: x[np.array([0, 2, 0, 0])]),  # repeated rows must accumulate
    ("two_int_arrays", lambda x: x[np.array([0, 1, 1]), np.array([3, 3, 0])]),
    ("bool_mask", lambda x: x[np.array([True, False, True, True])]),
]


@pytest.mark.parametrize("name,index", INDEXES, ids=[i[0] for i in INDEXES])
def test_getitem(name, index, compare, rng):
    x = rng.standard_normal((4, 3, 5)) if name != "two_int_arrays" else rng.standard_normal((2, 4))
    compare(index, index, [x], gradcheck=True)  # the same index for both: torch takes NumPy index arrays too


def test_getitem_negative_steps_gradcheck(rng):
    """NumPy's negative steps (torch has none): basic indexing, whose backward stores instead of add.at."""
    x = sn.tensor(rng.standard_normal((4, 3, 5)), requires_grad=True)
    assert sn.gradcheck(lambda x: x[::-1, 1:, ::-2] * 2, [x])


def test_getitem_with_a_tensor_mask_and_repeats_accumulate(rng):
    x = sn.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    mask = x > 0
    x[mask].sum().backward()
    np.testing.assert_array_equal(x.grad, (x.data > 0).astype(float))
    x.grad = None
    x[np.array([1, 1, 1])].sum().backward()
    np.testing.assert_array_equal(x.grad[1], [3.0] * 4)
    np.testing.assert_array_equal(x.grad[0], [0.0] * 4)


def test_cat_split_stack(compare, rng):
    a, b, c = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 1, 4)), rng.standard_normal((2, 2, 4))
    compare(lambda a, b, c: sn.cat([a, b, c], 1), lambda a, b, c: torch.cat([a, b, c], 1), [a, b, c],
            gradcheck=True)
    compare(lambda a, c: F.cat([a, c], -2), lambda a, c: torch.cat([a, c], -2), [a, c], gradcheck=True)
    compare(lambda a: F.split(a, [1, 2], 1)[1], lambda a: torch.split(a, [1, 2], 1)[1], [a], gradcheck=True)
    compare(lambda a: sn.split(a, 3, -1)[0] * sn.split(a, 3, -1)[1][..., :1],
            lambda a: torch.split(a, 3, -1)[0] * torch.split(a, 3, -1)[1][..., :1], [a], gradcheck=True)
    for dim in (0, 1, -1):
        compare(lambda a, b: sn.stack([a, b], dim), lambda a, b: torch.stack([a, b], dim),
                [a, rng.standard_normal(a.shape)], gradcheck=True)
    pieces = sn.split(sn.tensor(a), 2, 2)
    assert [p.shape for p in pieces] == [(2, 3, 2), (2, 3, 2)]
    assert [p.shape for p in sn.split(sn.tensor(a), 3, 2)] == [(2, 3, 3), (2, 3, 1)]


@pytest.mark.parametrize("call,message", [
    (lambda: sn.tensor(np.zeros((2, 3))) + sn.tensor(np.zeros((4,))), r"add: shapes \(2, 3\) and \(4,\)"),
    (lambda: sn.tensor(np.zeros((2, 3))) * sn.tensor(np.zeros((3, 2))), "mul: shapes"),
    (lambda: sn.cat([sn.tensor(np.zeros((2, 3))), sn.tensor(np.zeros((3, 2)))], 0),
     r"cat: tensor 1 has shape \(3, 2\) but tensor 0 has shape \(2, 3\)"),
    (lambda: sn.cat([], 0), "at least one tensor"),
    (lambda: sn.split(sn.tensor(np.zeros(5)), [2, 2]), "do not add up"),
    (lambda: sn.tensor(np.zeros(6)).reshape(4, 2), r"cannot reshape a tensor of shape \(6,\)"),
    (lambda: F.pow(sn.tensor(np.ones(2)), sn.tensor(np.ones(2))), "exponent must be a Python number"),
    (lambda: F.mean(sn.tensor(np.arange(3))), "needs floating-point"),
])
def test_math_errors(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
