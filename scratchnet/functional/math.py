"""Tensor math: arithmetic and reductions, with torch's type promotion.

Each op is a ``Function`` with forward and backward side by side on raw
arrays, then its ``differentiable_backward``: the same formula on Tensors, so
that ``create_graph=True`` can differentiate it again. Shape ops, indexing and
cat/split are in ``shape.py``; the Tensor's operators (``+ - * / @ **``,
``.sum`` ...) are attached in ``tensor_methods.py`` (the differentiable
backwards here use them, and ``.reshape`` / ``.broadcast_to`` from shape.py).
"""
import math
import numbers

import numpy as np

from .. import backend
from ..autograd import Function, Tensor, as_tensor
from ..kernels.routes import MUL, one_value_per_plane
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


class SumTo(Function):
    """Sum a tensor down to a shape it was broadcast from (torch's sum_to_size): the adjoint of BroadcastTo."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        return sum_to(x, self.shape)

    def backward(self, gy):
        return (backend.get_array_module(gy).broadcast_to(gy, self.in_shape),)

    def differentiable_backward(self, gy):
        return (gy.broadcast_to(self.in_shape),)


def sum_to_size(x, *shape):
    """Sum ``x`` down to ``shape``, which must broadcast to x's shape (torch's Tensor.sum_to_size)."""
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)
    if shape == x.shape:
        return x
    try:
        fits = np.broadcast_shapes(shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"sum_to_size: size {shape} is not expandable to the tensor's size {x.shape}")
    return SumTo(shape)(x)


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


def as_operand(value, dtype, like):
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
    return as_operand(a, dtype, like), as_operand(b, dtype, like)


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

    def differentiable_backward(self, gy):
        return sum_to_size(gy, self.shapes[0]), sum_to_size(gy, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(-gy, self.shapes[1])

    def differentiable_backward(self, gy):
        return sum_to_size(gy, self.shapes[0]), sum_to_size(-gy, self.shapes[1])


class Mul(Function):
    """a * b. A feature map times one value per plane (squeeze-excitation's gates, (N, C, H, W) * (N, C, 1, 1), in
    either order) takes the CPU's kernels (kernels/cpu_scale.py: backward in one pass, not two products and a
    reduction; the table: kernels/routes.py's MUL); every other product the array code below."""
    saved_inputs = {"a": 0, "b": 1}

    def forward(self, a, b):
        # keep only the factor each side's gradient needs
        self.a = a if self.needs_input_grad[1] else None
        self.b = b if self.needs_input_grad[0] else None
        self.shapes = a.shape, b.shape
        self.kernels = MUL.choose(a, b).impl
        if self.kernels is not None:
            self.planes_first = one_value_per_plane(a.shape, b.shape)  # else b is the feature map
            return self.kernels.channel_scale_forward(a, b) if self.planes_first else \
                self.kernels.channel_scale_forward(b, a)
        return a * b

    def backward(self, gy):
        if self.kernels is not None:  # the map's gradient needs the gates, the gates' the map
            if self.planes_first:
                return self.kernels.channel_scale_backward(gy, self.a, self.b)
            return self.kernels.channel_scale_backward(gy, self.b, self.a)[::-1]
        ga = sum_to(gy * self.b, self.shapes[0]) if self.needs_input_grad[0] else None
        gb = sum_to(gy * self.a, self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb

    def differentiable_backward(self, gy):
        ga = sum_to_size(gy * self.saved_input(1), self.shapes[0]) if self.needs_input_grad[0] else None
        gb = sum_to_size(gy * self.saved_input(0), self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    saved_inputs = {"b": 1}
    saved_outputs = {"y": 0}

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

    def differentiable_backward(self, gy):
        b = self.saved_input(1)
        ga = sum_to_size(gy / b, self.shapes[0]) if self.needs_input_grad[0] else None
        gb = sum_to_size(-gy * self.saved_output(0) / b, self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return (-gy,)

    def differentiable_backward(self, gy):
        return (-gy,)


class Pow(Function):
    """x ** p for a constant exponent p."""

    saved_inputs = {"x": 0}

    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, x):
        self.x = x
        return x ** self.exponent

    def backward(self, gy):
        p = self.exponent
        return (gy * p * self.x ** (p - 1),)

    def differentiable_backward(self, gy):
        p = self.exponent
        return (gy * p * self.saved_input(0) ** (p - 1),)


class Exp(Function):
    saved_outputs = {"y": 0}

    def forward(self, x):
        self.y = backend.get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return (gy * self.y,)

    def differentiable_backward(self, gy):
        return (gy * self.saved_output(0),)


class Log(Function):
    saved_inputs = {"x": 0}

    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, gy):
        return (gy / self.x,)

    def differentiable_backward(self, gy):
        return (gy / self.saved_input(0),)


class Sqrt(Function):
    saved_outputs = {"y": 0}

    def forward(self, x):
        self.y = backend.get_array_module(x).sqrt(x)
        return self.y

    def backward(self, gy):
        return (gy / (2 * self.y),)

    def differentiable_backward(self, gy):
        return (gy / (2 * self.saved_output(0)),)


class Abs(Function):
    def forward(self, x):
        xp = backend.get_array_module(x)
        self.sign = xp.sign(x)
        return xp.abs(x)

    def backward(self, gy):
        return (gy * self.sign,)

    def differentiable_backward(self, gy):  # the sign is constant wherever the derivative exists
        return (gy * Tensor(self.sign),)


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

    def differentiable_backward(self, gy):
        return (gy * Tensor(self.mask.astype(gy.dtype)),)


class MatMul(Function):
    """a @ b with NumPy's rules: 1-d operands, batching and broadcasting of batch dims."""

    saved_inputs = {"a": 0, "b": 1}

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

    def differentiable_backward(self, gy):
        a, b = self.saved_input(0), self.saved_input(1)
        a2 = a.reshape((1,) + a.shape) if a.ndim == 1 else a
        b2 = b.reshape(b.shape + (1,)) if b.ndim == 1 else b
        g = gy.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = sum_to_size(g @ b2.transpose(-1, -2), a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            gb = sum_to_size(a2.transpose(-1, -2) @ g, b2.shape).reshape(b.shape)
        return ga, gb


class Where(Function):
    """``a`` where ``condition`` (a constant boolean array) holds, ``b`` elsewhere; both broadcast."""

    def __init__(self, condition):
        self.condition = condition

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return backend.get_array_module(a).where(self.condition, a, b)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        zero = gy.dtype.type(0)
        return (sum_to(xp.where(self.condition, gy, zero), self.shapes[0]),
                sum_to(xp.where(self.condition, zero, gy), self.shapes[1]))

    def differentiable_backward(self, gy):
        zero = Tensor(backend.get_array_module(gy.data).zeros((), dtype=gy.dtype))
        return (sum_to_size(Where(self.condition)(gy, zero), self.shapes[0]),
                sum_to_size(Where(self.condition)(zero, gy), self.shapes[1]))


class Fill(Function):
    """Every element set to ``value`` (fill_ and zero_ when recorded): nothing of the input reaches the output."""

    def __init__(self, value):
        self.value = value

    def forward(self, x):
        return backend.get_array_module(x).full_like(x, self.value)

    def backward(self, gy):
        return (backend.get_array_module(gy).zeros_like(gy),)

    def differentiable_backward(self, gy):
        return (Tensor(backend.get_array_module(gy.data).zeros_like(gy.data)),)


class CopyFrom(Function):
    """``src`` broadcast to ``x``'s shape in ``x``'s dtype (copy_ when recorded): only src reaches the output."""

    def forward(self, x, src):
        xp = backend.get_array_module(x)
        self.src_shape = src.shape
        return xp.broadcast_to(backend.to_device(src, backend.device_of(x)).astype(x.dtype), x.shape).copy()

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return xp.zeros_like(gy), sum_to(gy, self.src_shape)

    def differentiable_backward(self, gy):
        return Tensor(backend.get_array_module(gy.data).zeros_like(gy.data)), sum_to_size(gy, self.src_shape)


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


def _kept_shape(shape, axes):
    """``shape`` with the reduced ``axes`` kept as 1s (what keepdim=True gives)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


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

    def differentiable_backward(self, gy):
        return (gy.reshape(_kept_shape(self.shape, self.axes)).broadcast_to(self.shape),)


class Mean(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.axes = _normalize_axis(self.axis, x.ndim)
        self.count = math.prod(x.shape[a] for a in self.axes) if self.axes else 1
        if self.count == 0:  # the mean of nothing is NaN, silently, as torch (NumPy warns)
            xp = backend.get_array_module(x)
            return xp.full_like(x.sum(axis=self.axes, keepdims=self.keepdims), xp.nan)
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        if self.count == 0:  # no input element: an empty gradient
            return (xp.zeros(self.shape, dtype=gy.dtype),)
        g = _expand_reduced(gy, self.shape, self.axes, self.keepdims) / self.count
        return (xp.broadcast_to(g, self.shape).astype(gy.dtype),)

    def differentiable_backward(self, gy):
        if self.count == 0:
            return (Tensor(backend.get_array_module(gy.data).zeros(self.shape, dtype=gy.dtype)),)
        return ((gy.reshape(_kept_shape(self.shape, self.axes)) / self.count).broadcast_to(self.shape),)


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

    def differentiable_backward(self, gy):  # which entries are maxima is constant wherever the derivative exists
        share = self.mask / self.mask.sum(axis=self.axes, keepdims=True)
        g = gy.reshape(_kept_shape(self.mask.shape, self.axes)).broadcast_to(self.mask.shape)
        return (g * Tensor(share.astype(gy.dtype)),)


# --------------------------------------------------------------------------- public functions


def add(a, b):
    return _elementwise("add", Add, a, b)


def sub(a, b):
    return _elementwise("sub", Sub, a, b)


def mul(a, b):
    return _elementwise("mul", Mul, a, b)


def div(a, b):
    return _elementwise("div", Div, a, b, true_divide=True)


def where(condition, input, other):  # noqa: A002 - torch's names
    """``input`` where ``condition`` is true, ``other`` elsewhere, broadcast together (torch.where); the gradient
    reaches each side where it was taken. ``condition``: a boolean tensor or array (no gradient)."""
    condition = condition.data if isinstance(condition, Tensor) else condition
    a, b = _binary_operands(input, other)
    _check_broadcast("where", a, b)
    return Where(condition)(a, b)


def neg(x):
    return Neg()(x)


def pow(x, exponent):  # noqa: A001 - torch's name
    if isinstance(exponent, Tensor):
        raise TypeError("pow: the exponent must be a Python number (use exp(log(x) * y) for tensors)")
    x = as_operand(x, result_type(x, exponent), None)  # an int tensor ** 0.5 is float, as torch
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
