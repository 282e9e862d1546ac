"""The row copy every flat-indexed CPU kernel uses (kernels/cpu.py, kernels/cpu_depthwise.py).

inline="always": inlined, its loop specialises to the caller's stride (as a call it costs ~2x more).
"""
import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _copy(src, src_start, dst, dst_start, count):
    """dst[dst_start + k] = src[src_start + k] for k < count, on flat arrays."""
    s, d = np.uint64(src_start), np.uint64(dst_start)
    for k in range(np.uint64(count)):
        dst[d + k] = src[s + k]
