"""What the training claims share: the data (Fashion-MNIST padded to 32x32, or CIFAR-10 where its files are
here), SGD runs that record their training curve, evaluation, the arms-by-seeds loop and the figure.

Every run is seeded: the seed fixes the initialisation (``sn.manual_seed`` before the model is built), the
order of the minibatches and the augmentation, so two arms trained with one seed see the same batches, and
start from the same weights wherever their shapes agree (the arms of a claim are paired by seed).
"""
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ... import backend
from ...autograd import Tensor, no_grad
from ...data import DatasetError, load_cifar10
from ...data import transforms as T
from ...models.alexnet import AlexNet
from ...nn import Conv2d, Linear, init
from ...optim import SGD
from ..common import fashion_images, plt, save_figure
from .core import NOT_SUPPORTED, SUPPORTED, Outcome, arm_row, better_everywhere, spread

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass
class Data:
    """A dataset as normalised float32 arrays (N, C, 32, 32) and integer labels."""
    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def channels(self):
        return self.train_x.shape[1]


def cifar_missing(data_dir=None):
    """None when CIFAR-10's files are here, else one sentence saying they are not (nothing is downloaded)."""
    try:
        load_cifar10(False, data_dir, download=False, progress=False)
    except DatasetError as exc:
        found = str(exc).split(". ")[0]  # "cifar-10: cifar-10-batches-py/ ... not found"
        return f"CIFAR-10 is not here ({found}; --data-dir or $SCRATCHNET_DATA), so its branch is skipped"
    return None


@lru_cache(maxsize=4)
def load(dataset, train_images, test_images, data_dir=None):
    """The first ``train_images`` training and ``test_images`` test images of ``dataset``, 32x32, normalised."""
    if dataset == "fashion-mnist":
        def first(n):
            return lambda count: np.arange(min(n, count))
        train_x, train_y = fashion_images(True, data_dir, first(train_images))
        test_x, test_y = fashion_images(False, data_dir, first(test_images))
        pad = T.Pad(2)  # 28x28 centred in 32x32, LeNet's convention and the CIFAR nets' size
        return Data(dataset, pad(train_x), train_y, pad(test_x), test_y)
    if dataset == "cifar10":
        normalize = T.Compose([T.ToFloat(np.float32), T.Normalize(CIFAR_MEAN, CIFAR_STD)])
        train, test = (load_cifar10(split, data_dir, download=False, progress=False) for split in (True, False))
        return Data(dataset, normalize(train.inputs[:train_images]), np.asarray(train.targets[:train_images]),
                    normalize(test.inputs[:test_images]), np.asarray(test.targets[:test_images]))
    raise ValueError(f"unknown dataset {dataset!r}; the claims train on fashion-mnist or cifar10")


# A CIFAR-sized AlexNet for the Sec. 3-4 ablations: AlexNet's layer pattern (a large strided first conv, LRN
# and overlapping pooling after conv1 and conv2, three 3x3 convs, a pool, two hidden FC layers with dropout) with
# narrow layers, on 32x32 (or 28x28) images; built by AlexNet's own class, so its switches are the real ones
CIFAR_ALEXNET = (
    (24, 5, 2, 2, False, ("lrn", "pool")),
    (48, 5, 1, 2, False, ("lrn", "pool")),
    (48, 3, 1, 1, False, ()),
    (48, 3, 1, 1, False, ()),
    (32, 3, 1, 1, False, ("pool",)),
)


def cifar_alexnet(in_channels, image_size=32, hidden=128, **switches):
    """AlexNet's class on the CIFAR-sized table with He initialisation (normal, fan_in, zero biases): neither the
    paper's N(0, 0.01) with biases of 1 nor torch's layer defaults leave chance level within a CPU budget on this
    narrow net (150 steps: 89% training error with torch's defaults, 46-63% with He's); ``switches``: lrn,
    overlapping_pool, dropout."""
    model = AlexNet(CIFAR_ALEXNET, 10, in_channels=in_channels, image_size=image_size, groups=1, hidden=hidden,
                    init_weights="torch", **switches)
    for layer in model.modules():
        if isinstance(layer, (Conv2d, Linear)):
            init.kaiming_normal_(layer.weight, nonlinearity="relu")
            init.zeros_(layer.bias)
    return model


