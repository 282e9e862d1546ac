"""The tables of the ops with kernels (kernels/dispatch.py chooses): which route runs which call.

conv2d's table, whose routes combine kernels with BLAS GEMMs, is functional/conv_routes.py's.
Each op's Function (or optimizer) calls ``TABLE.choose(...)`` once per call and runs what it
gets: ``.impl`` is the device's kernel module (kernels/cpu.py, kernels/cuda.py) or None, the
op's own array code, which stays the reference every kernel is tested against
(tests/kernels/test_speed_paths.py asserts the route each case takes).
"""
from collections import namedtuple

from .dispatch import ANY, ARRAY_CODE, KERNEL_DTYPES, KERNELS, Op, Route, device, same_dtype

# ---- relu (functional/activation.py ReLU)
RELU = Op("relu", needs=("relu_forward", "relu_backward"), routes={
    #              implementation  devices         dtypes         fits
    "kernel":      Route(KERNELS,    ("cpu",),        KERNEL_DTYPES, None),  # one pass writes y and the mask
    "reference":   Route(ARRAY_CODE, ("cpu", "gpu"),  ANY,           None),
})  # noqa: E241 (aligned so the routes read as a table)

# ---- leaky_relu (functional/activation.py LeakyReLU)
LEAKY_RELU = Op("leaky_relu", needs=("leaky_relu_forward", "leaky_relu_backward"), routes={
    "kernel":      Route(KERNELS,    ("cpu",),        KERNEL_DTYPES, None),  # as relu's, the slope in x's dtype
    "reference":   Route(ARRAY_CODE, ("cpu", "gpu"),  ANY,           None),
})  # noqa: E241

# ---- sigmoid and silu (functional/activation.py Sigmoid, SiLU): fused passes around NumPy's exp
SIGMOID = Op("sigmoid", needs=("sigmoid_forward", "sigmoid_backward"), routes={
    "kernel":      Route(KERNELS,    ("cpu",),        KERNEL_DTYPES, None),  # the array code's numbers, bit for bit
    "reference":   Route(ARRAY_CODE, ("cpu", "gpu"),  ANY,           None),
})  # noqa: E241

SILU = Op("silu", needs=("silu_forward", "silu_backward"), routes={
    "kernel":      Route(KERNELS,    ("cpu",),        KERNEL_DTYPES, None),  # y and sigmoid in one pass, bit for bit
    "reference":   Route(ARRAY_CODE, ("cpu", "gpu"),  ANY,           None),
})  # noqa: E241

# ---- mul (functional/math.py Mul): the kernels take x (N, C, ...) times one value per plane, s (N, C, 1, ...),
# in either order (squeeze-excitation's gates); every other product is the array code's
MulCall = namedtuple("MulCall", "device dtype planes_first planes_second")  # which operand is the (N, C, ...) one


def one_value_per_plane(x_shape, s_shape):
    return len(x_shape) > 2 and s_shape == x_shape[:2] + (1,) * (len(x_shape) - 2)


def _describe_mul(a, b):
    return device(a), same_dtype(a, b), one_value_per_plane(a.shape, b.shape), one_value_per_plane(b.shape, a.shape)


MUL = Op("mul", describe=_describe_mul, record=MulCall, needs=("channel_scale_forward", "channel_scale_backward"),
         routes={
    "kernel":      Route(KERNELS,    ("cpu",),        KERNEL_DTYPES, lambda c: c.planes_first or c.planes_second),
    "reference":   Route(ARRAY_CODE, ("cpu", "gpu"),  ANY,           None),
})  # noqa: E241,E128

# ---- max_pool2d (functional/pool.py MaxPool2d)
MAX_POOL2D = Op("max_pool2d", needs=("max_pool2d_forward", "max_pool2d_backward"), routes={
    "kernel":      Route(KERNELS,    ("cpu", "gpu"),  KERNEL_DTYPES, None),  # forward with argmax, backward scatter
    "reference":   Route(ARRAY_CODE, ("cpu", "gpu"),  ANY,           None),  # im2col's columns, a max per window
})  # noqa: E241

# ---- batch_norm (functional/norm.py BatchNorm): the input and the affine parameters in one dtype
BatchNormCall = namedtuple("BatchNormCall", "device dtype planes")  # planes: an (N, C, ...) input, not (N, C)


def _describe_batch_norm(x, *affine):
    return device(x), same_dtype(x, *affine), x.ndim > 2


BATCH_NORM = Op("batch_norm", describe=_describe_batch_norm, record=BatchNormCall,
                needs=("batch_norm_stats", "batch_norm_scale_shift", "batch_norm_grad_sums", "batch_norm_grad_input"),
                routes={
    "kernel":      Route(KERNELS,    ("cpu",),        KERNEL_DTYPES, lambda c: c.planes),  # torch's CPU passes
    "reference":   Route(ARRAY_CODE, ("cpu", "gpu"),  ANY,           None),
})  # noqa: E241,E128

# ---- local_response_norm (functional/norm.py LocalResponseNorm)
LOCAL_RESPONSE_NORM = Op("local_response_norm", needs=("local_response_norm_forward",
                                                       "local_response_norm_backward"), routes={
    "kernel":      Route(KERNELS,    ("cpu",),        KERNEL_DTYPES, None),  # window sums in the array code's order
    "reference":   Route(ARRAY_CODE, ("cpu", "gpu"),  ANY,           None),
})  # noqa: E241

# ---- the optimizers' steps (optim/sgd.py, optim/adam.py), one call per parameter
SGDCall = namedtuple("SGDCall", "device dtype flat")  # flat: every array C-contiguous, in p's shape


def _describe_sgd(p, grad, buf):
    arrays = (p, grad) if buf is None else (p, grad, buf)
    return device(p), same_dtype(p, grad, buf), all(a.flags.c_contiguous and a.shape == p.shape for a in arrays)


SGD = Op("sgd", describe=_describe_sgd, record=SGDCall, needs=("sgd_step",), routes={
    "kernel":      Route(KERNELS,    ("cpu",),        KERNEL_DTYPES, lambda c: c.flat),  # one pass, bit for bit
    "reference":   Route(ARRAY_CODE, ("cpu", "gpu"),  ANY,           None),
})  # noqa: E241

ADAM = Op("adam", routes={  # no fused kernel yet: a row here and an adam_step in kernels/interface.py's CPU
    "reference":   Route(ARRAY_CODE, ("cpu", "gpu"),  ANY,           None),
})  # noqa: E241
