"""MNIST and Fashion-MNIST: the IDX file format and the two datasets stored in it.

IDX (LeCun's format): a 4-byte magic ``0 0 <type code> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the values in C order. Both datasets ship as four
gzip'd IDX files; we accept them compressed or not.
"""
import gzip
import zlib
from pathlib import Path

import numpy as np

from .download import DatasetError, fetch_file, unreadable
from .loader import ArrayDataset

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(raw, source="<bytes>"):
    """Decode IDX bytes into an ndarray; a truncated or malformed buffer raises DatasetError."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DatasetError(f"{source} is not an IDX file (bad magic {raw[:4].hex() or 'empty'}); "
                           f"delete it and run again to download a fresh copy")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{source} is truncated inside its header; delete it and run again")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(f"{source} holds {len(raw)} bytes but its header {shape} promises {expected}: "
                           f"the file is truncated or corrupt; delete it and run again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path):
    """Read an IDX file (gzip'd or not) fully into memory."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a broken stream is zlib's
        raise unreadable(path, exc) from None
    return parse_idx(raw, source=str(path))


# --------------------------------------------------------------------------- the two datasets

# SHA-256 of the decompressed bytes (accepts any re-compression); MD5 of the official .gz
# where no SHA-256 is known (MNIST's training images are not in our shared data).
MNIST_FILES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": dict(md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte.gz": dict(
            sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte.gz": dict(
            sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte.gz": dict(
            sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": dict(
            sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte.gz": dict(
            sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte.gz": dict(
            sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte.gz": dict(
            sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
}

MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/",
              "http://yann.lecun.com/exdb/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"],
}

SYSTEM_DIRS = {"mnist": (), "fashion-mnist": ("/usr/share/datasets/fashion-mnist",)}

CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"],
}


def mnist_file(name, filename, data_dir=None, download=True, progress=True, mirrors=None):
    """Path to one verified MNIST/Fashion-MNIST file (found, or downloaded into the cache)."""
    how_to = (f"copy {filename} (from {MIRRORS[name][0]}) into one of those folders, or set "
              f"SCRATCHNET_DATA / pass --data-dir to a folder holding a '{name}/' subfolder with it")
    if name == "fashion-mnist":
        how_to += ", or `apt-get install dataset-fashion-mnist`"
    else:
        how_to += "; or train on --dataset fashion-mnist (same format, often available offline)"
    return fetch_file(name, filename, urls=MIRRORS[name] if mirrors is None else mirrors,
                      data_dir=data_dir, system_dirs=SYSTEM_DIRS[name], download_ok=download,
                      progress=progress, how_to=how_to, alternatives=[filename[:-3]],
                      **MNIST_FILES[name][filename])


def load_mnist(name="mnist", train=True, data_dir=None, download=True, progress=True, mirrors=None):
    """MNIST or Fashion-MNIST as an ArrayDataset: uint8 images (N, 1, 28, 28), int64 labels (N,)."""
    if name not in MNIST_FILES:
        raise ValueError(f"load_mnist: unknown dataset {name!r}; use one of {sorted(MNIST_FILES)}")
    split = "train" if train else "t10k"
    paths = [mnist_file(name, f"{split}-{kind}-idx{dim}-ubyte.gz", data_dir, download, progress, mirrors)
             for kind, dim in (("images", 3), ("labels", 1))]
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{name}: {paths[0]} {images.shape} and {paths[1]} {labels.shape} do not match "
                           f"(expected (N, 28, 28) images and N labels)")
    return ArrayDataset(images[:, None], labels.astype(np.int64), classes=CLASSES[name],
                        name=f"{name}-{'train' if train else 'test'}")
