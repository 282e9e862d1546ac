"""FunctionHook: every Function's forward and backward seen from a ``with`` block (Chainer's FunctionHook)."""

import numpy as np
import pytest

import scratchnet as sn
from conftest import backward_without_recursion
from scratchnet import autograd


class Recorder(sn.FunctionHook):
    """Keeps (event, function name, arrays) for every callback, in call order."""

    def __init__(self, tag=""):
        self.tag, self.events = tag, []

    def forward_preprocess(self, function, inputs):
        self.events.append((self.tag + "forward_pre", function.name, inputs))

    def forward_postprocess(self, function, inputs, outputs):
        self.events.append((self.tag + "forward_post", function.name, inputs, outputs))

    def backward_preprocess(self, function, grad_outputs):
        self.events.append((self.tag + "backward_pre", function.name, grad_outputs))

    def backward_postprocess(self, function, grad_outputs, grad_inputs):
        self.events.append((self.tag + "backward_post", function.name, grad_outputs, grad_inputs))

    def names(self):
        return [(event[0], event[1]) for event in self.events]


def t64(array, requires_grad=True):
    return sn.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


def test_calls_come_in_order_with_the_tensors_of_each_call():
    x = t64([1.0, -2.0, 3.0])
    with Recorder() as hook:
        y = x * 2.0
        z = y.sum()
        z.backward()
    assert hook.names() == [("forward_pre", "Mul"), ("forward_post", "Mul"), ("forward_pre", "Sum"),
                            ("forward_post", "Sum"), ("backward_pre", "Sum"), ("backward_post", "Sum"),
                            ("backward_pre", "Mul"), ("backward_post", "Mul")]
    _, _, mul_inputs, mul_outputs = hook.events[1]
    assert mul_inputs[0] is x and mul_outputs == (y,)  # Tensors, the very ones; outputs always a tuple
    np.testing.assert_array_equal(mul_inputs[1].data, 2.0)  # the scalar, wrapped
    assert hook.events[0][2][0] is x and hook.events[3][3] == (z,)
    assert not autograd._function_hooks  # removed at the end of the block


def test_backward_callbacks_see_the_gradients_backward_receives_and_returns(rng):
    """z = sum((x * w)^2): dz/dy = 2y at y = x * w, then 2y * w to x and 2y * x to w."""
    xv, wv = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    x, w = t64(xv), t64(wv)
    with Recorder() as hook:
        y = x * w
        (y * y).sum().backward()
    assert [e[1] for e in hook.events if e[0] == "backward_post"] == ["Sum", "Mul", "Mul"]
    first_mul, second_mul = [e for e in hook.events if e[0] == "backward_post" and e[1] == "Mul"]
    (g_yy,), (g_y_left, g_y_right) = first_mul[2], first_mul[3]  # y * y: each side gets y
    np.testing.assert_array_equal(g_yy, np.ones((2, 3)))
    np.testing.assert_allclose(g_y_left, xv * wv, rtol=1e-15)
    np.testing.assert_allclose(g_y_right, xv * wv, rtol=1e-15)
    (g_y,), (g_x, g_w) = second_mul[2], second_mul[3]
    np.testing.assert_allclose(g_y, 2 * xv * wv, rtol=1e-15)
    np.testing.assert_allclose(g_x, 2 * xv * wv * wv, rtol=1e-15)
    np.testing.assert_allclose(g_w, 2 * xv * wv * xv, rtol=1e-15)
    np.testing.assert_allclose(x.grad, g_x, rtol=1e-15)  # what the hook saw is what x received
    pre = [e for e in hook.events if e[0] == "backward_pre" and e[1] == "Mul"]
    np.testing.assert_array_equal(pre[1][2][0], g_y)  # pre sees the same grad_outputs as post


def test_backward_sees_zeros_for_an_unused_output_and_none_for_an_input_without_grad():
    x = t64([1.0, 2.0, 3.0, 4.0])
    with Recorder() as hook:
        a, _ = sn.split(x, [1, 3])
        (a * 5.0).sum().backward()
    (_, _, grad_outputs, grad_inputs), = [e for e in hook.events if e[:2] == ("backward_post", "Split")]
    np.testing.assert_array_equal(grad_outputs[0], [5.0])
    np.testing.assert_array_equal(grad_outputs[1], np.zeros(3))  # the piece nobody used: zeros
    np.testing.assert_array_equal(grad_inputs[0], [5.0, 0.0, 0.0, 0.0])
    constant = t64([1.0, 2.0], requires_grad=False)
    leaf = t64([3.0, 4.0])
    with Recorder() as hook:
        (constant * leaf).sum().backward()
    (_, _, _, grad_inputs), = [e for e in hook.events if e[:2] == ("backward_post", "Mul")]
    assert len(grad_inputs) == 2 and grad_inputs[0] is None  # Mul skips the constant's gradient
    np.testing.assert_array_equal(grad_inputs[1], [1.0, 2.0])


def test_tensor_hooks_apply_before_the_function_hook_sees_the_gradient():
    x = t64([1.0, 2.0])
    y = x * 3.0
    y.register_hook(lambda g: g * 2)
    with Recorder() as hook:
        y.sum().backward()
    (_, _, grad_outputs, grad_inputs), = [e for e in hook.events if e[:2] == ("backward_post", "Mul")]
    np.testing.assert_array_equal(grad_outputs[0], [2.0, 2.0])
    np.testing.assert_array_equal(grad_inputs[0], [6.0, 6.0])
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])


