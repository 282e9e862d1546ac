"""Tensor math: arithmetic, reductions, shape ops, indexing, cat/split; torch's type promotion.

Each op is a ``Function`` with forward and backward side by side on raw
arrays. At the bottom, the Tensor's operators (``+ - * / @ **``, indexing,
``.sum``, ``.reshape`` ...) are attached to these functions: the autograd
layer below knows nothing about math.
"""
import numbers

import numpy as np

from .. import backend
from ..autograd import Function, Tensor, as_tensor
from . import validate


def sum_to(grad, shape):
    """Reduce a broadcast gradient back to ``shape`` (the adjoint of broadcasting)."""
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and grad.shape[i + lead] != 1)
    out = grad.sum(axis=axes, keepdims=True)
    return out.reshape(shape) if lead else out


def check_float(op, *tensors):
    """Fail clearly when an op that needs floats is given integers."""
    for t in tensors:
        if t is not None and not backend.is_floating(t.dtype):
            raise TypeError(f"{op} needs floating-point tensors, got dtype {t.dtype} (shape {t.shape}); "
                            f"convert with .float() or .to(dtype=np.float32)")


# --------------------------------------------------------------------------- type promotion (torch's rules)
#
# Operands fall in three groups, by priority: tensors with dims, 0-d tensors, Python (and NumPy) scalars.
# A lower group changes the result only when it brings a higher *category* (bool < integer < floating);
# then the result is that operand's type (a Python float: the default dtype). So a 0-d float64 tensor
# times a float32 tensor stays float32, an int tensor + 1.5 is float32, and float32 + float64 (both with
# dims) is float64. True division of integers gives the default float dtype.


def _category(dtype):
    return {"b": 0, "i": 1, "u": 1, "f": 2}.get(np.dtype(dtype).kind, 3)


def _promote(a, b):
    """Two dtypes of the same group: the higher category wins whole; within a category, the wider type."""
    ca, cb = _category(a), _category(b)
    if ca != cb:
        return np.dtype(a if ca > cb else b)
    return np.promote_types(a, b)


def _operand_dtype(value):
    """(group, dtype) of one operand: 0 tensor with dims, 1 0-d tensor, 2 scalar."""
    if isinstance(value, Tensor):
        return (0 if value.ndim else 1), value.dtype
    if isinstance(value, (bool, np.bool_)):
        return 2, np.dtype(bool)
    if isinstance(value, numbers.Integral):
        return 2, np.dtype(np.int64)
    if isinstance(value, numbers.Real):
        return 2, backend.get_default_dtype()
    array = np.asarray(value)  # a list, or an array: treated as a tensor with dims
    return (0 if array.ndim else 1), (backend.get_default_dtype() if array.dtype == np.float64 and
                                      not isinstance(value, np.ndarray) else array.dtype)


def result_type(*operands):
    """The dtype torch gives an op on these operands (tensors, Python scalars), as torch.result_type."""
    groups = [None, None, None]
    for value in operands:
        group, dtype = _operand_dtype(value)
        groups[group] = dtype if groups[group] is None else _promote(groups[group], dtype)

    def combine(higher, lower):  # a lower-priority group counts only with a higher category
        if higher is None or (lower is not None and _category(lower) > _category(higher)):
            return lower
        return higher

    return combine(groups[0], combine(groups[1], groups[2]))


def _as_operand(value, dtype, like):
    """``value`` as a tensor of ``dtype`` on ``like``'s device; a cast of a tensor stays differentiable."""
    if isinstance(value, Tensor):
        return value if value.dtype == dtype else value.to(dtype=dtype)
    if like is not None:
        return Tensor(backend.get_array_module(like.data).asarray(value, dtype=dtype))
    return as_tensor(np.asarray(value, dtype=dtype))


def _binary_operands(a, b, true_divide=False):
    """Both operands as tensors of their promoted dtype (torch's rules, above)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype and \
            (not true_divide or a.dtype.kind == "f"):
        return a, b  # the common case, without the general rule's cost
    dtype = result_type(a, b)
    if true_divide and _category(dtype) < 2:
        dtype = backend.get_default_dtype()  # int / int is a float division, as torch
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    return _as_operand(a, dtype, like), _as_operand(b, dtype, like)


def _elementwise(op, function, a, b, true_divide=False):
    """A broadcasting binary op on tensors or Python scalars, with torch's promotion and shape error."""
    a, b = _binary_operands(a, b, true_divide)
    _check_broadcast(op, a, b)
    return function()(a, b)


def _check_broadcast(op, a, b):
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None


