"""Weight initialisers, in place, with torch's names and formulas.

All draw from scratchnet's seeded generator (``sn.manual_seed``) on the CPU
and copy to the tensor's device, so a seed gives the same weights anywhere.
"""
import math

import numpy as np

from .. import backend


def _fill(tensor, values):
    xp = backend.get_array_module(tensor.data)
    tensor.data = xp.asarray(np.asarray(values, dtype=tensor.dtype).reshape(tensor.shape))
    return tensor


def _fans(tensor):
    """(fan_in, fan_out) of a Linear (out, in) or Conv (out, in/groups, kh, kw) weight."""
    if tensor.ndim < 2:
        raise ValueError(f"fan in/out needs a weight with at least 2 dims, got shape {tensor.shape}")
    receptive = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def calculate_gain(nonlinearity, param=None):
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                        "conv_transpose3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}")


def _draw_dtype(tensor):
    # draw float32 weights in float32: a 200M-weight layer (YOLO's FC) initialises twice as fast
    return np.float32 if tensor.dtype == np.float32 else np.float64


def uniform_(tensor, a=0.0, b=1.0):
    dtype = _draw_dtype(tensor)
    return _fill(tensor, dtype(a) + dtype(b - a) * backend.rng().random(tensor.shape, dtype=dtype))


def normal_(tensor, mean=0.0, std=1.0):
    dtype = _draw_dtype(tensor)
    return _fill(tensor, dtype(mean) + dtype(std) * backend.rng().standard_normal(tensor.shape, dtype=dtype))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """Normal(mean, std) redrawn until inside [a, b] (absolute bounds, as torch)."""
    generator = backend.rng()
    values = generator.normal(mean, std, tensor.shape)
    bad = (values < a) | (values > b)
    while bad.any():
        values[bad] = generator.normal(mean, std, int(bad.sum()))
        bad = (values < a) | (values > b)
    return _fill(tensor, values)


def constant_(tensor, value):
    return _fill(tensor, np.full(tensor.shape, value))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0):
    fan_in, fan_out = _fans(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    fan_in, fan_out = _fans(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _kaiming_std(tensor, a, mode, nonlinearity):
    fan_in, fan_out = _fans(tensor)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    if tensor.size == 0:  # torch: initializing a zero-element tensor is a no-op (Linear(0, 3), Conv2d(0, ...))
        return tensor
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))


def default_layer_init_(weight, bias=None):
    """torch's default for Linear and Conv: kaiming_uniform(a=sqrt(5)) weight, U(+-1/sqrt(fan_in)) bias."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = _fans(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound)
