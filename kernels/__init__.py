"""Hot-path kernels: CUDA RawKernels (*.cu) with their launcher, and Numba CPU kernels."""
