"""Train a model from the zoo: ``python -m scratchnet.train MODEL [options]``.

    python -m scratchnet.train lenet                      # LeNet-5 on Fashion-MNIST, the paper's 32x32 input
    python -m scratchnet.train resnet20 --epochs 160      # CIFAR-10, pad-4 crop + flip, SGD 0.1, step schedule
    python -m scratchnet.train fast_yolov1 --epochs 30    # the synthetic shapes, reports mAP@0.5
    python -m scratchnet.train lenet --resume runs/lenet5-fashion-mnist

Every model has a recipe (dataset, input size, normalisation, augmentation,
optimizer and schedule) so the bare command does the right thing; each option
overrides its part. The run folder (``--out``) receives metrics.json,
curves.png, config.json, best.npz, final.npz and checkpoint.npz; the
checkpoint is rewritten atomically after every epoch and when Ctrl-C or
SIGTERM arrives, and ``--resume`` continues from it so that the final weights
are bit-identical to those of an uninterrupted run.

Exit codes: 0 done, 1 stopped on a NaN/inf loss, 2 bad input or a file
problem (one line, no traceback; nothing existing is overwritten), 130/143
interrupted by SIGINT/SIGTERM (checkpoint written). The run folder is locked
while a run uses it (``scratchnet/runlock.py``): a second run on the same
``--out`` stops with exit 2 naming the first one's process id.
"""
import argparse
import ast
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from . import backend
from . import functional as F
from .autograd import Tensor, no_grad
from .data import DatasetError, DataLoader, SyntheticShapes, load_cifar10, load_mnist
from .data import transforms as T
from .models import get_model
from .models.yolo import decode, encode_targets, mean_average_precision, yolo_loss
from .nn.serialization import load, save
from .optim import SGD, Adam, AdamW, lr_scheduler
from .distributed import DistributedError
from .distributed.training import SingleProcess, abort_other_ranks, setup as setup_ranks
from .runlock import RunFolderLocked, RunLock, stale_message

