"""The default floating dtype, as in torch: float32 unless asked otherwise."""
import numpy as np

_default_dtype = np.dtype(np.float32)


def is_floating(dtype):
    return np.dtype(dtype).kind == "f"


def get_default_dtype():
    return _default_dtype


def set_default_dtype(dtype):
    global _default_dtype
    dtype = np.dtype(dtype)
    if not is_floating(dtype):
        raise TypeError(f"default dtype must be a floating type, got {dtype}")
    _default_dtype = dtype
