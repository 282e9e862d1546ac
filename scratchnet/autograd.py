"""Autograd: the Tensor, the Function, and the backward walk (``sn.autograd.grad``, ``Tensor.backward``).

A ``Function`` computes its forward and backward on raw arrays (numpy or cupy)
and keeps on ``self`` only what its backward needs. Calling it on tensors
records an edge per input in the graph:

* an input made by another function points at ``(creator, output_index)``;
* a leaf that requires grad points at the leaf tensor (its ``.grad`` receives
  the gradient);
* anything else gets no edge.

Outputs are *not* kept alive by the graph (a function holds only weak
references to them), so an activation that no backward needs is freed as
soon as the user drops it. The walk pops functions in decreasing generation
order from a heap, never by recursion, so graphs of any depth work.

Higher derivatives. Each Function has two backwards: ``backward`` on raw
arrays (the fast path, taken whenever ``create_graph=False``) and
``differentiable_backward`` on Tensors, written with scratchnet's own
differentiable ops, so the gradients it returns carry a graph of their own
(``create_graph=True``: double backward, Hessian-vector products). What a
function keeps for backward it declares in ``saved_inputs`` / ``saved_outputs``
(attribute name -> input/output index); the walk then checks that nothing
modified those tensors in place since the forward (version counters, as
torch), and ``saved_input(i)`` / ``saved_output(i)`` give them back to the
differentiable backward as graph-connected Tensors wrapping the very same
arrays (an output re-attached to its creator, so the function holds no
reference to its own output: no cycle).

In-place ops (``add_``, ``+=`` ..., attached by the functional layer) change
the tensor's own array and bump its version counter, shared with its views and
``detach()``; under grad mode one on a non-leaf is recorded by moving the
tensor onto the new op's output (torch rebases its history).

Function hooks (``FunctionHook``, after Chainer's) see every function's forward
and backward while a ``with`` block holds them; tools (summary, the study's
joins) use them instead of patching ``Function`` or asking models for plumbing.
"""
import functools
import heapq
import itertools
import sys
import threading
import weakref

import numpy as np

from . import backend

# --------------------------------------------------------------------------- grad mode (per thread, as torch)


class _GradMode(threading.local):
    enabled = True  # every thread starts with grad mode on


_mode = _GradMode()


def is_grad_enabled():
    """Whether ops record a graph in this thread."""
    return _mode.enabled


class _GradModeContext:
    """A context manager that is also a decorator (``@sn.no_grad()``), for the grad-mode switches below."""

    def __call__(self, function):
        mode = self.mode

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return function(*args, **kwargs)
        return wrapper

    def __enter__(self):
        self.previous = _mode.enabled
        _mode.enabled = self.mode

    def __exit__(self, *exc_info):
        _mode.enabled = self.previous


class _Switch(_GradModeContext):
    """Takes no argument: ``with sn.no_grad():``, ``@sn.no_grad()`` and ``@sn.no_grad`` all work (torch)."""

    def __new__(cls, function=None):
        switch = super().__new__(cls)
        return switch if function is None else switch(function)


class no_grad(_Switch):
    """Operations inside record no graph (inference, optimizer steps); this thread only."""

    mode = False


class enable_grad(_Switch):
    """Record again inside a ``no_grad`` block; this thread only."""

    mode = True


class set_grad_enabled(_GradModeContext):
    """``set_grad_enabled(False)`` switches grad mode at once (a call, as torch); as a ``with`` block (or a
    decorator) it also puts the previous mode back at the end. This thread only."""

    def __init__(self, mode):
        self.previous, self.mode = _mode.enabled, bool(mode)
        _mode.enabled = self.mode

    def __call__(self, function):
        _mode.enabled = self.previous  # decorating is not switching (torch's rule)
        return super().__call__(function)

    def __enter__(self):
        _mode.enabled = self.mode


# --------------------------------------------------------------------------- Tensor


