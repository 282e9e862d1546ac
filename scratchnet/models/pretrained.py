"""Pretrained ImageNet weights: ``get_model(name, weights="DEFAULT")`` with torchvision's published files.

Every zoo model whose module tree equals torchvision's key for key and shape for shape (VGG, ResNet,
DenseNet, EfficientNet; ``tests/fixtures/torchvision_reference.json``) can take torchvision's ImageNet
weights. They are read from their ``.pth`` file without torch (``nn/formats.py``), after a check of
the SHA-256 whose first hex digits torchvision puts in every file name (``resnet18-f37072fd.pth``).

A file is looked for in ``$SCRATCHNET_CACHE/weights`` (default ``~/.cache/scratchnet/weights``, the
data cache's convention) and in torch hub's cache (``$TORCH_HOME/hub/checkpoints``, default
``~/.cache/torch/hub/checkpoints``, where torchvision keeps the same files), then downloaded into the
first from ``$SCRATCHNET_WEIGHTS_MIRROR`` (a folder URL, if set) and torchvision's server: written
to a temporary file, hashed as it arrives, moved into place only when the hash matches.

scratchnet's ``alexnet`` and ``googlenet`` are the papers' networks, not torchvision's variants
(its alexnet is the 2014 single-tower net, its googlenet has batch norm and 3x3 "5x5" branches),
so torchvision's weights for those do not fit and none are listed.
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..fetch import stream
from ..nn.serialization import atomic_write

SERVER = "https://download.pytorch.org/models/"


class PretrainedError(ValueError):
    """Weights that do not exist, cannot be found or fetched, or are corrupt; the message says what to do."""


@dataclass(frozen=True)
class Weights:
    """One torchvision ImageNet weight file and the preprocessing it was evaluated with."""
    model: str
    name: str  # torchvision's enum name, e.g. "IMAGENET1K_V2"
    file: str
    resize_size: int  # shorter side before the centre crop
    crop_size: int
    interpolation: str  # "bilinear" or "bicubic" (antialiased, as torchvision on PIL images)
    top1: float  # torchvision's published ImageNet-1K top-1 accuracy, %
    default: bool = False

    @property
    def sha256_prefix(self):
        """torchvision's file names end in the first hex digits of the file's SHA-256."""
        return self.file.rsplit("-", 1)[1].split(".")[0]

    @property
    def url(self):
        return SERVER + self.file


# torchvision 0.29.1's ImageNet-1K weights for the zoo's matching models (tools/make_imagenet_data.py prints the
# rows): one published file a row, readable beside torchvision's docs; "default" marks what "DEFAULT" loads.
# model          weights        file                                    resize  crop  interpolation  top-1   default
WEIGHTS = [Weights(model, name, file, int(resize), int(crop), interpolation, float(top1), default == "default")
           for model, name, file, resize, crop, interpolation, top1, default in (line.split() for line in """
vgg11            IMAGENET1K_V1  vgg11-8a719046.pth                      256     224   bilinear       69.02   default
vgg11_bn         IMAGENET1K_V1  vgg11_bn-6002323d.pth                   256     224   bilinear       70.37   default
vgg13            IMAGENET1K_V1  vgg13-19584684.pth                      256     224   bilinear       69.928  default
vgg13_bn         IMAGENET1K_V1  vgg13_bn-abd245e5.pth                   256     224   bilinear       71.586  default
vgg16            IMAGENET1K_V1  vgg16-397923af.pth                      256     224   bilinear       71.592  default
vgg16_bn         IMAGENET1K_V1  vgg16_bn-6c64b313.pth                   256     224   bilinear       73.36   default
vgg19            IMAGENET1K_V1  vgg19-dcbb9e9d.pth                      256     224   bilinear       72.376  default
vgg19_bn         IMAGENET1K_V1  vgg19_bn-c79401a0.pth                   256     224   bilinear       74.218  default
resnet18         IMAGENET1K_V1  resnet18-f37072fd.pth                   256     224   bilinear       69.758  default
resnet34         IMAGENET1K_V1  resnet34-b627a593.pth                   256     224   bilinear       73.314  default
resnet50         IMAGENET1K_V1  resnet50-0676ba61.pth                   256     224   bilinear       76.13   -
resnet50         IMAGENET1K_V2  resnet50-11ad3fa6.pth                   232     224   bilinear       80.858  default
resnet101        IMAGENET1K_V1  resnet101-63fe2227.pth                  256     224   bilinear       77.374  -
resnet101        IMAGENET1K_V2  resnet101-cd907fc2.pth                  232     224   bilinear       81.886  default
resnet152        IMAGENET1K_V1  resnet152-394f9c45.pth                  256     224   bilinear       78.312  -
resnet152        IMAGENET1K_V2  resnet152-f82ba261.pth                  232     224   bilinear       82.284  default
densenet121      IMAGENET1K_V1  densenet121-a639ec97.pth                256     224   bilinear       74.434  default
densenet161      IMAGENET1K_V1  densenet161-8d451a50.pth                256     224   bilinear       77.138  default
densenet169      IMAGENET1K_V1  densenet169-b2777c0a.pth                256     224   bilinear       75.6    default
densenet201      IMAGENET1K_V1  densenet201-c1103571.pth                256     224   bilinear       76.896  default
efficientnet_b0  IMAGENET1K_V1  efficientnet_b0_rwightman-7f5810bc.pth  256     224   bicubic        77.692  default
efficientnet_b1  IMAGENET1K_V1  efficientnet_b1_rwightman-bac287d4.pth  256     240   bicubic        78.642  -
efficientnet_b1  IMAGENET1K_V2  efficientnet_b1-c27df63c.pth            255     240   bilinear       79.838  default
efficientnet_b2  IMAGENET1K_V1  efficientnet_b2_rwightman-c35c1473.pth  288     288   bicubic        80.608  default
efficientnet_b3  IMAGENET1K_V1  efficientnet_b3_rwightman-b3899882.pth  320     300   bicubic        82.008  default
efficientnet_b4  IMAGENET1K_V1  efficientnet_b4_rwightman-23ab8bcd.pth  384     380   bicubic        83.384  default
efficientnet_b5  IMAGENET1K_V1  efficientnet_b5_lukemelas-1a07897c.pth  456     456   bicubic        83.444  default
efficientnet_b6  IMAGENET1K_V1  efficientnet_b6_lukemelas-24a108a5.pth  528     528   bicubic        84.008  default
efficientnet_b7  IMAGENET1K_V1  efficientnet_b7_lukemelas-c5b4e57e.pth  600     600   bicubic        84.122  default
""".strip().splitlines())]
NO_TORCHVISION_MATCH = {
    "alexnet": "torchvision's alexnet is Krizhevsky's 2014 single-tower variant (64-192-384-256-256 maps, no LRN)",
    "googlenet": "torchvision's googlenet has batch norm and 3x3 convolutions in its \"5x5\" branches",
}


def weights_of(model):
    """The ImageNet weights published for ``model`` (an empty list if none)."""
    return [w for w in WEIGHTS if w.model == model]


def resolve(model, weights):
    """The ``Weights`` that ``weights`` names for ``model``: "DEFAULT", an enum name ("IMAGENET1K_V1"),
    or torchvision's full form ("ResNet50_Weights.IMAGENET1K_V2")."""
    available = weights_of(model)
    if not available:
        why = NO_TORCHVISION_MATCH.get(model, "torchvision publishes no ImageNet weights for this architecture")
        names = sorted({w.model for w in WEIGHTS})
        raise PretrainedError(f"{model} has no pretrained weights ({why}); models with ImageNet weights: "
                              f"{', '.join(names)}")
    wanted = str(weights).rsplit(".", 1)[-1].upper()
    for w in available:
        if wanted == w.name or (wanted == "DEFAULT" and w.default):
            return w
    raise PretrainedError(f"{model} has no weights named {weights!r}; choose DEFAULT or one of "
                          f"{', '.join(w.name for w in available)}")


