"""Every CUDA source compiles, for every dtype, with NVRTC (the compiler CuPy
uses; cupy.cuda.nvrtc needs no GPU or driver) and with nvcc when present.

NVRTC from the `cupy-cuda12x[ctk]` wheels targets sm_70, sm_80 and sm_90; the
nvcc here is CUDA 13, which dropped sm_70, so nvcc checks sm_75, sm_80, sm_90.
"""
import shutil
import subprocess

import numpy as np
import pytest

from scratchnet.kernels.cuda import nvrtc_options
from scratchnet.kernels.launch import SCALAR_TYPES, SOURCE_DIR, SOURCES, compile_options

CU_FILES = sorted(set(SOURCES.values()))
DTYPES = [np.dtype(d).name for d in SCALAR_TYPES]


def _nvrtc():
    """CuPy's NVRTC, or a skip where there is no such compiler: CuPy not installed, or no NVRTC library where
    CuPy looks for one (cuda.pathfinder, CuPy's own finder). Any other failure is a test failure."""
    try:
        from cupy.cuda import nvrtc
    except ImportError as exc:
        pytest.skip(f"CuPy is not installed ({exc}): pip install 'cupy-cuda12x[ctk]>=14'")
    try:
        from cuda.pathfinder import DynamicLibNotFoundError, load_nvidia_dynamic_lib
    except ImportError:  # an older CuPy without pathfinder: getVersion below must work
        pass
    else:
        try:
            load_nvidia_dynamic_lib("nvrtc")
        except DynamicLibNotFoundError as exc:
            pytest.skip(f"no NVRTC library ({exc}); pip install 'cupy-cuda12x[ctk]>=14'")
    nvrtc.getVersion()
    return nvrtc


@pytest.mark.parametrize("arch", ["sm_70", "sm_80", "sm_90"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("source", CU_FILES)
def test_nvrtc_compiles(source, dtype, arch):
    nvrtc = _nvrtc()
    program = nvrtc.createProgram((SOURCE_DIR / source).read_text(), source, (), ())
    options = (f"--gpu-architecture={arch}",) + nvrtc_options(dtype)  # what kernels/cuda.py compiles with
    try:
        nvrtc.compileProgram(program, options)
    except nvrtc.NVRTCError:
        pytest.fail(f"NVRTC failed on {source} ({dtype}, {arch}):\n{nvrtc.getProgramLog(program)}")
    kernels = [k for k, f in SOURCES.items() if f == source]
    ptx = nvrtc.getPTX(program).decode() if isinstance(nvrtc.getPTX(program), bytes) else nvrtc.getPTX(program)
    for kernel in kernels:  # extern "C": the launcher finds them by these names
        assert f".entry {kernel}(" in ptx


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", CU_FILES)
def test_nvcc_compiles(source, tmp_path):
    # every (arch, dtype) at once: nvcc mostly waits on its sub-tools
    jobs = {}
    for arch in ("sm_75", "sm_80", "sm_90"):
        for dtype in DTYPES:
            cmd = [NVCC, f"-arch={arch}", "-cubin", "-Werror=all-warnings", f"-I{SOURCE_DIR}",
                   *compile_options(dtype), "-o", str(tmp_path / f"{arch}_{dtype}.cubin"), str(SOURCE_DIR / source)]
            jobs[" ".join(cmd)] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for cmd, job in jobs.items():
        log = job.communicate()[0]
        assert job.returncode == 0, f"{cmd}\n{log}"
