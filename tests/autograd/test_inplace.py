"""In-place ops and version counters, checked against torch's behaviour."""
import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet.nn import functional as F

INPLACE = [  # (name, call on a tensor t with operand o)
    ("add_", lambda t, o: t.add_(o)),
    ("add_ alpha", lambda t, o: t.add_(o, alpha=-0.5)),
    ("sub_", lambda t, o: t.sub_(o)),
    ("mul_", lambda t, o: t.mul_(o)),
    ("div_", lambda t, o: t.div_(o)),
    ("+=", lambda t, o: t.__iadd__(o)),
    ("-=", lambda t, o: t.__isub__(o)),
    ("*=", lambda t, o: t.__imul__(o)),
    ("/=", lambda t, o: t.__itruediv__(o)),
    ("clamp_", lambda t, o: t.clamp_(-0.5, 0.7)),
    ("fill_", lambda t, o: t.fill_(0.25)),
    ("zero_", lambda t, o: t.zero_()),
    ("copy_", lambda t, o: t.copy_(o)),
    ("relu_", lambda t, o: t.relu_()),  # (its zeros and NaNs: test_relu_in_place below)
]
IDS = [name for name, _ in INPLACE]


def values(rng, shape=(2, 3)):
    return rng.standard_normal(shape) + 2.0  # away from 0 (div) and from the clamp bounds' kinks


@pytest.mark.parametrize("name,op", INPLACE, ids=IDS)
def test_changes_the_tensor_itself_and_its_views(name, op, rng):
    a, o = values(rng), values(rng, (3,))
    ours, view = sn.tensor(a), None
    view = ours.reshape(6)
    array = ours.data
    theirs = torch.tensor(a)
    result = op(ours, sn.tensor(o))
    op(theirs, torch.tensor(o))
    assert result is ours and ours.data is array  # the same array object: aliases see the change
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-15)
    np.testing.assert_array_equal(view.numpy(), ours.numpy().reshape(6))
    assert ours._version == view._version == theirs._version == 1


def test_python_operators_keep_the_name_on_the_same_tensor():
    t = sn.tensor([1.0, 2.0])
    alias = t
    t += 1
    t *= 2
    assert t is alias and t.numpy().tolist() == [4.0, 6.0] and t._version == 2


def test_sgd_by_hand_under_no_grad_updates_the_parameter():
    """Issue 22: `p -= lr * p.grad` silently did nothing to the model."""
    model, twin = sn.nn.Linear(3, 2).double(), torch.nn.Linear(3, 2).double()
    twin.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 3))
    for _ in range(2):
        for net, lib in ((model, sn), (twin, torch)):
            net.zero_grad()
            net(lib.tensor(x)).pow(2).sum().backward() if lib is torch else (net(lib.tensor(x)) ** 2).sum().backward()
            with lib.no_grad():
                for p in net.parameters():
                    p -= 0.1 * p.grad
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value, twin.state_dict()[key].numpy(), rtol=1e-13)


@pytest.mark.parametrize("name,op", INPLACE, ids=IDS)
def test_a_leaf_that_requires_grad_is_refused_outside_no_grad(name, op):
    o = np.array([0.5, 0.5])
    for lib in (sn, torch):
        leaf = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place "
                                               "operation"):
            op(leaf, lib.tensor(o))
        with lib.no_grad():
            op(leaf, lib.tensor(o))  # allowed: the optimizer's way
        assert leaf._version == 1


def test_a_view_of_such_a_leaf_is_refused():
    for lib in (sn, torch):
        leaf = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
            leaf[0:1].add_(1.0)


@pytest.mark.parametrize("name,op", INPLACE, ids=IDS)
def test_an_in_place_op_on_a_non_leaf_is_recorded(name, op, rng):
    """torch rebases the tensor's history onto the in-place op: gradients flow through it (and the operand)."""
    a, w, o = values(rng), values(rng), values(rng, (3,))
    grads = []
    for lib in (sn, torch):
        x = lib.tensor(a, requires_grad=True)
        other = lib.tensor(o, requires_grad=True)
        weight = lib.tensor(w)
        h = x * weight
        assert op(h, other) is h
        assert h.requires_grad and not h.is_leaf
        (h * h).sum().backward()
        grads.append((x.grad, other.grad))
    for ours, theirs in zip(*grads):
        if theirs is None or not theirs.abs().sum():  # fill_/zero_/copy_: nothing of x survives
            assert ours is None or not ours.numpy().any()
        else:
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-13)


def test_in_place_with_an_operand_that_requires_grad_makes_a_constant_part_of_the_graph():
    for lib in (sn, torch):
        buffer = lib.tensor(np.zeros(2))
        w = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        buffer.add_(w * 3)
        assert buffer.requires_grad and not buffer.is_leaf
        buffer.sum().backward()
        np.testing.assert_array_equal(np.asarray(w.grad), [3.0, 3.0])