def resized(side):
    """Batches resized to side x side (bilinear), e.g. Fashion-MNIST's 32x32 to a GoogLeNet's 80x80."""
    resize = T.Resize(side)
    return lambda x, rng=None: resize(x).astype(np.float32)


# --------------------------------------------------------------------------- one run


def fit(model, data, steps, batch_size, lr, seed, momentum=0.9, weight_decay=0.0, train_images=None,
        augment=None, prepare=None, log_every=10, after_backward=None):
    """``steps`` SGD steps on minibatches of the first ``train_images`` training images (reshuffled every
    epoch), through the model's own loss (``model.loss``: GoogLeNet's auxiliary heads, LeNet's RBF criterion).

    Returns the curve: every ``log_every`` steps the mean training loss and error of those minibatches
    (``step``, ``loss``, ``error``), and ``diverged`` (the step where the loss stopped being finite, or None).
    ``augment(x, rng)`` draws a random transform of each batch; ``prepare(x)`` fits a batch to the model (a
    resize). ``after_backward(model, step)`` runs after each backward, before the update (to read gradients).
    """
    rng = np.random.default_rng(seed)
    n = len(data.train_x) if train_images is None else min(train_images, len(data.train_x))
    optimizer = SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    curve = {"step": [], "loss": [], "error": [], "diverged": None}
    order, position = rng.permutation(n), 0
    window_loss = window_wrong = window_seen = 0.0
    model.train()
    for step in range(1, steps + 1):
        if position + batch_size > n:  # a new epoch: reshuffle
            order, position = rng.permutation(n), 0
        batch = order[position:position + batch_size]
        position += batch_size
        x, y = data.train_x[batch], data.train_y[batch]
        if augment is not None:
            x = augment(x, rng)
        if prepare is not None:
            x = prepare(x)
        output = model(Tensor(np.ascontiguousarray(x)))
        loss = model.loss(output, Tensor(y))
        value = float(loss.item())
        if not math.isfinite(value):
            curve["diverged"] = step
            break
        scores = model.scores(model.main_output(output))
        window_wrong += float((backend.to_numpy(scores.data).argmax(1) != y).sum())
        window_loss += value * len(y)
        window_seen += len(y)
        optimizer.zero_grad()
        loss.backward()
        if after_backward is not None:
            after_backward(model, step)
        optimizer.step()
        if step % log_every == 0:
            curve["step"].append(step)
            curve["loss"].append(window_loss / window_seen)
            curve["error"].append(window_wrong / window_seen)
            window_loss = window_wrong = window_seen = 0.0
    return curve


def evaluate(model, x, y, batch_size=500, crops=None, prepare=None):
    """{"loss", "error"} of ``model`` in eval mode on (x, y); ``prepare(x)`` fits each batch to the model;
    ``crops(x)`` may turn it into patches (N, k, C, H, W) whose softmax outputs are averaged (AlexNet's
    ten-patch test)."""
    model.eval()
    loss_sum = wrong = 0.0
    with no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            if prepare is not None:
                xb = prepare(xb)
            if crops is not None:
                patches = crops(xb)
                n, k = patches.shape[:2]
                out = model.main_output(model(Tensor(np.ascontiguousarray(patches.reshape(n * k, *patches.shape[2:])))))
                scores = backend.to_numpy(model.scores(out).data).astype(np.float64).reshape(n, k, -1)
                probs = np.exp(scores - scores.max(-1, keepdims=True))
                probs = (probs / probs.sum(-1, keepdims=True)).mean(1)
                loss_sum += float(-np.log(np.maximum(probs[np.arange(n), yb], 1e-300)).sum())
                wrong += float((probs.argmax(1) != yb).sum())
                continue
            out = model.main_output(model(Tensor(np.ascontiguousarray(xb))))
            loss_sum += float(model.loss(out, Tensor(yb)).item()) * len(yb)
            wrong += float((backend.to_numpy(model.scores(out).data).argmax(1) != yb).sum())
    return {"loss": loss_sum / len(x), "error": wrong / len(x)}


