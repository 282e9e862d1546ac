"""CIFAR-10 from its "python version": pickled batches of 10,000 32x32 RGB images each.

The official archive ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/``
with ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``; each is a pickled
dict whose ``b"data"`` is a (10000, 3072) uint8 array (the 1024 red values of
a row-major 32x32 image, then green, then blue) and ``b"labels"`` a list of ints.
The folder (or the archive, which is unpacked into the cache) is looked for
where the other datasets are, and downloaded when absent.
"""
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .download import DatasetError, cache_root, download, find_file, preparing, search_dirs, verify
from .loader import ArrayDataset

NAME = "cifar-10"
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
MIRRORS = ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle plain containers and NumPy arrays only: a data file must not be able to run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def read_batch(path):
    """One CIFAR batch file -> (uint8 images (N, 3, 32, 32), int64 labels (N,)); corrupt files raise."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise DatasetError(f"{path} is not a readable CIFAR batch ({exc.__class__.__name__}: {exc}); "
                           f"it is corrupt or truncated: delete it and run again") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DatasetError(f"{path}: expected uint8 data (N, 3072) and N labels, got data {data.dtype} "
                           f"{data.shape} and {len(labels)} labels; the file is corrupt")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DatasetError(f"{path}: labels outside 0..{len(CLASSES) - 1}; the file is corrupt")
    return data.reshape(-1, 3, 32, 32), labels


def find_cifar10(data_dir=None, download_ok=True, progress=True, mirrors=None, archive_md5=ARCHIVE_MD5):
    """The ``cifar-10-batches-py`` folder: found, unpacked from a found archive, or downloaded.

    Downloading and unpacking happen under the dataset's preparation lock (``preparing``): when several
    processes start at once, one prepares the folder and the others wait for it."""
    dirs = search_dirs(NAME, data_dir)
    folder = _unpacked(dirs)
    if folder is not None:
        return folder
    if find_file([ARCHIVE], dirs) is None and not download_ok:
        raise _missing(dirs, "downloads are disabled")
    with preparing(NAME, progress):
        folder = _unpacked(dirs)  # prepared by another process while this one waited
        if folder is not None:
            return folder
        archive = find_file([ARCHIVE], dirs)
        if archive is None:
            try:
                archive = download(MIRRORS if mirrors is None else mirrors, cache_root() / NAME / ARCHIVE,
                                   md5=archive_md5, progress=progress)
            except DatasetError as exc:
                raise _missing(dirs, str(exc)) from None
        verify(archive, md5=archive_md5)
        return _unpack(archive, cache_root() / NAME)


def _unpacked(dirs):
    return next((d / FOLDER for d in dirs if (d / FOLDER / "test_batch").is_file()), None)


def _missing(dirs, tried):
    searched = ", ".join(str(d) for d in dirs)
    return DatasetError(f"{NAME}: {FOLDER}/ (or {ARCHIVE}) not found. Looked in: {searched}; {tried}. "
                        f"To supply it: download {MIRRORS[0]} and unpack it (or just put the archive) in one of "
                        f"those folders, or pass --data-dir pointing at the folder holding it")


def _unpack(archive, into):
    """Extract the batches into ``into/cifar-10-batches-py`` via a temp folder renamed into place."""
    into.mkdir(parents=True, exist_ok=True)
    target = into / FOLDER
    if (target / "test_batch").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=into))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(FOLDER + "/")
                       and ".." not in m.name.split("/")]
            tar.extractall(tmp, members=members, filter="data")
        os.replace(tmp / FOLDER, target)
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise DatasetError(f"{archive} could not be unpacked ({exc.__class__.__name__}: {exc}); "
                           f"it is corrupt or truncated: delete it and run again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_cifar10(train=True, data_dir=None, download=True, progress=True, mirrors=None, archive_md5=ARCHIVE_MD5):
    """CIFAR-10 as an ArrayDataset: uint8 images (N, 3, 32, 32), int64 labels (N,)."""
    folder = find_cifar10(data_dir, download, progress, mirrors, archive_md5)
    names = TRAIN_BATCHES if train else TEST_BATCHES
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"{NAME}: {folder} lacks {', '.join(missing)}; the folder is incomplete: "
                           f"delete it and run again to download a fresh copy")
    parts = [read_batch(folder / n) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ArrayDataset(images, labels, classes=CLASSES, name=f"{NAME}-{'train' if train else 'test'}")
