"""Hot-path kernels: CUDA RawKernels (*.cu) with their launcher, and Numba CPU kernels.

Raw arrays in, raw arrays out (no autograd here). Each device has one kernel module, whose
functions kernels/interface.py declares (and each module checks at import):

    cpu   kernels/cpu.py    Numba kernels (NumPy arrays): im2col/col2im, depthwise, max-pool,
                            deformable im2col and its adjoints, ReLU, sigmoid, SiLU, batch norm,
                            local response norm, the SGD step, the Winograd transforms and stacks
                            of BLAS GEMMs shared between Numba's threads (cpu_gemm.py)
    gpu   kernels/cuda.py   CUDA kernels (CuPy arrays): im2col/col2im, depthwise, max-pool,
                            deformable im2col and its adjoints, and the tiled direct convolution

``for_array(x)`` returns the module for x's device. Which op takes which kernel is decided in one
place per op: its table (kernels/dispatch.py; the tables are kernels/routes.py's and, for
conv2d, functional/conv_routes.py's).
"""
import numpy as np

from ..backend import device_of

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what the kernels are compiled for


def for_device(device):
    """kernels.cpu (Numba) for 'cpu', kernels.cuda (CuPy) for 'gpu', imported on first use (Numba's import
    takes a few tenths of a second, so a process that never runs a CPU kernel never pays it)."""
    if device == "gpu":
        from . import cuda
        return cuda
    from . import cpu
    return cpu


def for_array(array):
    """kernels.cpu (Numba) for NumPy arrays, kernels.cuda (CuPy) for CuPy arrays."""
    return for_device(device_of(array))