def built(build, seed):
    """``build()`` under ``seed``: the initialisation the seed fixes."""
    backend.manual_seed(seed)
    return build()


def steps_to(curve, threshold):
    """The first logged step whose window's training error is at or below ``threshold`` (None: never)."""
    return next((step for step, error in zip(curve["step"], curve["error"]) if error <= threshold), None)


def final_error(curve, windows=3):
    """The training error over the last ``windows`` logged windows (the end of the run)."""
    return float(np.mean(curve["error"][-windows:])) if curve["error"] else float("nan")


# --------------------------------------------------------------------------- arms x seeds, and the figure


def run_arms(arms, seeds, train):
    """{arm: [train(arm, options, seed) for each seed]} for ``arms`` = {name: options}; ``train`` returns a
    dict per run (its curve and numbers)."""
    runs = {}
    for name, options in arms.items():
        runs[name] = []
        for seed in seeds:
            runs[name].append(train(name, options, seed))
            last = runs[name][-1]
            summary = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float))
            print(f"  {name} seed {seed}: {summary}", flush=True)
    return runs


def plot_curves(runs, context, title, key="error", ylabel="training error (%)", scale=100.0):
    """Each arm's training curve: the mean over seeds, the band between the lowest and the highest seed."""
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7, 4.2))
    for name, arm_runs in runs.items():
        curves = [r["curve"] for r in arm_runs if r["curve"]["step"]]
        if not curves:
            continue
        length = min(len(c["step"]) for c in curves)
        steps = curves[0]["step"][:length]
        values = np.array([c[key][:length] for c in curves]) * scale
        line, = ax.plot(steps, values.mean(0), label=f"{name} ({len(curves)} seeds)")
        ax.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    ax.set(xlabel="SGD step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    path = context.figure_path()
    save_figure(fig, path.parent, path.name)
    return str(path.relative_to(context.out)) if path.is_relative_to(context.out) else str(path)


# --------------------------------------------------------------------------- the outcome of a comparison


def data_for(context):
    """The claim's dataset cut to its budget's ``train_images`` and ``test_images``."""
    budget = context.budget
    return load(context.dataset, budget["train_images"], budget["test_images"], context.data_dir)


def summarise(runs, metrics):
    """One row per (metric, arm): the per-seed values, their mean and sd."""
    return [arm_row(arm, [run[metric] for run in arm_runs], metric=metric)
            for metric in metrics for arm, arm_runs in runs.items()]


def comparison(context, runs, metric, better, worse, label, metrics, title, lower_is_better=True, scale=100.0,
               unit="%", extra=""):
    """The outcome of a two-arm claim: ``better`` should beat ``worse`` on ``metric`` (the shared rule,
    ``better_everywhere``); the table shows every arm's mean and sd, the rows every metric's per-seed values."""
    values = {arm: [run[metric] for run in arm_runs] for arm, arm_runs in runs.items()}
    holds, detail = better_everywhere(values[better], values[worse], lower_is_better)
    digits = 1 if unit == "%" else 3  # percentages to a tenth, losses to three decimals
    measured = f"{label}: " + ", ".join(f"{arm} {spread(v, scale, digits, unit)}" for arm, v in values.items())
    return Outcome(measured=measured + extra, verdict=SUPPORTED if holds else NOT_SUPPORTED,
                   rows=summarise(runs, metrics), figure=plot_curves(runs, context, title), notes=detail)
