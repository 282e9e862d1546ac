"""gradcheck itself: passes on correct ops, fails (naming the tensor) on a wrong backward, refuses float32."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet import nn
from scratchnet.autograd import Function


def t64(shape, seed=0, requires_grad=True, name=None):
    x = sn.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=requires_grad)
    x.name = name
    return x


class WrongSquare(Function):
    """x^2 with a deliberately wrong backward (x instead of 2x)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        return (gy * self.x,)


class WrongSecondInput(Function):
    """a * b whose gradient for b is off by a factor 1.5."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        return gy * self.b, 1.5 * gy * self.a


@pytest.mark.parametrize("fn, shapes", [
    (lambda a, b: (a * b + a / (b * b + 1.0)).sum(1), [(3, 4), (4,)]),
    (lambda a, b: (a @ b).exp(), [(2, 3), (3, 2)]),
    (lambda a, b: sn.cat([a, b * 2.0], dim=0).max(0), [(2, 3), (1, 3)]),
    (lambda a, b: (a.reshape(6, 1) - b).abs().sqrt(), [(2, 3), (1, 4)]),
])
def test_passes_on_correct_ops(fn, shapes):
    inputs = [t64(s, seed=i) for i, s in enumerate(shapes)]
    assert sn.gradcheck(fn, inputs)


def test_passes_with_module_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    assert sn.gradcheck(model, [t64((2, 3))], params=model.named_parameters())


def test_fails_on_a_wrong_backward_naming_the_input():
    with pytest.raises(sn.GradcheckError, match=r"input 0 \(shape \(3, 2\)\): 6 entries differ"):
        sn.gradcheck(lambda x: WrongSquare()(x), [t64((3, 2))])


def test_fails_naming_the_wrong_tensor_among_several():
    a, b = t64((2, 3), 1, name="a"), t64((2, 3), 2, name="b")
    with pytest.raises(sn.GradcheckError) as info:
        sn.gradcheck(lambda a, b: WrongSecondInput()(a, b), [a, b])
    message = str(info.value)
    assert "b (shape (2, 3))" in message and "a (shape" not in message


def test_fails_on_large_tensors_by_the_directional_check_and_still_names_the_tensor():
    x = t64((50, 50), name="big")
    ok = t64((50, 50), seed=1, name="fine")
    with pytest.raises(sn.GradcheckError) as info:
        sn.gradcheck(lambda x, y: WrongSquare()(x) + y * 2.0, [x, ok], max_elements=100)
    message = str(info.value)
    assert "direction 0" in message and "big (shape (50, 50))" in message and "fine" not in message


def test_fails_naming_a_parameter():
    layer = nn.Linear(3, 2).double()
    weight_is_wrong = lambda x: WrongSquare()(layer.weight).sum() + layer(x).sum()  # noqa: E731
    with pytest.raises(sn.GradcheckError, match=r"weight \(shape \(2, 3\)\)"):
        sn.gradcheck(weight_is_wrong, [t64((1, 3))], params=layer.named_parameters())


def test_refuses_float32_with_a_clear_message():
    x = sn.tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="gradcheck needs float64 tensors .*float32.*use .double()"):
        sn.gradcheck(lambda x: x * 2.0, [x])


def test_needs_something_to_check():
    with pytest.raises(ValueError, match="no input or parameter requires grad"):
        sn.gradcheck(lambda x: x * 2.0, [t64((2,), requires_grad=False)])


def test_raise_exception_false_returns_false():
    assert sn.gradcheck(lambda x: WrongSquare()(x), [t64((2,))], raise_exception=False) is False
