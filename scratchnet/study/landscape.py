"""Loss landscape (Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018): why residual nets train -- plain vs residual nets seen around the weights training found.

For each net (trained here briefly, or loaded):
- the 1-D linear interpolation from the initial to the trained weights (Goodfellow et al. 2015, the
  paper's Sec. 3): every floating entry of the state dict moves, BN running statistics included (the
  paper's appendix: leaving them out, the curve's endpoints do not reproduce the two nets' losses);
- the loss along one and two filter-normalised random directions (Sec. 4): a Gaussian direction whose
  every filter (a conv output channel, a linear layer's row) is rescaled to the norm of the same filter
  of the weights, so that nets of different weight scale can be compared; biases and BN parameters get
  no direction (the appendix: "the random direction applies to all weights but not the weights in BN");
- the top eigenvalue of the Hessian of the loss, a sharpness number, by power iteration on exact
  Hessian-vector products (Pearlmutter's trick: Hv is the gradient of g.v, g the gradient taken with
  create_graph=True), and beside it the Rayleigh quotient v.Hv at the same v from central differences
  of gradients, Hv ~ (g(w + e v) - g(w - e v)) / 2e with |v| = 1, at e/10, e and 10e: how far the
  finite-difference estimate an autograd without double backward must use is from the exact number
  (ReLU kinks make a gradient piecewise smooth: the quotient depends on the step).

The loss is the mean cross-entropy over a fixed set of training images, with the net in eval mode (BN
uses its running statistics), so it is one deterministic function of the weights. Those statistics are
first re-estimated at the initial and at the trained weights (on other training images): after a short
training the running averages still trail the weights, and the loss would measure that lag.
"""
import time
from pathlib import Path

import numpy as np

from .. import backend
from ..autograd import Tensor, grad as autograd_grad, no_grad
from ..nn import BatchNorm1d, BatchNorm2d, Module
from ..nn.serialization import load, save
from .common import (DEFAULT_OUT, cifar_net, classification_loss, fashion_batches, label, plt, save_figure,
                     save_json, train_briefly)

MODELS = ("plain20", "resnet20", "plain56", "resnet56")


# --------------------------------------------------------------------------- directions


def filter_normalized_direction(model, rng):
    """{parameter name: direction array}: Gaussian, each filter scaled to the norm of that filter of the
    weights (filter = slice along the first axis: a conv's output channel, a linear layer's output
    neuron); zero for one-dimensional parameters (biases, BN weight and bias)."""
    direction = {}
    for name, p in model.named_parameters():
        w = backend.to_numpy(p.data).astype(np.float64)
        if w.ndim <= 1:
            direction[name] = np.zeros_like(w)
            continue
        d = rng.standard_normal(w.shape)
        axes = tuple(range(1, w.ndim))
        d *= np.sqrt((w ** 2).sum(axis=axes, keepdims=True) / (d ** 2).sum(axis=axes, keepdims=True))
        direction[name] = d
    return direction


# --------------------------------------------------------------------------- the loss at a point


def evaluate(model, batches):
    """(mean loss, accuracy) over ``batches`` in eval mode, without gradients."""
    model.eval()
    total = correct = count = 0.0
    with no_grad():
        for x, y in batches:
            output = model(Tensor(x))
            total += float(classification_loss(model, output, Tensor(y)).item()) * len(y)
            scores = model.scores(output) if hasattr(model, "scores") else output
            correct += float((backend.to_numpy(scores.data).argmax(1) == y).sum())
            count += len(y)
    return total / count, correct / count


def recalibrate_batch_norm(model, batches):
    """Set every BN layer's running statistics to the plain average over ``batches`` of the batch
    statistics at the current weights (a train-mode pass without gradients, torch's momentum=None rule).

    During training the running averages trail the moving weights; after a short training they can be
    far from the statistics of the final weights, and the eval-mode loss then measures that lag, not
    the net. Recalibrated, the eval-mode loss is the loss of these weights."""
    norms = [m for m in model.modules() if isinstance(m, (BatchNorm1d, BatchNorm2d)) and m.track_running_stats]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = None
        m.running_mean.data = m.running_mean.data * 0
        m.running_var.data = m.running_var.data * 0 + 1
        m.num_batches_tracked.data = m.num_batches_tracked.data * 0
    model.train()
    with no_grad():
        for x, _ in batches:
            model(Tensor(x))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def _set_parameters(model, arrays):
    for name, p in model.named_parameters():
        if name in arrays:
            p.data = backend.get_array_module(p.data).asarray(arrays[name], dtype=p.dtype)


