"""What a device's kernel module provides: each function's name and parameters, declared and checked.

``kernels.for_array(x)`` hands an op the module for x's device, and the op calls the functions
declared here by name:

    CPU    kernels/cpu.py (Numba kernels and the Winograd transforms; NumPy arrays)
    CUDA   kernels/cuda.py on a GPU, and the CPU emulator's API (launcher.KernelAPI) in the tests

Each module checks itself against its list when it is imported (``check``), so a missing or
renamed function, or a changed parameter list, fails at import, not in the middle of a training
step. An op's table (kernels/dispatch.py) names the functions its kernel route calls; they are
checked against these lists when the table is built. All take and return raw arrays (NCHW), never
tensors.
"""
import inspect

# Both devices: convolution's building blocks (deformable convolution's too) and max pooling.
SHARED = {
    "im2col": "(x, kernel, stride, padding, dilation, out_hw, pad_value=0)",  # -> col (C, kh, kw, N, oh, ow)
    "col2im": "(col, x_shape, stride, padding, dilation)",  # -> x: im2col's adjoint (overlaps add up)
    "depthwise_forward": "(x, w, stride, padding, dilation, out_hw)",  # groups = C -> y
    "depthwise_backward_input": "(gy, w, x_shape, stride, padding, dilation)",  # -> gx
    "depthwise_backward_weight": "(gy, x, w_shape, stride, padding, dilation)",  # -> gw
    "max_pool2d_forward": "(x, kernel, stride, padding, dilation, out_hw)",  # -> (y, argmax: flat index in the plane)
    "max_pool2d_backward": "(gy, argmax, x_shape)",  # -> gx
    # deformable convolution: im2col at the offset (and masked) sampling positions, and its adjoints
    "deform_im2col": "(x, offset, mask, kernel, stride, padding, dilation, out_hw)",  # -> col; mask may be None
    "deform_col2im": "(gcol, offset, mask, x_shape, stride, padding, dilation)",  # -> gx
    "deform_col2im_coord": "(gcol, x, offset, mask, stride, padding, dilation)",  # -> (goffset, gmask or None)
}

# The CPU also fuses the elementwise passes NumPy would take several of (the GPU runs CuPy's array
# code for these), and has the Winograd route's transforms.
CPU = {
    **SHARED,
    "relu_forward": "(x, inplace=False)",  # -> (y, mask): torch's rule, NaN passes; inplace: y is x
    "relu_backward": "(gy, mask)",  # -> gx
    "leaky_relu_forward": "(x, negative_slope)",  # -> (y, mask = x > 0)
    "leaky_relu_backward": "(gy, mask, negative_slope)",  # -> gx
    "sigmoid_forward": "(x)",  # -> s = 1 / (1 + e^-x), the stable form around NumPy's exp
    "sigmoid_backward": "(gy, s)",  # -> gy * s * (1 - s)
    "silu_forward": "(x)",  # -> (y = x * s, s = sigmoid(x))
    "silu_backward": "(gy, x, s)",  # -> gy * s * (1 + x * (1 - s))
    "channel_scale_forward": "(x, s)",  # x (N, C, ...) * s (N, C, 1, ...) -> y
    "channel_scale_backward": "(gy, x, s)",  # -> (gx = gy * s or None, gs = per-plane sum(gy * x) or None)
    "local_response_norm_forward": "(x, size, alpha, beta, k)",  # -> (y, scale, factor = scale^-beta)
    "local_response_norm_backward": "(gy, x, scale, factor, size, alpha, beta)",  # -> gx
    "batch_norm_stats": "(x)",  # -> (mean, biased variance) per channel, float64
    "batch_norm_scale_shift": "(x, scale, shift)",  # -> x * scale[c] + shift[c]
    "batch_norm_grad_sums": "(gy, x, mean)",  # -> (sum gy, sum gy * (x - mean)) per channel, float64
    "batch_norm_grad_input": "(gy, x, mean, mean_gy, k, scale)",  # -> (gy - mean_gy - (x - mean) * k) * scale
    # -> (p, updated in place where it can be written; the momentum buffer)
    "sgd_step": "(p, grad, buf, lr, momentum, dampening, weight_decay, nesterov)",
    # im2col and col2im on the calling thread alone, the GIL released: one thread's share of a batch
    "im2col_one_thread": "(x, kernel, stride, padding, dilation, out_hw, pad_value=0)",  # -> col
    "col2im_one_thread": "(col, x_shape, stride, padding, dilation)",  # -> x
    # the im2col route's batch chunks lo:hi (starts: each lo, then the last hi) shared between Numba's threads,
    # columns, GEMM (NumPy's BLAS at one thread) and placement by one thread each; None where they cannot run
    # -> (y, each chunk's columns where keep, else None)
    "im2col_chunks_forward": "(x, w_groups, kernel, starts, threads, stride, padding, dilation, out_hw, keep=False)",
    # -> (gx or None, the weight gradient's product per chunk or None): gx where w_t is given, those where x is
    # (from the columns the forward kept, where given)
    "im2col_chunks_backward": "(gy, x, w_t, x_shape, w_shape, groups, starts, threads, stride, padding, dilation, "
                              "columns=None)",
    # np.matmul(a, b, out) on a stack of GEMMs, the items shared between Numba's threads (kernels/cpu_gemm.py)
    "stacked_matmul": "(a, b, out=None)",
    "winograd_forward": "(x, w, padding, *, tile=None)",  # 3x3 stride 1 -> y
    "winograd_backward_input": "(gy, w, x_shape, padding, *, tile=None)",  # -> gx
    "winograd_backward_weight": "(gy, x, w_shape, padding, *, tile=None)",  # -> gw
}

# The GPU also has the tiled direct convolution (on the CPU im2col + BLAS is faster).
CUDA = {
    **SHARED,
    "conv2d_forward": "(x, w, stride, padding, dilation, groups, out_hw)",  # -> y
    "conv2d_backward_input": "(gy, w, x_shape, stride, padding, dilation, groups)",  # -> gx
    "conv2d_backward_weight": "(gy, x, w_shape, stride, padding, dilation, groups)",  # -> gw
}

INTERFACES = {"cpu": CPU, "gpu": CUDA}


class KernelInterfaceError(ImportError):
    """A kernel module does not provide what its device's interface declares (or a table asks for more)."""


def missing(provider, device):
    """What ``provider`` (a module or an object) lacks of the device's interface: one line per function."""
    problems = []
    for name, parameters in INTERFACES[device].items():
        function = getattr(provider, name, None)
        if not callable(function):
            problems.append(f"{name}{parameters} is missing")
        elif str(inspect.signature(function)) != parameters:
            problems.append(f"{name} takes {inspect.signature(function)}, the interface declares {parameters}")
    return problems


def check(provider, device):
    """Raise KernelInterfaceError unless ``provider`` has every function of the device's interface."""
    problems = missing(provider, device)
    if problems:
        name = getattr(provider, "__name__", type(provider).__name__)
        raise KernelInterfaceError(f"{name} does not provide the {device} kernel interface "
                                   f"(kernels/interface.py): " + "; ".join(problems))
