"""Study tools: instruments for *why* these architectures work, each ending in a picture and a table.

    python -m scratchnet.study gradflow plain34 resnet34      # per-layer gradient norms, init and after N steps
    python -m scratchnet.study gradflow deep_sigmoid deep_relu  # the vanishing-gradient story
    python -m scratchnet.study joins resnet20 googlenet densenet121  # gradient at residual / concat joins
    python -m scratchnet.study degradation                    # plain20/56 vs resnet20/56 training error (Fig. 6)
    python -m scratchnet.study deconv --model lenet           # ZFNet's DeconvNet projections
    python -m scratchnet.study features --model lenet         # first-layer filters and feature maps
    python -m scratchnet.study se --model se_resnet20        # SE channel weights per class
    python -m scratchnet.study cost                           # parameters vs multiply-adds for the zoo

Every command writes PNGs and a JSON of the numbers to ``--out`` (default
``runs/study``) and prints a short table. Gradients are read with tensor hooks
(``Tensor.register_hook``) registered from module forward hooks, so no model
code changes to be studied. Data is real: Fashion-MNIST (resized and
channel-repeated to the model's input), found as the training CLI finds it.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import backend
from . import functional as F
from .autograd import Tensor, no_grad
from .data import DatasetError, load_mnist
from .data import transforms as T
from .functional.conv import conv_output_size, im2col, pair
from .models import get_model, list_models
from .models.resnet import ResidualUnit
from .nn import init
from .nn import (AvgPool2d, Conv2d, Linear, LocalResponseNorm, MaxPool2d, Module, ReLU, Sequential, Sigmoid,
                 Tanh)
from .optim import SGD
from .nn.serialization import load
from .summary import summary

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


# --------------------------------------------------------------------------- shared pieces


def fashion_batches(model, n, batch_size, data_dir=None, side=None, seed=0, train=True):
    """``n`` batches of Fashion-MNIST shaped for ``model`` (resized to its input, channels repeated)."""
    channels, height, width = model.input_size
    if side is not None:
        height = width = side
    data = load_mnist("fashion-mnist", train=train, data_dir=data_dir, progress=False)
    order = np.random.default_rng(seed).permutation(len(data))[:n * batch_size]
    images, labels = data.get_batch(order)
    x = (images.astype(np.float32) / 255 - FASHION_MEAN) / FASHION_STD
    if (height, width) == (32, 32):
        x = T.Pad(2)(x)  # LeNet's convention: pad 28x28 to 32x32
    x = T.Resize((height, width))(x).astype(np.float32)
    x = np.repeat(x, channels, axis=1) if channels != 1 else x
    return [(x[i * batch_size:(i + 1) * batch_size], labels[i * batch_size:(i + 1) * batch_size]) for i in range(n)]


def classification_loss(model, output, target):
    output = output[0] if isinstance(output, tuple) else output  # GoogLeNet's aux heads: main logits only
    if hasattr(model, "loss"):
        return model.loss(output, target)
    return F.cross_entropy(output, target)


def deep_net(activation, depth=20, width=64, num_classes=10, side=28):
    """A deep MLP with one activation everywhere (the vanishing-gradient demonstration).

    Even with Glorot init a sigmoid layer passes back at most 1/4 of the
    gradient (sigma' <= 1/4), so norms shrink geometrically with depth; ReLU
    with He init keeps them level."""
    act = {"sigmoid": Sigmoid, "relu": ReLU, "tanh": Tanh}[activation]
    layers = [Linear(side * side, width), act()]
    for _ in range(depth - 2):
        layers += [Linear(width, width), act()]
    layers.append(Linear(width, num_classes))
    for layer in layers:  # each activation with its textbook init: He for ReLU, Glorot otherwise
        if isinstance(layer, Linear):
            if activation == "relu":
                init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                init.xavier_normal_(layer.weight)
            init.zeros_(layer.bias)
    net = DeepMLP(*layers)
    net.input_size = (1, side, side)
    return net


class DeepMLP(Sequential):
    def forward(self, x):
        return super().forward(x.reshape(x.shape[0], -1))


def build(name, num_classes=10):
    """A model by zoo name (or deep_<activation>), or a ready Module given as is (tests pass tiny ones)."""
    if isinstance(name, Module):
        return name
    if name.startswith("deep_"):
        return deep_net(name[len("deep_"):], num_classes=num_classes)
    return get_model(name, num_classes=num_classes)


def label(model):
    return model if isinstance(model, str) else type(model).__name__.lower()


def weighted_layers(model):
    """(name, module) of every Conv2d and Linear, in forward order of registration."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (Conv2d, Linear))]


def save_json(path, obj):
    path.write_text(json.dumps(obj, indent=1, default=float))


def save_figure(fig, out, png, json_name=None, data=None):
    """Lay out, write ``out/png`` (and the numbers to ``out/json_name``), and free the figure."""
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / png, dpi=110)
    plt().close(fig)
    if json_name is not None:
        save_json(out / json_name, data)


def plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


# --------------------------------------------------------------------------- gradient flow


def gradient_norms(model, x, y):
    """One forward/backward: per weighted layer, the L2 norm of dL/dW and of dL/d(output activation)."""
    layers = weighted_layers(model)
    act_norms, handles = {}, []

    def watch(name):
        def on_forward(module, inputs, output):
            if isinstance(output, Tensor) and output.requires_grad:
                output.register_hook(lambda g: act_norms.__setitem__(name, float(np.linalg.norm(
                    backend.to_numpy(g)))))
        return on_forward

    for name, module in layers:
        handles.append(module.register_forward_hook(watch(name)))
    model.zero_grad()
    loss = classification_loss(model, model(Tensor(x)), Tensor(y))
    loss.backward()
    for h in handles:
        h.remove()
    return [dict(layer=name, weight_grad=float(np.linalg.norm(backend.to_numpy(m.weight.grad))),
                 activation_grad=act_norms.get(name, float("nan"))) for name, m in layers], float(loss.item())


def gradflow(models, steps=20, batch_size=16, lr=0.01, side=None, data_dir=None, out=Path("runs/study"), seed=0):
    """Per-layer gradient norms at initialisation and after ``steps`` SGD steps, for each model."""
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
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, title in zip(axes, ("at_init", "after_steps"), ("at initialisation", f"after {steps} steps")):
        for name, r in results.items():
            ax.semilogy([rec["weight_grad"] for rec in r[key]], marker=".", label=name)
        ax.set(title=f"|dL/dW| per layer, {title}", xlabel="layer (input -> output)")
        ax.legend()
    axes[0].set_ylabel("gradient L2 norm")
    save_figure(fig, out, "gradflow.png", "gradflow.json", results)
    print(f"{'model':<16}{'layers':>7}{'first/last |dW| (init)':>26}{'first/last |dW| (trained)':>28}")
    for name, r in results.items():
        ratio = [r[k][0]["weight_grad"] / max(r[k][-1]["weight_grad"], 1e-30) for k in ("at_init", "after_steps")]
        print(f"{name:<16}{len(r['at_init']):>7}{ratio[0]:>26.3g}{ratio[1]:>28.3g}")
    return results


# --------------------------------------------------------------------------- joins


def join_gradients(model, x, y):
    """The gradient reaching each join along each path.

    Residual unit ``relu(F(x) + S(x))``: |dL/dx| arriving through the shortcut
    S and through the residual branch F (the unit's join hook gives each path
    its own view of x; a tensor hook on each view reads that path's share).
    Concatenation (a module whose children are parallel branches, e.g. an
    Inception module or a dense layer's new features vs the carried ones):
    |dL/d branch output| for each branch.
    """
    records, handles = [], []

    def on_join(name):
        def hook(unit, join):
            for path, tensor in (("residual", join.branch_in), ("shortcut", join.shortcut_in)):
                if tensor is not None and tensor.requires_grad:
                    tensor.register_hook(lambda g, path=path: records.append(dict(
                        join=name, kind="residual", path=path, norm=float(np.linalg.norm(backend.to_numpy(g))))))
        return hook

    for name, unit in model.named_modules():
        if isinstance(unit, ResidualUnit):
            handles.append(unit.register_join_hook(on_join(name)))
    for name, unit in model.named_modules():
        for branch_name, branch in _concat_branches(unit):
            def on_forward(module, inputs, output, name=name, branch_name=branch_name):
                if isinstance(output, Tensor) and output.requires_grad:
                    output.register_hook(lambda g: records.append(dict(
                        join=name, kind="concat", path=branch_name, channels=int(g.shape[1]),
                        norm=float(np.linalg.norm(backend.to_numpy(g))))))
            handles.append(branch.register_forward_hook(on_forward))
    try:
        classification_loss(model, model(Tensor(x)), Tensor(y)).backward()
    finally:
        for h in handles:
            h.remove()
    return records


