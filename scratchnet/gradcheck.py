"""Numeric gradient checks: compare backward (and the backward of backward) with central finite differences.

``gradcheck``: two checks, both in float64 and both on the scalar
``L = sum(r * f(inputs))`` for a fixed random ``r`` (so every output element matters):

* directional (Chainer's idea): one random direction ``v`` over *all* checked
  tensors at once; ``(L(x + eps v) - L(x - eps v)) / 2 eps`` must equal
  ``sum(grad . v)``. Cheap at any size, catches a wrong gradient anywhere.
* element-wise: the same difference for every element, when the checked
  tensors hold at most ``max_elements`` numbers in all; it pinpoints the entry.

``gradgradcheck`` (torch's): gradcheck of the map (inputs, u) -> u . df/dinputs,
the first derivatives taken with ``create_graph=True`` for random cotangents
``u``; so it checks the second derivatives w.r.t. the inputs and the
first derivatives' dependence on ``u``.
"""
import numpy as np

from . import backend
from .autograd import Tensor, enable_grad, grad, no_grad


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree."""


def gradcheck(fn, inputs, params=(), eps=1e-6, atol=1e-5, rtol=1e-4, directions=3,
              max_elements=2000, seed=0, raise_exception=True):
    """Check ``fn(*inputs)``'s gradients with respect to the float64 tensors that require grad.

    ``inputs``: tensors (or other arguments passed through unchanged); those with
    ``requires_grad`` are checked. ``params``: more tensors to check that ``fn``
    reads without taking them as arguments: a list of tensors, or named ones
    (``model.named_parameters()`` or a dict) so a failure names them.
    ``fn`` must be deterministic: seed any randomness inside it.
    Returns True, or raises ``GradcheckError`` naming the tensor and entry.
    """
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    named = [(t.name or f"input {i}", t) for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    params = list(params.items()) if isinstance(params, dict) else list(params)
    for j, entry in enumerate(params):
        name, t = entry if isinstance(entry, tuple) else (entry.name or f"params[{j}]", entry)
        named.append((name, t))
    checked = [t for _, t in named]
    labels = [f"{name} (shape {t.shape})" for name, t in named]
    if not checked:
        raise ValueError("gradcheck: no input or parameter requires grad")
    for label, t in zip(labels, checked):
        if not t.requires_grad:
            raise ValueError(f"gradcheck: {label} does not require grad; set requires_grad=True or leave it out")
    for label, t in zip(labels, checked):
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 tensors (finite differences in float32 fail for "
                            f"precision, not bugs); got {t.dtype} for {label}: "
                            f"use .double() / model.to(dtype=np.float64)")
    generator = np.random.default_rng(seed)

    def loss_value(weights):
        with no_grad():  # finite differences need values only: build no graph
            out = fn(*inputs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        outs = [o for o in outs if isinstance(o, Tensor) and backend.is_floating(o.dtype)]
        return outs, sum(float((backend.to_numpy(o.data) * w).sum()) for o, w in zip(outs, weights))

    # analytic gradients of L = sum(r * out)
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    outs = [o for o in outs if isinstance(o, Tensor) and backend.is_floating(o.dtype)]
    weights = [generator.standard_normal(o.shape) for o in outs]
    live = [(o, w) for o, w in zip(outs, weights) if o.requires_grad]
    if not live:
        raise ValueError("gradcheck: fn's output does not depend on any checked tensor")
    grads = grad([o for o, _ in live], checked,
                 [backend.get_array_module(o.data).asarray(w, dtype=o.dtype) for o, w in live], allow_unused=True)
    analytic = [backend.to_numpy(g.data) if g is not None else np.zeros(t.shape) for t, g in zip(checked, grads)]

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

    def directional_failure(direction):
        """None if backward agrees with finite differences along ``direction``, else the two numbers."""
        norm = np.sqrt(sum((d ** 2).sum() for d in direction if d is not None))
        direction = [None if d is None else d / norm for d in direction]
        plus = perturbed([None if d is None else eps * d for d in direction])
        minus = perturbed([None if d is None else -eps * d for d in direction])
        numeric = (plus - minus) / (2 * eps)
        expected = sum(float((a * d).sum()) for a, d in zip(analytic, direction) if d is not None)
        if np.isclose(expected, numeric, atol=atol, rtol=rtol):
            return None
        return f"backward gives {expected:.10g}, finite differences {numeric:.10g}"

    failures = []
    for k in range(directions):
        direction = [generator.standard_normal(t.shape) for t in checked]
        failure = directional_failure(direction)
        if failure is None:
            continue
        failures.append(f"direction {k} over all tensors: {failure}")
        # the same direction, one tensor at a time, to name the culprit(s)
        for which, label in enumerate(labels):
            alone = [d if i == which else None for i, d in enumerate(direction)]
            culprit = directional_failure(alone)
            if culprit is not None:
                failures.append(f"  {label}: {culprit}")
        break

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
                failures.append(f"{labels[which]}: {int(bad.sum())} entries differ, first at "
                                f"{index}: backward {analytic[which][index]:.10g}, numeric {numeric[index]:.10g}")
    if failures:
        if raise_exception:
            raise GradcheckError("gradcheck failed:\n  " + "\n  ".join(failures))
        return False
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, params=(), eps=1e-6, atol=1e-5, rtol=1e-4, directions=3,
                  max_elements=2000, seed=0, raise_exception=True):
    """Check ``fn(*inputs)``'s second derivatives numerically, in float64 (torch's gradgradcheck).

    The first derivatives ``u . d fn / d(checked)`` (checked: the inputs that
    require grad, and ``params`` as in ``gradcheck``) are taken with
    ``create_graph=True`` for cotangents ``u`` (``grad_outputs``: one float64 tensor
    per floating output; default random ones that require grad), and
    ``gradcheck`` checks them as a function of the inputs, the parameters and
    ``u``. Returns True, or raises ``GradcheckError`` naming the tensor and entry.
    """
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    params = list(params.items()) if isinstance(params, dict) else list(params)
    differentiated = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad] + \
        [entry[1] if isinstance(entry, tuple) else entry for entry in params]
    if not differentiated:
        raise ValueError("gradgradcheck: no input or parameter requires grad")

    def floating_outputs(out):
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o for o in outs if isinstance(o, Tensor) and backend.is_floating(o.dtype)]

    outs = [o for o in floating_outputs(fn(*inputs)) if o.requires_grad]
    if not outs:
        raise ValueError("gradgradcheck: fn's output does not depend on any checked tensor")
    if grad_outputs is None:
        generator = np.random.default_rng(seed + 1)
        grad_outputs = [Tensor(backend.get_array_module(o.data).asarray(generator.standard_normal(o.shape)),
                               requires_grad=True, name=f"grad_outputs[{i}]") for i, o in enumerate(outs)]
    grad_outputs = list(grad_outputs) if isinstance(grad_outputs, (list, tuple)) else [grad_outputs]
    if len(grad_outputs) != len(outs):
        raise ValueError(f"gradgradcheck: {len(grad_outputs)} grad_outputs for {len(outs)} outputs that require grad")

    def first_derivatives(*args):
        with enable_grad():  # gradcheck evaluates under no_grad; these derivatives need a graph
            live = [o for o in floating_outputs(fn(*args[:len(inputs)])) if o.requires_grad]
            grads = grad(live, differentiated, list(args[len(inputs):]), create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(first_derivatives, inputs + grad_outputs, params=params, eps=eps, atol=atol, rtol=rtol,
                     directions=directions, max_elements=max_elements, seed=seed, raise_exception=raise_exception)
