"""The GPU's kernel module: the CUDA kernels in *.cu, raw CuPy arrays in, raw CuPy arrays out.

It provides kernels/interface.py's CUDA list (checked at the end of this file). Each source is
compiled once per dtype by NVRTC (cupy.RawModule) and cached; the functions are launcher.KernelAPI's,
which takes grid and block from launch.launch_config, the configuration the CPU emulator tests run
with.
"""
import functools
import sys

from ..backend.gpu import cp
from . import interface
from .launch import RULES, SOURCE_DIR, compile_options
from .launcher import KernelAPI

NVRTC_OPTIONS = ("--std=c++17",)  # as the emulator's g++; NVRTC 12 and 13 both take it


def nvrtc_options(dtype):
    """Everything NVRTC gets besides the architecture (CuPy adds the GPU's own); the compile tests
    (tests/kernels/test_kernels_compile.py) pass exactly these, for sm_70/80/90, without a GPU."""
    return NVRTC_OPTIONS + (f"-I{SOURCE_DIR}",) + compile_options(dtype)


# The only lines of the kernels' Python that need a GPU: compile a source, launch a kernel.
@functools.lru_cache(maxsize=None)
def module(source, dtype):
    """The compiled RawModule for one .cu file and dtype (compiled on first use)."""
    return cp.RawModule(code=(SOURCE_DIR / source).read_text(), options=nvrtc_options(dtype))


def _run(kernel, dtype, launch, args):
    module(RULES[kernel].source, dtype).get_function(kernel)(launch.grid, launch.block, args)


# Without CuPy (cp None) nothing calls these: no array is on a GPU, so kernels.for_array never
# returns this module. Its functions are KernelAPI's bound methods, one for each name interface.CUDA
# declares (by family), checked against it on the last line.
_api = KernelAPI(cp, _run)
im2col, col2im = _api.im2col, _api.col2im
depthwise_forward, depthwise_backward_input, depthwise_backward_weight = (
    _api.depthwise_forward, _api.depthwise_backward_input, _api.depthwise_backward_weight)
max_pool2d_forward, max_pool2d_backward = _api.max_pool2d_forward, _api.max_pool2d_backward
deform_im2col, deform_col2im, deform_col2im_coord = _api.deform_im2col, _api.deform_col2im, _api.deform_col2im_coord
conv2d_forward, conv2d_backward_input, conv2d_backward_weight = (
    _api.conv2d_forward, _api.conv2d_backward_input, _api.conv2d_backward_weight)

interface.check(sys.modules[__name__], "gpu")  # a missing or changed function fails here, at import
