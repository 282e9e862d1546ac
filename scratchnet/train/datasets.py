"""The datasets a run can train on, the model built for one, and the transforms that take a dataset's
uint8 batches to the model's input (fitting the size and channels, normalising, augmenting)."""
from ..data import DatasetError, SyntheticShapes, load_cifar10, load_mnist
from ..data import transforms as T
from ..models import get_model
from .errors import UsageError

# channels, native side, classes, normalisation (mean, std) and task of each dataset.
DATASETS = {
    "mnist": dict(channels=1, side=28, classes=10, mean=(0.1307,), std=(0.3081,), task="classification"),
    "fashion-mnist": dict(channels=1, side=28, classes=10, mean=(0.2860,), std=(0.3530,), task="classification"),
    "cifar10": dict(channels=3, side=32, classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                    task="classification"),
    "shapes": dict(channels=3, side=None, classes=len(SyntheticShapes(1).classes), mean=None, std=None,
                   task="detection"),
}


def build_model(config):
    """The model for this dataset: its classes, and its input channels when the model has that option."""
    spec = DATASETS[config["dataset"]]
    options = dict(config["model_args"])
    options.setdefault("num_classes", spec["classes"])
    try:
        try:
            return get_model(config["model"], in_channels=spec["channels"], **options)
        except TypeError as exc:
            if "in_channels" not in str(exc):
                raise
            return get_model(config["model"], **options)  # no such option: grayscale is repeated to RGB below
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot build model {config['model']!r}: {exc}") from None


def load_datasets(config, model, download, progress):
    """(train set, test set), cut to --limit / --test-limit."""
    name, root = config["dataset"], config["data_dir"]
    try:
        if name == "shapes":
            side = model.input_size[-1]
            train = SyntheticShapes(n=4000, image_size=side, seed=config["seed"], name="shapes-train")
            test = SyntheticShapes(n=500, image_size=side, seed=config["seed"] + 10_000, name="shapes-test")
        elif name == "cifar10":
            train = load_cifar10(True, root, download, progress)
            test = load_cifar10(False, root, download, progress)
        else:
            train = load_mnist(name, True, root, download, progress)
            test = load_mnist(name, False, root, download, progress)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    if config["limit"]:
        train = train.subset(config["limit"])
    if config["test_limit"]:
        test = test.subset(config["test_limit"])
    return train, test


def pipelines(config, model):
    """(train transform, test transform) taking the dataset's uint8 batches to the model's input."""
    spec = DATASETS[config["dataset"]]
    if spec["side"] is None:  # synthetic shapes are drawn at the model's size
        return T.ToFloat(), T.ToFloat()
    channels, side = model.input_size[0], model.input_size[-1]
    if channels != spec["channels"] and not (channels == 3 and spec["channels"] == 1):
        raise UsageError(f"model {config['model']} takes {channels}-channel input but {config['dataset']} has "
                         f"{spec['channels']} channels")
    fit = []
    if channels != spec["channels"]:
        fit.append(T.RepeatChannels(channels))
    if side == spec["side"] + 4 and spec["side"] == 28:
        fit.append(T.Pad(2))  # LeNet's 32x32: MNIST's 28x28 centred in a blank border (the paper's choice)
    elif side != spec["side"]:
        fit.append(T.Resize(side))  # e.g. CIFAR's 32 upsampled to AlexNet's 227
    mean = spec["mean"] * (channels // len(spec["mean"]))
    std = spec["std"] * (channels // len(spec["std"]))
    augment = config["augment"]
    random = []
    if "crop" in augment:
        random.append(T.RandomCrop(spec["side"], padding=spec["side"] // 8))
    if "flip" in augment:
        random.append(T.RandomHorizontalFlip())
    light = [T.PCALighting()] if "lighting" in augment else []
    train = T.Compose([T.ToFloat(), *random, *fit, *light, T.Normalize(mean, std)])
    test = T.Compose([T.ToFloat(), *fit, T.Normalize(mean, std)])
    return train, test
