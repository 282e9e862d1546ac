"""Launch configurations: the one place that decides grid, block and compile options.

The CuPy launcher (kernels/cuda.py) and the CPU emulator (kernels/emulator.py)
both ask this module, so the emulator tests run every kernel with exactly the
grid and block a GPU would get. Sizes follow the kernels' docstrings in *.cu.
"""
from collections import namedtuple
from pathlib import Path

import numpy as np

SOURCE_DIR = Path(__file__).resolve().parent

CONV_TILE = 16        # conv.cu: a block computes a CONV_TILE x CONV_TILE output tile
REDUCE_THREADS = 256  # depthwise_backward_weight: threads reducing one weight tap
THREADS = 256         # element-wise kernels: threads per block
MAX_BLOCKS = 65535    # element-wise kernels loop grid-stride past this many blocks

# Which source file holds each kernel.
SOURCES = {
    "conv2d_forward": "conv.cu", "conv2d_backward_input": "conv.cu", "conv2d_backward_weight": "conv.cu",
    "depthwise_forward": "depthwise.cu", "depthwise_backward_input": "depthwise.cu",
    "depthwise_backward_weight": "depthwise.cu",
    "im2col": "im2col.cu", "col2im": "im2col.cu",
    "max_pool2d_forward": "pool.cu", "max_pool2d_backward": "pool.cu",
    "deform_im2col": "deform.cu", "deform_col2im": "deform.cu", "deform_col2im_coord": "deform.cu",
}

SCALAR_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

Launch = namedtuple("Launch", "grid block")


def compile_options(dtype):
    """The -D options every compiler (NVRTC, nvcc, the emulator's g++) gets."""
    dtype = np.dtype(dtype)
    if dtype not in SCALAR_TYPES:
        raise TypeError(f"CUDA kernels support float32 and float64, got {dtype}")
    return (f"-DSCALAR_T={SCALAR_TYPES[dtype]}", f"-DCONV_TILE={CONV_TILE}", f"-DREDUCE_THREADS={REDUCE_THREADS}")


def _ceil_div(a, b):
    return -(-a // b)


def _elementwise(total, max_blocks):
    """One thread per item, at most max_blocks blocks: the kernels' grid-stride loops cover the rest."""
    return Launch((max(1, min(_ceil_div(total, THREADS), max_blocks)), 1, 1), (THREADS, 1, 1))


def _tiled(m, p, groups):
    """conv.cu: x-blocks tile p (contiguous in memory), y-blocks tile m, z is the group."""
    return Launch((_ceil_div(p, CONV_TILE), _ceil_div(m, CONV_TILE), groups), (CONV_TILE, CONV_TILE, 1))


def launch_config(kernel, max_blocks=MAX_BLOCKS, **s):
    """Grid and block for `kernel` given the sizes its parameters carry (N, C, H, W, ...).

    max_blocks caps the grid of the grid-stride kernels (the emulator tests pass a small one, so
    their loops run several times); the tiled and reduction kernels need their full grid.
    """
    if kernel == "conv2d_forward":
        return _tiled(s["CO"] // s["G"], s["N"] * s["OH"] * s["OW"], s["G"])
    if kernel == "conv2d_backward_input":
        return _tiled(s["C"] // s["G"], s["N"] * s["H"] * s["W"], s["G"])
    if kernel == "conv2d_backward_weight":
        return _tiled(s["CO"] // s["G"], s["C"] // s["G"] * s["KH"] * s["KW"], s["G"])
    if kernel == "depthwise_forward":
        return _elementwise(s["N"] * s["C"] * s["M"] * s["OH"] * s["OW"], max_blocks)
    if kernel in ("depthwise_backward_input", "col2im"):
        return _elementwise(s["N"] * s["C"] * s["H"] * s["W"], max_blocks)
    if kernel == "depthwise_backward_weight":
        return Launch((s["C"] * s["M"] * s["KH"] * s["KW"], 1, 1), (REDUCE_THREADS, 1, 1))
    if kernel == "im2col":
        return _elementwise(s["C"] * s["KH"] * s["KW"] * s["N"] * s["OH"] * s["OW"], max_blocks)
    if kernel in ("max_pool2d_forward", "max_pool2d_backward"):
        return _elementwise(s["N"] * s["C"] * s["OH"] * s["OW"], max_blocks)
    if kernel in ("deform_im2col", "deform_col2im"):  # one thread per column entry
        return _elementwise(s["C"] * s["KH"] * s["KW"] * s["N"] * s["OH"] * s["OW"], max_blocks)
    if kernel == "deform_col2im_coord":  # one thread per (image, offset group, tap, output pixel)
        return _elementwise(s["N"] * s["G"] * s["KH"] * s["KW"] * s["OH"] * s["OW"], max_blocks)
    raise KeyError(f"no launch configuration for kernel {kernel!r}")


# The integer parameters of each kernel, in signature order (after the arrays).
CONV_PARAMS = ("N", "C", "H", "W", "CO", "OH", "OW", "KH", "KW", "SY", "SX", "PH", "PW", "DY", "DX", "G")
DEPTHWISE_PARAMS = ("N", "C", "H", "W", "M", "OH", "OW", "KH", "KW", "SY", "SX", "PH", "PW", "DY", "DX")
COL_PARAMS = ("N", "C", "H", "W", "OH", "OW", "KH", "KW", "SY", "SX", "PH", "PW", "DY", "DX")
POOL_BACKWARD_PARAMS = ("N", "C", "H", "W", "OH", "OW")
DEFORM_PARAMS = COL_PARAMS + ("G", "USE_MASK")  # G: offset groups


def int_params(kernel):
    if kernel.startswith("conv2d"):
        return CONV_PARAMS
    if kernel.startswith("depthwise"):
        return DEPTHWISE_PARAMS
    if kernel == "max_pool2d_backward":
        return POOL_BACKWARD_PARAMS
    if kernel.startswith("deform"):
        return DEFORM_PARAMS
    return COL_PARAMS  # im2col, col2im and max_pool2d_forward share the geometry


def geometry(x_shape, w_shape, out_hw, stride, padding, dilation, groups=1):
    """The size dict every launch uses, from tensor shapes and conv options."""
    n, c, h, w = x_shape
    co, _, kh, kw = w_shape
    return dict(N=n, C=c, H=h, W=w, CO=co, M=co // c, OH=out_hw[0], OW=out_hw[1], KH=kh, KW=kw,
                SY=stride[0], SX=stride[1], PH=padding[0], PW=padding[1], DY=dilation[0], DX=dilation[1], G=groups)
