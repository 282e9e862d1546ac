"""The Tensor's operators and methods (``+ - * / @ **``, indexing, ``.sum``, ``.reshape``, ``.relu`` ...), and its
in-place ops (``add_ sub_ mul_ div_ zero_ fill_ copy_ clamp_ relu_``, ``+= -= *= /=``).

They are attached here, to the functions of ``math.py`` and ``shape.py``:
the autograd layer below knows nothing about math. An in-place op checks its
operand as torch does (the result must keep the tensor's shape and dtype
category), then hands autograd.apply_inplace both ways of computing it: out of
place through the differentiable op (when the graph must record it) and on the
raw array.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor, apply_inplace
from .activation import relu, relu_
from .math import (CopyFrom, Fill, _category, abs, add, as_operand, clamp, div, exp, log, matmul, max,  # noqa: A004
                   mean, mul, neg, pow, result_type, sqrt, sub, sum, sum_to_size)
from .shape import Transpose, broadcast_to, flatten, getitem, permute, reshape, transpose


def _reduce_method(fn):
    def method(self, dim=None, keepdim=False):
        return fn(self, dim, keepdim)
    method.__name__ = fn.__name__
    return method


def _install_tensor_methods():
    T = Tensor
    T.__add__ = add
    T.__radd__ = lambda self, other: add(other, self)
    T.__sub__ = sub
    T.__rsub__ = lambda self, other: sub(other, self)
    T.__mul__ = mul
    T.__rmul__ = lambda self, other: mul(other, self)
    T.__truediv__ = div
    T.__rtruediv__ = lambda self, other: div(other, self)
    T.__neg__ = neg
    T.__pow__ = pow
    T.__matmul__ = matmul
    T.__rmatmul__ = lambda self, other: matmul(other, self)
    T.__getitem__ = getitem
    T.sum = _reduce_method(sum)
    T.mean = _reduce_method(mean)
    T.max = _reduce_method(max)
    T.exp, T.log, T.sqrt, T.abs = exp, log, sqrt, abs
    T.clamp = clamp
    T.relu = relu
    T.reshape = reshape
    T.view = reshape
    T.flatten = flatten
    T.transpose = transpose
    T.permute = permute
    T.T = property(lambda self: Transpose()(self))
    T.broadcast_to = broadcast_to
    # comparisons give plain boolean tensors (no gradient), as in torch; an __eq__ set here, after the
    # class was made, leaves its identity hash (Tensor.__hash__ in autograd.py) in place
    for name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
        setattr(T, name, _comparison(name))
    T.argmax = lambda self, dim=None, keepdim=False: Tensor(_argmax(self.data, dim, keepdim))
    T.sum_to_size = sum_to_size
    # in place
    T.add_, T.sub_, T.mul_, T.div_ = add_, sub_, mul_, div_
    T.__iadd__, T.__isub__, T.__imul__, T.__itruediv__ = add_, sub_, mul_, div_
    T.zero_, T.fill_, T.copy_, T.clamp_, T.relu_ = zero_, fill_, copy_, clamp_, relu_


def _comparison(name):
    def compare(self, other):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor(getattr(self.data, name)(other))
    compare.__name__ = name
    return compare


def _argmax(data, dim, keepdim):
    xp = backend.get_array_module(data)
    out = xp.argmax(data, axis=dim)
    if keepdim and dim is not None:
        out = xp.expand_dims(out, dim)
    return out


# --------------------------------------------------------------------------- in-place ops


def _inplace_operand(op, t, other, true_divide=False):
    """``other`` as an array of the op's result dtype on t's device, after torch's two checks."""
    dtype = result_type(t, other)
    if true_divide and _category(dtype) < 2:
        dtype = backend.get_default_dtype()
    if _category(dtype) > _category(t.dtype):
        raise RuntimeError(f"{op}: result type {dtype} can't be cast to the desired output type {t.dtype}")
    operand = as_operand(other, dtype, t)
    if operand.device != t.device:
        raise RuntimeError(f"{op}: the operand is on {operand.device} but the tensor is on {t.device}; move it first")
    try:
        shape = np.broadcast_shapes(t.shape, operand.shape)
    except ValueError:
        raise RuntimeError(f"{op}: shapes {t.shape} and {operand.shape} cannot be broadcast together") from None
    if shape != t.shape:
        raise RuntimeError(f"{op}: output with shape {t.shape} doesn't match the broadcast shape {shape}")
    return operand


def _arithmetic_(op, function, ufunc, keeps_self=False, true_divide=False):
    """An in-place ``t op= other``: the out-of-place ``function`` when recorded, else ``ufunc`` into t's array."""
    def method(self, other):
        operand = _inplace_operand(op, self, other, true_divide)

        def raw(array):
            getattr(backend.get_array_module(array), ufunc)(array, operand.data, out=array, casting="unsafe")
        return apply_inplace(self, op, (other,), lambda prior: function(prior, other), raw, keeps_self)
    method.__name__ = op
    return method


_add_ = _arithmetic_("add_", add, "add")
_sub_ = _arithmetic_("sub_", sub, "subtract")
mul_ = _arithmetic_("mul_", mul, "multiply", keeps_self=True)  # mul's backward reads the old value
div_ = _arithmetic_("div_", div, "true_divide", true_divide=True)


def add_(self, other, *, alpha=1):
    return _add_(self, other if alpha == 1 else other * alpha)


def sub_(self, other, *, alpha=1):
    return _sub_(self, other if alpha == 1 else other * alpha)


def fill_(self, value):
    """Every element set to ``value`` (a number or a one-element tensor)."""
    if isinstance(value, Tensor):
        if value.size != 1:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor with shape {value.shape}")
        value = value.item()

    def raw(array):
        array[...] = value
    return apply_inplace(self, "fill_", (), lambda prior: Fill(value)(prior), raw)


def zero_(self):
    return fill_(self, 0)


def copy_(self, src):
    """The values of ``src`` (broadcast to this shape, cast to this dtype, moved to this device)."""
    src = src if isinstance(src, Tensor) else Tensor(np.asarray(src))
    try:
        shape = np.broadcast_shapes(self.shape, src.shape)
    except ValueError:
        shape = None
    if shape != self.shape:
        raise RuntimeError(f"copy_: the source of shape {src.shape} cannot be broadcast to the tensor's shape "
                           f"{self.shape}")

    def raw(array):
        array[...] = backend.to_device(src.data, backend.device_of(array))
    return apply_inplace(self, "copy_", (src,), lambda prior: CopyFrom()(prior, src), raw)


def clamp_(self, min=None, max=None):  # noqa: A002 - torch's names
    if min is None and max is None:
        raise RuntimeError("clamp_: at least one of 'min' or 'max' must not be None")

    def raw(array):
        backend.get_array_module(array).clip(array, min, max, out=array)
    return apply_inplace(self, "clamp_", (), lambda prior: clamp(prior, min, max), raw)


_install_tensor_methods()