# --------------------------------------------------------------------------- the file: found, or fetched


def cache_dirs():
    """Where weight files are looked for, in order; downloads go to the first."""
    cache = Path(os.environ.get("SCRATCHNET_CACHE", Path.home() / ".cache" / "scratchnet")).expanduser()
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")).expanduser()
    return [cache / "weights", torch_home / "hub" / "checkpoints"]


def mirrors():
    """Folder URLs to try, in order: $SCRATCHNET_WEIGHTS_MIRROR (if set), then torchvision's server."""
    own = os.environ.get("SCRATCHNET_WEIGHTS_MIRROR")
    return ([own.rstrip("/") + "/"] if own else []) + [SERVER]


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_verified = set()  # (path, size, mtime) of files already hashed in this process


def weights_file(w, download=True, progress=True):
    """The verified local path of ``w``'s file, downloading it into the cache if it is nowhere."""
    for folder in cache_dirs():
        path = folder / w.file
        if path.is_file():
            stat = path.stat()
            if (str(path), stat.st_size, stat.st_mtime_ns) in _verified:
                return path
            got = sha256_of(path)
            _verified.add((str(path), stat.st_size, stat.st_mtime_ns))
            if not got.startswith(w.sha256_prefix):
                _verified.discard((str(path), stat.st_size, stat.st_mtime_ns))
                raise PretrainedError(f"{path} is corrupt: its SHA-256 begins {got[:len(w.sha256_prefix)]}, "
                                      f"not {w.sha256_prefix} as its name says; delete it and run again to "
                                      f"download a fresh copy")
            return path
    dest = cache_dirs()[0] / w.file
    failures = []
    if download:
        for mirror in mirrors():
            try:
                return _download(mirror + w.file, dest, w.sha256_prefix, progress)
            except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
                failures.append(f"{mirror + w.file}: {exc}")
    tried = "; ".join(failures) if failures else "downloads are disabled"
    raise PretrainedError(f"{w.model} {w.name} weights: {w.file} is not in {' or '.join(map(str, cache_dirs()))} "
                          f"and could not be fetched ({tried}); download {w.url} on a machine with a network and "
                          f"put it in {dest.parent}/")


def _download(url, dest, sha256_prefix, progress):
    """Fetch ``url`` into ``dest`` through a temporary file, hashing as it arrives; keep it only if it matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with atomic_write(dest) as out:
        stream(url, out, progress, timeout=30, label=dest.name, digest=digest)
        if not digest.hexdigest().startswith(sha256_prefix):  # raised inside: the temporary file is removed
            raise ValueError(f"SHA-256 {digest.hexdigest()[:12]}... does not begin with {sha256_prefix}")
    return dest


def load_pretrained(model, w, progress=True):
    """Load the ImageNet weights ``w`` (a ``Weights``, from ``resolve``) into ``model``; returns ``w``."""
    model.load_state_dict(weights_file(w, progress=progress))
    model.pretrained = w  # predict and the study tools read its preprocessing from here
    return w
