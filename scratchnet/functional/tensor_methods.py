"""The Tensor's operators and methods (``+ - * / @ **``, indexing, ``.sum``, ``.reshape`` ...).

They are attached here, to the functions of ``math.py`` and ``shape.py``:
the autograd layer below knows nothing about math.
"""
from .. import backend
from ..autograd import Tensor
from .math import abs, add, clamp, div, exp, log, matmul, max, mean, mul, neg, pow, sqrt, sub, sum  # noqa: A004
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


_install_tensor_methods()
