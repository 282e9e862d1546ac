"""Autograd: the Tensor, the Function, and the backward walk.

A ``Function`` computes its forward and backward on raw arrays (numpy or cupy)
and keeps on ``self`` only what its backward needs. Calling it on tensors
records an edge per input in the graph:

* an input made by another function points at ``(creator, output_index)``;
* a leaf that requires grad points at the leaf tensor (its ``.grad`` receives
  the gradient);
* anything else gets no edge.

Outputs are *not* kept alive by the graph (a function holds only weak
references to them), so an activation that no backward needs is freed as
soon as the user drops it. ``backward`` walks functions in decreasing
generation order with a heap, never by recursion, so graphs of any depth work.

Function hooks (``FunctionHook``, after Chainer's) see every function's forward
and backward while a ``with`` block holds them; tools (summary, the study's
joins) use them instead of patching ``Function`` or asking models for plumbing.
"""
import contextlib
import functools
import heapq
import itertools
import weakref

import numpy as np

from . import backend

# --------------------------------------------------------------------------- grad mode

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


@contextlib.contextmanager
def _grad_mode(mode):
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, bool(mode)
    try:
        yield
    finally:
        _grad_enabled = previous


class set_grad_enabled:
    """Grad mode on or off, as torch's: a plain call sets it at once and for good
    (``sn.set_grad_enabled(False)``); as a context manager or a decorator it is set inside and put back
    after."""

    def __init__(self, mode):
        global _grad_enabled
        self.mode, self.previous = bool(mode), _grad_enabled
        _grad_enabled = self.mode

    def __enter__(self):
        return None

    def __exit__(self, *exc_info):
        global _grad_enabled
        _grad_enabled = self.previous

    def __call__(self, function):
        """Used as a decorator: the mode is the caller's until the function runs."""
        global _grad_enabled
        _grad_enabled = self.previous
        mode = self.mode

        @functools.wraps(function)
        def with_mode(*args, **kwargs):
            with _grad_mode(mode):
                return function(*args, **kwargs)
        return with_mode


def no_grad():
    """Context manager (or decorator): operations inside record no graph (inference, optimizer steps)."""
    return _grad_mode(False)


def enable_grad():
    """Context manager (or decorator): operations inside record the graph, also within no_grad."""
    return _grad_mode(True)


# --------------------------------------------------------------------------- Tensor


