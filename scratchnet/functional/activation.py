"""Activations: relu, leaky_relu, sigmoid, tanh, silu, softmax, log_softmax.

Each keeps for backward the one array its derivative is cheapest to write in:
a mask for the ReLUs, the output for sigmoid/tanh/softmax/log_softmax (their
derivatives are functions of the output), the input and sigmoid for SiLU.

softmax/log_softmax take ``dim`` as torch does; torch warns when it is left
out and guesses, scratchnet picks ``dim=-1`` (the last axis, the class axis
of an (N, C) batch of logits) and says so here instead of guessing by rank.
"""
from .. import backend
from ..autograd import Function, Tensor, apply_inplace
from ..kernels.routes import LEAKY_RELU, RELU, SIGMOID, SILU
from . import validate
from .math import check_float, where


class ReLU(Function):
    """max(x, 0); backward needs only where the input was kept (a bool mask). torch's rule: NaN passes,
    value and gradient. On the CPU one Numba pass writes both (kernels/cpu.py); elsewhere array code
    (the table: kernels/routes.py's RELU). ``inplace``: the output is x's own array, written over (relu's
    ``inplace=True``, which hands this function x's array)."""

    def __init__(self, inplace=False):
        self.inplace = inplace

    def forward(self, x):
        self.kernels = RELU.choose(x).impl  # the device's kernel module, or None: the array code below
        if self.kernels is not None:
            y, self.mask = self.kernels.relu_forward(x, inplace=self.inplace)
            return y
        xp = backend.get_array_module(x)
        self.mask = ~(x <= 0)  # True for NaN
        if self.inplace:
            xp.copyto(x, x.dtype.type(0), where=~self.mask)
            return x
        return xp.where(self.mask, x, x.dtype.type(0))

    def backward(self, gy):
        if self.kernels is not None:
            return (self.kernels.relu_backward(gy, self.mask),)
        return (backend.get_array_module(gy).where(self.mask, gy, gy.dtype.type(0)),)

    def differentiable_backward(self, gy):  # the mask is constant wherever the derivative exists
        return (where(self.mask, gy, 0.0),)


class LeakyReLU(Function):
    """x where x > 0, negative_slope * x elsewhere (the slope also at 0, as torch). On the CPU one Numba
    pass each way, the array code's numbers (kernels/cpu.py); elsewhere array code (the table:
    kernels/routes.py's LEAKY_RELU)."""

    def __init__(self, negative_slope):
        self.negative_slope = negative_slope

    def forward(self, x):
        self.kernels = LEAKY_RELU.choose(x).impl  # the device's kernel module, or None: the array code below
        if self.kernels is not None:
            y, self.mask = self.kernels.leaky_relu_forward(x, self.negative_slope)
            return y
        xp = backend.get_array_module(x)
        self.mask = x > 0
        return xp.where(self.mask, x, x * x.dtype.type(self.negative_slope))

    def backward(self, gy):
        if self.kernels is not None:
            return (self.kernels.leaky_relu_backward(gy, self.mask, self.negative_slope),)
        xp = backend.get_array_module(gy)
        return (xp.where(self.mask, gy, gy * gy.dtype.type(self.negative_slope)),)

    def differentiable_backward(self, gy):
        return (where(self.mask, gy, gy * self.negative_slope),)


def _stable_sigmoid(x):
    """1 / (1 + e^-x) without overflow: use e^-|x| <= 1 on both sides of zero."""
    xp = backend.get_array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Function):
    """1 / (1 + e^-x), stably; backward needs only the output. On the CPU the same formulas in fused
    Numba passes around NumPy's exp (kernels/cpu_activation.py: the same numbers); elsewhere array code
    (the table: kernels/routes.py's SIGMOID)."""

    saved_outputs = {"y": 0}

    def forward(self, x):
        self.kernels = SIGMOID.choose(x).impl  # the device's kernel module, or None: the array code
        self.y = self.kernels.sigmoid_forward(x) if self.kernels is not None else _stable_sigmoid(x)
        return self.y

    def backward(self, gy):
        if self.kernels is not None:
            return (self.kernels.sigmoid_backward(gy, self.y),)
        return (gy * self.y * (1 - self.y),)

    def differentiable_backward(self, gy):
        y = self.saved_output(0)
        return (gy * y * (1 - y),)


