"""Module and Parameter: the containers every layer and model is built from.

As in torch: assigning a ``Parameter``, a ``Module`` or (through
``register_buffer``) a buffer to an attribute registers it, in assignment
order, so ``parameters()`` and ``state_dict()`` have a fixed, deterministic
order and torch's key names (``features.0.weight``, ``bn1.running_mean``).
"""
import os
from collections import OrderedDict, namedtuple

import numpy as np

from .. import backend
from ..autograd import FunctionHook, RemovableHandle, Tensor
from ..functional.loss import cross_entropy
from .formats import read_weights


class Parameter(Tensor):
    """A tensor that is a learnable weight of a module (requires grad by default)."""

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.data
        if not backend.is_floating(data.dtype):
            raise TypeError(f"a Parameter must be floating point, got {data.dtype}")
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(KeyError):
    """load_state_dict found missing, unexpected or mis-shaped entries."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0]


# what load_state_dict returns, with torch's field names
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model: subclass, build in __init__, compute in forward."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", [])
        object.__setattr__(self, "_forward_pre_hooks", [])
        object.__setattr__(self, "training", True)

    # -- registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning attributes")
        # as torch: a registered weight or submodule is never silently replaced by something else
        if name in self._parameters and value is not None and not isinstance(value, Parameter):
            raise TypeError(f"cannot assign a {type(value).__name__} as parameter '{name}' of "
                            f"{type(self).__name__} (a Parameter or None expected); to change its values "
                            f"assign to .{name}.data")
        if name in self._modules and value is not None and not isinstance(value, Module):
            raise TypeError(f"cannot assign a {type(value).__name__} as child module '{name}' of "
                            f"{type(self).__name__} (a Module or None expected)")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            self._buffers[name] = value if value is None or isinstance(value, Tensor) else Tensor(value)
            return
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        for table in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' has no attribute '{name}'")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            if name in table:
                del table[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register a Parameter (or None, to keep a slot such as a missing bias)."""
        if param is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, param)

    def register_buffer(self, name, value, persistent=True):
        """A tensor that is state but not learned (running mean/var); saved in state_dict if persistent."""
        if value is not None and not isinstance(value, Tensor):
            value = Tensor(value)
        self.__dict__.pop(name, None)
        self._buffers[name] = value
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        setattr(self, name, module)

    # -- calling
    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks):
            replaced = hook(self, args)
            if replaced is not None:
                args = replaced if isinstance(replaced, tuple) else (replaced,)
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks):
            replaced = hook(self, args, out)
            if replaced is not None:
                out = replaced
        return out

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    # -- the output contract: what tools (scratchnet.train, scratchnet.study) may ask of forward()'s output
    def main_output(self, output):
        """The main head's output alone. Default: ``output`` itself; a model that also returns
        training-only heads overrides it (GoogLeNet in training mode: its ``.logits``, not the aux heads)."""
        return output

    def loss(self, output, target):
        """The training loss of ``output`` (what forward returned) for ``target``. Default: cross-entropy
        of the main output (logits). Overridden where the paper trains otherwise: GoogLeNet adds 0.3 x
        each auxiliary head's, classic LeNet-5 uses its RBF loss, YOLOv1 its sum-squared detection loss."""
        return cross_entropy(self.main_output(output), target)

    def scores(self, output):
        """Class scores of ``output``, higher = more likely, so argmax is the prediction. Default: the
        main output (logits); classic LeNet-5 negates its RBF distances."""
        return self.main_output(output)

    def register_forward_hook(self, hook):
        """Call ``hook(module, inputs, output)`` after every forward; returns a handle with remove()."""
        self._forward_hooks.append(hook)
        return RemovableHandle(self._forward_hooks, hook)

    def register_forward_pre_hook(self, hook):
        """Call ``hook(module, inputs)`` before every forward; a returned value replaces the inputs."""
        self._forward_pre_hooks.append(hook)
        return RemovableHandle(self._forward_pre_hooks, hook)

    # -- traversal
    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, prefix="", remove_duplicate=True):
        """This module and every descendant, depth first, with dotted names (walked without recursion).

        A module reachable by two paths is listed once, unless ``remove_duplicate=False``
        (state_dict lists it under every name, as torch does).
        """
        stack, seen = [(prefix, self)], set()
        while stack:
            name, module = stack.pop()
            if remove_duplicate:
                if id(module) in seen:
                    continue
                seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child}" if name else child, m) for child, m in module._modules.items()
                        if m is not None]
            stack.extend(reversed(children))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        for name, module in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for pname, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{name}.{pname}" if name else pname), p

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix=""):
        for name, module in self.named_modules(prefix):
            for bname, b in module._buffers.items():
                if b is not None:
                    yield (f"{name}.{bname}" if name else bname), b

    def buffers(self):
        return (b for _, b in self.named_buffers())

    def apply(self, fn):
        """Call fn on every submodule (children first) and on self, like torch."""
        for module in reversed(list(self.modules())):
            fn(module)
        return self

    def num_parameters(self, trainable_only=False):
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # -- modes and devices
    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter, e.g. for fine-tuning."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def to(self, device=None, dtype=None):
        """Move parameters and buffers to a device and/or cast floating ones to ``dtype``, in place."""
        device = backend.check_device(device) if device is not None else None
        dtype = np.dtype(dtype) if dtype is not None else None
        if dtype is not None and not backend.is_floating(dtype):
            raise TypeError(f"Module.to: dtype must be floating point, got {dtype}")
        def convert(array):
            array = array if device is None else backend.to_device(array, device)
            # only floating arrays are cast: num_batches_tracked stays int64
            if dtype is not None and backend.is_floating(array.dtype):
                array = array.astype(dtype)
            return array

        for t in list(self.parameters()) + list(self.buffers()):
            t.data = convert(t.data)
            if t.grad is not None:
                t.grad = Tensor(convert(t.grad.data))
        return self

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    @property
    def device(self):
        first = next(iter(self.parameters()), None)
        return first.device if first is not None else "cpu"

    # -- state
    def _state_entries(self):
        """(key, tensor) for every parameter and persistent buffer, in torch's state_dict order."""
        for name, module in self.named_modules(remove_duplicate=False):
            prefix = f"{name}." if name else ""
            for pname, p in module._parameters.items():
                if p is not None:
                    yield prefix + pname, p
            for bname, b in module._buffers.items():
                if b is not None and bname not in module._non_persistent:
                    yield prefix + bname, b

    def state_dict(self):
        """Ordered dict of host (NumPy) arrays: parameters and persistent buffers, torch's key names."""
        return OrderedDict((key, backend.to_numpy(t.data).copy()) for key, t in self._state_entries())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into parameters and buffers, keeping each on its device and dtype.

        ``state_dict`` is a mapping of key -> array (or Tensor), or the path of a weights file
        (``.npz``, ``.safetensors``, PyTorch's ``.pt``/``.pth``; read by ``formats.read_weights``).
        The module never moves: a GPU model gets its arrays copied to the GPU.
        Every problem is reported at once (all missing, unexpected and mis-shaped
        keys; shapes are checked even when ``strict=False``, as in torch), and on
        failure nothing is changed. Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        source = ""
        if isinstance(state_dict, (str, os.PathLike)):
            source = f" from {os.fspath(state_dict)}"
            if os.path.isdir(state_dict):
                raise IsADirectoryError(f"weights file {os.fspath(state_dict)!r} is a folder; pass a weights file "
                                        f"in it (a training run's best.npz or final.npz)")
            if not os.path.isfile(state_dict):
                raise FileNotFoundError(f"weights file {os.fspath(state_dict)!r} does not exist")
            state_dict = read_weights(os.fspath(state_dict))
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict for {type(self).__name__}{source}: expected a state dict "
                            f"(key -> array) or a weights file's path, got {type(state_dict).__name__}")
        nested = [k for k, v in state_dict.items() if isinstance(v, dict)]
        if nested and not any(k in state_dict for k, _ in self._state_entries()):
            raise StateDictError(f"load_state_dict for {type(self).__name__}{source}: this is a checkpoint holding "
                                 f"{', '.join(map(repr, list(state_dict)[:6]))}, not a state dict; pass the entry "
                                 f"with the weights, e.g. sn.load(path)[{nested[0]!r}]")
        own = OrderedDict(self._state_entries())
        values = OrderedDict((k, v.data if isinstance(v, Tensor) else v) for k, v in state_dict.items())
        # torch: a value must be a tensor; here an array (or NumPy scalar) of numbers, named when it is not
        wrong = [f"{k!r} is a {type(v).__name__}" + (f" of dtype {v.dtype}" if hasattr(v, "dtype") else "")
                 for k, v in values.items() if k in own and getattr(getattr(v, "dtype", None), "kind", "") not in
                 ("b", "i", "u", "f")]
        if wrong:
            raise TypeError(f"load_state_dict for {type(self).__name__}{source}: expected an array of numbers for "
                            f"every entry, but " + "; ".join(wrong))
        missing = [k for k in own if k not in values]
        unexpected = [k for k in values if k not in own]
        mismatched = [f"{k}: checkpoint {tuple(np.shape(values[k]))} vs model {own[k].shape}"
                      for k in own if k in values and tuple(np.shape(values[k])) != own[k].shape]
        problems = []
        if mismatched:
            problems.append("shape mismatch for " + _listing(mismatched, "; "))
        if strict and missing:
            problems.append("missing keys: " + _listing(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + _listing(unexpected))
        if problems:
            foreign = strict and own and len(missing) == len(own)
            advice = (" (no key matches: a checkpoint of another architecture?)" if foreign else "")
            raise StateDictError(f"load_state_dict for {type(self).__name__}{source} failed{advice}: "
                                 + " | ".join(problems))
        # convert everything first, assign after: a failure half way must not leave a half-loaded model
        converted = {}
        for key, t in own.items():
            if key in values:
                xp = backend.get_array_module(t.data)
                value = values[key]
                host = backend.to_numpy(value) if xp is np else value
                converted[key] = xp.array(host, dtype=t.dtype, copy=True)
        for key, array in converted.items():
            own[key].data = array
        return IncompatibleKeys(missing, unexpected)

    # -- printing
    def extra_repr(self):
        return ""

    def __repr__(self):
        # torch's layout, so the two print the same tree
        extra = self.extra_repr().split("\n") if self.extra_repr() else []
        children = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        body = ""
        if len(extra) == 1 and not children:
            body = extra[0]
        elif extra or children:
            body = "\n  " + "\n  ".join(extra + children) + "\n"
        return f"{type(self).__name__}({body})"


def _listing(items, separator=", ", most=12):
    """``items`` joined, the first ``most`` of them and a count of the rest (a foreign checkpoint has hundreds)."""
    shown = separator.join(items[:most])
    return shown + (f"{separator}... ({len(items) - most} more)" if len(items) > most else "")


class ModuleCallHook(FunctionHook):
    """A ``FunctionHook`` that also sees every module call of ``model`` while it is entered.

    The tools that must know which module is running when a function is called (the joins study,
    the graph drawer) subclass it and define ``enter_module(name, module, inputs)`` and
    ``leave_module(name, module, inputs, output)``; both must return None (a forward hook's result
    would replace the module's output).
    """

    def __init__(self, model):
        self.model = model
        self._module_handles = []

    def enter_module(self, name, module, inputs):
        pass

    def leave_module(self, name, module, inputs, output):
        pass

    def __enter__(self):
        for name, module in self.model.named_modules():
            self._module_handles += [
                module.register_forward_pre_hook(lambda m, args, name=name: self.enter_module(name, m, args)),
                module.register_forward_hook(lambda m, args, out, name=name: self.leave_module(name, m, args, out))]
        return super().__enter__()

    def __exit__(self, *exc_info):
        for handle in self._module_handles:
            handle.remove()
        self._module_handles = []
        return super().__exit__(*exc_info)


class Sequential(Module):
    """Modules applied in order; children are named '0', '1', ... or by an OrderedDict's keys."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*modules[index])
        return modules[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self


class ModuleList(Module):
    """A list of modules, registered as '0', '1', ... (no forward of its own)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index):
        modules = list(self._modules.values())
        return ModuleList(modules[index]) if isinstance(index, slice) else modules[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleDict(Module):
    """Named modules, in insertion order."""

    def __init__(self, modules=None):
        super().__init__()
        for name, module in (modules or {}).items():
            self.add_module(name, module)

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        self.add_module(name, module)

    def __contains__(self, name):
        return name in self._modules

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()