def _concat_branches(module):
    """The concatenated parts of a module, by the zoo's names: Inception's branchN, a dense block's
    denselayerN (each adds its new features to the concatenation)."""
    return [(n, m) for n, m in module.named_children() if n.startswith(("branch", "denselayer"))]


def joins(models, batch_size=8, side=None, data_dir=None, out=Path("runs/study"), seed=0):
    results = {}
    for name in models:
        backend.manual_seed(seed)
        model = build(name)
        (x, y), = fashion_batches(model, 1, batch_size, data_dir, side, seed)
        results[label(name)] = join_gradients(model, x, y)
    pyplot = plt()
    fig, axes = pyplot.subplots(len(results), 1, figsize=(11, 3.6 * len(results)), squeeze=False)
    for ax, (name, records) in zip(axes[:, 0], results.items()):
        residual = [r for r in records if r["kind"] == "residual"]
        concat = [r for r in records if r["kind"] == "concat"]
        if residual:
            # hooks fire output -> input: reverse to network order
            units = list(dict.fromkeys(r["join"] for r in reversed(residual)))
            for path in ("shortcut", "residual"):
                norms = {r["join"]: r["norm"] for r in residual if r["path"] == path}
                ax.semilogy([norms.get(u, np.nan) for u in units], marker="o", label=f"through the {path}")
            ax.set(xlabel="residual unit (input -> output)", ylabel="|dL/dx| on that path",
                   title=f"{name}: gradient at residual joins")
            ax.legend()
        elif concat and all(r["path"].startswith("denselayer") for r in concat):
            # a dense block: one line per block, the gradient on each layer's new features
            for block in dict.fromkeys(r["join"] for r in reversed(concat)):
                norms = sorted((int(r["path"][len("denselayer"):]), r["norm"]) for r in concat if r["join"] == block)
                ax.semilogy(*zip(*norms), marker=".", label=block.split(".")[-1])
            ax.set(xlabel="dense layer l in its block (its features are concatenated for layers l+1, l+2, ...)",
                   ylabel="|dL/d new features|", title=f"{name}: gradient reaching each layer's new features")
            ax.legend(fontsize=7)
        elif concat:
            mods = list(dict.fromkeys(r["join"] for r in reversed(concat)))
            paths = sorted({r["path"] for r in concat})
            width = 0.8 / len(paths)
            for k, path in enumerate(paths):
                norms = {r["join"]: r["norm"] for r in concat if r["path"] == path}
                ax.bar(np.arange(len(mods)) + k * width, [norms.get(m, 0) for m in mods], width, label=path)
            ax.set(xticks=np.arange(len(mods)) + 0.4, xlabel="concat join", ylabel="|dL/d branch output|",
                   title=f"{name}: gradient split across concatenated branches")
            ax.set_xticklabels([m.split(".")[-1] for m in mods], rotation=45, fontsize=7)
            ax.legend(fontsize=7)
        else:
            ax.set_title(f"{name}: no residual or concat join found")
    save_figure(fig, out, "joins.png", "joins.json", results)
    for name, records in results.items():
        residual = [r for r in records if r["kind"] == "residual"]
        if residual:
            s = np.array([r["norm"] for r in residual if r["path"] == "shortcut"])
            f = np.array([r["norm"] for r in residual if r["path"] == "residual"])
            print(f"{name}: {len(s)} residual joins; median |grad| via shortcut {np.median(s):.3g}, "
                  f"via residual branch {np.median(f):.3g}")
        concat = [r for r in records if r["kind"] == "concat"]
        if concat and all(r["path"].startswith("denselayer") for r in concat):
            for block in dict.fromkeys(r["join"] for r in reversed(concat)):
                norms = sorted((int(r["path"][len("denselayer"):]), r["norm"]) for r in concat if r["join"] == block)
                print(f"{name} {block}: |grad| on layer 1's new features {norms[0][1]:.3g}, on layer "
                      f"{norms[-1][0]}'s {norms[-1][1]:.3g} (ratio {norms[0][1] / norms[-1][1]:.1f})")
        elif concat:
            total = {}
            for r in concat:
                total[r["path"]] = total.get(r["path"], 0.0) + r["norm"] ** 2
            share = {p: v / sum(total.values()) for p, v in total.items()}
            print(f"{name}: {len({r['join'] for r in concat})} concat joins; share of squared gradient per "
                  f"branch: " + ", ".join(f"{p} {v:.1%}" for p, v in sorted(share.items())))
    return results