def losses_along(model, directions, coordinates, batches):
    """The loss at w + sum_k c_k d_k for each tuple c in ``coordinates`` (w: the model's parameters now,
    d_k: ``directions``); the model's parameters are restored afterwards."""
    base = {name: backend.to_numpy(p.data).copy() for name, p in model.named_parameters()}
    losses = []
    try:
        for c in coordinates:
            _set_parameters(model, {name: w + sum(ck * d[name] for ck, d in zip(c, directions))
                                    for name, w in base.items()})
            losses.append(evaluate(model, batches)[0])
    finally:
        _set_parameters(model, base)
    return losses


def interpolate(model, start, end, alphas, batches):
    """(losses, accuracies) of the state (1 - a) start + a end for each a in ``alphas`` (state dicts;
    every floating entry moves, BN running statistics included). Beyond the ends (a < 0 or a > 1) the
    running statistics stay at the nearer end's: a variance extrapolated linearly can turn negative.
    The model keeps ``end`` afterwards."""
    parameters = {name for name, _ in model.named_parameters()}
    losses, accuracies = [], []
    for a in alphas:
        state = {}
        for k, s in start.items():
            t = a if k in parameters else min(max(a, 0.0), 1.0)
            state[k] = (1 - t) * s + t * end[k] if np.issubdtype(s.dtype, np.floating) else end[k]
        model.load_state_dict(state)
        loss, accuracy = evaluate(model, batches)
        losses.append(loss)
        accuracies.append(accuracy)
    model.load_state_dict(end)
    return losses, accuracies


# --------------------------------------------------------------------------- curvature


def gradient_function(model, batches):
    """(w, grad): the model's parameters as one flat float64 vector, and v -> dL/dw at the point v (mean
    loss over ``batches``, eval mode). grad puts the model's parameters back to w when it returns."""
    named = list(model.named_parameters())
    shapes = [p.shape for _, p in named]
    sizes = [int(np.prod(s)) for s in shapes]
    base = {name: p.data.copy() for name, p in named}
    w = np.concatenate([backend.to_numpy(p.data).ravel() for _, p in named]).astype(np.float64)
    n_images = sum(len(y) for _, y in batches)

    def grad(vector):
        pieces = np.split(vector, np.cumsum(sizes)[:-1])
        _set_parameters(model, {name: v.reshape(s) for (name, _), v, s in zip(named, pieces, shapes)})
        model.eval()
        model.zero_grad()
        for x, y in batches:  # the mean over all images: each batch's mean loss weighted by its size
            loss = classification_loss(model, model(Tensor(x)), Tensor(y))
            (loss * (len(y) / n_images)).backward()
        gradient = np.concatenate([np.zeros(p.shape).ravel() if p.grad is None else
                                   backend.to_numpy(p.grad.data).ravel() for _, p in named]).astype(np.float64)
        _set_parameters(model, base)
        model.zero_grad()
        return gradient

    return w, grad


def exact_hessian_vector_function(model, batches):
    """v -> H v exactly, for the loss gradient_function differentiates (the mean over ``batches``, eval
    mode, at the model's parameters now): per batch, the gradient g with create_graph=True, then the
    gradient of g.v (Pearlmutter's trick). Float64 in and out, like gradient_function's."""
    named = list(model.named_parameters())
    params = [p for _, p in named]
    sizes = [p.size for p in params]
    n_images = sum(len(y) for _, y in batches)

    def hvp(vector):
        pieces = np.split(np.asarray(vector, dtype=np.float64), np.cumsum(sizes)[:-1])
        v = [Tensor(backend.get_array_module(p.data).asarray(piece.reshape(p.shape), dtype=p.dtype))
             for p, piece in zip(params, pieces)]
        model.eval()
        total = np.zeros(sum(sizes))
        for x, y in batches:  # the mean over all images: each batch's mean loss weighted by its size
            loss = classification_loss(model, model(Tensor(x)), Tensor(y)) * (len(y) / n_images)
            grads = autograd_grad(loss, params, create_graph=True, allow_unused=True)
            hv = autograd_grad(sum((g * vi).sum() for g, vi in zip(grads, v) if g is not None), params,
                               allow_unused=True)
            total += np.concatenate([np.zeros(p.size) if h is None else backend.to_numpy(h.data).ravel()
                                     for p, h in zip(params, hv)])
        return total

    return hvp


