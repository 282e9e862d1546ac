"""The Optimizer base: parameter groups, per-parameter state, zero_grad, state_dict.

As in torch: ``param_groups`` is a list of dicts, each with its own ``params``
and hyper-parameters (``lr``, ``weight_decay`` ...); ``state[p]`` holds what
the update rule remembers for parameter ``p`` (momentum buffers, Adam's
moments). Subclasses implement ``_update(p, grad, state, group)``.

Updates read ``p.grad.data`` (each parameter's own array) and never write into it.
As in torch, ``p.data`` is updated in place and the parameter's version counter
goes up (a graph that saved the parameter before the step refuses to backward);
only an array that cannot be written (read-only, a broadcast view) is replaced
by a new one. In place also spares the memory system: a fresh array per
parameter per step costs its page faults every step, most of an AlexNet step's
SGD time (61 M parameters). State buffers are the optimizer's own and are
updated in place.
"""
import copy
import os
from collections.abc import Mapping, Set

from .. import backend
from ..autograd import Tensor, bump_version, no_grad, writable


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}  # Parameter -> dict (tensors hash by identity)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of tensors or of dicts, "
                            f"got a single tensor; wrap it in a list")
        if isinstance(params, Set):
            raise TypeError(_UNORDERED)
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a dict with 'params' and any hyper-parameters that differ from the defaults.

        Checked as torch checks it: a dict, whose 'params' (a tensor or an ordered collection of leaf
        tensors) holds no tensor twice and none another group holds."""
        name = type(self).__name__
        if not isinstance(group, Mapping):
            raise TypeError(f"param_group must be a dict, but got {type(group)}")
        group = dict(group)
        if "params" not in group:  # torch: KeyError 'params' (a misspelled key would train nothing)
            raise KeyError(f"{name}: a parameter group needs its tensors under 'params'; this one has "
                           f"{', '.join(repr(k) for k in group) or 'no keys'}")
        params = group["params"]
        if isinstance(params, Set):
            raise TypeError(_UNORDERED)
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__module__}.{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{name}: can't optimize a non-leaf Tensor (shape {p.shape})")
        if len({id(p) for p in params}) != len(params):  # torch warns that this will become an error
            raise ValueError(f"{name}: optimizer contains a parameter group with duplicate parameters; "
                             f"list each tensor once")
        others = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in others for p in params):
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients (None, as torch's default; zeros in place with set_to_none=False)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.zero_grad(set_to_none)

    def step(self, closure=None):
        """Update every parameter that has a gradient; ``closure`` re-evaluates the loss (optional)."""
        loss = closure() if closure is not None else None
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = -p.grad.data if group.get("maximize", False) else p.grad.data
                    self._update(p, grad, self.state.setdefault(p, {}), group)
        return loss

    def _update(self, p, grad, state, group):
        raise NotImplementedError

    @staticmethod
    def _assign(p, value):
        """p's new value, in place where p's array can be written (see the module's docstring), and in the
        parameter's own dtype (a float64 grad must not upcast float32 weights). Never in another shape:
        state that broadcasts against the gradient (loaded from another model) would otherwise silently
        reshape the parameter."""
        if value.shape != p.shape:
            raise RuntimeError(f"optimizer step: the update of a parameter of shape {p.shape} has shape "
                               f"{value.shape}; its optimizer state does not fit it (loaded from another model?)")
        if value is p.data:  # a kernel updated it in place
            bump_version(p, "optimizer.step")
        elif writable(p.data):
            p.data[...] = value
            bump_version(p, "optimizer.step")
        else:
            p.data = value.astype(p.dtype, copy=False)

    # -- checkpointing (torch's layout: parameters referred to by their index across groups)
    def state_dict(self):
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index[id(p)]] = {k: _host_copy(v) for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore state and hyper-parameters; arrays go to each parameter's device and dtype.

        State from another model is refused, not loaded: the groups must have this optimizer's sizes
        (as torch checks), and every state array the shape of its parameter."""
        if not isinstance(state_dict, Mapping):
            hint = " (to load a file, pass sn.load(path))" if isinstance(state_dict, (str, os.PathLike)) else ""
            raise TypeError(f"{type(self).__name__}.load_state_dict expects the dict that state_dict() returns, "
                            f"got {type(state_dict).__name__}{hint}")
        missing = [key for key in ("state", "param_groups") if key not in state_dict]
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: not an optimizer state dict (it lacks "
                             f"{' and '.join(missing)})")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the checkpoint has {len(saved_groups)} "
                             f"parameter groups, this optimizer has {len(self.param_groups)}")
        sizes = [len(g["params"]) for g in self.param_groups]
        saved_sizes = [len(g["params"]) for g in saved_groups]
        if sizes != saved_sizes:
            raise ValueError(f"{type(self).__name__}.load_state_dict: group sizes {saved_sizes} in the checkpoint "
                             f"do not match this optimizer's {sizes}")
        by_index = {}
        for group, saved in zip(self.param_groups, saved_groups):
            by_index.update(zip(saved["params"], group["params"]))
        unknown = [i for i in state_dict["state"] if int(i) not in by_index]
        misfits = [f"parameter {i} {by_index[int(i)].shape} gets {k} of shape {tuple(v.shape)}"
                   for i, entries in state_dict["state"].items() if int(i) in by_index
                   for k, v in entries.items() if getattr(v, "ndim", 0) and tuple(v.shape) != by_index[int(i)].shape]
        if unknown or misfits:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state does not fit this optimizer's "
                             f"parameters, it comes from another model: "
                             + "; ".join(misfits + [f"state for parameter {i}, which has no such index"
                                                    for i in unknown]))
        state = {}
        for i, entries in state_dict["state"].items():
            p = by_index[int(i)]
            state[p] = {k: _to_param(v, p) for k, v in entries.items()}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            restored = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            restored["params"] = group["params"]
            new_groups.append(restored)
        self.state, self.param_groups = state, new_groups

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"


_UNORDERED = ("optimizer parameters need to be organized in ordered collections, but the ordering of tensors "
              "in sets will change between runs. Please use a list instead.")


def _host_copy(value):
    return backend.to_numpy(value).copy() if hasattr(value, "shape") and hasattr(value, "dtype") else value


def _to_param(value, p):
    """A saved state entry as an array on p's device; floating arrays take p's dtype (as torch)."""
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        return copy.deepcopy(value)
    xp = backend.get_array_module(p.data)
    dtype = p.dtype if backend.is_floating(value.dtype) else value.dtype
    return xp.array(backend.to_numpy(value) if xp.__name__ == "numpy" else value, dtype=dtype, copy=True)


def check_hyper(name, value, low=0.0):
    if not value >= low:
        raise ValueError(f"invalid {name}: {value} (must be >= {low})")
