"""Dropout (inverted): zero each element with probability p and scale the survivors by 1 / (1 - p).

Scaling at training time keeps every activation's expected value unchanged,
so evaluation is the identity (no rescaling at test time, unlike the
original paper's weight scaling). The mask comes from ``backend.rng(device)``,
so ``sn.manual_seed`` makes it repeatable.
"""
from .. import backend
from ..autograd import Function, Tensor
from . import validate
from .math import check_float


class Dropout(Function):
    def __init__(self, p):
        self.p = p

    def forward(self, x):
        xp = backend.get_array_module(x)
        if self.p == 1:  # everything dropped (1 / (1 - p) would be infinite)
            self.scale = xp.zeros(x.shape, dtype=x.dtype)
        else:
            keep = backend.rng(backend.device_of(x)).random(x.shape) >= self.p
            self.scale = keep.astype(x.dtype) * x.dtype.type(1 / (1 - self.p))
        return x * self.scale

    def backward(self, gy):
        return (gy * self.scale,)

    def differentiable_backward(self, gy):
        return (gy * Tensor(self.scale),)


def dropout(x, p=0.5, training=True):
    """torch.nn.functional.dropout: identity when not training or p == 0, zeros when p == 1."""
    validate.probability("dropout", p)
    check_float("dropout", x)
    if not training or p == 0:
        return x
    return Dropout(p)(x)
