"""Backend: which array library runs an array (NumPy on the CPU, CuPy on the GPU).

Every op is written once against ``xp = get_array_module(x)``; this module is the
only place that knows CuPy may be missing.
"""
import numpy as np

try:  # CuPy is optional: the `gpu` extra.
    import cupy as cp
except ImportError:  # pragma: no cover - depends on the machine
    cp = None

DEVICES = ("cpu", "gpu")
_DEVICE_ALIASES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


def gpu_status():
    """Return None when a GPU is usable, else one sentence saying why not and how to fix it."""
    if cp is None:
        return ("device 'gpu' needs CuPy, which is not installed: install it with "
                "`pip install 'scratchnet[gpu]'` (or the cupy-cudaXXx wheel matching your CUDA), "
                "or use device='cpu'")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device, broken install
        return (f"device 'gpu' needs a CUDA device, but CuPy cannot reach one ({exc.__class__.__name__}: "
                f"{exc}); check the NVIDIA driver with `nvidia-smi`, or use device='cpu'")
    if count == 0:
        return "device 'gpu' needs a CUDA device, but CuPy found none; use device='cpu'"
    return None


def gpu_available():
    return gpu_status() is None


def check_device(device):
    """Normalise a device name ('cpu', 'gpu' or 'cuda') and fail clearly if it cannot be used."""
    name = _DEVICE_ALIASES.get(str(device).lower()) if device is not None else None
    if name is None:
        raise DeviceError(f"unknown device {device!r}: use 'cpu' or 'gpu'")
    if name == "gpu":
        reason = gpu_status()
        if reason is not None:
            raise DeviceError(reason)
    return name


def get_array_module(*arrays):
    """numpy or cupy, whichever holds these arrays (numpy for Python scalars)."""
    if cp is not None:
        return cp.get_array_module(*arrays)
    return np


def device_of(array):
    if cp is not None and isinstance(array, cp.ndarray):
        return "gpu"
    return "cpu"


def to_numpy(array):
    """A host (NumPy) copy or view of an array on any device."""
    if cp is not None and isinstance(array, cp.ndarray):
        return cp.asnumpy(array)
    return np.asarray(array)


def to_device(array, device):
    """Move an array to 'cpu' or 'gpu' (no copy when it is already there)."""
    device = check_device(device)
    if device == "cpu":
        return to_numpy(array)
    return cp.asarray(array)


def xp_for(device):
    return cp if check_device(device) == "gpu" else np


def is_floating(dtype):
    return np.dtype(dtype).kind == "f"


# The default floating dtype, as in torch: float32 unless asked otherwise.
_default_dtype = np.dtype(np.float32)


def get_default_dtype():
    return _default_dtype


def set_default_dtype(dtype):
    global _default_dtype
    dtype = np.dtype(dtype)
    if not is_floating(dtype):
        raise TypeError(f"default dtype must be a floating type, got {dtype}")
    _default_dtype = dtype


# One seeded generator per device, so `manual_seed` makes runs repeatable.
_generators = {}


def manual_seed(seed):
    """Seed scratchnet's random generators (init, dropout, data shuffling) on every device."""
    _generators["cpu"] = np.random.default_rng(seed)
    if cp is not None:
        _generators["gpu"] = (seed,)  # created lazily, only if a GPU is used
    return seed


def rng(device="cpu"):
    """The random generator for a device (NumPy Generator or CuPy Generator)."""
    device = check_device(device)
    if device == "cpu":
        if "cpu" not in _generators:
            _generators["cpu"] = np.random.default_rng()
        return _generators["cpu"]
    state = _generators.get("gpu")
    if not hasattr(state, "random"):
        seed = state[0] if isinstance(state, tuple) else None
        _generators["gpu"] = cp.random.default_rng(seed)
    return _generators["gpu"]
