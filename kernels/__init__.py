"""Hot-path kernels: CUDA RawKernels (*.cu) with their launcher, and Numba CPU kernels.

Raw arrays in, raw arrays out (no autograd here). ``for_array(x)`` returns the
module for x's device; both modules share one API:

    im2col, col2im, depthwise_forward, depthwise_backward_input,
    depthwise_backward_weight, max_pool2d_forward, max_pool2d_backward,
    deform_im2col, deform_col2im, deform_col2im_coord (deformable convolution)

and, on the GPU only, the direct dense convolution (``conv2d_forward``,
``conv2d_backward_input``, ``conv2d_backward_weight``); on the CPU only,
``relu_forward``/``relu_backward``, ``sgd_step`` and batch norm's
``batch_norm_stats``, ``batch_norm_scale_shift``, ``batch_norm_grad_sums`` and
``batch_norm_grad_input`` (a pass or two each where NumPy takes several).
"""
import numpy as np

from ..backend import device_of

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def supports(*arrays):
    """Whether the kernels handle these arrays (float32 or float64, all one dtype)."""
    return all(a.dtype == arrays[0].dtype for a in arrays) and arrays[0].dtype in DTYPES


def for_array(array):
    """kernels.cpu (Numba) for NumPy arrays, kernels.cuda (CuPy) for CuPy arrays."""
    if device_of(array) == "gpu":
        from . import cuda
        return cuda
    from . import cpu
    return cpu
