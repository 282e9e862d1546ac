"""The GPU: CuPy if it loads, and one sentence naming what is missing when a GPU cannot be used.

The only module that imports CuPy; the others read ``gpu.cp`` (None without CuPy).
"""
try:  # CuPy is optional: the `gpu` extra.
    import cupy as cp
    _CUPY_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the machine
    cp, _CUPY_IMPORT_ERROR = None, exc

# The oldest GPU the CUDA kernels are compiled and tested for (tests/kernels/test_kernels_compile.py), by the
# CUDA major version of CuPy's runtime: sm_70 (Volta) with CUDA 12; CUDA 13's NVRTC dropped sm_70.
OLDEST_COMPUTE_CAPABILITY = {12: 70, 13: 75}
_checked = None  # the CuPy module that passed every check (checked once per process)


def gpu_status():
    """Return None when a GPU is usable, else one sentence naming what is missing and how to fix it."""
    global _checked
    if cp is None:
        if getattr(_CUPY_IMPORT_ERROR, "name", None) == "cupy" or _CUPY_IMPORT_ERROR is None:
            return ("device 'gpu' needs CuPy, which is not installed: install it with "
                    "`pip install 'scratchnet[gpu]'` (or the cupy-cudaXXx wheel matching your CUDA), "
                    "or use device='cpu'")
        return (f"device 'gpu' needs CuPy, which is installed but does not load ({_one_line(_CUPY_IMPORT_ERROR)}); "
                f"reinstall the cupy-cudaXXx wheel that matches your CUDA (cupy-cuda12x or cupy-cuda13x), "
                f"or use device='cpu'")
    if _checked is cp:
        return None
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, an old driver, no runtime library
        return _cuda_failure(exc)
    if count == 0:
        return "device 'gpu' needs a CUDA device, but CuPy found none; use device='cpu'"
    try:
        cp.cuda.nvrtc.getVersion()
    except Exception as exc:
        return (f"device 'gpu' needs NVRTC (libnvrtc), the compiler CuPy builds scratchnet's CUDA kernels with, "
                f"but CuPy cannot load it ({_one_line(exc)}); install it (`pip install nvidia-cuda-nvrtc-cu12` for "
                f"CUDA 12, `nvidia-cuda-nvrtc` for CUDA 13, or the CUDA toolkit), or use device='cpu'")
    cuda_major = cp.cuda.runtime.runtimeGetVersion() // 1000
    oldest = OLDEST_COMPUTE_CAPABILITY.get(cuda_major, max(OLDEST_COMPUTE_CAPABILITY.values()))
    capability = int(cp.cuda.Device().compute_capability)
    if capability < oldest:
        return (f"device 'gpu' needs a GPU of compute capability {oldest // 10}.{oldest % 10} (sm_{oldest}) or newer "
                f"for scratchnet's CUDA kernels under CUDA {cuda_major}, but this one is "
                f"{capability // 10}.{capability % 10}; use device='cpu'")
    _checked = cp
    return None


def gpu_available():
    return gpu_status() is None


def _one_line(exc):
    return f"{exc.__class__.__name__}: " + (str(exc).strip().splitlines() or [""])[0]


def _cuda_failure(exc):
    """One sentence for a CUDA runtime call that failed, naming the missing piece."""
    text = str(exc)
    if "cudaErrorInsufficientDriver" in text:
        return ("device 'gpu' needs an NVIDIA driver that supports the CUDA version CuPy was built for, but none "
                f"is loaded or it is too old ({_one_line(exc)}); check `nvidia-smi`, update the driver or install "
                "the CuPy wheel for your driver's CUDA (cupy-cuda12x or cupy-cuda13x), or use device='cpu'")
    if "cudaErrorNoDevice" in text:
        return f"device 'gpu' needs a CUDA device, but the NVIDIA driver reports none ({_one_line(exc)}); use device='cpu'"
    if "libcudart" in text:
        return (f"device 'gpu' needs the CUDA runtime library (libcudart), which CuPy cannot load ({_one_line(exc)}); "
                "install the CUDA toolkit or `pip install nvidia-cuda-runtime-cu12` (CUDA 12), or use device='cpu'")
    if "libcuda" in text:
        return (f"device 'gpu' needs the NVIDIA driver library (libcuda.so), which CuPy cannot load "
                f"({_one_line(exc)}); install the NVIDIA driver (check with `nvidia-smi`), or use device='cpu'")
    return (f"device 'gpu' needs a CUDA device, but CuPy cannot reach one ({_one_line(exc)}); "
            f"check the NVIDIA driver with `nvidia-smi`, or use device='cpu'")
