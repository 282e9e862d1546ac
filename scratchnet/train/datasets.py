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


# AlexNet's patches (Sec. 4.1): random 224x224 windows of images rescaled to 256x256, so the model's input
# side times 256/224 (227 -> 259); the test takes the centre window, or ten (--ten-crop)
PATCH_SCALE = 256 / 224


def pipelines(config, model, train_images=None):
    """(train transform, test transform) taking the dataset's uint8 batches to the model's input.

    Augmentations (``config["augment"]``): "crop" (pad by 1/8 of the side and crop back, CIFAR's), or
    "patches" (AlexNet's: random model-side patches of images rescaled by 256/224); "flip"; "lighting"
    (AlexNet's PCA colour noise, from the principal components of ``train_images``' pixels when given,
    else ImageNet's). ``config["ten_crop"]``: the test transform gives ten patches per image (the four
    corners and the centre of the rescaled image, and their mirror images), (N, 10, C, H, W).
    """
    spec = DATASETS[config["dataset"]]
    if spec["side"] is None:  # synthetic shapes are drawn at the model's size
        return T.ToFloat(), T.ToFloat()
    channels, side = model.input_size[0], model.input_size[-1]
    if channels != spec["channels"] and not (channels == 3 and spec["channels"] == 1):
        raise UsageError(f"model {config['model']} takes {channels}-channel input but {config['dataset']} has "
                         f"{spec['channels']} channels")
    augment, ten_crop = config["augment"], config.get("ten_crop", False)
    repeat = [T.RepeatChannels(channels)] if channels != spec["channels"] else []
    fit = list(repeat)
    if side == spec["side"] + 4 and spec["side"] == 28:
        fit.append(T.Pad(2))  # LeNet's 32x32: MNIST's 28x28 centred in a blank border (the paper's choice)
    elif side != spec["side"]:
        fit.append(T.Resize(side))  # e.g. CIFAR's 32 upsampled to AlexNet's 227
    rescale = repeat + [T.Resize(round(side * PATCH_SCALE))]  # the larger image that patches are cut from
    mean = spec["mean"] * (channels // len(spec["mean"]))
    std = spec["std"] * (channels // len(spec["std"]))
    flip = [T.RandomHorizontalFlip()] if "flip" in augment else []
    if "patches" in augment:
        random = [*rescale, T.RandomCrop(side), *flip]
    else:  # crop and flip at the dataset's size, then fit to the model
        random = [T.RandomCrop(spec["side"], padding=spec["side"] // 8)] if "crop" in augment else []
        random += flip + fit
    light = []
    if "lighting" in augment:
        light = [T.PCALighting.from_images(train_images) if train_images is not None else T.PCALighting()]
    train = T.Compose([T.ToFloat(), *random, *light, T.Normalize(mean, std)])
    if ten_crop:
        test = [*rescale, T.TenCrop(side)]
    elif "patches" in augment:
        test = [*rescale, T.CenterCrop(side)]
    else:
        test = fit
    return train, T.Compose([T.ToFloat(), *test, T.Normalize(mean, std)])
