"""Autograd: the graph walk, accumulation, hooks, retain_grad, graph freeing, no_grad, dtype rules."""
import gc
import weakref

import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet.autograd import Function


def t64(array, requires_grad=True, device="cpu"):
    return sn.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad, device=device)


def host(a):
    return sn.backend.to_numpy(a)


# --------------------------------------------------------------------------- deep graphs, no recursion


def test_200_layer_chain_backward_matches_closed_form(device):
    x = t64([0.5, -1.0, 2.0], device=device)
    y = x
    for _ in range(200):
        y = y * 1.01 + 0.1
    y.sum().backward()
    np.testing.assert_allclose(host(x.grad), np.full(3, 1.01 ** 200), rtol=1e-12)


def test_5000_op_chain_backward():
    x = t64(np.ones(4))
    y = x
    for _ in range(2500):
        y = (y + 1.0) * 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones(4))


def test_dropping_a_100k_op_graph_does_not_crash():
    x = t64(np.ones(2))
    y = x
    for _ in range(100_000):
        y = y * 1.0
    probe = weakref.ref(y.creator)
    del y  # frees 100k Functions at once: must not overflow the C stack
    gc.collect()
    assert probe() is None


# --------------------------------------------------------------------------- accumulation and broadcasting


def test_residual_add_accumulates_both_branches():
    x = t64([1.0, 2.0, 3.0])
    y = x * 3.0 + x  # x feeds two branches of a residual '+'
    (y * y).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * 4 * x.numpy() * 4)


def test_cat_of_the_same_tensor_twice_accumulates():
    x = t64(np.arange(6.0).reshape(2, 3))
    w = t64(np.arange(12.0).reshape(4, 3) / 10, requires_grad=False)
    y = sn.cat([x, x * 2.0], dim=0)  # (4, 3)
    (y * w).sum().backward()
    np.testing.assert_allclose(x.grad, w.numpy()[:2] + 2 * w.numpy()[2:])


def test_matches_torch_on_a_branching_graph():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4,))
    sa, sb = t64(a), t64(b)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    for x, y, lib in ((sa, sb, sn), (ta, tb, torch)):
        h = x * y + x  # broadcast (3,4) * (4,)
        z = lib.cat([h, h * x], 1)
        (z * z).sum().backward()
    np.testing.assert_allclose(sa.grad, ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(sb.grad, tb.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("shape_b", [(1,), (4,), (3, 1), (1, 4), (2, 1, 1), ()])
def test_broadcasting_is_reduced_in_backward(shape_b):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal(shape_b)
    for op in ("add", "sub", "mul", "div"):
        sa, sb = t64(a), t64(b)
        ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        getattr(sa, f"__{'truediv' if op == 'div' else op}__")(sb).sum().backward()
        getattr(ta, f"__{'truediv' if op == 'div' else op}__")(tb).sum().backward()
        assert sb.grad.shape == tuple(shape_b)
        np.testing.assert_allclose(sa.grad, ta.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(sb.grad, tb.grad.numpy(), rtol=1e-12)


def test_grads_accumulate_across_backward_calls_until_cleared():
    x = t64([1.0, 2.0])
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 5.0])
    x.zero_grad()
    assert x.grad is None


# --------------------------------------------------------------------------- grad mode


def test_no_grad_records_nothing_and_restores():
    x = t64([1.0])
    with sn.no_grad():
        y = x * 2.0
        assert not sn.is_grad_enabled()
    assert sn.is_grad_enabled()
    assert not y.requires_grad and y.creator is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_as_decorator():
    @sn.no_grad()
    def infer(x):
        return x * 2.0

    assert not infer(t64([1.0])).requires_grad
    assert sn.is_grad_enabled()


# --------------------------------------------------------------------------- hooks and retain_grad


def test_hook_on_leaf_sees_and_replaces_grad():
    x = t64([1.0, 2.0])
    seen = []
    handle = x.register_hook(lambda g: seen.append(g.numpy()) or g * 10)
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(seen[0], [3.0, 3.0])
    np.testing.assert_array_equal(x.grad, [30.0, 30.0])
    handle.remove()
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    assert len(seen) == 1


def test_hook_on_non_leaf_changes_what_flows_upstream():
    x = t64([1.0, 2.0])
    h = x * 2.0
    seen = []

    def hook(g):
        seen.append(g.numpy())
        return g * 0.5

    h.register_hook(hook)
    (h * h).sum().backward()  # dL/dh = 2h = [4, 8]
    np.testing.assert_array_equal(seen[0], [4.0, 8.0])
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])  # 0.5 * [4, 8] * 2


def test_retain_grad_keeps_non_leaf_grad_and_sees_hooked_value():
    x = t64([1.0, 2.0])
    h = x * 2.0
    plain = x * 4.0
    h.retain_grad()
    h.register_hook(lambda g: g * 3)
    (h + plain).sum().backward()
    np.testing.assert_array_equal(h.grad, [3.0, 3.0])  # as torch: retain_grad sees the hooked gradient
    assert plain.grad is None
    np.testing.assert_array_equal(x.grad, [10.0, 10.0])