class Tanh(Function):
    saved_outputs = {"y": 0}

    def forward(self, x):
        self.y = backend.get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        return (gy * (1 - self.y * self.y),)

    def differentiable_backward(self, gy):
        y = self.saved_output(0)
        return (gy * (1 - y * y),)


class SiLU(Function):
    """x * sigmoid(x) (swish); d/dx = s * (1 + x * (1 - s)). On the CPU the same formulas in fused Numba
    passes (kernels/cpu_activation.py, the same numbers: EfficientNet-B0's 49 SiLUs, N=8, one thread,
    forward 4x faster); elsewhere array code (the table: kernels/routes.py's SILU)."""

    saved_inputs = {"x": 0}

    def forward(self, x):
        self.x = x
        self.kernels = SILU.choose(x).impl  # the device's kernel module, or None: the array code
        if self.kernels is not None:
            y, self.s = self.kernels.silu_forward(x)
            return y
        self.s = _stable_sigmoid(x)
        return x * self.s

    def backward(self, gy):
        if self.kernels is not None:
            return (self.kernels.silu_backward(gy, self.x, self.s),)
        s = self.s
        return (gy * s * (1 + self.x * (1 - s)),)

    def differentiable_backward(self, gy):
        x = self.saved_input(0)
        s = Sigmoid()(x)  # s as a function of x (forward kept its values only)
        return (gy * s * (1 + x * (1 - s)),)


class Softmax(Function):
    saved_outputs = {"y": 0}

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))  # shift: exp never overflows
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy):
        y = self.y
        return (y * (gy - (gy * y).sum(axis=self.axis, keepdims=True)),)

    def differentiable_backward(self, gy):
        y = self.saved_output(0)
        return (y * (gy - (gy * y).sum(self.axis, keepdim=True)),)


class LogSoftmax(Function):
    """x - logsumexp(x), with the max shifted out so it neither overflows nor loses the small terms."""

    saved_outputs = {"y": 0}

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        shifted = x - x.max(axis=self.axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        return self.y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        return (gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True),)

    def differentiable_backward(self, gy):
        return (gy - self.saved_output(0).exp() * gy.sum(self.axis, keepdim=True),)


def relu(x, inplace=False):
    """max(x, 0), as torch.nn.functional.relu. ``inplace=True`` writes the result into x and returns x, with
    torch's in-place rules (autograd.apply_inplace): recorded as the last op of x's history, refused on a
    leaf that requires grad, and a backward that kept x's old value refuses to run."""
    check_float("relu", x)
    if not inplace:
        return ReLU()(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"relu(inplace=True) writes into a Tensor's array, got {type(x).__name__}; pass a Tensor "
                        f"(sn.tensor(x)) or use inplace=False")
    # unrecorded (no_grad, or nothing requires grad): still a call of the Function on x itself, so that
    # FunctionHooks (the ONNX exporter, the profiler) see the op and that its output is x's array
    return apply_inplace(x, "relu_", (), lambda prior: ReLU(inplace=True)(prior),
                         lambda array: ReLU(inplace=True)(x))


def relu_(x):
    """relu(x, inplace=True), as torch.relu_."""
    return relu(x, inplace=True)


def leaky_relu(x, negative_slope=0.01):
    check_float("leaky_relu", x)
    validate.number("leaky_relu", "negative_slope", negative_slope)
    return LeakyReLU(negative_slope)(x)


def sigmoid(x):
    check_float("sigmoid", x)
    return Sigmoid()(x)


def tanh(x):
    check_float("tanh", x)
    return Tanh()(x)


def silu(x):
    check_float("silu", x)
    return SiLU()(x)


def _softmax_axis(op, x, dim):
    if dim is None:
        dim = -1  # documented choice (module docstring): torch would warn and guess by rank
    if x.ndim == 0:
        raise ValueError(f"{op}: needs at least one dimension, got a 0-d tensor")
    return validate.dim(op, dim, x.ndim)


def softmax(x, dim=None):
    """exp(x) / sum(exp(x)) along ``dim`` (None means -1, see the module docstring)."""
    check_float("softmax", x)
    return Softmax(_softmax_axis("softmax", x, dim))(x)


def log_softmax(x, dim=None):
    """log(softmax(x)) computed stably along ``dim`` (None means -1)."""
    check_float("log_softmax", x)
    return LogSoftmax(_softmax_axis("log_softmax", x, dim))(x)
