"""What every study shares: Fashion-MNIST batches shaped for a model, building and briefly training a net
(or loading weights: a file, or ImageNet's pretrained ones with the sample photographs as input), the
loss of a classifier's output, and writing JSON and figures."""
import json
from pathlib import Path

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from ..data import imagenet_classes, load_mnist, read_image, sample_images
from ..data import transforms as T
from ..models import get_model
from ..models.registry import WEIGHTS_FILE_SUFFIXES
from ..nn import Conv2d, Linear, Module, ReLU, Sequential, Sigmoid, Tanh, init
from ..nn.serialization import load
from ..optim import SGD

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
DEFAULT_OUT = Path("runs/study")


# --------------------------------------------------------------------------- data


def fashion_images(train=True, data_dir=None, pick=None):
    """Fashion-MNIST images (float32, N x 1 x 28 x 28, normalised by the dataset's mean and std) and
    labels; ``pick(count)`` chooses which of the ``count`` images, in which order (default: all)."""
    data = load_mnist("fashion-mnist", train=train, data_dir=data_dir, progress=False)
    images, labels = data.get_batch(np.arange(len(data)) if pick is None else pick(len(data)))
    return (images.astype(np.float32) / 255 - FASHION_MEAN) / FASHION_STD, np.asarray(labels)


def fashion_batches(model, n, batch_size, data_dir=None, side=None, seed=0, train=True):
    """``n`` batches of Fashion-MNIST shaped for ``model`` (resized to its input, channels repeated)."""
    channels, height, width = model.input_size
    if side is not None:
        height = width = side
    x, labels = fashion_images(train, data_dir, lambda count: np.random.default_rng(seed).permutation(count)[
        :n * batch_size])
    if (height, width) == (32, 32):
        x = T.Pad(2)(x)  # LeNet's convention: pad 28x28 to 32x32
    x = T.Resize((height, width))(x).astype(np.float32)
    x = np.repeat(x, channels, axis=1) if channels != 1 else x
    return [(x[i * batch_size:(i + 1) * batch_size], labels[i * batch_size:(i + 1) * batch_size]) for i in range(n)]


def classification_loss(model, output, target):
    """The loss of the main head alone (GoogLeNet's auxiliary heads left out), by the output contract
    every Module keeps (``nn.Module.main_output`` / ``loss``)."""
    return model.loss(model.main_output(output), target)


# --------------------------------------------------------------------------- nets


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


def cifar_net(name, study, in_channels=1, **options):
    """The 32x32 one-channel, 10-class CIFAR-style net ``name`` for Fashion-MNIST: the construction the
    degradation and landscape studies share, so one's trained weights load into the other (``options``, e.g.
    narrower ``widths``, for the claims that train it within a CPU budget)."""
    try:
        return get_model(name, num_classes=10, in_channels=in_channels, **options)
    except TypeError:
        raise ValueError(f"{study} trains 32x32 one-channel nets (plainN / resnetN, N = 20, 32, 44, 56, 110); "
                         f"{name} takes no in_channels") from None


def label(model):
    return model if isinstance(model, str) else type(model).__name__.lower()


