"""Normalisation: batch_norm and local_response_norm, with closed-form backwards.

batch_norm
    Training normalises with the batch's mean and *biased* variance, and
    updates the running statistics in place with the *unbiased* variance
    (n / (n - 1)), exactly as torch: ``running = (1 - momentum) * running +
    momentum * batch``. Evaluation normalises with the running statistics,
    so the output is an affine map of the input. Mixing the two up is the
    classic batch-norm bug: a model must be switched with ``.train()`` /
    ``.eval()``.

local_response_norm (torch's formula)
    ``b_c = a_c / (k + alpha / size * sum(a_j^2 for j in the window of c)) ** beta``,
    the window holding ``size`` channels: ``size // 2`` before c and
    ``(size - 1) // 2`` after, zero padded at the ends.

    The AlexNet paper (Krizhevsky et al. 2012, section 3.3) writes
    ``b = a / (k + alpha * sum a^2) ** beta`` with k=2, n=5, alpha=1e-4,
    beta=0.75: its alpha is *not* divided by n. torch (and scratchnet)
    divide alpha by size, so the paper's layer is
    ``local_response_norm(x, size=5, alpha=5e-4, beta=0.75, k=2.0)``
    (alpha = 1e-4 * 5). Chainer follows the paper's convention; torchvision's
    AlexNet has no LRN at all.
"""
import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from ..kernels.routes import BATCH_NORM, LOCAL_RESPONSE_NORM
from . import validate
from .math import check_float

# --------------------------------------------------------------------------- batch norm


class BatchNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel (axis 1).

    On the CPU, for (N, C, ...) inputs of a dtype the kernels know, the same formulas run as
    torch's fused CPU passes (kernels/cpu_norm.py, statistics in float64); elsewhere (the GPU,
    (N, C) inputs, float16) as the array code below (the table: kernels/routes.py's BATCH_NORM). Both keep x
    (as torch does), not x_hat.
    """

    saved_inputs = {"x": 0, "w": 1}

    def __init__(self, mean, var, eps, training, has_weight, has_bias):
        self.mean, self.var, self.eps = mean, var, eps  # None when training (batch stats are computed)
        self.training, self.has_weight, self.has_bias = training, has_weight, has_bias

    def forward(self, x, *affine):
        self.w = affine[0] if self.has_weight else None
        self.kernels = BATCH_NORM.choose(x, *affine).impl  # kernels/cpu.py, or None: the array code below
        if self.kernels is not None:
            return self._forward_kernels(x, *affine)
        xp = backend.get_array_module(x)
        self.axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)  # a per-channel vector broadcast against x
        if self.training:
            self.mean = x.mean(axis=self.axes)
            self.var = x.var(axis=self.axes)  # biased: the batch is normalised with its own spread
        self.inv_std = (1 / xp.sqrt(self.var + self.eps)).astype(x.dtype).reshape(shape)
        self.x = x
        x_hat = self._x_hat()
        weight = affine[0].reshape(shape) if self.has_weight else None
        self.weight = weight
        y = x_hat if weight is None else x_hat * weight
        if self.has_bias:
            y = y + affine[-1].reshape(shape)
        return y

    def _x_hat(self):
        """(x - mean) * inv_std, per channel (the array route; forward and backward compute it the same way)."""
        x = self.x
        return (x - self.mean.astype(x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2))) * self.inv_std

    def backward(self, gy):
        if self.kernels is not None:
            return self._backward_kernels(gy)
        needs = self.needs_input_grad
        x_hat = self._x_hat()
        g_hat = gy if self.weight is None else gy * self.weight
        gx = None
        if needs[0]:
            if self.training:
                # the standard closed form: the mean and variance depend on x too
                count = gy.size // gy.shape[1]
                sum_g = g_hat.sum(axis=self.axes, keepdims=True)
                sum_gx = (g_hat * x_hat).sum(axis=self.axes, keepdims=True)
                gx = self.inv_std / count * (count * g_hat - sum_g - x_hat * sum_gx)
            else:
                gx = g_hat * self.inv_std
        grads = [gx]
        if self.has_weight:
            grads.append((gy * x_hat).sum(axis=self.axes) if needs[1] else None)
        if self.has_bias:
            grads.append(gy.sum(axis=self.axes) if needs[-1] else None)
        return tuple(grads)

    # the same, as torch's CPU passes: per-channel scalars in float64, one elementwise pass each way
    def _forward_kernels(self, x, *affine):
        cpu = self.kernels
        if self.training:
            self.mean, self.var = cpu.batch_norm_stats(x)
        self.inv_std = 1 / np.sqrt(np.asarray(self.var, np.float64) + self.eps)
        self.scale = self.inv_std * affine[0].astype(np.float64) if self.has_weight else self.inv_std
        shift = -np.asarray(self.mean, np.float64) * self.scale
        if self.has_bias:
            shift = shift + affine[-1].astype(np.float64)
        self.x = x
        return cpu.batch_norm_scale_shift(x, self.scale, shift)

    def _backward_kernels(self, gy):
        cpu, needs = self.kernels, self.needs_input_grad
        grads = [None] * len(needs)
        if self.training or self.has_weight and needs[1]:
            sum_gy, dot = cpu.batch_norm_grad_sums(gy, self.x, np.asarray(self.mean, np.float64))
        else:
            sum_gy = gy.sum(axis=(0,) + tuple(range(2, gy.ndim)), dtype=np.float64) if self.has_bias else None
        if needs[0]:
            if self.training:  # the mean and variance depend on x too
                count = gy.size // gy.shape[1]
                k = dot * self.inv_std ** 2 / count
                grads[0] = cpu.batch_norm_grad_input(gy, self.x, self.mean, sum_gy / count, k, self.scale)
            else:
                grads[0] = cpu.batch_norm_scale_shift(gy, self.scale, np.zeros_like(self.scale))
        if self.has_weight and needs[1]:
            grads[1] = (dot * self.inv_std).astype(gy.dtype)
        if self.has_bias and needs[-1]:
            grads[-1] = sum_gy.astype(gy.dtype)
        return tuple(grads)

    def differentiable_backward(self, gy):
        """The same gradients as Tensor ops of x, the weight and gy; in training the batch mean and
        variance are functions of x again, so their second derivatives come along."""
        needs = self.needs_input_grad
        x = self.saved_input(0)
        axes, shape = (0,) + tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)
        if self.training:
            centred = x - x.mean(axes, keepdim=True)
            inv_std = ((centred * centred).mean(axes, keepdim=True) + self.eps) ** -0.5
        else:  # the running statistics: constants
            xp = backend.get_array_module(x.data)
            centred = x - Tensor(xp.asarray(self.mean, dtype=x.dtype).reshape(shape))
            inv_std = Tensor((1 / xp.sqrt(xp.asarray(self.var, np.float64) + self.eps)).astype(x.dtype).reshape(shape))
        x_hat = centred * inv_std
        g_hat = gy * self.saved_input(1).reshape(shape) if self.has_weight else gy
        grads = [None] * len(needs)
        if needs[0]:
            if self.training:
                count = gy.size // gy.shape[1]
                grads[0] = inv_std / count * (count * g_hat - g_hat.sum(axes, keepdim=True)
                                              - x_hat * (g_hat * x_hat).sum(axes, keepdim=True))
            else:
                grads[0] = g_hat * inv_std
        if self.has_weight and needs[1]:
            grads[1] = (gy * x_hat).sum(axes)
        if self.has_bias and needs[-1]:
            grads[-1] = gy.sum(axes)
        return tuple(grads)


def _raw(t):
    return t.data if isinstance(t, Tensor) else t


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation over (N, C), (N, C, L) or (N, C, H, W) input, as torch.nn.functional.batch_norm.

    ``running_mean`` / ``running_var`` are tensors (the module's buffers) updated
    in place when ``training``; they may be None when training (no tracking).
    """
    check_float("batch_norm", x, weight, bias)
    validate.batch_norm_args("batch_norm", eps, momentum, training)
    if x.ndim < 2:
        raise ValueError(f"batch_norm expects input of shape (N, C, ...), got {x.shape}")
    c = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"batch_norm: {name} must have shape ({c},) for input {x.shape}, got {tuple(t.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    count = x.size // c
    if training and count == 1:  # N = 0 is fine (an empty batch, as torch); one value has no variance
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
    if not training and running_mean is None:
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and running_var")
    if training and running_mean is not None and momentum is None:
        raise ValueError("batch_norm: momentum must be a number; momentum=None (a cumulative average, torch's "
                         "BatchNorm option) is computed by the module as 1 / num_batches_tracked")
    affine = [t for t in (weight, bias) if t is not None]
    if training and count == 0:  # an empty batch: an empty output, running statistics untouched (torch)
        xp = backend.get_array_module(x.data)
        return BatchNorm(xp.zeros(c, x.dtype), xp.ones(c, x.dtype), eps, False, weight is not None,
                         bias is not None)(x, *affine)
    if training:
        fn = BatchNorm(None, None, eps, True, weight is not None, bias is not None)
    else:
        fn = BatchNorm(_raw(running_mean), _raw(running_var), eps, False, weight is not None, bias is not None)
    y = fn(x, *affine)
    if training and running_mean is not None:
        # in place on the buffers' arrays, so every holder of them sees the update (torch's semantics)
        mean_buf, var_buf = _raw(running_mean), _raw(running_var)
        mean_buf[...] = (1 - momentum) * mean_buf + momentum * fn.mean
        var_buf[...] = (1 - momentum) * var_buf + momentum * fn.var * (count / (count - 1))  # unbiased
    return y


# --------------------------------------------------------------------------- local response norm


def _channel_window_sum(a, before, after):
    """s[:, c] = sum of a[:, c - before : c + after + 1] (zero outside), for any trailing dims.

    A loop over the few window offsets (size is 5 in AlexNet), never over channels.
    """
    xp = backend.get_array_module(a)
    c = a.shape[1]
    padded = xp.pad(a, [(0, 0), (before, after)] + [(0, 0)] * (a.ndim - 2))
    total = padded[:, 0:c].copy()
    for offset in range(1, before + after + 1):
        total += padded[:, offset:offset + c]
    return total


class LocalResponseNorm(Function):
    """On the CPU the same formulas run as two Numba kernels each way around NumPy's power
    (kernels/cpu_norm.py: the same numbers); elsewhere (the GPU, float16) as the array code below
    (the table: kernels/routes.py's LOCAL_RESPONSE_NORM)."""

    saved_inputs = {"x": 0}

    def __init__(self, size, alpha, beta, k):
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        self.kernels = LOCAL_RESPONSE_NORM.choose(x).impl  # the device's kernel module, or None: the array code
        if self.kernels is not None:
            self.x = x
            y, self.scale, self.factor = self.kernels.local_response_norm_forward(
                x, self.size, self.alpha, self.beta, self.k)
            return y
        size = self.size
        self.scale = self.k + (self.alpha / size) * _channel_window_sum(x * x, size // 2, (size - 1) // 2)
        self.x = x
        self.factor = self.scale ** -self.beta
        return x * self.factor

    def backward(self, gy):
        if self.kernels is not None:
            return (self.kernels.local_response_norm_backward(gy, self.x, self.scale, self.factor,
                                                              self.size, self.alpha, self.beta),)
        # x_c enters its own output directly and every output whose window holds c:
        # gx_c = gy_c s_c^-beta - 2 alpha beta / size * x_c * sum_{j: c in win(j)} gy_j x_j s_j^(-beta-1)
        size = self.size
        spread = gy * self.x * self.factor / self.scale
        # the windows containing c are the mirror image: (size-1)//2 before, size//2 after
        back = _channel_window_sum(spread, (size - 1) // 2, size // 2)
        return (gy * self.factor - (2 * self.alpha * self.beta / size) * self.x * back,)

    def differentiable_backward(self, gy):
        size, x = self.size, self.saved_input(0)
        scale = self.k + (self.alpha / size) * ChannelWindowSum(size // 2, (size - 1) // 2)(x * x)
        factor = scale ** -self.beta
        back = ChannelWindowSum((size - 1) // 2, size // 2)(gy * x * factor / scale)
        return (gy * factor - (2 * self.alpha * self.beta / size) * x * back,)


class ChannelWindowSum(Function):
    """_channel_window_sum as an op (LRN's double backward): its adjoint sums over the mirrored window."""

    def __init__(self, before, after):
        self.before, self.after = before, after

    def forward(self, a):
        return _channel_window_sum(a, self.before, self.after)

    def backward(self, g):
        return (_channel_window_sum(g, self.after, self.before),)

    def differentiable_backward(self, g):
        return (ChannelWindowSum(self.after, self.before)(g),)


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """torch.nn.functional.local_response_norm (alpha is divided by size; see the module docstring)."""
    check_float("local_response_norm", x)
    if x.ndim < 3:
        raise ValueError(f"local_response_norm expects input of 3 or more dims (N, C, ...), got {x.shape}")
    size = validate.lrn_size("local_response_norm", size)
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        validate.number("local_response_norm", name, value)
    return LocalResponseNorm(size, alpha, beta, k)(x)