def hessian_vector_product(grad, w, v, step):
    """H v by central differences of the gradient along unit ``v`` (exact for a quadratic loss)."""
    return (grad(w + step * v) - grad(w - step * v)) / (2 * step)


def power_iteration(hvp, size, iterations=10, tol=1e-3, seed=0):
    """Power iteration on ``hvp`` (v -> H v): (eigenvalue of largest magnitude, the unit vector v it was
    measured at, the estimate v.Hv after each iteration). Stops early once the estimate changes by less
    than ``tol`` (relative)."""
    v = np.random.default_rng(seed).standard_normal(size)
    v /= np.linalg.norm(v)
    hv = hvp(v)
    history = [float(v @ hv)]
    for _ in range(iterations - 1):
        v = hv / np.linalg.norm(hv)
        hv = hvp(v)
        history.append(float(v @ hv))
        if abs(history[-1] - history[-2]) <= tol * abs(history[-1]):
            break
    return history[-1], v, history


def top_hessian_eigenvalue(grad, w, iterations=10, step=1e-3, tol=1e-3, seed=0):
    """power_iteration on finite-difference H v (from the gradient function ``grad``) at ``w``."""
    return power_iteration(lambda v: hessian_vector_product(grad, w, v, step), w.shape, iterations, tol, seed)


def eigenvalue_by_step(grad, w, v, steps):
    """The Rayleigh quotient v.Hv at unit ``v`` for each finite-difference step: equal when the step is
    in the range where the difference quotient is neither truncation- nor rounding-dominated."""
    return {float(s): float(v @ hessian_vector_product(grad, w, v, s)) for s in steps}


# --------------------------------------------------------------------------- one net, all measurements


