"""The Optimizer base: parameter groups, per-parameter state, zero_grad, state_dict.

As in torch: ``param_groups`` is a list of dicts, each with its own ``params``
and hyper-parameters (``lr``, ``weight_decay`` ...); ``state[p]`` holds what
the update rule remembers for parameter ``p`` (momentum buffers, Adam's
moments). Subclasses implement ``_update(p, grad, state, group)``.

Updates read ``p.grad.data`` (each parameter's own array) and never write into it.
``p.data`` is replaced with a new array; state buffers are the optimizer's own
and are updated in place.
"""
import copy

from .. import backend
from ..autograd import Tensor, no_grad


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}  # Parameter -> dict (tensors hash by identity)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of tensors or of dicts, "
                            f"got a single tensor; wrap it in a list")
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a dict with 'params' and any hyper-parameters that differ from the defaults."""
        group = dict(group)
        params = group.get("params")
        params = [params] if isinstance(params, Tensor) else list(params or [])
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: can only optimize tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__}: can't optimize a non-leaf tensor (shape {p.shape})")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: a parameter (shape {p.shape}) appears in more "
                                 f"than one parameter group")
            seen.add(id(p))
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
        """Out of place, and in the parameter's own dtype (a float64 grad must not upcast float32 weights)."""
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
        """Restore state and hyper-parameters; arrays go to each parameter's device and dtype."""
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