def test_nested_hooks_both_see_the_inner_block_in_entry_order():
    x = t64([1.0, 2.0])
    order = []

    class Tagged(sn.FunctionHook):
        def __init__(self, tag):
            self.tag, self.seen = tag, []

        def forward_postprocess(self, function, inputs, outputs):
            order.append(self.tag)
            self.seen.append(function.name)

    outer, inner = Tagged("outer"), Tagged("inner")
    with outer:
        x + 1.0
        with inner:
            x * 2.0
        x - 3.0
    assert outer.seen == ["Add", "Mul", "Sub"] and inner.seen == ["Mul"]
    assert order == ["outer", "outer", "inner", "outer"]  # inside both: outer first (entered first)
    assert not autograd._function_hooks


def test_a_hook_cannot_be_entered_twice_at_once():
    hook = Recorder()
    with hook:
        with pytest.raises(RuntimeError, match="already active"):
            with hook:
                pass
        assert autograd._function_hooks == [hook]
    assert not autograd._function_hooks
    with hook:  # and again afterwards: fine
        t64([1.0]) * 2.0
    assert hook.names()[-1] == ("forward_post", "Mul")


def test_exceptions_leave_no_hook_installed():
    x = t64([1.0, 2.0])
    with pytest.raises(KeyError):
        with Recorder():
            raise KeyError("the user's own error")
    assert not autograd._function_hooks
    with pytest.raises(ValueError):  # an op's error, raised between forward_pre and forward_post
        with Recorder() as hook:
            x.reshape(3, 5)
    assert not autograd._function_hooks and hook.names() == [("forward_pre", "Reshape")]

    class Failing(sn.FunctionHook):
        def backward_postprocess(self, function, grad_outputs, grad_inputs):
            raise RuntimeError("the hook's own error")

    y = (x * 2.0).sum()
    with pytest.raises(RuntimeError, match="the hook's own error"):
        with Failing():
            y.backward()
    assert not autograd._function_hooks
    z = (x * 2.0).sum()
    z.backward()  # hooks gone: plain backward works again
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_no_grad_forward_is_seen_and_records_no_graph():
    x = t64([1.0, 2.0])
    with sn.no_grad(), Recorder() as hook:
        y = x * 2.0
    assert hook.names() == [("forward_pre", "Mul"), ("forward_post", "Mul")]
    (out,) = hook.events[1][3]
    assert out is y and not y.requires_grad and y.creator is None


def test_ops_run_by_a_hook_are_not_hooked():
    class Summing(sn.FunctionHook):
        def __init__(self):
            self.seen, self.sums = [], []

        def forward_postprocess(self, function, inputs, outputs):
            self.seen.append(function.name)
            self.sums.append(outputs[0].sum().item())  # an op inside a hook: must not recurse into hooks

    x = t64([1.0, 2.0])
    with Summing() as hook:
        x * 2.0
    assert hook.seen == ["Mul"] and hook.sums == [6.0]


def test_backward_after_the_block_fires_no_hook_and_a_graph_built_before_it_does():
    x = t64([1.0, 2.0])
    with Recorder() as hook:
        early = (x * 2.0).sum()
    early.backward()
    assert [e for e in hook.events if e[0].startswith("backward")] == []
    late = (x * 2.0).sum()
    with hook:
        late.backward()
    assert [n for n in hook.names() if n[0].startswith("backward")] == [
        ("backward_pre", "Sum"), ("backward_post", "Sum"), ("backward_pre", "Mul"), ("backward_post", "Mul")]


def test_backward_with_a_hook_does_not_recurse():
    """A 3000-op chain with a hook active, under a recursion limit of the current depth + 100."""
    x = t64(np.ones(3))
    y = x
    for _ in range(1500):
        y = (y + 1.0) * 1.0
    counts = {"forward": 0, "backward": 0}

    class Counter(sn.FunctionHook):
        def backward_postprocess(self, function, grad_outputs, grad_inputs):
            counts["backward"] += 1

    with Counter():
        backward_without_recursion(y.sum())
    assert counts["backward"] == 3001
    np.testing.assert_array_equal(x.grad, np.ones(3))


def test_a_module_forward_under_a_hook_gives_the_same_numbers(rng):
    model = sn.models.get_model("lenet5").double()
    x = sn.tensor(rng.standard_normal((2, 1, 32, 32)))
    plain = model(x)
    plain.sum().backward()
    plain_grads = [p.grad.numpy() for p in model.parameters()]
    model.zero_grad()
    with Recorder() as hook:
        hooked = model(x)
        hooked.sum().backward()
    np.testing.assert_array_equal(hooked.numpy(), plain.numpy())
    for p, g in zip(model.parameters(), plain_grads):
        np.testing.assert_array_equal(p.grad, g)
    forward = [n for e, n in hook.names() if e == "forward_post"]
    backward = [n for e, n in hook.names() if e == "backward_post"]
    assert forward[:3] == ["Conv2d", "ReLU", "MaxPool2d"] and forward.count("Linear") == 2
    assert backward == forward[::-1]  # a chain: every op of the forward walked back once, last first