class Tensor:
    """An n-d array (``.data``, numpy or cupy) that can record how it was made.

    ``.grad`` is a Tensor of the same shape and dtype (or None): each leaf that
    requires grad gets its own, and so does a non-leaf that called
    ``retain_grad()``. After ``backward(create_graph=True)`` it carries a graph.
    """

    __array_priority__ = 200  # make `ndarray + Tensor` call Tensor.__radd__

    def __init__(self, data, requires_grad=False, name=None):
        if requires_grad:
            _check_can_require_grad(data)
        self.data = data
        self._grad = None
        self._requires_grad = bool(requires_grad)
        self.name = name
        self.creator = None  # the Function that produced this tensor (None for leaves)
        self.output_index = 0  # which output of `creator` this tensor is
        self.generation = 0
        # [version, name of the last in-place op]: bumped by every in-place op, shared by views and detach()
        self._version_counter = [0, None]
        self._base = None  # a view's root tensor (reshape, transpose, indexing, split share its memory)
        self._view_base_creator = None  # the root's creator when the view was taken (to spot a new history)
        self._retains_grad = False
        self._leaf_hooks = ()  # hooks of a leaf tensor (a list once one is registered); a non-leaf's live
        self._post_accumulate_hooks = ()  # on its creator

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

    @property
    def grad_fn(self):
        """torch's name for ``creator``."""
        return self.creator

    @property
    def _version(self):
        """How many in-place ops changed this tensor's memory (through it, its views or detach())."""
        return self._version_counter[0]

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if self.creator is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables." + (
                "" if value else " If you want to use a computed variable in a subgraph that doesn't require "
                                 "differentiation use var_no_grad = var.detach()."))
        if value:
            _check_can_require_grad(self.data)
        self._requires_grad = bool(value)

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of type "
                                f"{type(value).__module__}.{type(value).__name__}; wrap an array with sn.tensor()")
            if value.shape != self.shape:
                raise RuntimeError(f"attempting to assign a gradient of shape {value.shape} to a tensor of shape "
                                   f"{self.shape}. Please ensure that the gradient and the tensor are the same size")
            if value.dtype != self.dtype:
                raise RuntimeError(f"attempting to assign a gradient with dtype {value.dtype} to a tensor with "
                                   f"dtype {self.dtype}; convert it with .to(dtype=...)")
            if value.device != self.device:
                raise RuntimeError(f"attempting to assign a gradient on {value.device} to a tensor on {self.device}")
        self._grad = value

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self.data), prefix="tensor(", precision=4, threshold=20)
        extra = f", device='{self.device}'" if self.device != "cpu" else ""
        grad = (f", grad_fn=<{self.creator.name}>" if self.creator is not None else
                ", requires_grad=True" if self._requires_grad else "")
        return f"tensor({body}, dtype={self.dtype}{extra}{grad})"

    def __array__(self, dtype=None, copy=None):
        """NumPy sees the data of a CPU tensor (``np.asarray(t)``), as with torch; a GPU tensor refuses."""
        if backend.device_of(self.data) != "cpu":
            raise TypeError("can't convert a GPU tensor to a NumPy array implicitly: use .numpy() (a host copy)")
        array = np.asarray(self.data, dtype=dtype)
        return array.copy() if copy else array

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
        """The same data, cut from the graph; it shares the version counter (an in-place change shows)."""
        t = Tensor(self.data)
        t._version_counter = self._version_counter
        return t

    def clone(self):
        """A copy with its own memory; differentiable (the gradient passes unchanged), as torch's clone."""
        return Clone()(self)

    def requires_grad_(self, requires_grad=True):
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only be set on leaf tensors; use .detach() first")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep it)."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False: it will never get one")
        self._retains_grad = True
        if self.creator is not None:
            self.creator.retained_outputs[self.output_index] = weakref.ref(self)

    @property
    def retains_grad(self):
        """True for a non-leaf that called ``retain_grad()`` (torch's attribute)."""
        return self._retains_grad and self.creator is not None

    def register_hook(self, hook):
        """Call ``hook(grad)`` with this tensor's gradient (a Tensor) during backward.

        If the hook returns a Tensor, it replaces the gradient that flows on
        (the same shape). Returns a handle whose ``remove()`` unregisters the hook.
        """
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self.creator is None:
            if not self._leaf_hooks:
                self._leaf_hooks = []
            hooks = self._leaf_hooks
        else:
            hooks = self.creator.output_hooks[self.output_index]
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` as soon as backward has accumulated this leaf's ``.grad`` (torch's hook:
        data-parallel training reduces gradients with it while the rest of backward runs)."""
        if self.creator is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if not self._post_accumulate_hooks:
            self._post_accumulate_hooks = []
        self._post_accumulate_hooks.append(hook)
        _post_hooks_alive[0] += 1

        def forget():
            _post_hooks_alive[0] -= 1
        return RemovableHandle(self._post_accumulate_hooks, hook, forget)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (only those of ``inputs`` when given).

        ``gradient`` defaults to 1 for a one-element tensor. The graph is freed
        afterwards unless ``retain_graph`` (default: ``create_graph``). With
        ``create_graph=True`` the gradients carry a graph (higher derivatives).
        """
        backward([self], [gradient], retain_graph=retain_graph, create_graph=create_graph, inputs=inputs)

    def zero_grad(self, set_to_none=True):
        """Forget ``.grad`` (None), or zero it in place with ``set_to_none=False`` (cut from any graph
        first), as torch's Module/Optimizer.zero_grad treat each parameter."""
        if set_to_none or self._grad is None:
            self._grad = None
            return
        if self._grad._requires_grad:  # a gradient made with create_graph=True
            self._grad = self._grad.detach()
        self._grad.zero_()

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


_post_hooks_alive = [0]  # post-accumulate hooks registered and not removed: the walk counts leaf uses only then


class RemovableHandle:
    """What registering a hook returns (tensor and module hooks alike): ``remove()`` unregisters it."""

    def __init__(self, hooks, hook, on_remove=None):
        self._hooks, self._hook, self._on_remove = hooks, hook, on_remove

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)
            if self._on_remove is not None:
                self._on_remove()


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

    For higher derivatives a subclass also implements
    ``differentiable_backward(*grad_outputs)``: the same gradients, from Tensors
    to Tensors, composed of differentiable ops. The inputs and outputs it reads
    are declared by the attributes forward stores them in::

        saved_inputs = {"x": 0, "w": 1}   # self.x holds input 0's array (when not None) ...
        saved_outputs = {"y": 0}          # ... self.y output 0's

    and come back as graph-connected Tensors from ``self.saved_input(i)`` /
    ``self.saved_output(i)``. Declared tensors are also checked at backward for
    in-place changes since the forward (version counters).
    """

    saved_inputs = {}
    saved_outputs = {}
    saved = ()  # (is_output, index, array, version counter, version at the forward) per kept tensor

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._saves = tuple((name, False, i) for name, i in cls.saved_inputs.items()) + \
            tuple((name, True, i) for name, i in cls.saved_outputs.items())

    _saves = ()

    def __call__(self, *inputs):
        tensors = [value if isinstance(value, Tensor) else as_tensor(value) for value in inputs]
        record = _mode.enabled and any(t._requires_grad for t in tensors)
        self.needs_input_grad = tuple(record and t._requires_grad for t in tensors)
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
                if not result._requires_grad:
                    continue
                result.creator = self
                result.output_index = index
                result.generation = self.generation + 1
            if self._saves:
                self._record_saved(tensors, results)
        if hooks:
            _call_function_hooks("forward_postprocess", self, tuple(tensors), tuple(results))
        return results[0] if single else tuple(results)

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, *grad_outputs):
        raise NotImplementedError

    def differentiable_backward(self, *grad_outputs):
        raise RuntimeError(f"{self.name} has no differentiable backward, so backward with create_graph=True cannot "
                           f"pass through it: implement {self.name}.differentiable_backward on Tensors, or call "
                           f"backward without create_graph")

    @property
    def name(self):
        return type(self).__name__

    # -- what backward keeps: recorded at the forward, checked and given back at the backward
    def _record_saved(self, tensors, results):
        kept = self.__dict__
        self.saved = [(is_output, i, t.data, t._version_counter, t._version_counter[0])
                      for name, is_output, i in self._saves if kept.get(name) is not None
                      for t in ((results if is_output else tensors)[i],)]

    def _check_saved_versions(self):
        for is_output, i, array, counter, version in self.saved:
            if counter[0] != version:
                last = f" (the last in-place op on it: {counter[1]})" if counter[1] else ""
                raise RuntimeError(
                    f"one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: {'output' if is_output else 'input'} {i} of {self.name}, a {array.dtype} tensor of "
                    f"shape {tuple(array.shape)}, is at version {counter[0]}; expected version {version} instead"
                    f"{last}. Compute it out of place, or clone() it before the in-place op")

    def _saved_entry(self, is_output, index):
        for entry in self.saved:
            if entry[0] == is_output and entry[1] == index:
                return entry
        raise RuntimeError(f"internal error: {self.name} did not save its {'output' if is_output else 'input'} "
                           f"{index} (declare it in saved_{'outputs' if is_output else 'inputs'})")

    def saved_input(self, index):
        """Input ``index`` as a Tensor connected to the graph where it came from (a constant if it was one)."""
        array = self._saved_entry(False, index)[2]
        edge = self.edges[index]
        if edge is None:
            return Tensor(array)
        if isinstance(edge, Tensor):  # the leaf itself
            if edge.data is not array:
                raise RuntimeError(f"{self.name}: the .data of its input {index} (a leaf) was replaced after the "
                                   f"forward, so its second derivative would use other values; run the forward again")
            return edge
        return _attached(array, *edge)

    def saved_output(self, index):
        """Output ``index`` re-attached to this function (a fresh Tensor: the function keeps no reference to it)."""
        return _attached(self._saved_entry(True, index)[2], self, index)


def _attached(array, creator, index):
    """A Tensor wrapping ``array`` as output ``index`` of ``creator``: gradients reaching it flow into creator."""
    t = Tensor(array, requires_grad=True)
    t.creator, t.output_index, t.generation = creator, index, creator.generation + 1
    return t


def _edge(t):
    """Where a gradient for ``t`` goes: (creator, output_index), the leaf itself, or None."""
    if t._base is not None and t._base.creator is not t._view_base_creator:
        _stale_view(t)
    if not t._requires_grad:
        return None
    if t.creator is not None:
        return (t.creator, t.output_index)
    return t  # a leaf: its .grad receives the gradient


class ViewFunction(Function):
    """A Function whose output may share its input's memory (reshape, transpose, indexing, split).

    Where it does, the output is a view as torch's are: it shares the input's version counter, so an
    in-place change through either shows at backward, and remembers its root tensor.
    """

    def __call__(self, x):
        x = x if isinstance(x, Tensor) else as_tensor(x)
        out = super().__call__(x)
        owner = _memory_owner(x.data)
        root = x if x._base is None else x._base
        for y in (out if isinstance(out, tuple) else (out,)):
            if _memory_owner(y.data) is owner:
                y._version_counter, y._base, y._view_base_creator = x._version_counter, root, root.creator
        return out


def _memory_owner(array):
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def _stale_view(t):
    raise RuntimeError(f"this tensor of shape {t.shape} is a view taken before an in-place op recorded a new history "
                       f"for the tensor it views, so its graph is out of date; take the view again after the "
                       f"in-place op (or do the op out of place)")


class ToDeviceDtype(Function):
    """Copy to another device and/or dtype; the gradient goes back the same way."""

    def __init__(self, device, dtype):
        self.device, self.dtype = device, dtype

    def forward(self, x):
        self.from_device, self.from_dtype = backend.device_of(x), x.dtype
        return backend.to_device(x, self.device).astype(self.dtype, copy=False)

    def backward(self, gy):
        return (backend.to_device(gy, self.from_device).astype(self.from_dtype, copy=False),)

    def differentiable_backward(self, gy):
        return (gy.to(device=self.from_device, dtype=self.from_dtype),)


class Clone(Function):
    """A copy with its own memory; the gradient passes unchanged."""

    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        return (gy,)

    def differentiable_backward(self, gy):
        return (gy,)


# --------------------------------------------------------------------------- in-place ops
# The functional layer attaches add_, sub_, mul_, div_, zero_, fill_, copy_, clamp_ and += -= *= /=: each
# computes its result out of place (recorded) or on the raw array (not), and hands both ways here.


def apply_inplace(t, op_name, operands, recorded, raw, keeps_self=False):
    """Change ``t`` in place with torch's rules; returns ``t``.

    ``recorded(prior)``: the result as a Tensor, computed out of place from ``prior`` (``t``'s value and
    place in the graph) by differentiable ops; ``raw(array)``: writes the result into ``t``'s array.
    Under grad mode, when ``t`` or an operand requires grad, the op is recorded: ``t``'s array takes the
    result and ``t`` moves onto the result's creator (a leaf that requires grad is refused, as torch
    does). ``keeps_self``: the op's backward reads ``t``'s old value, so ``prior`` gets a copy of it.
    Either way ``t``'s version counter goes up, so a backward that saved ``t`` before will refuse.
    """
    if _mode.enabled and (t._requires_grad or any(isinstance(o, Tensor) and o._requires_grad for o in operands)):
        if t._base is not None:
            if t._base.creator is None and t._base._requires_grad:
                raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place "
                                   "operation.")
            raise RuntimeError(f"{op_name} on a view (reshape, transpose, indexing, split) is recorded by torch "
                               f"as a new history of the viewed tensor, which scratchnet does not do: apply it to "
                               f"the tensor itself, clone() the view first, or compute out of place")
        if t.creator is None and t._requires_grad:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        prior = Tensor(t.data.copy() if keeps_self else t.data)
        if not keeps_self:  # an op that saved this array after all would see the bump below, and refuse
            prior._version_counter = t._version_counter
        prior._requires_grad, prior.creator = t._requires_grad, t.creator
        prior.output_index, prior.generation = t.output_index, t.generation
        out = recorded(prior)
        if out.dtype != t.dtype:
            out = out.to(dtype=t.dtype)
        _check_writable(t, op_name)
        if out.data is not t.data:  # (an op that wrote t's array itself returns it)
            t.data[...] = out.data
        _rebase(t, out)
    else:
        _check_writable(t, op_name)
        raw(t.data)
    t._version_counter[0] += 1
    t._version_counter[1] = op_name
    return t


def bump_version(t, op_name):
    """Record that ``t``'s array was written in place outside the graph (an optimizer step, under no_grad):
    a graph that saved it then refuses to backward, as torch's version counter does."""
    t._version_counter[0] += 1
    t._version_counter[1] = op_name


def writable(array):
    """Whether ``array`` can be written in place (a broadcast view or a read-only array cannot; CuPy's always can)."""
    return bool(getattr(array.flags, "writeable", True))


def _check_writable(t, op_name):
    if not writable(t.data):
        raise RuntimeError(f"{op_name}: unsupported operation: more than one element of the written-to tensor "
                           f"refers to a single memory location (a broadcast view). Please clone() the tensor "
                           f"before performing the operation.")


def _rebase(t, out):
    """``t`` becomes ``out`` in the graph (its history now ends with the in-place op); retain_grad moves along."""
    if t._retains_grad and t.creator is not None:
        t.creator.retained_outputs[t.output_index] = None
    t.creator, t.output_index, t.generation = out.creator, out.output_index, out.generation
    t._requires_grad = out._requires_grad
    if t._retains_grad and t.creator is not None:
        t.creator.retained_outputs[t.output_index] = weakref.ref(t)


# --------------------------------------------------------------------------- the backward walk


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Backpropagate from ``tensors`` seeded with ``grad_tensors`` (Tensors, arrays or None), accumulating
    into the ``.grad`` of every leaf reached, or only of ``inputs`` (leaves or not) when given."""
    tensors = _as_tensor_list(tensors, "tensors")
    grad_tensors = [None] * len(tensors) if grad_tensors is None else list(grad_tensors)
    if inputs is not None:
        inputs = _as_tensor_list(inputs, "inputs")
        if not inputs:
            raise RuntimeError("'inputs' argument to backward() cannot be empty.")
        for t in inputs:
            if not t._requires_grad:
                raise RuntimeError("backward(inputs=...): one of the inputs does not require grad")
    _walk(tensors, grad_tensors, create_graph if retain_graph is None else retain_graph, create_graph, inputs,
          accumulate=True)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs`` (a tuple, one per input), as
    torch.autograd.grad: no ``.grad`` is touched (retain_grad() tensors aside, as torch); with
    ``create_graph=True`` the results carry a graph (differentiate them again). An input the outputs do
    not depend on is an error unless ``allow_unused=True`` (then its gradient is None)."""
    outputs = _as_tensor_list(outputs, "outputs")
    inputs = _as_tensor_list(inputs, "inputs")
    grad_outputs = [None] * len(outputs) if grad_outputs is None else \
        list(grad_outputs) if isinstance(grad_outputs, (list, tuple)) else [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"grad: {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    for t in inputs:
        if not t._requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    captured = _walk(outputs, grad_outputs, create_graph if retain_graph is None else retain_graph, create_graph,
                     inputs, accumulate=False)
    results = []
    for i, t in enumerate(inputs):
        g = captured.get(_target_key(t))
        if g is None and not allow_unused:
            raise RuntimeError(f"The differentiated Tensor at index {i} (shape {t.shape}) appears to not have been "
                               f"used in the graph. Set allow_unused=True if this is the desired behavior.")
        results.append(g)
    return tuple(results)


def _as_tensor_list(values, what):
    values = [values] if isinstance(values, Tensor) else list(values)
    for v in values:
        if not isinstance(v, Tensor):
            raise TypeError(f"{what} must be Tensors, got {type(v).__name__}")
    return values


def _target_key(t):
    return (t.creator, t.output_index) if t.creator is not None else t


def _walk(outputs, seeds, retain_graph, create_graph, targets, accumulate):
    """Run backward from ``outputs``; the one engine behind Tensor.backward, sn.backward and sn.autograd.grad.

    Gradients are raw arrays (create_graph=False: each function's ``backward``) or Tensors carrying a graph
    (create_graph=True: ``differentiable_backward``). ``targets``: None (every leaf reached) or the tensors
    whose gradient is wanted; then only the functions on a path to one of them run. ``accumulate``: add
    into ``.grad`` (backward) or return {target key: gradient} (autograd.grad).
    """
    with set_grad_enabled(create_graph):  # hooks and differentiable backwards record only with create_graph
        return _Walk(retain_graph, create_graph, targets, accumulate).run(outputs, seeds)


class _Walk:
    """The state of one backward walk (kept together so each step below reads as one short method)."""

    def __init__(self, retain_graph, create_graph, targets, accumulate):
        self.retain_graph, self.create_graph, self.accumulate = retain_graph, create_graph, accumulate
        self.targets = None if targets is None else {_target_key(t): t for t in targets}
        self.pending = {}  # Function -> list of gradients, one per output
        self.heap, self.order = [], itertools.count()
        self.leaf_grads = {}  # id(leaf) -> (leaf, accumulated gradient)
        self.captured = {}  # target key -> gradient (autograd.grad)
        self.handed_out = set()  # ids of the memory made some tensor's .grad in this walk, or the caller's seed's
        self.visit = None  # with targets: the functions that lead to one (None: all)
        self.uses_left = None  # leaves with post-accumulate hooks -> edges still to deliver

    def run(self, outputs, seeds):
        roots = [(out, self._seed(out, seed)) for out, seed in zip(outputs, seeds)]
        edges = [_edge(out) for out, _ in roots]
        if self.targets is not None:
            self.visit = self._functions_leading_to_targets(edges)
        if self.accumulate and _post_hooks_alive[0]:
            self._count_leaf_uses(edges)
        # the loop below runs once per function of the graph: what it reads often is held in locals
        pending, heap, order, visit, create_graph = self.pending, self.heap, self.order, self.visit, self.create_graph
        targets, retain_graph = self.targets, self.retain_graph

        def send(edge, grad, meta):
            shape, dtype = meta
            if grad.dtype != dtype:
                grad = grad.to(dtype=dtype) if create_graph else grad.astype(dtype)
            if tuple(grad.shape) != tuple(shape):
                raise RuntimeError(f"internal error: gradient of shape {tuple(grad.shape)} for a tensor of shape "
                                   f"{shape}")
            if isinstance(edge, Tensor):
                self._send_to_leaf(edge, grad)
                return
            fn, index = edge
            if visit is not None and fn not in visit:
                return
            slot = pending.get(fn)
            if slot is None:
                if getattr(fn, "freed", False):
                    raise RuntimeError(f"Trying to backward through the graph a second time ({fn.name} was freed): "
                                       f"saved values are freed when you call backward() or autograd.grad(); "
                                       f"specify retain_graph=True the first time")
                slot = pending[fn] = [None] * len(fn.output_meta)
                heapq.heappush(heap, (-fn.generation, next(order), fn))
            total = slot[index]
            if total is None:
                slot[index] = grad
            elif not create_graph and _private(total):
                np.add(total, grad, out=total)  # as torch's engine: into the sum only this walk holds
            else:
                slot[index] = total + grad

        for (out, seed), edge in zip(roots, edges):
            if edge is not None:
                send(edge, seed, (out.shape, out.dtype))
        while heap:
            fn = heapq.heappop(heap)[2]
            grads = pending.pop(fn)
            for index, grad in enumerate(grads):
                if grad is None:
                    continue
                for hook in fn.output_hooks[index]:
                    grad = grads[index] = self._run_hook(hook, grad)
                retained = fn.retained_outputs[index]
                if retained is not None and retained() is not None:
                    self._keep_non_leaf_grad(retained(), grad)
                if targets is not None and (fn, index) in targets:
                    self._capture(fn, index, grad)
            if visit is not None and not visit[fn]:
                continue  # only a target's creator: its gradient is captured, its inputs need none
            if len(grads) > 1 and any(g is None for g in grads):  # an output that got none contributes zeros
                self._fill_zeros(fn, grads)
            if fn.saved:
                fn._check_saved_versions()
            hooks = _function_hooks
            if hooks:
                _call_function_hooks("backward_preprocess", fn, self._arrays(grads))
            input_grads = fn.differentiable_backward(*grads) if create_graph else fn.backward(*grads)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(fn.edges):
                raise RuntimeError(f"internal error: {fn.name}.backward returned {len(input_grads)} gradients "
                                   f"for {len(fn.edges)} inputs")
            if hooks:
                _call_function_hooks("backward_postprocess", fn, self._arrays(grads), self._arrays(input_grads))
            for i, (edge, grad, meta) in enumerate(zip(fn.edges, input_grads, fn.input_meta)):
                if edge is not None and grad is not None:
                    if tuple(grad.shape) != tuple(meta[0]):
                        raise RuntimeError(f"{fn.name}.backward returned a gradient of shape {tuple(grad.shape)} "
                                           f"for input {i} of shape {meta[0]}")
                    send(edge, grad, meta)
            if not retain_graph:
                _free(fn)
        for leaf, grad in list(self.leaf_grads.values()):
            self._finish_leaf(leaf, grad)
        return self.captured

    # -- seeds, and the steps the loop above takes only sometimes
    def _seed(self, out, seed):
        if not out._requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of the computation had requires_grad=True")
        xp = backend.get_array_module(out.data)
        if seed is None:
            if out.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element output, got shape "
                                   f"{out.shape}; pass gradient= of the same shape")
            seed = xp.ones_like(out.data)
        elif isinstance(seed, Tensor) and self.create_graph:
            if seed.shape != out.shape:
                raise RuntimeError(f"backward(): grad has shape {seed.shape} but the output has shape "
                                   f"{out.shape}; they must match")
            return seed if seed.dtype == out.dtype else seed.to(dtype=out.dtype)  # may carry a graph itself
        given = seed.data if isinstance(seed, Tensor) else seed
        seed = xp.asarray(given, dtype=out.dtype)
        owner = _memory_owner(seed)
        if owner is _memory_owner(given):  # the caller's own memory
            if seed.flags.c_contiguous:  # passed on uncopied (a 2 MB seed's copy costs about 0.1 ms), but
                self.handed_out.add(id(owner))  # never made a .grad: _own copies it then
            else:
                seed = seed.copy(order="K")  # a strided view: the kernels downstream read compact arrays
        if tuple(seed.shape) != out.shape:
            raise RuntimeError(f"backward(): grad has shape {tuple(seed.shape)} but the output has shape "
                               f"{out.shape}; they must match")
        return Tensor(seed) if self.create_graph else seed

    def _send_to_leaf(self, leaf, grad):
        if self.targets is not None and leaf not in self.targets:
            return
        _, previous = self.leaf_grads.get(id(leaf), (leaf, None))
        grad = grad if previous is None else previous + grad
        if self.uses_left is not None and id(leaf) in self.uses_left:
            self.uses_left[id(leaf)] -= 1
            if self.uses_left[id(leaf)] == 0:  # its last gradient: finish it now (post-accumulate hooks fire)
                self.leaf_grads.pop(id(leaf), None)
                self._finish_leaf(leaf, grad)
                return
        self.leaf_grads[id(leaf)] = (leaf, grad)

    def _capture(self, fn, index, grad):
        """A target that is a function's output: its gradient is kept (autograd.grad) or accumulated."""
        target = self.targets[(fn, index)]
        if not self.accumulate:
            self.captured[(fn, index)] = self._own(grad)
        elif not target._retains_grad:  # (one that retains its grad got it above)
            self._keep_non_leaf_grad(target, grad)

    def _fill_zeros(self, fn, grads):
        like = next(g for g in grads if g is not None)
        xp = backend.get_array_module(like.data if self.create_graph else like)
        for index, (shape, dtype) in enumerate(fn.output_meta):
            if grads[index] is None:
                zeros = xp.zeros(shape, dtype=dtype)
                grads[index] = Tensor(zeros) if self.create_graph else zeros

    def _arrays(self, grads):
        """What FunctionHooks see: raw arrays, whichever backward runs."""
        if not self.create_graph:
            return tuple(grads)
        return tuple(None if g is None else g.data for g in grads)

    def _run_hook(self, hook, grad):
        """Call a tensor hook with the gradient as a Tensor; a Tensor it returns replaces it (same shape)."""
        replaced = hook(grad if self.create_graph else Tensor(grad))
        if replaced is None:
            return grad
        if not isinstance(replaced, Tensor):
            raise TypeError(f"hook {getattr(hook, '__name__', hook)!r} returned a {type(replaced).__name__}; a "
                            f"tensor hook returns a Tensor (the new gradient) or None")
        if replaced.shape != tuple(grad.shape):
            raise RuntimeError(f"hook {getattr(hook, '__name__', hook)!r} changed the gradient's shape from "
                               f"{tuple(grad.shape)} to {replaced.shape}")
        return replaced if self.create_graph else replaced.data

    # -- where gradients end up
    def _own(self, grad):
        """The gradient as a Tensor that shares its memory with nothing else: the array itself when no other
        object can reach its memory and no other tensor got it in this walk, else a copy. With a graph: a
        clone (as torch's AccumulateGrad under create_graph)."""
        if self.create_graph:
            return grad.clone()
        if not _unshared(grad) or id(_memory_owner(grad)) in self.handed_out:
            grad = grad.copy()
        self.handed_out.add(id(_memory_owner(grad)))
        return Tensor(grad)

    def _keep_non_leaf_grad(self, t, grad):
        t._grad = self._own(grad) if t._grad is None else t._grad + (grad if self.create_graph else Tensor(grad))

    def _finish_leaf(self, leaf, grad):
        for hook in leaf._leaf_hooks:
            grad = self._run_hook(hook, grad)
        if not self.accumulate:
            self.captured[leaf] = self._own(grad)
            return
        current = leaf._grad
        if current is None:
            leaf._grad = self._own(grad)
        elif self.create_graph:
            leaf._grad = current + grad
        elif writable(current.data):  # as torch: in place, a holder of .grad sees it
            current.data += grad
            current._version_counter[0] += 1
        else:
            leaf._grad = Tensor(current.data + grad)
        for hook in leaf._post_accumulate_hooks:
            hook(leaf)

    # -- the graph ahead, for targets and post-accumulate hooks
    def _functions_leading_to_targets(self, edges):
        """{function: whether its backward must run} for the functions on a path to a target (a target's
        own creator is listed, with False, when only its output's gradient is wanted)."""
        functions = sorted(_reachable(edges), key=lambda fn: fn.generation)  # inputs' creators come first
        runs = {}
        for fn in functions:
            runs[fn] = any(isinstance(e, Tensor) and e in self.targets or
                           isinstance(e, tuple) and (e in self.targets or runs.get(e[0], False))
                           for e in fn.edges)
        wanted = {key[0] for key in self.targets if isinstance(key, tuple)}
        return {fn: run for fn, run in runs.items() if run or fn in wanted}

    def _count_leaf_uses(self, edges):
        """How many gradients each leaf with post-accumulate hooks will receive, so they fire on the last one."""
        functions = self.visit if self.visit is not None else _reachable(edges)
        uses = {}
        for e in itertools.chain(edges, *(fn.edges for fn in functions if self.visit is None or self.visit[fn])):
            if isinstance(e, Tensor) and e._post_accumulate_hooks and (self.targets is None or e in self.targets):
                uses[id(e)] = uses.get(id(e), 0) + 1
        self.uses_left = uses


def _unshared(array):
    """Whether ``array`` alone reaches its memory: it owns it, or it views the whole of an array that nothing
    else holds (a reshape of a temporary: what many backwards return, a convolution's weight gradient say)."""
    if array.flags.owndata:
        return True
    base = array.base
    # three references to an unshared base: the view's, the name `base` here, and getrefcount's argument
    return (type(base) is type(array) and base.base is None and base.size == array.size and
            base.dtype == array.dtype and sys.getrefcount(base) == 3)


def _private(array):
    """Whether the walk's running sum ``array`` may take the next gradient in place: a writeable NumPy array
    that owns its memory and that no one else holds (no other reference, so no view of it either). Four
    references then: the walk's slot, its name ``total`` in send, ``array`` here, and getrefcount's argument.
    A gradient that a backward also returned to another input (Add's), keeps, or handed to a hook is shared:
    the sum is a new array then."""
    return (type(array) is np.ndarray and array.flags.owndata and array.flags.writeable
            and sys.getrefcount(array) == 4)


def _reachable(edges):
    """Every function reachable from ``edges`` (an explicit stack: no recursion)."""
    seen = set()
    stack = [e[0] for e in edges if isinstance(e, tuple)]
    while stack:
        fn = stack.pop()
        if fn not in seen:
            seen.add(fn)
            stack.extend(e[0] for e in fn.edges if isinstance(e, tuple))
    return seen


def _free(fn):
    """Drop what a function saved for backward, so the graph's memory goes back."""
    fn.__dict__ = {"generation": fn.generation, "output_meta": fn.output_meta, "output_hooks": fn.output_hooks,
                   "retained_outputs": fn.retained_outputs, "freed": True, "edges": [], "input_meta": []}
