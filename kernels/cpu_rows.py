"""The flat-array helpers the CPU kernels share (kernels/cpu.py, cpu_activation.py, cpu_depthwise.py): the row
copy, and the blocks an elementwise pass is cut into for the threads.

inline="always": inlined, a helper's loop specialises to the caller's stride (as a call it costs ~2x more).
"""
import numpy as np
from numba import njit

# An elementwise pass (an activation, the SGD step) over at least two blocks of BLOCK elements hands the blocks
# to the threads: both cores move more memory than one (a ReLU forward on 24 MB: 1.5 vs 2.2 ms). A smaller
# array stays on the calling thread: a LeNet activation is tens of microseconds of work, and waking a
# sleeping second thread costs 0.1-0.2 ms. Each element is computed alone, so the blocks never change a number.
# Each such kernel is a range (its loop, inline="always") and a driver of a few lines that hands out the
# blocks: one driver for all would take the range as an argument or a closure, and Numba's cache keeps neither
# (every process would compile them again).
BLOCK = 1 << 18


@njit(cache=True, inline="always")
def _copy(src, src_start, dst, dst_start, count):
    """dst[dst_start + k] = src[src_start + k] for k < count, on flat arrays."""
    s, d = np.uint64(src_start), np.uint64(dst_start)
    for k in range(np.uint64(count)):
        dst[d + k] = src[s + k]


@njit(cache=True, inline="always")
def _blocks(size):
    """(blocks, length, size) of a pass over ``size`` elements: blocks of BLOCK to 2 BLOCK elements, evened out;
    block i is [i * length, min((i + 1) * length, size)). All uint64 (the kernels' flat indices)."""
    size = np.uint64(size)
    blocks = max(np.uint64(1), size // np.uint64(BLOCK))
    return blocks, (size + blocks - np.uint64(1)) // blocks, size
