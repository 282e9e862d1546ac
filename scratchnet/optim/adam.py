"""Adam and AdamW (torch.optim.Adam / AdamW): bias-corrected moment estimates, optional AMSGrad.

The only difference between the two is where weight decay goes: Adam adds
``weight_decay * p`` to the gradient (L2, so it is rescaled by the adaptive
denominator); AdamW shrinks the weights directly, ``p *= 1 - lr * weight_decay``
(decoupled, Loshchilov & Hutter).
"""
from .. import backend
from ..kernels.routes import ADAM as ADAM_ROUTES
from .optimizer import Optimizer, check_hyper


class Adam(Optimizer):
    """torch's rule at step t::

        m = m + (1 - beta1) (g - m);   v = beta2 v + (1 - beta2) g^2
        v_hat = max(v_hat, v) (amsgrad)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 maximize=False):
        check_hyper("learning rate", lr)
        check_hyper("epsilon", eps)
        check_hyper("weight_decay", weight_decay)
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"invalid beta parameter at index {i}: {beta} (must be in [0, 1))")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _update(self, p, grad, state, group):
        ADAM_ROUTES.choose(p.data)  # the array code below: no fused Adam kernel yet (kernels/routes.py)
        xp = backend.get_array_module(p.data)
        lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        step = state["step"]
        if decay != 0:
            if self.decoupled_weight_decay:
                self._assign(p, p.data * (1 - lr * decay))
            else:
                grad = grad + decay * p.data
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg += (1 - beta1) * (grad - exp_avg)  # torch's lerp toward the gradient
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        second = exp_avg_sq
        if group["amsgrad"]:
            xp.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second = state["max_exp_avg_sq"]
        denom = xp.sqrt(second) / bias_correction2_sqrt + eps
        self._assign(p, p.data - (lr / bias_correction1) * (exp_avg / denom))


class AdamW(Adam):
    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