EXIT_NAN, EXIT_USAGE = 1, 2
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was written."""


# --------------------------------------------------------------------------- datasets and recipes

# channels, native side, classes, normalisation (mean, std) of each dataset.
DATASETS = {
    "mnist": dict(channels=1, side=28, classes=10, mean=(0.1307,), std=(0.3081,)),
    "fashion-mnist": dict(channels=1, side=28, classes=10, mean=(0.2860,), std=(0.3530,)),
    "cifar10": dict(channels=3, side=32, classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "shapes": dict(channels=3, side=None, classes=len(SyntheticShapes(1).classes), mean=None, std=None),
}

# What a bare `python -m scratchnet.train MODEL` does, by model family.
RECIPES = {
    # LeNet-5: no augmentation (the paper had none); SGD with momentum and a cosine decay
    "lenet": dict(dataset="fashion-mnist", epochs=10, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4,
                  optimizer="sgd", schedule="cosine", warmup=0.0, augment=()),
    # the 1998 net: its RBF output's gradient 2(x - w_i) is ~10x a linear layer's, so a 10x smaller rate
    # (lr 0.05 diverged to loss ~30; 0.005 reached 81.1% after 2 epochs on 10k images, models-classic docs)
    "lenet_classic": dict(dataset="fashion-mnist", epochs=10, batch_size=64, lr=0.005, momentum=0.9,
                          weight_decay=5e-4, optimizer="sgd", schedule="cosine", warmup=0.0, augment=()),
    # He et al. 2016, Sec. 4.2: batch 128, lr 0.1 divided by 10 at 50% and 75%, wd 1e-4, pad-4 crop + flip
    "cifar": dict(dataset="cifar10", epochs=160, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
                  optimizer="sgd", schedule="step", warmup=0.0, augment=("crop", "flip")),
    # the ImageNet-shaped nets, on CIFAR-10 upsampled to their input: SGD 0.01, step, wd 5e-4
    "imagenet": dict(dataset="cifar10", epochs=90, batch_size=64, lr=0.01, momentum=0.9, weight_decay=5e-4,
                     optimizer="sgd", schedule="step", warmup=0.0, augment=("crop", "flip")),
    # AlexNet/ZFNet add the PCA colour augmentation of Krizhevsky et al. (Sec. 4.1)
    "alexnet": dict(dataset="cifar10", epochs=90, batch_size=64, lr=0.01, momentum=0.9, weight_decay=5e-4,
                    optimizer="sgd", schedule="step", warmup=0.0, augment=("crop", "flip", "lighting")),
    # YOLOv1 (Sec. 2.2): momentum 0.9, decay 5e-4, a warm-up from a low rate, then steps
    "yolo": dict(dataset="shapes", epochs=30, batch_size=16, lr=1e-3, momentum=0.9, weight_decay=5e-4,
                 optimizer="sgd", schedule="step", warmup=1.0, augment=()),
}


def recipe_name(model):
    name = model.lower()
    if name == "lenet5_classic":
        return "lenet_classic"
    if name.startswith("lenet"):
        return "lenet"
    if "yolo" in name:
        return "yolo"
    if re.fullmatch(r"(se_resnet|resnet|plain)(20|32|44|56|110|1202)", name):
        return "cifar"
    if name in ("alexnet", "zfnet"):
        return "alexnet"
    return "imagenet"


# --------------------------------------------------------------------------- the command line


def build_parser():
    p = argparse.ArgumentParser(prog="python -m scratchnet.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a name from scratchnet.models.list_models() (e.g. lenet, resnet20, fast_yolov1)")
    p.add_argument("--dataset", choices=sorted(DATASETS), help="default: the model's recipe")
    p.add_argument("--data-dir", help="folder holding the dataset files (else $SCRATCHNET_DATA, the cache, ...)")
    p.add_argument("--no-download", action="store_true", help="never download missing dataset files")
    p.add_argument("--device", default="cpu", help="cpu or gpu")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    p.add_argument("--schedule", choices=["step", "cosine", "none"])
    p.add_argument("--warmup", type=float, help="epochs of linear warm-up from lr/10 (fractions allowed)")
    p.add_argument("--augment", help="comma-separated subset of crop,flip,lighting, or 'none'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run folder (default runs/MODEL-DATASET)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    p.add_argument("--eval-only", action="store_true", help="evaluate (weights from --resume DIR or --weights)")
    p.add_argument("--weights", help="a .npz of model weights to start from (or to evaluate)")
    p.add_argument("--limit", type=int, help="train on the first N training samples")
    p.add_argument("--test-limit", type=int, help="evaluate on the first N test samples")
    p.add_argument("--conv-algo", help="the global conv2d route: " + ", ".join(F.conv.CONV_ALGOS)
                   + " (scratchnet.functional.conv.set_conv_algo; README, Kernels)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra constructor option, e.g. --model-arg width_mult=0.25 (repeatable)")
    p.add_argument("--prefetch", type=int, default=2, help="batches prepared ahead in a background thread")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch summaries only)")
    p.add_argument("--threads", type=int, help="CPU threads for BLAS and the Numba kernels alike "
                                               "(default: every CPU, or $SCRATCHNET_NUM_THREADS)")
    p.add_argument("--distributed", action="store_true", help="data parallel over the processes of an MPI launch "
                   "(mpirun -n 2 python -m scratchnet.train ... --distributed); --batch-size is per rank")
    p.add_argument("--model-parallel", action="store_true", help="AlexNet's two-GPU split over 2 ranks (mpirun -n 2)")
    p.add_argument("--sync-batchnorm", action="store_true", help="with --distributed: BatchNorm over the global batch")
    p.add_argument("--dist-timeout", type=float, help="seconds to wait for the other ranks before failing (300)")
    # For tests: raise SIGTERM in this process after N optimizer steps (exercises the real handler).
    p.add_argument("--debug-signal-after", type=int, help=argparse.SUPPRESS)
    return p


CONFIG_KEYS = ("model", "dataset", "epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer",
               "schedule", "warmup", "augment", "seed", "limit", "test_limit", "model_args", "data_dir")


def make_config(args):
    """The full run configuration: the recipe, overridden by whatever the command line gave."""
    recipe = dict(RECIPES[recipe_name(args.model)])
    config = {"model": args.model}
    for key in ("dataset", "epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer", "schedule",
                "warmup"):
        value = getattr(args, key)
        config[key] = recipe[key] if value is None else value
    if args.augment is None:
        config["augment"] = list(recipe["augment"])
    else:
        config["augment"] = [] if args.augment == "none" else [a.strip() for a in args.augment.split(",") if a]
        unknown = set(config["augment"]) - {"crop", "flip", "lighting"}
        if unknown:
            raise UsageError(f"--augment: unknown {', '.join(sorted(unknown))}; choose from crop, flip, lighting")
    config.update(seed=args.seed, limit=args.limit, test_limit=args.test_limit, data_dir=args.data_dir,
                  model_args=parse_model_args(args.model_arg))
    for key in ("epochs", "batch_size"):
        if config[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {config[key]}")
    for key in ("limit", "test_limit"):
        if config[key] is not None and config[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {config[key]}")
    if config["lr"] <= 0:
        raise UsageError(f"--lr must be positive, got {config['lr']}")
    detector, wants_detection = recipe_name(args.model) == "yolo", config["dataset"] == "shapes"
    if detector != wants_detection:
        raise UsageError(f"model {args.model} is {'a detector' if detector else 'a classifier'} but dataset "
                         f"{config['dataset']} is for {'detection' if wants_detection else 'classification'}; "
                         f"use --dataset {'shapes' if detector else 'fashion-mnist, mnist or cifar10'}")
    if "lighting" in config["augment"] and DATASETS[config["dataset"]]["channels"] != 3:
        raise UsageError(f"--augment lighting needs RGB images; {config['dataset']} is grayscale")
    return config


def parse_model_args(pairs):
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value  # a bare word: a string option such as variant=classic
    return options


# --------------------------------------------------------------------------- model and data


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
        fit.append(RepeatChannels(channels))
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


class RepeatChannels:
    """Grayscale to RGB by repetition, for models without an in_channels option."""

    def __init__(self, channels):
        self.channels = channels

    def __call__(self, x, rng=None):
        return np.repeat(x, self.channels, axis=1)

    def __repr__(self):
        return f"RepeatChannels({self.channels})"


# --------------------------------------------------------------------------- tasks: what a batch's loss and score are


class Classification:
    metric = "acc"

    def __init__(self, model, device):
        self.model, self.device = model, device

    def loss(self, output, targets):
        targets = Tensor(backend.to_device(targets, self.device))
        if hasattr(self.model, "loss"):
            return self.model.loss(output, targets)
        return F.cross_entropy(output[0] if isinstance(output, tuple) else output, targets)

    def correct(self, output, targets):
        scores = self.model.scores(output) if hasattr(self.model, "scores") else output
        scores = scores[0] if isinstance(scores, tuple) else scores
        scores = scores.data if isinstance(scores, Tensor) else scores
        return int((backend.to_numpy(scores).argmax(axis=1) == targets).sum())


class Detection:
    """YOLOv1 on VOC-style targets: the sum-squared loss to train, mAP@0.5 to evaluate."""
    metric = "map50"

    def __init__(self, model, device):
        self.model, self.device = model, device
        self.S, self.B, self.C = model.S, model.B, model.num_classes
        self.side = model.input_size[-1]

    def loss(self, output, targets):
        target = encode_targets([t["boxes"] / self.side for t in targets], [t["labels"] for t in targets],
                                S=self.S, C=self.C, dtype=output.dtype)
        return yolo_loss(output, backend.to_device(target, self.device), S=self.S, B=self.B, C=self.C)

    def detections(self, output):
        return decode(output, S=self.S, B=self.B, C=self.C, conf_threshold=0.01, nms_threshold=0.5)

    def ground_truth(self, targets):
        return [(t["boxes"] / self.side, t["labels"]) for t in targets]


# --------------------------------------------------------------------------- optimizer and schedule


def make_optimizer(config, model):
    params = list(model.parameters())
    kind = config["optimizer"]
    if kind == "sgd":
        return SGD(params, lr=config["lr"], momentum=config["momentum"], weight_decay=config["weight_decay"])
    cls = Adam if kind == "adam" else AdamW
    return cls(params, lr=config["lr"], weight_decay=config["weight_decay"])


def make_scheduler(config, optimizer, steps_per_epoch):
    """Stepped once per batch: milestones and periods are counted in optimizer steps."""
    total = config["epochs"] * steps_per_epoch
    warm = min(int(round(config["warmup"] * steps_per_epoch)), max(total - 1, 0))
    kind = config["schedule"]
    if kind == "step":  # divide by 10 at 50% and 75% of training (He et al.'s 32k and 48k of 64k)
        main = lr_scheduler.MultiStepLR(optimizer, [int(total * 0.5), int(total * 0.75)], gamma=0.1)
    elif kind == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warm, 1))
    else:
        main = None
    if warm == 0:
        return main
    if main is None:
        return lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warm)
    return lr_scheduler.with_warmup(main, warm, start_factor=0.1)


# --------------------------------------------------------------------------- checkpoints: nested state in one .npz


def _pack(value, arrays):
    """JSON-able tree with arrays moved to ``arrays`` (by key), keeping tuples, Counters and int keys exact."""
    on_gpu = backend.cp is not None and isinstance(value, backend.cp.ndarray)
    if isinstance(value, (np.ndarray, np.generic)) or on_gpu:
        key = f"a{len(arrays)}"
        arrays[key] = backend.to_numpy(value)
        return {"__array__": key, "scalar": isinstance(value, np.generic)}
    if isinstance(value, Counter):
        return {"__counter__": [[_pack(k, arrays), n] for k, n in value.items()]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _pack(v, arrays) for k, v in value.items()}
        return {"__items__": [[_pack(k, arrays), _pack(v, arrays)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_pack(v, arrays) for v in value]}
    if isinstance(value, list):
        return [_pack(v, arrays) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint: cannot store a {type(value).__name__}")


def _unpack(value, arrays):
    if isinstance(value, list):
        return [_unpack(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        array = arrays[value["__array__"]]
        return array[()] if value["scalar"] else array
    if "__counter__" in value:
        return Counter({_unpack(k, arrays): n for k, n in value["__counter__"]})
    if "__items__" in value:
        return {_unpack(k, arrays): _unpack(v, arrays) for k, v in value["__items__"]}
    if "__tuple__" in value:
        return tuple(_unpack(v, arrays) for v in value["__tuple__"])
    return {k: _unpack(v, arrays) for k, v in value.items()}


def save_checkpoint(path, state):
    arrays = {}
    tree = _pack(state, arrays)
    arrays["__tree__"] = np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8)
    save(arrays, path)  # atomic: temp file + os.replace


def load_checkpoint(path):
    if not Path(path).parent.is_dir():
        raise UsageError(f"--resume: {Path(path).parent} is not a folder (no such run folder)")
    try:
        arrays = load(path)
        tree = json.loads(bytes(arrays.pop("__tree__")).decode())
    except FileNotFoundError:
        raise UsageError(f"--resume: no checkpoint at {path}") from None
    except (ValueError, KeyError, OSError) as exc:
        raise UsageError(f"--resume: {path} is not a readable checkpoint ({exc})") from None
    try:
        state = _unpack(tree, arrays)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise UsageError(f"--resume: {path} is not a readable checkpoint (damaged index: {exc})") from None
    return state


def prepare_out(out):
    """The run folder, made if needed: a usable (writable) folder, or one line and exit 2."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder; pass a folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} is not writable; pass a folder you can write to")
    return out


