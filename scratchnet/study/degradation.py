"""Degradation (He et al. 2016, Sec. 4.1, Fig. 6): deeper plain nets train worse, their residual twins
do not. Plain20/56 and resnet20/56 trained on 32x32 Fashion-MNIST with the paper's recipe; training error
per iteration and test error per epoch."""
import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, no_grad
from ..data import transforms as T
from ..nn.serialization import save
from ..optim import SGD
from .common import DEFAULT_OUT, cifar_net, fashion_images, plt, save_figure, save_json

MODELS = ("plain20", "plain56", "resnet20", "resnet56")


def fashion_32(train, limit, data_dir):
    """Fashion-MNIST normalised and padded to 32x32 (the CIFAR nets' input), one channel."""
    x, labels = fashion_images(train, data_dir, None if limit is None else lambda count: np.arange(min(limit, count)))
    return T.Pad(2)(x).astype(np.float32), labels


def train_for_degradation(name, images, labels, test_images, test_labels, epochs, batch_size, lr, log_every,
                          seed, model_options=None):
    """Train one CIFAR-style net; return its training-error curve (per ``log_every`` iterations and test error)
    and the trained net. ``model_options`` go to the constructor (the claims' narrow nets)."""
    backend.manual_seed(seed)
    model = cifar_net(name, "degradation", in_channels=images.shape[1], **(model_options or {}))
    optimizer = SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    curve = {"iteration": [], "train_error": [], "loss": [], "epoch_end": [], "test_error": []}
    window_wrong = window_seen = window_loss = 0.0
    iteration, per_epoch = 0, len(images) // batch_size  # full batches only, as the paper
    total = max(1, round(epochs * per_epoch))  # a fractional epoch stops part-way through the last one
    while iteration < total:
        model.train()
        order = rng.permutation(len(images))
        for start in range(0, min(per_epoch, total - iteration) * batch_size, batch_size):
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
    return curve, model


def evaluate_error(model, images, labels, batch_size):
    model.eval()
    wrong = 0
    with no_grad():
        for start in range(0, len(images), batch_size):
            output = model(Tensor(images[start:start + batch_size]))
            wrong += int((backend.to_numpy(output.data).argmax(1) != labels[start:start + batch_size]).sum())
    return wrong / len(images)


def measure(models=MODELS, epochs=1, limit=None, batch_size=128, lr=0.1, test_limit=10000, log_every=20,
            data_dir=None, seed=0, save_dir=None):
    """{model: curve}, trained one after the other; with ``save_dir`` each net's curve and trained weights
    are written to ``save_dir/NAME.json`` and ``NAME.npz`` as soon as it finishes, so a long run keeps what
    it has (and the landscape study can be drawn around the weights: ``--weights-dir save_dir``)."""
    images, labels = fashion_32(train=True, limit=limit, data_dir=data_dir)
    if len(images) < batch_size:  # no full batch: an epoch would have no iteration
        raise ValueError(f"--limit {len(images)} gives less than one batch (--batch-size {batch_size}), and the study "
                         f"trains on full batches only, as the paper: pass --batch-size {len(images)} or less, or "
                         f"a larger --limit")
    test_images, test_labels = fashion_32(train=False, limit=test_limit, data_dir=data_dir)
    results = {}
    for name in models:
        curve, model = train_for_degradation(name, images, labels, test_images, test_labels, epochs, batch_size,
                                             lr, log_every, seed)
        results[name] = curve
        if save_dir is not None:
            save_json(save_dir / f"{name}.json", curve)
            save(model.state_dict(), save_dir / f"{name}.npz")
        print(f"{name}: final training error {100 * curve['train_error'][-1]:.1f}% (last {log_every} iterations), "
              f"test error {100 * curve['test_error'][-1]:.1f}%", flush=True)
    return results, len(images)


def plot(results, n_images):
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7, 4.5))
    for name, curve in results.items():
        ax.plot(curve["iteration"], [100 * e for e in curve["train_error"]],
                linestyle="--" if name.startswith("plain") else "-", label=name)
    ax.set(xlabel="iteration", ylabel="training error (%)",
           title=f"Degradation: Fashion-MNIST ({n_images} images, 32x32), dashed = plain")
    ax.legend()
    return fig


def degradation(models=MODELS, epochs=1, limit=None, batch_size=128, lr=0.1, test_limit=10000, log_every=20,
                data_dir=None, out=DEFAULT_OUT, seed=0):
    """He et al.'s Fig. 6 on Fashion-MNIST (32x32): plain vs residual nets, training error per iteration.

    The paper's recipe: SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1, no augmentation here.
    ``limit`` training images (None: all 60,000) are reshuffled each epoch; ``epochs`` may be fractional
    (0.5: half an epoch's iterations, on a shuffle of all the images). Every ``log_every`` iterations
    the mean training error of those minibatches is recorded (the paper's thin curves), and after each
    epoch the error on ``test_limit`` test images. Writes ``out/degradation/NAME.json`` and the trained
    weights ``NAME.npz`` per net as it finishes, then degradation.png and degradation.json (all nets) to
    ``out``.
    """
    results, n_images = measure(models, epochs, limit, batch_size, lr, test_limit, log_every, data_dir, seed,
                                save_dir=out / "degradation")
    save_figure(plot(results, n_images), out, "degradation.png", "degradation.json", results)
    return results
