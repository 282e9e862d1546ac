"""Which array library runs an array (NumPy on the CPU, CuPy on the GPU), devices, and moves between them.

Every op is written once against ``xp = get_array_module(x)``.
"""
import numpy as np

from . import gpu

DEVICES = ("cpu", "gpu")
_DEVICE_ALIASES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


def check_device(device):
    """Normalise a device name ('cpu', 'gpu' or 'cuda') and fail clearly if it cannot be used."""
    name = _DEVICE_ALIASES.get(str(device).lower()) if device is not None else None
    if name is None:
        raise DeviceError(f"unknown device {device!r}: use 'cpu' or 'gpu'")
    if name == "gpu":
        reason = gpu.gpu_status()
        if reason is not None:
            raise DeviceError(reason)
    return name


def get_array_module(*arrays):
    """numpy or cupy, whichever holds these arrays (numpy for Python scalars)."""
    cp = gpu.cp
    if cp is None or all(type(a) is np.ndarray for a in arrays):  # the CPU's case, without CuPy's checks
        return np
    return cp.get_array_module(*arrays)


def device_of(array):
    cp = gpu.cp
    if cp is not None and isinstance(array, cp.ndarray):
        return "gpu"
    return "cpu"


def to_numpy(array):
    """A host (NumPy) copy or view of an array on any device."""
    cp = gpu.cp
    if cp is not None and isinstance(array, cp.ndarray):
        return cp.asnumpy(array)
    return np.asarray(array)


def to_device(array, device):
    """Move an array to 'cpu' or 'gpu' (no copy when it is already there)."""
    if check_device(device) == "cpu":
        return to_numpy(array)
    return gpu.cp.asarray(array)


def xp_for(device):
    return gpu.cp if check_device(device) == "gpu" else np