# --------------------------------------------------------------------------- degradation


def degradation(models=("plain20", "plain56", "resnet20", "resnet56"), epochs=1, limit=None, batch_size=128,
                lr=0.1, test_limit=10000, log_every=20, data_dir=None, out=Path("runs/study"), seed=0):
    """He et al.'s Fig. 6 on Fashion-MNIST (32x32): plain vs residual nets, training error per iteration.

    The paper's recipe: SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1, no augmentation here.
    ``limit`` training images (None: all 60,000) are reshuffled each epoch. Every ``log_every`` iterations
    the mean training error of those minibatches is recorded (the paper's thin curves), and after each
    epoch the error on ``test_limit`` test images. Each net's curves are written to
    ``out/degradation/NAME.json`` as soon as it finishes, so a long run keeps what it has.
    """
    images, labels = _fashion_32(train=True, limit=limit, data_dir=data_dir)
    test_images, test_labels = _fashion_32(train=False, limit=test_limit, data_dir=data_dir)
    results = {}
    for name in models:
        results[name] = train_for_degradation(name, images, labels, test_images, test_labels, epochs,
                                              batch_size, lr, log_every, seed)
        save_json(_mkdir(out / "degradation") / f"{name}.json", results[name])
        last = results[name]
        print(f"{name}: final training error {100 * last['train_error'][-1]:.1f}% (last {log_every} iterations), "
              f"test error {100 * last['test_error'][-1]:.1f}%", flush=True)
    plot_degradation(results, out, len(images))
    return results


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fashion_32(train, limit, data_dir):
    """Fashion-MNIST normalised and padded to 32x32 (the CIFAR nets' input), one channel."""
    data = load_mnist("fashion-mnist", train=train, data_dir=data_dir, progress=False)
    count = len(data) if limit is None else min(limit, len(data))
    images, labels = data.get_batch(np.arange(count))
    x = T.Pad(2)((images.astype(np.float32) / 255 - FASHION_MEAN) / FASHION_STD).astype(np.float32)
    return x, np.asarray(labels)


def train_for_degradation(name, images, labels, test_images, test_labels, epochs, batch_size, lr, log_every,
                          seed):
    """Train one CIFAR-style net; return its training-error curve (per ``log_every`` iterations) and test error."""
    backend.manual_seed(seed)
    model = get_model(name, num_classes=10, in_channels=1)
    optimizer = SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    curve = {"iteration": [], "train_error": [], "loss": [], "epoch_end": [], "test_error": []}
    window_wrong = window_seen = window_loss = 0.0
    iteration = 0
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(images))
        for start in range(0, len(order) - batch_size + 1, batch_size):  # full batches only, as the paper
            batch = order[start:start + batch_size]
            output = model(Tensor(images[batch]))
            loss = F.cross_entropy(output, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            iteration += 1
            window_wrong += float((backend.to_numpy(output.data).argmax(1) != labels[batch]).sum())
            window_seen += len(batch)
            window_loss += float(loss.item()) * len(batch)
            if iteration % log_every == 0:
                curve["iteration"].append(iteration)
                curve["train_error"].append(window_wrong / window_seen)
                curve["loss"].append(window_loss / window_seen)
                window_wrong = window_seen = window_loss = 0.0
        curve["epoch_end"].append(iteration)
        curve["test_error"].append(evaluate_error(model, test_images, test_labels, batch_size))
    return curve


def evaluate_error(model, images, labels, batch_size):
    model.eval()
    wrong = 0
    with no_grad():
        for start in range(0, len(images), batch_size):
            output = model(Tensor(images[start:start + batch_size]))
            wrong += int((backend.to_numpy(output.data).argmax(1) != labels[start:start + batch_size]).sum())
    return wrong / len(images)


def plot_degradation(results, out, n_images):
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7, 4.5))
    for name, curve in results.items():
        ax.plot(curve["iteration"], [100 * e for e in curve["train_error"]],
                linestyle="--" if name.startswith("plain") else "-", label=name)
    ax.set(xlabel="iteration", ylabel="training error (%)",
           title=f"Degradation: Fashion-MNIST ({n_images} images, 32x32), dashed = plain")
    ax.legend()
    save_figure(fig, out, "degradation.png", "degradation.json", results)


