"""linear: y = x W^T + b (torch.nn.functional.linear)."""
from ..autograd import Function
from .math import check_float


class Linear(Function):
    """x (..., in) @ W^T (in, out) + b; W is (out, in) as torch, any leading dims batch."""

    saved_inputs = {"x": 0, "w": 1}

    def forward(self, x, w, b=None):
        self.x = x if self.needs_input_grad[1] else None
        self.w = w if self.needs_input_grad[0] else None
        y = x @ w.T
        return y if b is None else y + b

    def backward(self, gy):
        gx = gy @ self.w if self.needs_input_grad[0] else None
        gw = None
        if self.needs_input_grad[1]:
            gw = gy.reshape(-1, gy.shape[-1]).T @ self.x.reshape(-1, self.x.shape[-1])
        if len(self.needs_input_grad) == 3:
            gb = gy.reshape(-1, gy.shape[-1]).sum(axis=0) if self.needs_input_grad[2] else None
            return gx, gw, gb
        return gx, gw

    def differentiable_backward(self, gy):
        needs = self.needs_input_grad
        rows = gy.reshape(-1, gy.shape[-1])
        gx = gy @ self.saved_input(1) if needs[0] else None
        gw = None
        if needs[1]:
            x = self.saved_input(0)
            gw = rows.T @ x.reshape(-1, x.shape[-1])
        if len(needs) == 3:
            return gx, gw, (rows.sum(0) if needs[2] else None)
        return gx, gw


def linear(x, weight, bias=None):
    check_float("linear", x, weight, bias)
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be (out_features, in_features), got shape {weight.shape}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},) for weight {weight.shape}, "
                         f"got {bias.shape}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {x.shape} has last dim {x.shape[-1] if x.ndim else None}, "
                         f"but weight {weight.shape} expects {weight.shape[1]} features")
    return Linear()(x, weight) if bias is None else Linear()(x, weight, bias)