def lock_run_folder(out, held):
    """Take the run folder's lock (scratchnet/runlock.py); ``held`` collects it for main() to release."""
    lock = RunLock(out)
    try:
        lock.acquire()
    except RunFolderLocked as exc:
        raise UsageError(f"--out {exc}") from None
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot take the run lock ({exc.strerror})") from None
    held.append(lock)
    note = stale_message(lock)
    if note:
        print(note, file=sys.stderr, flush=True)
    return lock


def write_json(path, obj):
    """Atomic JSON write (a reader never sees half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def plot_curves(path, metrics, metric):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in metrics]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train")
    ax_loss.plot(epochs, [m["test_loss"] for m in metrics], "o-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    if metric == "acc":
        ax_acc.plot(epochs, [100 * m["train_acc"] for m in metrics], "o-", label="train")
        ax_acc.plot(epochs, [100 * m["test_acc"] for m in metrics], "o-", label="test")
        ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    else:
        ax_acc.plot(epochs, [100 * m["test_map50"] for m in metrics], "o-", label="test")
        ax_acc.set(xlabel="epoch", ylabel="mAP@0.5 (%)", title="mAP@0.5")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the run


class Run:
    """One training run: model, data, optimizer, schedule, and the loop that ties them together."""

    def __init__(self, config, device, out, progress, prefetch, debug_signal_after=None, ranks=None):
        self.config, self.device, self.out, self.progress = config, device, out, progress
        self.debug_signal_after = debug_signal_after
        self.ranks = ranks or SingleProcess()  # distributed runs: what differs per rank (distributed/training.py)
        backend.manual_seed(config["seed"])
        self.model = self.ranks.wrap_model(build_model(config).to(device))
        self.task = (Detection if config["dataset"] == "shapes" else Classification)(self.model, device)
        self.train_set, self.test_set = load_datasets(config, self.model, download=not config.get("no_download"),
                                                      progress=progress)
        train_tf, test_tf = pipelines(config, self.model)
        self.train_loader = DataLoader(self.train_set, config["batch_size"], shuffle=True,
                                       seed=self.ranks.augment_seed(config["seed"]), transform=train_tf,
                                       prefetch=prefetch,
                                       sampler=self.ranks.train_sampler(self.train_set, config["seed"]))
        self.test_loader = DataLoader(self.test_set, max(config["batch_size"], 256), transform=test_tf,
                                      prefetch=prefetch, sampler=self.ranks.test_sampler(self.test_set))
        self.optimizer = make_optimizer(config, self.model)
        self.scheduler = make_scheduler(config, self.optimizer, len(self.train_loader))
        self.epoch, self.batch, self.partial, self.metrics, self.best = 0, 0, None, [], None
        self.steps, self.stop_signal = 0, None

    # -- state
    def state(self):
        return {"model": self.model.state_dict(), "optimizer": self.ranks.optimizer_state(self.model, self.optimizer),
                "distributed": self.ranks.describe(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "rng": backend.rng("cpu").bit_generator.state, "epoch": self.epoch, "batch": self.batch,
                "gpu_rng": backend.get_rng_state("gpu") if self.device == "gpu" else None,  # dropout masks
                "partial": self.partial, "metrics": self.metrics, "best": self.best, "config": self.config}

    def restore(self, state):
        self.model.load_state_dict(state["model"])
        self.ranks.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        backend.rng("cpu").bit_generator.state = state["rng"]
        if self.device == "gpu" and state.get("gpu_rng") is not None:
            backend.set_rng_state(state["gpu_rng"], "gpu")
        self.epoch, self.batch, self.partial = state["epoch"], state["batch"], state["partial"]
        self.metrics, self.best = state["metrics"], state["best"]

    def checkpoint(self):
        state = self.state()  # on every rank (a model-parallel state is gathered); rank 0 writes it
        if self.ranks.is_main:
            save_checkpoint(self.out / "checkpoint.npz", state)

    def save_weights(self, name):
        state = self.model.state_dict()
        if self.ranks.is_main:
            save(state, self.out / name)

    def lr(self):
        return self.optimizer.param_groups[0]["lr"]

    # -- the loop
    def fit(self):
        epochs = self.config["epochs"]
        while self.epoch < epochs:
            record = self.train_epoch()
            test = self.evaluate()
            record.update(test)
            if not math.isfinite(record["test_loss"]):
                raise NonFiniteLoss(f"the test loss is {record['test_loss']} after epoch {self.epoch + 1}")
            self.metrics.append(record)
            self.report(record)
            score = record[f"test_{self.task.metric}"]
            if self.best is None or score > self.best:
                self.best = score
                self.save_weights("best.npz")
            self.epoch, self.batch, self.partial = self.epoch + 1, 0, None
            self.checkpoint()
            if self.ranks.is_main:
                write_json(self.out / "metrics.json", self.metrics)
                plot_curves(self.out / "curves.png", self.metrics, self.task.metric)
            stop = self.ranks.any_stop(self.stop_signal)  # a signal on any rank stops every rank
            if stop is not None:
                self.stop_signal = stop
                raise Interrupted()
        self.save_weights("final.npz")

    def train_epoch(self):
        from tqdm import tqdm

        loader = self.train_loader
        loader.set_epoch(self.epoch)
        self.model.train()
        stats = self.partial or {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        bar = tqdm(total=len(loader), initial=self.batch, desc=f"epoch {self.epoch + 1}/{self.config['epochs']}",
                   disable=not self.progress, leave=False, dynamic_ncols=True, file=sys.stderr)
        started = time.perf_counter() - stats["time"]
        for x, y in loader.batches(start=self.batch):
            inputs = Tensor(backend.to_device(x, self.device))
            output = self.model(inputs)
            loss = self.task.loss(output, y)
            correct = self.task.correct(output, y) if self.task.metric == "acc" else 0
            # the global batch's sums (one rank: its own batch), so every rank sees the same loss
            loss_sum, seen, correct = self.ranks.step_totals(float(loss.item()) * len(x), len(x), correct)
            value = loss_sum / seen
            if not math.isfinite(value):
                raise NonFiniteLoss(f"the loss is {value} at epoch {self.epoch + 1}, batch {self.batch + 1}")
            self.optimizer.zero_grad()
            loss.backward()
            self.ranks.after_backward(self.model)  # data parallel: average the gradients over the ranks
            self.optimizer.step()
            stats["lr"] = self.lr()  # the rate this step used
            if self.scheduler is not None:
                self.scheduler.step()
            self.batch += 1
            self.steps += 1
            stats["loss_sum"] += loss_sum
            stats["seen"] += seen
            stats["correct"] += correct
            stats["time"] = time.perf_counter() - started
            bar.update(1)
            if self.progress and (self.batch % 20 == 0 or self.batch == len(loader)):  # formatting costs, not math
                postfix = {"loss": f"{stats['loss_sum'] / stats['seen']:.4f}",
                           "img/s": f"{stats['seen'] / max(stats['time'], 1e-9):.0f}"}
                if self.task.metric == "acc":
                    postfix["acc"] = f"{100 * stats['correct'] / stats['seen']:.2f}%"
                bar.set_postfix(postfix, refresh=False)
            if self.debug_signal_after is not None and self.steps == self.debug_signal_after:
                signal.raise_signal(signal.SIGTERM)
            stop = self.ranks.any_stop(self.stop_signal)
            if stop is not None and self.batch < len(loader):
                self.stop_signal = stop
                bar.close()
                self.partial = stats
                self.checkpoint()
                raise Interrupted()
        bar.close()
        seen = max(stats["seen"], 1)
        return {"epoch": self.epoch + 1, "train_loss": stats["loss_sum"] / seen,
                "train_acc": stats["correct"] / seen if self.task.metric == "acc" else None,
                "lr": stats.get("lr", self.lr()), "epoch_time_s": stats["time"],
                "images_per_s": stats["seen"] / max(stats["time"], 1e-9)}

    def evaluate(self):
        self.model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        detections, truths = [], []
        started = time.perf_counter()
        with no_grad():
            for x, y in self.test_loader:
                output = self.model(Tensor(backend.to_device(x, self.device)))
                loss_sum += float(self.task.loss(output, y).item()) * len(x)
                seen += len(x)
                if self.task.metric == "acc":
                    correct += self.task.correct(output, y)
                else:
                    detections += self.task.detections(output)
                    truths += self.task.ground_truth(y)
        loss_sum, correct, seen = self.ranks.sum(loss_sum, correct, seen)  # data parallel: over the test shards
        detections, truths = self.ranks.gather(detections), self.ranks.gather(truths)
        record = {"test_loss": loss_sum / max(seen, 1), "eval_time_s": time.perf_counter() - started}
        if self.task.metric == "acc":
            record["test_acc"] = correct / max(seen, 1)
        else:
            record["test_acc"] = None
            record["test_map50"] = mean_average_precision(detections, truths, 0.5, num_classes=self.task.C)
        return record

    def report(self, r):
        if self.task.metric == "acc":
            scores = f"train loss {r['train_loss']:.4f} acc {100 * r['train_acc']:.2f}%  " \
                     f"test loss {r['test_loss']:.4f} acc {100 * r['test_acc']:.2f}%"
        else:
            scores = f"train loss {r['train_loss']:.4f}  test loss {r['test_loss']:.4f} mAP@0.5 " \
                     f"{100 * r['test_map50']:.2f}%"
        print(f"epoch {r['epoch']}/{self.config['epochs']}  {scores}  lr {r['lr']:.3g}  "
              f"{r['epoch_time_s']:.1f}s ({r['images_per_s']:.0f} img/s)", flush=True)


# --------------------------------------------------------------------------- main


def main(argv=None):
    if argv is not None:
        argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]
    args = build_parser().parse_args(argv)
    held = []  # the run folder's lock, released however the run ends
    try:
        return run(args, held)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DistributedError as exc:  # e.g. a rank died or hung: end every rank of the job
        print(f"error: {exc}", file=sys.stderr)
        abort_other_ranks(EXIT_USAGE)
        return EXIT_USAGE
    except OSError as exc:  # a file problem met later (disk full, folder removed): one line, not a traceback
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:
        if args.distributed or args.model_parallel:  # the other ranks may be waiting for this one: end them too
            traceback.print_exc()
            abort_other_ranks(1)
        raise
    except KeyboardInterrupt:  # Ctrl-C before training started (while loading data): nothing to save
        print("\ninterrupted before training started", file=sys.stderr)
        return EXIT_SIGNAL[signal.SIGINT]
    finally:
        for lock in held:
            lock.release()


def run(args, held=None):
    try:  # first, before any data is read: a missing GPU fails at once
        device = backend.check_device(args.device)
    except backend.DeviceError as exc:
        raise UsageError(str(exc)) from None
    if args.threads is not None:
        try:
            backend.set_num_threads(args.threads)
        except ValueError as exc:
            raise UsageError(f"--threads: {exc}") from None
    if args.conv_algo is not None:
        try:
            F.conv.set_conv_algo(args.conv_algo)
        except ValueError as exc:
            raise UsageError(f"--conv-algo: {exc}") from None
    try:  # --distributed / --model-parallel: join the MPI launch (else one process)
        ranks = setup_ranks(args.distributed, args.model_parallel, device, args.dist_timeout, args.sync_batchnorm)
    except (DistributedError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.eval_only and not (args.resume or args.weights):
        raise UsageError("--eval-only needs trained weights: pass --resume DIR or --weights FILE")

    resume_state = None
    if args.resume:
        resume_dir = Path(args.resume)
        resume_state = ranks.broadcast_object(load_checkpoint(resume_dir / "checkpoint.npz") if ranks.is_main else None)
        try:
            ranks.check_resume(resume_state)
        except DistributedError as exc:
            raise UsageError(str(exc)) from None
        if not isinstance(resume_state, dict) or "model" not in (resume_state.get("config") or {}):
            raise UsageError(f"--resume: {resume_dir / 'checkpoint.npz'} is not a scratchnet training checkpoint "
                             f"(it names no run config)")
        config = resume_state["config"]  # the run continues with its own settings
        if args.data_dir:  # ... but the data may have moved
            config["data_dir"] = args.data_dir
        out = Path(args.out) if args.out else resume_dir
    else:
        config = make_config(args)
        out = Path(args.out or f"runs/{config['model']}-{config['dataset']}")
    config["no_download"] = args.no_download
    prepare_out(out)
    if ranks.is_main:  # rank 0 owns the run folder
        lock_run_folder(out, [] if held is None else held)

    try:
        job = Run(config, device, out, progress=not args.no_progress and ranks.is_main, prefetch=args.prefetch,
                  debug_signal_after=args.debug_signal_after, ranks=ranks)
    except ValueError as exc:  # e.g. --model-parallel with a model that has no two-tower split
        raise UsageError(str(exc)) from None
    if resume_state is not None:
        try:
            job.restore(resume_state)
        except (KeyError, ValueError, TypeError) as exc:  # StateDictError is a KeyError
            raise UsageError(f"--resume: the checkpoint in {args.resume} does not fit this run: {exc}") from None
        print(f"resuming {out}: epoch {job.epoch + 1}, batch {job.batch + 1} of {len(job.train_loader)}", flush=True)
    if args.weights:
        try:
            job.model.load_state_dict(load(args.weights))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--weights: {exc}") from None

    if args.eval_only:
        record = job.evaluate()
        metric = job.task.metric
        print(f"test loss {record['test_loss']:.4f}  test {metric} {100 * record[f'test_{metric}']:.2f}%  "
              f"({len(job.test_set)} samples)")
        if ranks.is_main:
            write_json(out / "eval.json", record)
        return 0

    if ranks.is_main:
        write_json(out / "config.json", {k: config[k] for k in CONFIG_KEYS}
                   | {"device": device, "conv_algo": args.conv_algo, "distributed": ranks.describe()})
    print(f"training {config['model']} ({job.model.num_parameters():,} parameters) on {config['dataset']} "
          f"({len(job.train_set)} train / {len(job.test_set)} test) for {config['epochs']} epochs -> {out}",
          flush=True)
    return fit_with_signals(job)


def fit_with_signals(job):
    """Run job.fit(); Ctrl-C / SIGTERM let the current batch finish, then checkpoint and exit."""
    def on_signal(signum, frame):
        if job.stop_signal is None:
            print(f"\n{signal.Signals(signum).name}: stopping after this batch and writing a checkpoint...",
                  file=sys.stderr, flush=True)
        job.stop_signal = signum

    previous = {s: signal.signal(s, on_signal) for s in EXIT_SIGNAL}
    try:
        job.fit()
    except Interrupted:
        print(f"interrupted: checkpoint written to {job.out / 'checkpoint.npz'}; continue with "
              f"`python -m scratchnet.train {job.config['model']} --resume {job.out}`", file=sys.stderr)
        return EXIT_SIGNAL[job.stop_signal]
    except NonFiniteLoss as exc:
        kept = (f"the last good checkpoint (end of epoch {job.epoch}) is kept in {job.out / 'checkpoint.npz'}"
                if job.epoch else "no epoch finished, so there is no checkpoint")
        print(f"error: {exc}; training stopped. {kept}. Try a lower --lr (now {job.config['lr']}) or "
              f"--warmup.", file=sys.stderr)
        return EXIT_NAN
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    best = job.best if job.best is not None else float("nan")
    print(f"done: best test {job.task.metric} {100 * best:.2f}%; weights, metrics.json and curves.png in {job.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
