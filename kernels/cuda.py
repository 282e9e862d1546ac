"""CuPy launcher for the CUDA kernels in *.cu: raw CuPy arrays in, raw CuPy arrays out.

Each source is compiled once per dtype by NVRTC (cupy.RawModule) and cached;
the API (launcher.KernelAPI) takes grid and block from launch.launch_config,
the configuration the CPU emulator tests run with.
"""
import functools

from ..backend import cp
from .launch import SOURCE_DIR, SOURCES, compile_options
from .launcher import API_NAMES, KernelAPI

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
    module(SOURCES[kernel], dtype).get_function(kernel)(launch.grid, launch.block, args)


if cp is not None:
    _api = KernelAPI(cp, _run)
    globals().update({name: getattr(_api, name) for name in API_NAMES})