def test_hooks_match_torch():
    a = np.array([1.0, -2.0, 3.0])
    sx, tx = t64(a), torch.tensor(a, requires_grad=True)
    grads = []
    for x in (sx, tx):
        h = x * x
        h.register_hook(lambda g: g + 1)
        h.retain_grad()
        (h * 2).sum().backward()
        grads.append([np.asarray(h.grad), np.asarray(x.grad)])
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    np.testing.assert_array_equal(grads[0][1], grads[1][1])


# --------------------------------------------------------------------------- graph freeing


def test_second_backward_raises_unless_retain_graph():
    x = t64([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()  # the graph was kept once
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])
    with pytest.raises(RuntimeError, match="backward through the graph a second time.*retain_graph=True"):
        y.backward()


def test_saved_arrays_are_released_after_backward():
    x = t64(np.ones(1000))
    y = x.exp()  # Exp saves its output array for backward
    fn = y.creator
    saved = weakref.ref(fn.y)
    z = y.sum()
    del y
    z.backward()
    assert "y" not in fn.__dict__ and fn.freed
    gc.collect()
    assert saved() is None


def test_graph_keeps_no_output_alive():
    x = t64(np.ones(10))
    y = x * 2.0
    z = (y * 3.0).sum()
    probe = weakref.ref(y)
    del y
    gc.collect()
    assert probe() is None  # Mul kept what it needs (a constant), not the tensor y
    z.backward()
    np.testing.assert_array_equal(x.grad, np.full(10, 6.0))


# --------------------------------------------------------------------------- to(), dtypes, errors


def test_to_dtype_is_differentiable():
    x = t64([1.0, 2.0])
    y = x.to(dtype=np.float32)
    assert y.dtype == np.float32 and y.requires_grad
    (y * y).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


def test_to_same_device_and_dtype_is_identity():
    x = t64([1.0])
    assert x.to("cpu") is x and x.to(dtype=np.float64) is x


@pytest.mark.gpu
def test_to_device_is_differentiable():
    x = t64([1.0, 2.0])
    y = x.to("gpu")
    assert y.device == "gpu"
    (y * y).sum().backward()
    assert isinstance(x.grad, np.ndarray)
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


def test_to_integer_dtype_stops_the_gradient():
    x = t64([1.5, 2.5])
    y = x.to(dtype=np.int64)
    assert y.dtype == np.int64 and not y.requires_grad


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="only floating-point tensors can require grad.*int64"):
        sn.tensor([1, 2, 3], requires_grad=True)
    with pytest.raises(TypeError, match="only floating-point"):
        sn.Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="only floating-point"):
        sn.tensor([1, 2]).requires_grad_()


def test_integer_tensors_rejected_where_floats_are_needed():
    x = sn.tensor([[1, 2], [3, 4]])
    with pytest.raises(TypeError, match="mean needs floating-point tensors, got dtype int64.*float"):
        x.mean()


def test_mismatched_add_shapes_give_a_clear_error():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        t64(np.ones((2, 3))) + t64(np.ones(4))


def test_mismatched_cat_shapes_give_a_clear_error():
    with pytest.raises(ValueError, match=r"cat: tensor 1 has shape \(2, 4\) but tensor 0 has shape \(2, 3\); "
                                         r"all dims except dim=0 must match"):
        sn.cat([t64(np.ones((2, 3))), t64(np.ones((2, 4)))], dim=0)


def test_backward_seed_shape_is_checked():
    y = t64(np.ones(3)) * 2.0
    with pytest.raises(RuntimeError, match="one-element output"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"grad has shape \(2,\) but the output has shape \(3,\)"):
        y.backward(np.ones(2))


def test_custom_function_with_two_outputs_and_unused_output():
    class SplitHalves(Function):
        def forward(self, x):
            return x[:2] * 1, x[2:] * 1

        def backward(self, g0, g1):
            return (np.concatenate([g0, g1]),)

    x = t64([1.0, 2.0, 3.0, 4.0])
    first, _ = SplitHalves()(x)
    (first * 5.0).sum().backward()  # the second output got no gradient: zeros flow for it
    np.testing.assert_array_equal(x.grad, [5.0, 5.0, 0.0, 0.0])


def test_a_backward_returning_the_wrong_shape_is_named():
    class Broken(Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return (gy[:1],)

    with pytest.raises(RuntimeError, match=r"Broken.backward returned a gradient of shape \(1,\) for input 0 "
                                           r"of shape \(3,\)"):
        Broken()(t64([1.0, 2.0, 3.0])).sum().backward()


def test_a_hook_cannot_change_the_gradient_shape():
    x = t64([1.0, 2.0])
    x.register_hook(lambda g: g[:1])
    with pytest.raises(RuntimeError, match=r"changed the gradient's shape from \(2,\) to \(1,\)"):
        (x * 2.0).sum().backward()