# --------------------------------------------------------------------------- DeconvNet


def feature_stack(model):
    """The model's leading convolutional layers as a flat list (Conv2d, ReLU, MaxPool2d, LRN, avg pool).

    Works for models whose forward applies their children in registration
    order up to the first Linear (LeNet-5 modern, ZFNet/AlexNet ``features``).
    """
    source = model.features if hasattr(model, "features") else model
    stack = []
    for _, m in source.named_modules():
        if m is source or len(m._modules):
            continue
        if isinstance(m, Linear):
            break
        if isinstance(m, (Conv2d, ReLU, MaxPool2d, AvgPool2d, LocalResponseNorm)):
            stack.append(m)
    # a shared activation module (LeNet's self.act) is applied after every conv
    if not any(isinstance(m, ReLU) for m in stack) and hasattr(model, "act"):
        with_act = []
        for m in stack:
            with_act.append(m)
            if isinstance(m, Conv2d):
                with_act.append(model.act)
        stack = with_act
    return stack


def _pool_geometry(pool):
    k = pair(pool.kernel_size)
    s = pair(pool.stride if pool.stride is not None else pool.kernel_size)
    p = pair(pool.padding)
    return k, s, p


def max_pool_with_switches(x, pool):
    """Max pooling that also returns the switches (argmax within each window), on raw arrays."""
    k, s, p = _pool_geometry(pool)
    n, c, h, w = x.shape
    out = (conv_output_size(h, k[0], s[0], p[0], 1, pool.ceil_mode),
           conv_output_size(w, k[1], s[1], p[1], 1, pool.ceil_mode))
    col = im2col(x, k, s, p, (1, 1), out_size=out, pad_value=-np.inf)  # (C, kh, kw, N, oh, ow)
    flat = col.reshape(c, k[0] * k[1], n, *out)
    switches = flat.argmax(axis=1)
    return np.take_along_axis(flat, switches[:, None], axis=1)[:, 0].transpose(1, 0, 2, 3), switches


def max_unpool(y, switches, pool, x_shape):
    """Put each pooled value back at its switch position, zeros elsewhere (torch's max_unpool2d:
    where overlapping windows share a maximum, it is placed once, not summed)."""
    (kh, kw), (sy, sx), (ph, pw) = _pool_geometry(pool)
    c, n, oh, ow = switches.shape
    rows = np.arange(oh)[:, None] * sy - ph + switches // kw  # (C, N, oh, ow) input coordinates
    cols = np.arange(ow)[None, :] * sx - pw + switches % kw
    out = np.zeros(x_shape, dtype=y.dtype)
    channel, image = np.meshgrid(np.arange(c), np.arange(n), indexing="ij")
    out[image[..., None, None], channel[..., None, None], rows, cols] = y.transpose(1, 0, 2, 3)
    return out


def deconv_project(stack, x, layer_index, top=9):
    """Zeiler & Fergus's DeconvNet: for the ``top`` strongest activations of layer ``layer_index``,
    keep only that activation and map it back to pixels through (unpool with switches, ReLU,
    transposed conv with the same filters), layer by layer. Returns (projections, (image, channel)).
    """
    acts, switches = [x], []
    with no_grad():
        for m in stack[:layer_index + 1]:
            if isinstance(m, MaxPool2d):
                y, sw = max_pool_with_switches(acts[-1], m)
                switches.append(sw)
            else:
                y = m(Tensor(acts[-1])).data
                switches.append(None)
            acts.append(y)
    fmap = acts[-1]  # (N, C, h, w)
    strongest = fmap.reshape(fmap.shape[0], fmap.shape[1], -1).max(axis=2)  # (N, C)
    order = np.dstack(np.unravel_index(np.argsort(-strongest, axis=None)[:top], strongest.shape))[0]
    projections = []
    for image, channel in order:
        r = np.zeros_like(fmap[image:image + 1])
        spot = np.unravel_index(fmap[image, channel].argmax(), fmap.shape[2:])
        r[0, channel][spot] = fmap[image, channel][spot]
        for depth in range(layer_index, -1, -1):
            m, below = stack[depth], acts[depth][image:image + 1]
            if isinstance(m, MaxPool2d):
                r = max_unpool(r, switches[depth][:, image:image + 1], m, below.shape)
            elif isinstance(m, ReLU):
                r = np.maximum(r, 0)
            elif isinstance(m, Conv2d):  # the transposed filters, no bias (Sec. 2.1)
                full = F.conv_transpose2d(Tensor(r), m.weight.detach(), None, m.stride, m.padding,
                                          groups=m.groups, dilation=m.dilation).data
                r = full[:, :, :below.shape[2], :below.shape[3]]
                if r.shape[2:] != below.shape[2:]:  # stride remainder: pad back to the input size
                    r = np.pad(r, ((0, 0), (0, 0), (0, below.shape[2] - r.shape[2]),
                                   (0, below.shape[3] - r.shape[3])))
            # LRN and other normalisations are skipped on the way down, as in the paper
        projections.append(r[0])
    return np.stack(projections), [tuple(int(v) for v in o) for o in order]


