"""Gradient flow: per weighted layer, the norm of dL/dW and of dL/d(output), at initialisation and after
a few SGD steps (the vanishing-gradient story, and plain vs residual nets)."""
import numpy as np

from .. import backend
from ..autograd import Tensor
from ..optim import SGD
from .common import (DEFAULT_OUT, build, classification_loss, fashion_batches, label, plt, save_figure,
                     weighted_layers)


def gradient_norms(model, x, y):
    """One forward/backward: per weighted layer, the L2 norm of dL/dW and of dL/d(output activation)."""
    layers = weighted_layers(model)
    act_norms, handles = {}, []

    def watch(name):
        def on_forward(module, inputs, output):
            if isinstance(output, Tensor) and output.requires_grad:
                output.register_hook(lambda g: act_norms.__setitem__(name, float(np.linalg.norm(
                    backend.to_numpy(g.data)))))
        return on_forward

    for name, module in layers:
        handles.append(module.register_forward_hook(watch(name)))
    model.zero_grad()
    loss = classification_loss(model, model(Tensor(x)), Tensor(y))
    loss.backward()
    for h in handles:
        h.remove()
    return [dict(layer=name, weight_grad=float(np.linalg.norm(backend.to_numpy(m.weight.grad.data))),
                 activation_grad=act_norms.get(name, float("nan"))) for name, m in layers], float(loss.item())


def measure(models, steps=20, batch_size=16, lr=0.01, side=None, data_dir=None, seed=0):
    """{model: dict(at_init, after_steps, steps, loss_at_init, loss_after)}, the norms measured on the
    same first batch before and after ``steps`` SGD steps on the following ones."""
    results = {}
    for name in models:
        backend.manual_seed(seed)
        model = build(name)
        batches = fashion_batches(model, steps + 1, batch_size, data_dir, side, seed)
        at_init, loss0 = gradient_norms(model, *batches[0])
        optimizer = SGD(model.parameters(), lr=lr, momentum=0.9)
        for x, y in batches[1:]:
            optimizer.zero_grad()
            classification_loss(model, model(Tensor(x)), Tensor(y)).backward()
            optimizer.step()
        trained, loss1 = gradient_norms(model, *batches[0])
        results[label(name)] = dict(at_init=at_init, after_steps=trained, steps=steps, loss_at_init=loss0,
                                    loss_after=loss1)
    return results


def plot(results):
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    steps = next(iter(results.values()))["steps"]
    for ax, key, title in zip(axes, ("at_init", "after_steps"), ("at initialisation", f"after {steps} steps")):
        for name, r in results.items():
            ax.semilogy([rec["weight_grad"] for rec in r[key]], marker=".", label=name)
        ax.set(title=f"|dL/dW| per layer, {title}", xlabel="layer (input -> output)")
        ax.legend()
    axes[0].set_ylabel("gradient L2 norm")
    return fig


def print_table(results):
    print(f"{'model':<16}{'layers':>7}{'first/last |dW| (init)':>26}{'first/last |dW| (trained)':>28}")
    for name, r in results.items():
        ratio = [r[k][0]["weight_grad"] / max(r[k][-1]["weight_grad"], 1e-30) for k in ("at_init", "after_steps")]
        print(f"{name:<16}{len(r['at_init']):>7}{ratio[0]:>26.3g}{ratio[1]:>28.3g}")


def gradflow(models, steps=20, batch_size=16, lr=0.01, side=None, data_dir=None, out=DEFAULT_OUT, seed=0):
    """Measure, write gradflow.png and gradflow.json to ``out``, print the table; returns the results."""
    results = measure(models, steps, batch_size, lr, side, data_dir, seed)
    save_figure(plot(results), out, "gradflow.png", "gradflow.json", results)
    print_table(results)
    return results