def test_retain_grad_follows_the_rebased_tensor():
    results = []
    for lib in (sn, torch):
        x = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        h = x * 2
        h.retain_grad()
        h.mul_(3)
        (h * h).sum().backward()
        results.append(np.asarray(h.grad))
    np.testing.assert_array_equal(*results)


# --------------------------------------------------------------------------- version counters


def test_modifying_a_saved_input_is_caught_at_backward():
    for lib in (sn, torch):
        w = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        y = w * 2
        z = y * y  # Mul keeps y
        with lib.no_grad():
            y.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation.*is at version 1; expected "
                                               "version 0"):
            z.sum().backward()


def test_modifying_a_saved_output_is_caught_and_names_the_op():
    w = sn.tensor([1.0, 2.0], requires_grad=True)
    y = w.exp()  # Exp keeps its output
    y.add_(1)  # recorded (y is a non-leaf): y now sits on Add, but Exp's saved output changed
    with pytest.raises(RuntimeError, match=r"output 0 of Exp, a float32 tensor of shape \(2,\), is at version 1; "
                                           r"expected version 0 instead \(the last in-place op on it: add_\)"):
        y.sum().backward()
    tw = torch.tensor([1.0, 2.0], requires_grad=True)
    ty = tw.exp()
    ty.add_(1)
    with pytest.raises(RuntimeError, match="output 0 of Exp.*is at version 1; expected version 0"):
        ty.sum().backward()


def test_a_change_through_a_view_or_detach_counts():
    for make in (lambda y: y.detach(), lambda y: y[0:1], lambda y: y.reshape(2), lambda y: y.T):
        w = sn.tensor([1.0, 2.0], requires_grad=True)
        y = (w * 2).reshape(1, 2)
        z = F.sigmoid(w) * y  # Mul keeps y
        with sn.no_grad():
            make(y).mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            z.sum().backward()


def test_a_constant_input_that_is_not_saved_may_change():
    for lib in (sn, torch):
        w = lib.tensor(np.array([1.0, 2.0]), requires_grad=True)
        c = lib.tensor(np.array([5.0, 5.0]))
        z = w + c  # Add keeps nothing
        c.add_(1)
        z.sum().backward()
        np.testing.assert_array_equal(np.asarray(w.grad), [1.0, 1.0])


def test_in_place_on_a_view_of_a_graph_tensor_is_refused_clearly():
    """torch records it as a new history of the viewed tensor (CopySlices); scratchnet says it does not."""
    w = sn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = w * 2
    with pytest.raises(RuntimeError, match="mul_ on a view .* apply it to the tensor itself, clone\\(\\) the view"):
        y[:2].mul_(3)
    z = sn.tensor(np.zeros(3))
    with pytest.raises(RuntimeError, match="add_ on a view"):
        z[:2].add_(w[:2])


def test_a_view_taken_before_its_base_was_rebased_is_refused_clearly():
    w = sn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = w * 2
    view = y[:2]
    y.mul_(3)  # y's history changes; torch would replay the view on the new history
    with pytest.raises(RuntimeError, match="a view taken before an in-place op recorded a new history"):
        view * 1


# --------------------------------------------------------------------------- operand checks (torch's)


def test_operand_checks_match_torch():
    ints = sn.tensor([1, 2])
    with pytest.raises(RuntimeError, match="result type float32 can't be cast to the desired output type int64"):
        ints.add_(1.5)
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        torch.tensor([1, 2]).add_(1.5)
    with pytest.raises(RuntimeError, match="can't be cast"):
        ints.div_(2)  # true division
    with pytest.raises(RuntimeError, match=r"output with shape \(2,\) doesn't match the broadcast shape \(3, 2\)"):
        sn.tensor([1.0, 2.0]).add_(sn.tensor(np.ones((3, 2))))
    f32 = sn.tensor(np.ones(2, dtype=np.float32))
    f32.add_(sn.tensor(np.ones(2)))  # float64 into float32: allowed, as torch
    assert f32.dtype == np.float32 and f32.numpy().tolist() == [2.0, 2.0]
    with pytest.raises(RuntimeError, match="broadcast view"):
        sn.tensor([1.0]).broadcast_to((3,)).add_(1.0)


def test_fill_and_copy_follow_torch():
    t, tt = sn.tensor(np.zeros((2, 2))), torch.zeros(2, 2)
    t.copy_(sn.tensor([1.0, 2.0]))
    tt.copy_(torch.tensor([1.0, 2.0]))
    np.testing.assert_array_equal(t.numpy(), tt.numpy())
    t.fill_(sn.tensor(3.0))
    tt.fill_(torch.tensor(3.0))
    np.testing.assert_array_equal(t.numpy(), tt.numpy())
    with pytest.raises(RuntimeError, match="fill_ only supports 0-dimension value tensor"):
        t.fill_(sn.tensor([1.0, 2.0]))