def train_briefly(model, steps, batch_size, data_dir, seed, lr=0.05):
    backend.manual_seed(seed)
    optimizer = SGD(model.parameters(), lr=lr, momentum=0.9)
    for x, y in fashion_batches(model, steps, batch_size, data_dir, seed=seed):
        optimizer.zero_grad()
        classification_loss(model, model(Tensor(x)), Tensor(y)).backward()
        optimizer.step()
    return model


def load_or_train(name, weights, steps, batch_size, data_dir, seed, **options):
    backend.manual_seed(seed)
    model = name if isinstance(name, Module) else get_model(name, num_classes=10, **options)
    if weights:
        model.load_state_dict(load(weights))
    elif steps:
        train_briefly(model, steps, batch_size, data_dir, seed)
    return model.eval()


def grid(images, columns, out, png, title, cmap="gray"):
    pyplot = plt()
    rows = -(-len(images) // columns)
    fig, axes = pyplot.subplots(rows, columns, figsize=(1.4 * columns, 1.5 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title_text, image, *tile_cmap) in zip(axes.flat, images):
        tile_cmap = tile_cmap[0] if tile_cmap else cmap
        image = np.asarray(image, dtype=np.float64)
        if image.ndim == 3 and image.shape[0] == 3:
            image = image.transpose(1, 2, 0)
            image = (image - image.min()) / (np.ptp(image) + 1e-12)
        elif image.ndim == 3:
            image = image.mean(axis=0)
        limit = np.abs(image).max() or 1.0  # signed maps (filters, projections): zero in the middle
        ax.imshow(image, cmap=tile_cmap, **(dict(vmin=-limit, vmax=limit) if tile_cmap == "RdBu_r" else {}))
        ax.set_title(title_text, fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, out, png)


def deconv(model_name="lenet", weights=None, layer=None, steps=200, batch_size=32, images=64, top=9,
           data_dir=None, out=Path("runs/study"), seed=0, **options):
    model = load_or_train(model_name, weights, steps, batch_size, data_dir, seed, **options)
    stack = feature_stack(model)
    conv_indices = [i for i, m in enumerate(stack) if isinstance(m, Conv2d)]
    layer = min(2, len(conv_indices)) if layer is None else layer
    if not 1 <= layer <= len(conv_indices):
        raise ValueError(f"--layer must be between 1 and {len(conv_indices)} (the conv layers of {label(model_name)})")
    # project from the layer's rectified (and pooled, if a pool follows) output
    index = conv_indices[layer - 1]
    while index + 1 < len(stack) and isinstance(stack[index + 1], (ReLU, MaxPool2d)):
        index += 1
    (x, _), = fashion_batches(model, 1, images, data_dir, seed=seed + 1, train=False)
    projections, order = deconv_project(stack, x, index, top)
    tiles = []
    for (image, channel), projection in zip(order, projections):
        tiles += [(f"img {image}", x[image], "gray"), (f"ch {channel} proj", projection)]
    grid(tiles, 6, out, "deconv.png", f"{label(model_name)}: DeconvNet projections of conv layer {layer}'s "
         f"top-{top} activations", cmap="RdBu_r")
    save_json(out / "deconv.json", dict(model=label(model_name), layer=layer, activations=order,
                                        projection_abs_sum=[float(np.abs(p).sum()) for p in projections]))
    print(f"{label(model_name)} conv{layer}: projected {len(order)} activations (image, channel): {order}")
    return projections, order


# --------------------------------------------------------------------------- filters, feature maps, SE


def features(model_name="lenet", weights=None, layer=1, image=0, steps=200, batch_size=32, data_dir=None,
             out=Path("runs/study"), seed=0, **options):
    model = load_or_train(model_name, weights, steps, batch_size, data_dir, seed, **options)
    convs = [m for _, m in weighted_layers(model) if isinstance(m, Conv2d)]
    first = backend.to_numpy(convs[0].weight.data)
    filters = [(f"filter {i}", f) for i, f in enumerate(first)]
    grid(filters, 8, out, "filters.png", f"{label(model_name)}: first-layer filters {first.shape[1:]}", cmap="RdBu_r")
    captured = {}
    handle = convs[layer - 1].register_forward_hook(lambda m, i, o: captured.setdefault("maps", o.data))
    (x, y), = fashion_batches(model, 1, image + 1, data_dir, seed=seed + 1, train=False)
    with no_grad():
        model(Tensor(x[image:image + 1]))
    handle.remove()
    maps = backend.to_numpy(captured["maps"])[0]
    grid([("input", x[image], "gray")] + [(f"map {i}", m) for i, m in enumerate(maps)], 8, out, "feature_maps.png",
         f"{label(model_name)}: conv layer {layer} feature maps (class {int(y[image])})", cmap="viridis")
    stats = dict(filters=list(first.shape), maps=list(maps.shape), map_mean=[float(m.mean()) for m in maps])
    save_json(out / "features.json", stats)
    print(f"{label(model_name)}: {first.shape[0]} first-layer filters {first.shape[1:]}, conv{layer} gives "
          f"{maps.shape[0]} maps of {maps.shape[1:]}")
    return stats


def se_weights(model_name="se_resnet20", weights=None, steps=100, batch_size=32, images=500, data_dir=None,
               out=Path("runs/study"), seed=0, **options):
    """Mean SE excitation (channel gate) per class for every SE block: the class-specific channel use
    of Hu et al. Fig. 6."""
    from .models.senet import SqueezeExcitation
    model = load_or_train(model_name, weights, steps, batch_size, data_dir, seed, **options)
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, SqueezeExcitation)]
    if not blocks:
        raise ValueError(f"{label(model_name)} has no SE blocks; try se_resnet20 or an efficientnet")
    gates, handles = {}, []
    for name, block in blocks:
        handles.append(block.scale_activation.register_forward_hook(
            lambda m, i, o, name=name: gates.__setitem__(name, backend.to_numpy(o.data)[:, :, 0, 0])))
    (x, y), = fashion_batches(model, 1, images, data_dir, seed=seed + 1, train=False)
    with no_grad():
        model(Tensor(x))
    for h in handles:
        h.remove()
    classes = np.unique(y)
    per_class = {name: np.stack([gates[name][y == c].mean(axis=0) for c in classes]) for name, _ in blocks}
    pyplot = plt()
    shown = [blocks[0][0], blocks[len(blocks) // 2][0], blocks[-1][0]]
    fig, axes = pyplot.subplots(len(shown), 1, figsize=(10, 2.6 * len(shown)), squeeze=False)
    for ax, name in zip(axes[:, 0], shown):
        image = ax.imshow(per_class[name], aspect="auto", cmap="magma", vmin=0, vmax=1)
        ax.set(title=f"{name}: mean excitation per class", xlabel="channel", ylabel="class", yticks=classes)
        fig.colorbar(image, ax=ax)
    spread = {name: float(v.std(axis=0).mean()) for name, v in per_class.items()}
    save_figure(fig, out, "se_weights.png", "se_weights.json",
                dict(per_class={k: v.tolist() for k, v in per_class.items()}, class_spread=spread))
    print(f"{'SE block':<32}{'channels':>9}{'mean gate':>11}{'spread across classes':>23}")
    for name, _ in blocks:
        print(f"{name:<32}{per_class[name].shape[1]:>9}{per_class[name].mean():>11.3f}{spread[name]:>23.4f}")
    return per_class


# --------------------------------------------------------------------------- model cost


def cost(models=None, out=Path("runs/study")):
    """Parameters vs multiply-adds at each model's native input, for the whole zoo."""
    models = models or [m for m in list_models() if not m.startswith("plain")]  # plain twins cost the same
    rows = []
    for name in models:
        model = get_model(name)
        s = summary(model, model.input_size, print_table=False)
        rows.append(dict(model=name, params=int(s.total_params), macs=int(s.total_macs),
                         input=list(model.input_size)))
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(9, 6))
    for r in rows:
        ax.scatter(r["macs"] / 1e9, r["params"] / 1e6, s=18)
        ax.annotate(r["model"], (r["macs"] / 1e9, r["params"] / 1e6), fontsize=6, xytext=(3, 2),
                    textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="multiply-adds (G) at native input", ylabel="parameters (M)",
           title="The zoo's trade-off: parameters vs multiply-adds")
    save_figure(fig, out, "cost.png", "cost.json", rows)
    print(f"{'model':<18}{'input':>14}{'params':>14}{'MMACs':>11}")
    for r in rows:
        print(f"{r['model']:<18}{'x'.join(map(str, r['input'])):>14}{r['params']:>14,}{r['macs'] / 1e6:>11.1f}")
    return rows


# --------------------------------------------------------------------------- command line


def build_parser():
    p = argparse.ArgumentParser(prog="python -m scratchnet.study", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/study", help="folder for the PNGs and JSON (default runs/study)")
    p.add_argument("--data-dir", help="folder holding fashion-mnist/ (else $SCRATCHNET_DATA, the cache, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads for BLAS and the Numba kernels (sn.set_num_threads)")
    sub = p.add_subparsers(dest="tool", required=True)
    g = sub.add_parser("gradflow", help="per-layer gradient norms at init and after N steps")
    g.add_argument("models", nargs="+", help="zoo names, or deep_sigmoid / deep_relu / deep_tanh (20-layer MLPs)")
    g.add_argument("--steps", type=int, default=20)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--side", type=int, help="input side (default: the model's native input)")
    j = sub.add_parser("joins", help="gradient through shortcut vs residual branch, and across concat branches")
    j.add_argument("models", nargs="+")
    j.add_argument("--batch-size", type=int, default=8)
    j.add_argument("--side", type=int)
    d = sub.add_parser("degradation", help="plain vs residual nets: training error per iteration (He et al. Fig. 6)")
    d.add_argument("--models", nargs="+", default=["plain20", "plain56", "resnet20", "resnet56"])
    d.add_argument("--epochs", type=int, default=1)
    d.add_argument("--limit", type=int, help="training images (default: all 60,000)")
    d.add_argument("--test-limit", type=int, default=10000, help="test images for the test error")
    d.add_argument("--batch-size", type=int, default=128)
    d.add_argument("--lr", type=float, default=0.1)
    d.add_argument("--log-every", type=int, default=20, help="iterations per point of the training-error curve")
    for name, help_text in (("deconv", "DeconvNet projections of a layer's strongest activations"),
                            ("features", "first-layer filters and a layer's feature maps"),
                            ("se", "SE blocks' channel weights per class")):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--model", default="se_resnet20" if name == "se" else "lenet")
        s.add_argument("--weights", help=".npz weights (e.g. best.npz from scratchnet.train); else train briefly")
        s.add_argument("--steps", type=int, default=100 if name == "se" else 200,
                       help="SGD steps of the brief training when no --weights")
        s.add_argument("--batch-size", type=int, default=32)
        if name != "se":
            s.add_argument("--layer", type=int, default=None if name == "deconv" else 1, help="conv layer (1-based)")
    c = sub.add_parser("cost", help="parameters vs multiply-adds for the zoo")
    c.add_argument("--models", nargs="*")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    common = dict(data_dir=args.data_dir, out=out, seed=args.seed)
    try:
        if args.threads is not None:
            backend.set_num_threads(args.threads)
        if args.tool == "gradflow":
            gradflow(args.models, args.steps, args.batch_size, args.lr, args.side, **common)
        elif args.tool == "joins":
            joins(args.models, args.batch_size, args.side, **common)
        elif args.tool == "degradation":
            degradation(args.models, args.epochs, args.limit, args.batch_size, args.lr, args.test_limit,
                        args.log_every, **common)
        elif args.tool == "deconv":
            deconv(args.model, args.weights, args.layer, args.steps, args.batch_size, **common)
        elif args.tool == "features":
            features(args.model, args.weights, args.layer, steps=args.steps, batch_size=args.batch_size, **common)
        elif args.tool == "se":
            se_weights(args.model, args.weights, args.steps, args.batch_size, **common)
        else:
            cost(args.models, out)
    except (DatasetError, ValueError, backend.DeviceError) as exc:
        print(f"study {args.tool}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