# --------------------------------------------------------------------------- arithmetic


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(gy, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(-gy, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        # keep only the factor each side's gradient needs
        self.a = a if self.needs_input_grad[1] else None
        self.b = b if self.needs_input_grad[0] else None
        self.shapes = a.shape, b.shape
        return a * b

    def backward(self, gy):
        ga = sum_to(gy * self.b, self.shapes[0]) if self.needs_input_grad[0] else None
        gb = sum_to(gy * self.a, self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.b = b
        y = a / b
        self.y = y if self.needs_input_grad[1] else None
        self.shapes = a.shape, b.shape
        return y

    def backward(self, gy):
        ga = sum_to(gy / self.b, self.shapes[0]) if self.needs_input_grad[0] else None
        gb = sum_to(-gy * self.y / self.b, self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return (-gy,)


class Pow(Function):
    """x ** p for a constant exponent p."""

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        self.x = x
        return x ** self.exponent

    def backward(self, gy):
        p = self.exponent
        return (gy * p * self.x ** (p - 1),)


class Exp(Function):
    def forward(self, x):
        self.y = backend.get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return (gy * self.y,)


class Log(Function):
    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, gy):
        return (gy / self.x,)


class Sqrt(Function):
    def forward(self, x):
        self.y = backend.get_array_module(x).sqrt(x)
        return self.y

    def backward(self, gy):
        return (gy / (2 * self.y),)


class Abs(Function):
    def forward(self, x):
        xp = backend.get_array_module(x)
        self.sign = xp.sign(x)
        return xp.abs(x)

    def backward(self, gy):
        return (gy * self.sign,)


class Clamp(Function):
    """Clip to [low, high]; the gradient passes where the value was not clipped."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def forward(self, x):
        xp = backend.get_array_module(x)
        y = xp.clip(x, self.low, self.high)
        self.mask = y == x
        return y

    def backward(self, gy):
        return (gy * self.mask,)


class MatMul(Function):
    """a @ b with NumPy's rules: 1-d operands, batching and broadcasting of batch dims."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both operands need at least one dimension (use * for scalars)")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not line up "
                             f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})")
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        a, b = self.a, self.b
        # lift 1-d operands to matrices so one formula serves every case
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # the gradient in the lifted shape (also when gy is 0-d, from vector @ vector)
        g = gy.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to(g @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            gb = sum_to(xp.swapaxes(a2, -1, -2) @ g, b2.shape).reshape(b.shape)
        return ga, gb


# --------------------------------------------------------------------------- reductions


def _normalize_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % ndim if ndim else 0 for a in axes))