def landscape_of(name, steps=100, batch_size=64, lr=0.05, eval_images=128, eval_batch=128, points=13,
                 grid=9, span=1.0, hessian_iterations=10, hessian_step=1e-3, recalibrate=True, weights=None,
                 data_dir=None, seed=0, save_weights=None):
    """Every measurement of one net (a zoo name or a ready Module, trained ``steps`` SGD steps from its
    seeded initialisation unless ``weights`` names an .npz to load) as one JSON-ready dict."""
    backend.manual_seed(seed)
    model = name if isinstance(name, Module) else cifar_net(name, "landscape")
    batches = eval_batches(model, eval_images, eval_batch, data_dir, seed)
    bn_batches = eval_batches(model, eval_images, eval_batch, data_dir, seed + 1)  # other images
    if recalibrate:
        recalibrate_batch_norm(model, bn_batches)
    start = model.state_dict()
    if weights:
        model.load_state_dict(load(weights))
        train_losses = []
    else:
        train_losses = train_briefly(model, steps, batch_size, data_dir, seed, lr=lr)
    stale_loss = evaluate(model, batches)[0]  # with the running statistics training left
    if recalibrate:
        recalibrate_batch_norm(model, bn_batches)
    end = model.state_dict()
    if save_weights is not None:
        save_weights.parent.mkdir(parents=True, exist_ok=True)
        save(end, save_weights)
    loss, accuracy = evaluate(model, batches)

    # alpha 0 and 1 exactly on the grid, and a little beyond both ends as in the paper's 1-D plots
    margin = max(1, (points - 1) // 5)
    alphas = np.arange(-margin, points + margin) / (points - 1)
    interp_loss, interp_acc = interpolate(model, start, end, alphas, batches)

    rng = np.random.default_rng(seed)
    dx, dy = filter_normalized_direction(model, rng), filter_normalized_direction(model, rng)
    line = symmetric_axis(span, points)
    line_loss = losses_along(model, [dx], [(a,) for a in line], batches)
    axis = symmetric_axis(span, grid)
    surface = losses_along(model, [dx, dy], [(a, b) for b in axis for a in axis], batches)

    w, grad = gradient_function(model, batches)
    top, v, history = power_iteration(exact_hessian_vector_function(model, batches), w.shape, hessian_iterations,
                                      seed=seed)
    by_step = eigenvalue_by_step(grad, w, v, (hessian_step / 10, hessian_step, hessian_step * 10))
    model.load_state_dict(end)
    return dict(
        model=label(name), parameters=int(w.size), trained_steps=len(train_losses), weights=str(weights or ""),
        train_loss=train_losses, eval_images=eval_images, loss=loss, accuracy=accuracy,
        loss_before_recalibration=stale_loss, recalibrated=bool(recalibrate),
        interpolation=dict(alpha=alphas.tolist(), loss=interp_loss, accuracy=interp_acc),
        direction_1d=dict(alpha=line.tolist(), loss=line_loss),
        surface=dict(x=axis.tolist(), y=axis.tolist(), loss=np.reshape(surface, (grid, grid)).tolist()),
        hessian=dict(top_eigenvalue=top, history=history, step=hessian_step,  # top: exact H v products
                     by_step={f"{s:g}": lam for s, lam in by_step.items()},  # finite differences at its v
                     relative_spread=float(np.ptp(list(by_step.values())) / abs(top)),
                     finite_difference_error=float(abs(by_step[hessian_step] - top) / abs(top))))


def eval_batches(model, images, batch_size, data_dir, seed):
    """The fixed training images the loss is measured on, in batches of ``batch_size`` (the last one
    shorter when it does not divide ``images``)."""
    n = -(-images // batch_size)
    batches = fashion_batches(model, n, batch_size, data_dir, seed=seed + 1)
    batches[-1] = tuple(a[:images - batch_size * (n - 1)] for a in batches[-1])
    return batches


def symmetric_axis(span, n):
    """``n`` evenly spaced points from -span to span, with 0 exactly on it when ``n`` is odd."""
    half = (n - 1) / 2
    return span * (np.arange(n) - half) / half


def check_options(steps, eval_images, points, grid, span, hessian_iterations, hessian_step):
    problems = [f"{flag} must be {rule} (got {value})" for flag, value, ok, rule in (
        ("--steps", steps, steps >= 0, ">= 0"), ("--eval-images", eval_images, eval_images >= 1, ">= 1"),
        ("--points", points, points >= 2, ">= 2"), ("--grid", grid, grid >= 2, ">= 2"),
        ("--span", span, span > 0, "> 0"), ("--hessian-iterations", hessian_iterations, hessian_iterations >= 1,
                                              ">= 1"), ("--hessian-step", hessian_step, hessian_step > 0, "> 0"))
                if not ok]
    if problems:
        raise ValueError("; ".join(problems))


def measure(models=MODELS, weights_dir=None, save_dir=None, **options):
    """{name: landscape_of(model)} for zoo names (or a dict name -> Module); ``weights_dir`` holds
    NAME.npz to load instead of training; with ``save_dir`` each net's weights and numbers are written
    there as NAME.npz and NAME.json as soon as it is done, so a long run keeps what it has."""
    named = models.items() if isinstance(models, dict) else [(label(m), m) for m in models]
    results = {}
    for name, model in named:
        began = time.perf_counter()
        weights = None if weights_dir is None or isinstance(model, Module) else Path(weights_dir) / f"{name}.npz"
        if weights is not None and not weights.is_file():
            raise ValueError(f"--weights-dir: {weights} does not exist (save a run's weights as NAME.npz there, "
                             f"or leave --weights-dir out to train here)")
        target = None if save_dir is None else save_dir / f"{name}.npz"
        results[name] = landscape_of(model, weights=weights, save_weights=target, **options)
        results[name]["model"] = name
        if save_dir is not None:
            save_json(save_dir / f"{name}.json", results[name])
        print(f"{name}: loss {results[name]['loss']:.3f}, top Hessian eigenvalue "
              f"{results[name]['hessian']['top_eigenvalue']:.4g} ({time.perf_counter() - began:.0f} s)", flush=True)
    return results


# --------------------------------------------------------------------------- pictures and table


def plot_curves(results):
    """1-D: interpolation init -> trained, a filter-normalised random direction, the power iteration."""
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(15, 4.2))
    for name, r in results.items():
        style = "--" if name.startswith("plain") else "-"
        axes[0].semilogy(r["interpolation"]["alpha"], r["interpolation"]["loss"], style, marker=".", label=name)
        axes[1].semilogy(r["direction_1d"]["alpha"], r["direction_1d"]["loss"], style, marker=".", label=name)
        axes[2].plot(range(1, len(r["hessian"]["history"]) + 1), r["hessian"]["history"], style, marker="o",
                     label=f"{name}: {r['hessian']['top_eigenvalue']:.3g}")
    axes[0].set(title="linear interpolation, initial (0) -> trained (1)", xlabel="alpha", ylabel="loss")
    axes[1].set(title="along a filter-normalised random direction", xlabel="alpha", ylabel="loss")
    axes[2].set(title="top Hessian eigenvalue: power iteration", xlabel="iteration", ylabel="v.Hv")
    # extrapolating below the initial weights can reach 1e12: keep the axis on what lies between the ends
    inside = [loss for r in results.values() for a, loss in zip(r["interpolation"]["alpha"], r["interpolation"]["loss"])
              if 0 <= a <= 1 and np.isfinite(loss)]
    if inside:
        axes[0].set_ylim(0.5 * min(inside), 30 * max(inside))
    for ax in axes:
        ax.legend(fontsize=8)
    return fig


def plot_surfaces(results):
    """2-D contours of log10(loss), one panel per net, on the same levels so the panels compare."""
    pyplot = plt()
    logs = {name: np.log10(np.clip(np.nan_to_num(r["surface"]["loss"], nan=1e6), 1e-3, 1e6))
            for name, r in results.items()}
    lo = min(v.min() for v in logs.values())
    levels = np.linspace(lo, max(min(max(v.max() for v in logs.values()), lo + 4), lo + 0.1), 21)  # 4 decades
    fig, axes = pyplot.subplots(1, len(results) + 1, figsize=(4.2 * len(results) + 0.8, 4.2),
                                gridspec_kw=dict(width_ratios=[1] * len(results) + [0.06]))
    for ax, (name, r) in zip(axes, results.items()):
        s = r["surface"]
        contour = ax.contour(s["x"], s["y"], logs[name], levels=levels, cmap="viridis", linewidths=0.9)
        ax.plot(0, 0, "r+")
        ax.set(title=f"{name}: loss {r['loss']:.3g}, top eig {r['hessian']['top_eigenvalue']:.3g}", aspect="equal",
               xlabel="filter-normalised direction 1", ylabel="direction 2")
    fig.colorbar(contour, cax=axes[-1], label="log10 loss (the same levels in every panel)")
    return fig


def print_table(results):
    print(f"{'model':<10}{'params':>9}{'steps':>7}{'loss':>8}{'stale BN':>9}{'acc':>7}{'1-D max':>9}{'2-D max':>9}"
          f"{'top eig':>10}   v.Hv by finite differences at steps (exact H v: top eig)")
    for name, r in results.items():
        h = r["hessian"]
        steps = ", ".join(f"{s}: {lam:.4g}" for s, lam in h["by_step"].items())
        print(f"{name:<10}{r['parameters']:>9,}{r['trained_steps']:>7}{r['loss']:>8.3f}"
              f"{r['loss_before_recalibration']:>9.3f}{r['accuracy']:>7.1%}"
              f"{max(r['direction_1d']['loss']):>9.3g}{np.max(r['surface']['loss']):>9.3g}"
              f"{h['top_eigenvalue']:>10.4g}   {steps} (spread {h['relative_spread']:.1%})")


def landscape(models=MODELS, steps=100, batch_size=64, lr=0.05, eval_images=128, eval_batch=128, points=13,
              grid=9, span=1.0, hessian_iterations=10, hessian_step=1e-3, weights_dir=None, recalibrate=True,
              data_dir=None, out=DEFAULT_OUT, seed=0):
    """Measure every net, write landscape_1d.png, landscape_2d.png, landscape.json and the trained
    weights (out/landscape/NAME.npz) to ``out``, print the table; returns the results."""
    check_options(steps, eval_images, points, grid, span, hessian_iterations, hessian_step)
    results = measure(models, weights_dir=weights_dir, save_dir=out / "landscape", steps=steps,
                      batch_size=batch_size, lr=lr, eval_images=eval_images, eval_batch=eval_batch, points=points,
                      grid=grid, span=span, hessian_iterations=hessian_iterations, hessian_step=hessian_step,
                      recalibrate=recalibrate, data_dir=data_dir, seed=seed)
    save_figure(plot_curves(results), out, "landscape_1d.png")
    save_figure(plot_surfaces(results), out, "landscape_2d.png", "landscape.json", results)
    print_table(results)
    return results