def weighted_layers(model):
    """(name, module) of every Conv2d and Linear, in forward order of registration."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (Conv2d, Linear))]


def train_briefly(model, steps, batch_size, data_dir, seed, lr=0.05, side=None):
    """``steps`` SGD steps (momentum 0.9) on Fashion-MNIST, in train mode; returns the per-step losses."""
    backend.manual_seed(seed)
    model.train()
    optimizer = SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for x, y in fashion_batches(model, steps, batch_size, data_dir, side=side, seed=seed):
        optimizer.zero_grad()
        loss = classification_loss(model, model(Tensor(x)), Tensor(y))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    return losses


def is_weights_file(weights):
    return str(weights).endswith(WEIGHTS_FILE_SUFFIXES) or Path(weights).is_file()


def classes_in(state, name, **options):
    """How many classes the weights in ``state`` were trained for: read from the shape of the model's
    last layer there (10 if the file fits a 10-class ``name`` as it is)."""
    model = get_model(name, num_classes=10, **options)
    mismatched = [k for k, v in model.state_dict().items() if k in state and np.shape(state[k]) != v.shape]
    last = list(model.state_dict())[-2:]  # the output layer's weight and bias, in registration order
    if mismatched and set(mismatched) <= set(last) and np.ndim(state.get(last[-1])) == 1:
        return int(np.shape(state[last[-1]])[0])
    return 10


def _with_weights(name, weights, **options):
    if isinstance(name, Module):
        if weights:
            name.load_state_dict(load(weights))
        return name
    if not is_weights_file(weights):
        return get_model(name, weights=weights, **options)
    state = load(weights)
    model = get_model(name, num_classes=classes_in(state, name, **options), **options)
    model.load_state_dict(state)
    return model


def load_or_train(name, weights, steps, batch_size, data_dir, seed, **options):
    """The model to study, in eval mode: ``weights`` "DEFAULT" (or a torchvision weight name) loads ImageNet's
    pretrained weights; a file (.npz, .safetensors, .pth) loads it, with as many classes as it has; no
    weights: a 10-class net trained ``steps`` SGD steps on Fashion-MNIST."""
    backend.manual_seed(seed)
    if not weights and not isinstance(name, Module):
        model = get_model(name, num_classes=10, **options)
        if steps:
            train_briefly(model, steps, batch_size, data_dir, seed)
        return model.eval()
    try:
        model = _with_weights(name, weights, **options)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # missing, damaged, another model's, offline
        raise ValueError(f"--weights {weights}: {exc}") from None
    return model.eval()


def is_imagenet_model(model):
    """Trained on ImageNet (1000 classes, RGB): the studies then look at photographs, not Fashion-MNIST."""
    if getattr(model, "pretrained", None) is not None:
        return True
    outputs = [m for m in model.modules() if isinstance(m, Linear)]
    return model.input_size[0] == 3 and bool(outputs) and outputs[-1].out_features == 1000


def photo_batch(model):
    """The sample photographs (public domain / CC0) preprocessed for an ImageNet model, and the class each
    is predicted as (there is no ground truth): (x (N, 3, crop, crop) float32, predicted classes, names)."""
    known = getattr(model, "pretrained", None)
    crop = model.input_size[-1]  # 224, or the paper AlexNet's 227: resized in torchvision's 256/224 proportion
    transform = T.imagenet_eval(known.resize_size, known.crop_size, known.interpolation) if known else \
        T.imagenet_eval(round(crop * 256 / 224), crop, "bilinear")
    x = np.concatenate([transform(read_image(path)) for path in sample_images()]).astype(np.float32)
    with no_grad():
        predicted = model.scores(model(Tensor(x))).numpy().argmax(1)
    names = imagenet_classes()
    return x, predicted, [f"{path.stem}: {names[c]}" for path, c in zip(sample_images(), predicted)]


def class_name(model, index):
    """ImageNet's name of class ``index`` for an ImageNet model, else the index."""
    return f"{index} {imagenet_classes()[index]}" if is_imagenet_model(model) else str(index)


def study_batch(model, count, data_dir, seed):
    """What a study looks at: ``count`` Fashion-MNIST test images (and labels) for a net trained here; the
    sample photographs (and their predicted classes) for an ImageNet-trained one."""
    if is_imagenet_model(model):
        x, predicted, _ = photo_batch(model)
        return x, predicted
    (x, y), = fashion_batches(model, 1, count, data_dir, seed=seed + 1, train=False)
    return x, y


# --------------------------------------------------------------------------- files and figures


def save_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
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


def image_grid(images, columns, title, cmap="gray"):
    """A figure of (title, image[, cmap]) tiles; signed colour maps are centred on zero."""
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
    return fig
