"""Shape ops: reshape, transpose/permute, broadcast, indexing, cat/split/stack.

Each op is a ``Function`` with forward and backward side by side; most
backward passes undo the forward's rearrangement (Concat and Split are each
other's adjoints), and the ones that copy or broadcast sum the gradient back.
Every backward is linear in the gradient, so each ``differentiable_backward``
is the op's adjoint applied to a Tensor (indexing's is ``IndexAdd``, whose own
adjoint is indexing again). The ops whose output can share the input's memory
are ``ViewFunction``s: their outputs are views, as torch's.
"""
import math

import numpy as np

from .. import backend
from ..autograd import Function, Tensor, ViewFunction, as_tensor
from . import validate
from .math import as_operand, result_type, sum_to, sum_to_size


class Reshape(ViewFunction):
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

    def differentiable_backward(self, gy):
        return (gy.reshape(self.in_shape),)


class Transpose(ViewFunction):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        self.axes = tuple(range(x.ndim))[::-1] if self.axes is None else tuple(a % x.ndim for a in self.axes)
        return x.transpose(self.axes)

    def backward(self, gy):
        return (gy.transpose(tuple(np.argsort(self.axes).tolist())),)

    def differentiable_backward(self, gy):
        return (Transpose(tuple(np.argsort(self.axes).tolist()))(gy),)


class BroadcastTo(ViewFunction):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.in_shape = x.shape
        xp = backend.get_array_module(x)
        return xp.broadcast_to(x, self.shape)

    def backward(self, gy):
        return (sum_to(gy, self.in_shape),)

    def differentiable_backward(self, gy):
        return (sum_to_size(gy, self.in_shape),)


class GetItem(ViewFunction):
    """x[index]; the backward scatters with ``add.at`` so repeated indices accumulate."""

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.in_shape, self.in_dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, gy):
        return (_index_add(gy, self.index, self.in_shape),)

    def differentiable_backward(self, gy):
        return (IndexAdd(self.index, self.in_shape)(gy),)


class IndexAdd(Function):
    """Zeros of ``shape`` with ``g`` added at ``index`` (repeats accumulate): GetItem's backward, as an op."""

    def __init__(self, index, shape):
        self.index, self.shape = index, shape

    def forward(self, g):
        return _index_add(g, self.index, self.shape)

    def backward(self, ggx):
        return (ggx[self.index],)

    def differentiable_backward(self, ggx):
        return (GetItem(self.index)(ggx),)


def _index_add(g, index, shape):
    xp = backend.get_array_module(g)
    gx = xp.zeros(shape, dtype=g.dtype)
    if _is_basic(index):  # a view: every element of g has its own place in gx, so a plain store
        gx[index] = g  # (10x faster than add.at: ResNet-20's strided shortcut, 4.8 vs 0.5 ms)
    else:  # integer or boolean arrays may name a place twice: add.at accumulates the repeats
        xp.add.at(gx, index, g)
    return gx


def _is_basic(index):
    """Whether ``index`` is NumPy basic indexing (ints, slices, Ellipsis, None): it selects each element once."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(part is None or part is Ellipsis or isinstance(part, (slice, int, np.integer))
               and not isinstance(part, (bool, np.bool_)) for part in parts)


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

    def differentiable_backward(self, gy):
        return Split(self.sizes, self.axis)(gy)


class Split(ViewFunction):
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

    def differentiable_backward(self, *gys):
        return (Concat(self.axis)(*gys),)


# --------------------------------------------------------------------------- public functions


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
    merged = math.prod(shape[start:end + 1])
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
    tensors = [as_operand(t, dtype, None) for t in tensors]
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
