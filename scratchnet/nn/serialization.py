"""Saving and loading weights: scratchnet's ``.npz`` (a zip of ``.npy`` arrays, one per state_dict key) and
safetensors; loading also reads PyTorch's ``.pt``/``.pth`` files without torch (``formats.py``).

    sn.save(model, "lenet.npz")                            # or sn.save(model.state_dict(), path)
    sn.save(model, "lenet.safetensors")                    # by extension, or format="safetensors"
    model.load_state_dict(sn.load("lenet.npz"))            # arrays go to each parameter's device
    model.load_state_dict("resnet18-f37072fd.pth")         # a path works too

Writes are atomic: the file is written to a temporary file in the same folder and moved over the
target with ``os.replace``, so a crash mid-save never leaves a half-written file where the old
weights were. Loading never runs code from the file: ``.npz`` is read with ``allow_pickle=False``,
safetensors holds no code, and PyTorch's pickles go through an allow-list unpickler.
"""
import contextlib
import os
import tempfile
from collections import OrderedDict

import numpy as np

from .. import backend
from ..autograd import Tensor
from .formats import WeightsFileError, read_weights, safetensors_bytes  # noqa: F401 (WeightsFileError: re-exported)
from .module import Module

FORMATS = ("npz", "safetensors")


def _as_arrays(obj):
    """A model or a state dict as an ordered dict of host arrays."""
    if isinstance(obj, Module):
        return obj.state_dict()
    if not hasattr(obj, "items"):
        raise TypeError(f"save: expected a Module or a state dict (name -> array), got {type(obj).__name__}")
    arrays = OrderedDict()
    for key, value in obj.items():
        value = value.data if isinstance(value, Tensor) else value
        if not hasattr(value, "shape"):
            raise TypeError(f"save: entry {key!r} is a {type(value).__name__}, not an array or tensor; "
                            f"only arrays can be stored in a weights file")
        arrays[str(key)] = backend.to_numpy(value)
    return arrays


def save(obj, path, format=None):
    """Write a model's state_dict (or a state dict) to ``path``, atomically: ``format="npz"`` (the default)
    or ``"safetensors"`` (the default for a path ending in ``.safetensors``)."""
    if format is None:
        format = "safetensors" if os.fspath(path).endswith(".safetensors") else "npz"
    if format not in FORMATS:
        advice = (" (writing PyTorch's pickle format needs torch; save as safetensors, which torch reads with "
                  "safetensors.torch.load_file)" if format in ("pt", "pth", "torch") else "")
        raise ValueError(f"save: format must be one of {', '.join(FORMATS)}, got {format!r}{advice}")
    arrays = _as_arrays(obj)
    with atomic_write(path) as f:
        if format == "safetensors":
            f.write(safetensors_bytes(arrays))
        else:
            np.savez(f, **arrays)  # a file object: numpy adds no ".npz" to the name


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """A file object writing to a temporary file beside ``path``, which replaces ``path`` in one step
    (``os.replace``) when the block ends without error, so a reader never sees half a file.

    The file gets the mode a plain ``open`` would give it (``new_file_mode()``), not the 0o600
    that ``mkstemp`` gives a temporary file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def new_file_mode():
    """0o666 less the process umask: the permissions ``open(path, "w")`` gives a new file."""
    try:  # Linux shows the umask; reading it there leaves it untouched for other threads
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o077)  # elsewhere: set and put back (briefly stricter, never looser)
    os.umask(umask)
    return 0o666 & ~umask


def load(path):
    """Read a weights file (``.npz``, safetensors, or PyTorch's ``.pt``/``.pth``, told apart by their first
    bytes) into an ordered dict of NumPy arrays (a state dict); a PyTorch file comes back as the structure
    it pickled (usually a state dict), every tensor an array.

    A missing file raises FileNotFoundError (a folder IsADirectoryError); a truncated, corrupted or foreign
    file, or a pickle asking for anything beyond tensors, raises WeightsFileError naming the file. Nothing
    is loaded into any model here, so a bad file can never leave a model half-updated.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"weights file {path!r} is a folder; pass a weights file in it "
                                f"(a training run's best.npz or final.npz)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    return read_weights(path)