class Tensor:
    """An n-d array (``.data``, numpy or cupy) that can record how it was made.

    ``.grad`` is a raw array of the same shape (or None); it is filled for leaf
    tensors that require grad, and for others that called ``retain_grad()``.
    """

    __array_priority__ = 200  # make `ndarray + Tensor` call Tensor.__radd__

    def __init__(self, data, requires_grad=False, name=None):
        if requires_grad:
            _check_can_require_grad(data)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self.creator = None  # the Function that produced this tensor (None for leaves)
        self.output_index = 0  # which output of `creator` this tensor is
        self.generation = 0
        self._leaf_hooks = []  # hooks of a leaf tensor; a non-leaf's live on its creator
        self._retains_grad = False

    # -- array-like properties
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return int(self.data.size)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self.creator is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self.data), prefix="tensor(", precision=4, threshold=20)
        extra = f", device='{self.device}'" if self.device != "cpu" else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({body}, dtype={self.dtype}{extra}{grad})"

    def dim(self):
        return self.ndim

    def numel(self):
        return self.size

    def numpy(self):
        """A host (NumPy) copy of the data, whatever the device."""
        return backend.to_numpy(self.data).copy()

    def item(self):
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return backend.to_numpy(self.data).tolist()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data, requires_grad=False)

    def requires_grad_(self, requires_grad=True):
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be set on leaf tensors; use .detach() first")
        if requires_grad:
            _check_can_require_grad(self.data)
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep it)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad: it will never get one")
        self._retains_grad = True
        if self.creator is not None:
            self.creator.retained_outputs[self.output_index] = weakref.ref(self)

    def register_hook(self, hook):
        """Call ``hook(grad)`` with this tensor's gradient (a raw array) during backward.

        If the hook returns an array, it replaces the gradient that flows on.
        Returns a handle whose ``remove()`` unregisters the hook.
        """
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        hooks = self._leaf_hooks if self.creator is None else self.creator.output_hooks[self.output_index]
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``grad`` defaults to 1 for a one-element tensor. The graph is freed
        afterwards unless ``retain_graph=True``.
        """
        backward([self], [grad], retain_graph=retain_graph)

    def zero_grad(self):
        self.grad = None

    def to(self, device=None, dtype=None):
        """Move to a device and/or cast to a dtype; differentiable, like torch."""
        from_device, from_dtype = self.device, self.dtype
        device = backend.check_device(device) if device is not None else from_device
        dtype = np.dtype(dtype) if dtype is not None else from_dtype
        if device == from_device and dtype == from_dtype:
            return self
        return ToDeviceDtype(device, dtype)(self)

    def cpu(self):
        return self.to("cpu")

    def gpu(self):
        return self.to("gpu")

    cuda = gpu

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def long(self):
        return self.to(dtype=np.int64)

    def __bool__(self):
        if self.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.item())

    def __hash__(self):
        return id(self)


def _check_can_require_grad(data):
    dtype = getattr(data, "dtype", None)
    if dtype is None or not backend.is_floating(dtype):
        raise TypeError(f"only floating-point tensors can require grad, got dtype {dtype}; "
                        f"convert first with .float() / .double() (or pass dtype=np.float32)")


class RemovableHandle:
    """What registering a hook returns (tensor and module hooks alike): ``remove()`` unregisters it."""

    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def tensor(data, requires_grad=False, device="cpu", dtype=None):
    """Make a leaf tensor from array-like data (a copy, as torch.tensor does).

    Python floats become the default dtype (float32); NumPy arrays keep their
    dtype; integer data stays integer (class labels).
    """
    if isinstance(data, Tensor):
        data = data.data
    device = backend.check_device(device)
    xp = backend.xp_for(device)
    if dtype is None and not hasattr(data, "dtype"):
        probe = np.asarray(data)
        dtype = backend.get_default_dtype() if probe.dtype.kind == "f" else None
        data = probe
    array = xp.array(data, dtype=dtype, copy=True)
    return Tensor(array, requires_grad=requires_grad)


def as_tensor(value, like=None):
    """Wrap a Python scalar or raw array as a constant tensor.

    A scalar takes the dtype and device of ``like`` (torch: scalars don't promote).
    """
    if isinstance(value, Tensor):
        return value
    if like is not None and np.ndim(value) == 0 and not hasattr(value, "device"):
        xp = backend.get_array_module(like.data)
        return Tensor(xp.asarray(value, dtype=like.dtype))
    if isinstance(value, (int, float, list, tuple)):
        value = np.asarray(value, dtype=backend.get_default_dtype() if np.asarray(value).dtype.kind == "f" else None)
    return Tensor(value)


# --------------------------------------------------------------------------- function hooks

_function_hooks = []  # the active FunctionHooks, in the order they were entered


class FunctionHook:
    """Sees every ``Function`` call, forward and backward, inside ``with hook: ...`` (Chainer's FunctionHook).

    Override what you need (each does nothing by default). ``forward_preprocess(function, inputs)``
    and ``forward_postprocess(function, inputs, outputs)`` get tuples of Tensors (also under
    no_grad); ``backward_preprocess(function, grad_outputs)`` and ``backward_postprocess(function,
    grad_outputs, grad_inputs)`` the raw arrays ``backward`` receives (tensor hooks applied) and
    returns (None for an input that needs no gradient). Hooks observe: arrays are read-only.
    Active hooks run in the order they were entered; ops a hook runs are not hooked (no
    recursion); the block removes its hook, also on an exception; backward hooks fire for the
    backward walks run inside the block, wherever the graph was built.
    """

    def __enter__(self):
        if any(hook is self for hook in _function_hooks):
            raise RuntimeError(f"{type(self).__name__} is already active; a hook can be entered once at a time")
        _function_hooks.append(self)
        return self

    def __exit__(self, *exc_info):
        _function_hooks[:] = [hook for hook in _function_hooks if hook is not self]

    def forward_preprocess(self, function, inputs):
        pass

    def forward_postprocess(self, function, inputs, outputs):
        pass

    def backward_preprocess(self, function, grad_outputs):
        pass

    def backward_postprocess(self, function, grad_outputs, grad_inputs):
        pass


def _call_function_hooks(method, *args):
    """Call ``method`` of every active hook; ops they run meanwhile see no hooks (no recursion)."""
    global _function_hooks
    hooks, _function_hooks = _function_hooks, []
    try:
        for hook in hooks:
            getattr(hook, method)(*args)
    finally:
        _function_hooks = hooks


# --------------------------------------------------------------------------- Function


class Function:
    """One differentiable operation.

    Subclasses implement ``forward(*arrays) -> array or tuple`` and
    ``backward(*grad_outputs) -> tuple of input grads`` on raw arrays, and
    store on ``self`` whatever backward needs (no more). ``backward`` receives
    a gradient for every output (zeros where none flowed) and may return None
    for inputs that need no gradient (see ``self.needs_input_grad``).
    """

    def __call__(self, *inputs):
        tensors = [value if isinstance(value, Tensor) else as_tensor(value) for value in inputs]
        record = _grad_enabled and any(t.requires_grad for t in tensors)
        self.needs_input_grad = tuple(record and t.requires_grad for t in tensors)
        hooks = _function_hooks  # empty unless a FunctionHook is active: the one check the plain path pays
        if hooks:
            _call_function_hooks("forward_preprocess", self, tuple(tensors))
        outputs = self.forward(*[t.data for t in tensors])
        single = not isinstance(outputs, tuple)
        outputs = (outputs,) if single else outputs
        # an integer output (an index, a count) never carries a gradient, as in torch
        results = [Tensor(y, requires_grad=record and backend.is_floating(y.dtype)) for y in outputs]
        if record:
            self.generation = max(t.generation for t in tensors)
            self.input_meta = [(t.shape, t.dtype) for t in tensors]
            self.edges = [_edge(t) for t in tensors]
            self.output_meta = [(y.shape, y.dtype) for y in outputs]
            self.output_hooks = [[] for _ in outputs]
            self.retained_outputs = [None] * len(outputs)
            for index, result in enumerate(results):
                if not result.requires_grad:
                    continue
                result.creator = self
                result.output_index = index
                result.generation = self.generation + 1
        if hooks:
            _call_function_hooks("forward_postprocess", self, tuple(tensors), tuple(results))
        return results[0] if single else tuple(results)

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, *grad_outputs):
        raise NotImplementedError

    @property
    def name(self):
        return type(self).__name__


def _edge(t):
    if not t.requires_grad:
        return None
    if t.creator is not None:
        return (t.creator, t.output_index)
    return t  # a leaf: its .grad receives the gradient


class ToDeviceDtype(Function):
    """Copy to another device and/or dtype; the gradient goes back the same way."""

    def __init__(self, device, dtype):
        self.device, self.dtype = device, dtype

    def forward(self, x):
        self.from_device, self.from_dtype = backend.device_of(x), x.dtype
        return backend.to_device(x, self.device).astype(self.dtype, copy=False)

    def backward(self, gy):
        return (backend.to_device(gy, self.from_device).astype(self.from_dtype, copy=False),)


# --------------------------------------------------------------------------- backward walk


def backward(outputs, grad_outputs=None, retain_graph=False):
    """Backpropagate from ``outputs`` (tensors) seeded with ``grad_outputs`` (arrays or None)."""
    grad_outputs = grad_outputs or [None] * len(outputs)
    pending = {}  # Function -> list of gradients, one per output
    heap, order = [], itertools.count()
    leaf_grads = {}  # id(leaf) -> (leaf, accumulated gradient)

    def send(edge, grad, meta):
        shape, dtype = meta
        if grad.dtype != dtype:
            grad = grad.astype(dtype)
        if tuple(grad.shape) != tuple(shape):
            raise RuntimeError(f"internal error: gradient of shape {tuple(grad.shape)} for a tensor of shape {shape}")
        if isinstance(edge, Tensor):
            _, previous = leaf_grads.get(id(edge), (edge, None))
            leaf_grads[id(edge)] = (edge, grad if previous is None else previous + grad)
            return
        fn, index = edge
        if getattr(fn, "freed", False):
            raise RuntimeError(f"trying to backward through the graph a second time ({fn.name} was freed); "
                               f"call backward(retain_graph=True) the first time")
        if fn not in pending:
            pending[fn] = [None] * len(fn.output_meta)
            heapq.heappush(heap, (-fn.generation, next(order), fn))
        slot = pending[fn]
        slot[index] = grad if slot[index] is None else slot[index] + grad

    for out, seed in zip(outputs, grad_outputs):
        if not out.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of the computation had requires_grad=True")
        xp = backend.get_array_module(out.data)
        if seed is None:
            if out.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element output, got shape "
                                   f"{out.shape}; pass grad= of the same shape")
            seed = xp.ones_like(out.data)
        # a copy: the seed may end up as a leaf's .grad, which must not alias the caller's array
        seed = xp.array(seed.data if isinstance(seed, Tensor) else seed, dtype=out.dtype)
        if tuple(seed.shape) != out.shape:
            raise RuntimeError(f"backward(): grad has shape {tuple(seed.shape)} but the output has shape "
                               f"{out.shape}; they must match")
        send(_edge(out), seed, (out.shape, out.dtype))

    while heap:
        _, _, fn = heapq.heappop(heap)
        grads = pending.pop(fn)
        for index, grad in enumerate(grads):
            if grad is None:
                continue
            for hook in fn.output_hooks[index]:
                grad = _run_hook(hook, grad)
            retained = fn.retained_outputs[index]
            if retained is not None and retained() is not None:
                kept = retained()
                kept.grad = grad if kept.grad is None else kept.grad + grad
            grads[index] = grad
        if any(g is None for g in grads):  # an output that got no gradient contributes zeros
            for index, (shape, dtype) in enumerate(fn.output_meta):
                if grads[index] is None:
                    like = next(g for g in grads if g is not None)
                    grads[index] = backend.get_array_module(like).zeros(shape, dtype=dtype)
        hooks = _function_hooks
        if hooks:
            _call_function_hooks("backward_preprocess", fn, tuple(grads))
        input_grads = fn.backward(*grads)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(fn.edges):
            raise RuntimeError(f"internal error: {fn.name}.backward returned {len(input_grads)} gradients "
                               f"for {len(fn.edges)} inputs")
        if hooks:
            _call_function_hooks("backward_postprocess", fn, tuple(grads), input_grads)
        for i, (edge, grad, meta) in enumerate(zip(fn.edges, input_grads, fn.input_meta)):
            if edge is not None and grad is not None:
                if tuple(grad.shape) != tuple(meta[0]):
                    raise RuntimeError(f"{fn.name}.backward returned a gradient of shape {tuple(grad.shape)} "
                                       f"for input {i} of shape {meta[0]}")
                send(edge, grad, meta)
        if not retain_graph:
            _free(fn)

    for leaf, grad in leaf_grads.values():
        for hook in leaf._leaf_hooks:
            grad = _run_hook(hook, grad)
        leaf.grad = grad if leaf.grad is None else leaf.grad + grad


def _run_hook(hook, grad):
    """Call a tensor hook; what it returns (array or tensor) replaces the gradient, same shape only."""
    replaced = hook(grad)
    if replaced is None:
        return grad
    replaced = replaced.data if isinstance(replaced, Tensor) else replaced
    if tuple(replaced.shape) != tuple(grad.shape):
        raise RuntimeError(f"hook {getattr(hook, '__name__', hook)!r} changed the gradient's shape from "
                           f"{tuple(grad.shape)} to {tuple(replaced.shape)}")
    return replaced


def _free(fn):
    """Drop what a function saved for backward, so the graph's memory goes back."""
    keep = {"generation": fn.generation, "output_meta": fn.output_meta, "output_hooks": fn.output_hooks,
            "retained_outputs": fn.retained_outputs}
    fn.__dict__.clear()
    fn.__dict__.update(keep, freed=True, edges=[], input_meta=[])
