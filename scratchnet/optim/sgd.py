"""Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay (torch.optim.SGD)."""
from ..kernels.routes import SGD as SGD_ROUTES
from .optimizer import Optimizer, check_hyper


class SGD(Optimizer):
    """torch's rule, per parameter p with gradient g::

        g = g + weight_decay * p
        buf = g (first step)  or  momentum * buf + (1 - dampening) * g
        g = g + momentum * buf (nesterov)  or  buf
        p = p - lr * g
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False):
        check_hyper("learning rate", lr)
        check_hyper("momentum", momentum)
        check_hyper("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum > 0 and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _update(self, p, grad, state, group):
        buf = state.get("momentum_buffer")
        kernels = SGD_ROUTES.choose(p.data, grad, buf).impl  # kernels/routes.py: the CPU kernel, or None
        if kernels is not None:  # the same rule in one Numba pass (kernels/cpu.py: bit for bit)
            value, buf = kernels.sgd_step(p.data, grad, buf, group["lr"], group["momentum"], group["dampening"],
                                          group["weight_decay"], group["nesterov"])
            self._assign(p, value)  # (in place already where p.data could be written)
            if buf is not None:
                state["momentum_buffer"] = buf
            return
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * p.data
        momentum = group["momentum"]
        if momentum != 0:
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()  # our own copy, never the grad itself
            else:
                buf *= momentum
                # (1 - 0) * grad is grad exactly: skip the multiply in the common undamped case
                buf += grad if group["dampening"] == 0 else (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        self._assign(p, p.data - group["lr"] * grad)
