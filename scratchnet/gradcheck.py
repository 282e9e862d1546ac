"""Numeric gradient check: compare backward with central finite differences.

Two checks, both in float64 and both on the scalar ``L = sum(r * f(inputs))``
for a fixed random ``r`` (so every output element matters):

* directional (Chainer's idea): one random direction ``v`` over *all* checked
  tensors at once; ``(L(x + eps v) - L(x - eps v)) / 2 eps`` must equal
  ``sum(grad . v)``. Cheap at any size, catches a wrong gradient anywhere.
* element-wise: the same difference for every element, when the checked
  tensors hold at most ``max_elements`` numbers in all; it pinpoints the entry.
"""
import numpy as np

from . import backend
from .autograd import Tensor, backward


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree."""


def gradcheck(fn, inputs, params=(), eps=1e-6, atol=1e-5, rtol=1e-4, directions=3,
              max_elements=2000, seed=0, raise_exception=True):
    """Check ``fn(*inputs)``'s gradients with respect to the float64 tensors that require grad.

    ``inputs``: tensors (or other arguments passed through unchanged); those with
    ``requires_grad`` are checked. ``params``: more tensors to check that ``fn``
    reads without taking them as arguments (e.g. ``model.parameters()``).
    ``fn`` must be deterministic: seed any randomness inside it.
    Returns True, or raises ``GradcheckError`` naming the tensor and entry.
    """
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad] + list(params)
    if not checked:
        raise ValueError("gradcheck: no input or parameter requires grad")
    for t in checked:
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 tensors (finite differences in float32 fail for "
                            f"precision, not bugs); got {t.dtype} for a tensor of shape {t.shape}: "
                            f"use .double() / model.to(dtype=np.float64)")
    generator = np.random.default_rng(seed)

    def loss_value(weights):
        out = fn(*inputs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        outs = [o for o in outs if isinstance(o, Tensor) and backend.is_floating(o.dtype)]
        return outs, sum(float((backend.to_numpy(o.data) * w).sum()) for o, w in zip(outs, weights))

    # analytic gradients of L = sum(r * out)
    for t in checked:
        t.grad = None
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    outs = [o for o in outs if isinstance(o, Tensor) and backend.is_floating(o.dtype)]
    weights = [generator.standard_normal(o.shape) for o in outs]
    live = [(o, w) for o, w in zip(outs, weights) if o.requires_grad]
    if not live:
        raise ValueError("gradcheck: fn's output does not depend on any checked tensor")
    backward([o for o, _ in live],
             [backend.get_array_module(o.data).asarray(w, dtype=o.dtype) for o, w in live])
    analytic = [backend.to_numpy(t.grad) if t.grad is not None else np.zeros(t.shape) for t in checked]

    def perturbed(deltas):
        originals = [t.data for t in checked]
        try:
            for t, original, d in zip(checked, originals, deltas):
                if d is not None:
                    t.data = original + backend.get_array_module(original).asarray(d)
            return loss_value(weights)[1]
        finally:
            for t, original in zip(checked, originals):
                t.data = original

    failures = []
    for k in range(directions):
        direction = [generator.standard_normal(t.shape) for t in checked]
        norm = np.sqrt(sum((d ** 2).sum() for d in direction))
        direction = [d / norm for d in direction]
        plus = perturbed([eps * d for d in direction])
        minus = perturbed([-eps * d for d in direction])
        numeric = (plus - minus) / (2 * eps)
        expected = sum(float((a * d).sum()) for a, d in zip(analytic, direction))
        if not np.isclose(expected, numeric, atol=atol, rtol=rtol):
            failures.append(f"direction {k}: backward gives {expected:.10g}, finite differences {numeric:.10g}")

    total = sum(t.size for t in checked)
    if total <= max_elements:
        for which, t in enumerate(checked):
            flat_numeric = np.empty(t.size)
            for i in range(t.size):
                delta = np.zeros(t.size)
                delta[i] = eps
                deltas = [None] * len(checked)
                deltas[which] = delta.reshape(t.shape)
                plus = perturbed(deltas)
                deltas[which] = -delta.reshape(t.shape)
                minus = perturbed(deltas)
                flat_numeric[i] = (plus - minus) / (2 * eps)
            numeric = flat_numeric.reshape(t.shape)
            bad = ~np.isclose(analytic[which], numeric, atol=atol, rtol=rtol)
            if bad.any():
                index = tuple(int(i) for i in np.argwhere(bad)[0])
                failures.append(f"tensor {which} (shape {t.shape}): {int(bad.sum())} entries differ, first at "
                                f"{index}: backward {analytic[which][index]:.10g}, numeric {numeric[index]:.10g}")
    if failures:
        if raise_exception:
            raise GradcheckError("gradcheck failed:\n  " + "\n  ".join(failures))
        return False
    return True