def _expand_reduced(g, shape, axes, keepdims):
    """Put back the reduced axes of a gradient so it broadcasts against ``shape``."""
    xp = backend.get_array_module(g)
    if not keepdims:
        for a in axes:
            g = xp.expand_dims(g, a)
    return g


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.axes = _normalize_axis(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        g = _expand_reduced(gy, self.shape, self.axes, self.keepdims)
        return (xp.broadcast_to(g, self.shape).copy(),)


class Mean(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.axes = _normalize_axis(self.axis, x.ndim)
        self.count = int(np.prod([x.shape[a] for a in self.axes])) if self.axes else 1
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        g = _expand_reduced(gy, self.shape, self.axes, self.keepdims) / self.count
        return (xp.broadcast_to(g, self.shape).astype(gy.dtype),)


class Max(Function):
    """Maximum over axes; ties share the gradient equally (torch's amax rule)."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _normalize_axis(self.axis, x.ndim)
        y = x.max(axis=self.axes, keepdims=True)
        self.mask = x == y
        return y if self.keepdims else y.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, gy):
        g = _expand_reduced(gy, self.mask.shape, self.axes, self.keepdims)
        share = self.mask / self.mask.sum(axis=self.axes, keepdims=True)
        return ((g * share).astype(gy.dtype),)


# --------------------------------------------------------------------------- shapes


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                             f"({x.size} elements) into {self.shape}") from None

    def backward(self, gy):
        return (gy.reshape(self.in_shape),)


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        self.axes = tuple(range(x.ndim))[::-1] if self.axes is None else tuple(a % x.ndim for a in self.axes)
        return x.transpose(self.axes)

    def backward(self, gy):
        return (gy.transpose(tuple(np.argsort(self.axes).tolist())),)


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        xp = backend.get_array_module(x)
        return xp.broadcast_to(x, self.shape)

    def backward(self, gy):
        return (sum_to(gy, self.in_shape),)


class GetItem(Function):
    """x[index]; the backward scatters with ``add.at`` so repeated indices accumulate."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.in_shape, self.in_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        gx = xp.zeros(self.in_shape, dtype=gy.dtype)
        if xp is np:
            np.add.at(gx, self.index, gy)
        else:
            xp.add.at(gx, self.index, gy)
        return (gx,)


class Concat(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        xp = backend.get_array_module(*xs)
        self.sizes = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        bounds = np.cumsum(self.sizes)[:-1].tolist()
        return tuple(xp.split(gy, bounds, axis=self.axis))


class Split(Function):
    """Split into pieces of the given sizes along an axis (the adjoint of Concat)."""

    def __init__(self, sizes, axis):
        self.sizes, self.axis = list(sizes), axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.axis %= x.ndim
        bounds = np.cumsum(self.sizes)[:-1].tolist()
        return tuple(xp.split(x, bounds, axis=self.axis))

    def backward(self, *gys):
        xp = backend.get_array_module(*gys)
        return (xp.concatenate(gys, axis=self.axis),)


# --------------------------------------------------------------------------- public functions


def add(a, b):
    return _elementwise("add", Add, a, b)


def sub(a, b):
    return _elementwise("sub", Sub, a, b)


def mul(a, b):
    return _elementwise("mul", Mul, a, b)


def div(a, b):
    return _elementwise("div", Div, a, b, true_divide=True)


def neg(x):
    return Neg()(x)


def pow(x, exponent):  # noqa: A001 - torch's name
    if isinstance(exponent, Tensor):
        raise TypeError("pow: the exponent must be a Python number (use exp(log(x) * y) for tensors)")
    x = _as_operand(x, result_type(x, exponent), None)  # an int tensor ** 0.5 is float, as torch
    return Pow(exponent)(x)


def exp(x):
    return Exp()(x)


def log(x):
    return Log()(x)


def sqrt(x):
    return Sqrt()(x)


def abs(x):  # noqa: A001 - torch's name
    return Abs()(x)


def clamp(x, min=None, max=None):  # noqa: A002 - torch's names
    return Clamp(min, max)(x)


def matmul(a, b):
    a, b = _binary_operands(a, b)
    return MatMul()(a, b)


def sum(x, dim=None, keepdim=False):  # noqa: A001 - torch's name
    return Sum(validate.dims("sum", dim, x.ndim), keepdim)(x)


def mean(x, dim=None, keepdim=False):
    check_float("mean", x)
    return Mean(validate.dims("mean", dim, x.ndim), keepdim)(x)


def max(x, dim=None, keepdim=False):  # noqa: A001 - torch's name (values only)
    dim = validate.dims("max", dim, x.ndim)
    if x.size == 0 and any(x.shape[a] == 0 for a in _normalize_axis(dim, x.ndim)):
        raise ValueError(f"max(): an empty reduction has no maximum: the input of shape {x.shape} is empty "
                         f"along dim={dim} (reduce over a non-empty dim instead)")
    return Max(dim, keepdim)(x)


def reshape(x, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Reshape(tuple(shape))(x)


def transpose(x, dim0, dim1):
    """Swap two dimensions, like torch.transpose."""
    dim0, dim1 = validate.dim("transpose", dim0, x.ndim), validate.dim("transpose", dim1, x.ndim)
    axes = list(range(x.ndim))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return Transpose(tuple(axes))(x)


def permute(x, *dims):
    dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    if len(dims) != x.ndim:
        raise ValueError(f"permute: the number of dims ({len(dims)}) must equal the tensor's ({x.ndim}), "
                         f"got dims={tuple(dims)} for shape {x.shape}")
    return Transpose(tuple(validate.dims("permute", tuple(dims), x.ndim)))(x)


def broadcast_to(x, shape):
    return BroadcastTo(shape)(x)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge dims start_dim..end_dim into one (torch.flatten)."""
    shape = x.shape
    start, end = validate.flatten_dims("flatten", start_dim, end_dim, len(shape))
    if not shape:
        return reshape(x, (1,))
    merged = int(np.prod(shape[start:end + 1]))
    return reshape(x, shape[:start] + (merged,) + shape[end + 1:])


def getitem(x, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem(index)(x)


def cat(tensors, dim=0):
    """Concatenate along ``dim``; all other dims must agree (torch.cat)."""
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    dtype = result_type(*tensors)  # torch promotes across the inputs, as for binary ops
    tensors = [_as_operand(t, dtype, None) for t in tensors]
    first = tensors[0]
    if first.ndim == 0:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated (use stack)")
    axis = validate.dim("cat", dim, first.ndim)
    for i, t in enumerate(tensors[1:], 1):
        if t.ndim != first.ndim or any(a != b for k, (a, b) in enumerate(zip(t.shape, first.shape)) if k != axis):
            raise ValueError(f"cat: tensor {i} has shape {t.shape} but tensor 0 has shape {first.shape}; "
                             f"all dims except dim={dim} must match")
    return Concat(axis)(*tensors)


def split(x, split_size_or_sections, dim=0):
    """torch.split: pieces of equal size (an int) or of the listed sizes."""
    dim = validate.dim("split", dim, x.ndim)
    n = x.shape[dim]
    if not isinstance(split_size_or_sections, (tuple, list)):
        step = validate.split_size("split", split_size_or_sections, n)
        if step == 0:  # an empty dim split in pieces of 0: one empty piece
            return (x,)
        sizes = [step] * (n // step) + ([n % step] if n % step else [])
    else:
        sizes = list(split_size_or_sections)
        if np.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to dim {dim} of size {n}")
    out = Split(sizes, dim)(x)
    return out if isinstance(out, tuple) else (out,)


def stack(tensors, dim=0):
    """Join along a new dim (torch.stack): dim may be -(ndim+1) .. ndim."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    axis = validate.dim("stack", dim, tensors[0].ndim + 1)
    return cat([t.reshape(t.shape[:axis] + (1,) + t.shape[axis:]) for t in tensors], axis)


# --------------------------------------------------------------------------- Tensor operators


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
    # comparisons give plain boolean tensors (no gradient), as in torch
    for name in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
        setattr(T, name, _comparison(name))
    T.__hash__ = lambda self: id(self)
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
