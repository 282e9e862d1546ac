"""Backend: which array library runs an array (NumPy on the CPU, CuPy on the GPU).

Every op is written once against ``xp = get_array_module(x)``; this module is the
only place that knows CuPy may be missing. It also holds the process's one
thread policy (``set_num_threads``), which must run before NumPy loads its BLAS.
"""
import os
import sys

# ---- one thread policy for the process: set before `import numpy` loads BLAS ----
# BLAS (OpenBLAS, MKL) and Numba's parallel kernels take turns on the same cores: every op
# runs on all n threads, one library after the other. Left alone, each library keeps its idle
# threads spinning after its work (OpenBLAS ~0.1 s, GNU OpenMP ~0.3 ms, Intel OpenMP 200 ms), and
# a spinning pool steals the cores the other one needs next: the LeNet training step took 70 ms
# instead of 5 ms (issue 9). These make idle threads sleep almost at once. GNU OpenMP (Numba's
# usual layer) spins GOMP_SPINCOUNT=3000 turns first (~30 us): waking a sleeping thread costs
# 20-50 us (more in a VM), which a LeNet step pays at each of its ~10 parallel kernels, while a
# spin that short rarely overlaps the BLAS call after it (LeNet step at 2 threads, best of 3:
# 3.85 ms vs 4.26 ms sleeping at once; spinning 10000 turns, 4.37 ms). Libraries read these only
# when they load, so they are set here; a value the user exported wins. (docs/core.md: Threads.)
THREAD_ENVIRONMENT = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000",
                      "KMP_BLOCKTIME": "0"}
# libraries imported before scratchnet: their environment came too late (OpenBLAS's timeout stays 0.1 s)
LOADED_FIRST = sorted(name for name in ("numpy", "numba") if name in sys.modules)


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))  # honours taskset / cgroup CPU sets
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _default_num_threads():
    value = os.environ.get("SCRATCHNET_NUM_THREADS", "")
    if value.strip().isdigit() and int(value) >= 1:
        return int(value)
    # under mpirun the processes on this machine share its CPUs (Open MPI, MPICH name their count)
    local = os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or os.environ.get("MPI_LOCALNRANKS") or "1"
    return max(1, _usable_cpus() // max(1, int(local) if local.isdigit() else 1))


_num_threads = _default_num_threads()
for _name, _value in THREAD_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, str(_num_threads))
if _num_threads != _usable_cpus():  # asked for fewer: also size Numba's pool (read when it starts)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(_num_threads))

import numpy as np  # noqa: E402  (after the thread environment above, on purpose)

try:  # CuPy is optional: the `gpu` extra.
    import cupy as cp
    _CUPY_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the machine
    cp, _CUPY_IMPORT_ERROR = None, exc

DEVICES = ("cpu", "gpu")
_DEVICE_ALIASES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


# The oldest GPU the CUDA kernels are compiled and tested for (tests/kernels/test_kernels_compile.py), by the
# CUDA major version of CuPy's runtime: sm_70 (Volta) with CUDA 12; CUDA 13's NVRTC dropped sm_70.
OLDEST_COMPUTE_CAPABILITY = {12: 70, 13: 75}
_gpu_checked = None  # the CuPy module that passed every check (checked once per process)


def gpu_status():
    """Return None when a GPU is usable, else one sentence naming what is missing and how to fix it."""
    global _gpu_checked
    if cp is None:
        if getattr(_CUPY_IMPORT_ERROR, "name", None) == "cupy" or _CUPY_IMPORT_ERROR is None:
            return ("device 'gpu' needs CuPy, which is not installed: install it with "
                    "`pip install 'scratchnet[gpu]'` (or the cupy-cudaXXx wheel matching your CUDA), "
                    "or use device='cpu'")
        return (f"device 'gpu' needs CuPy, which is installed but does not load ({_one_line(_CUPY_IMPORT_ERROR)}); "
                f"reinstall the cupy-cudaXXx wheel that matches your CUDA (cupy-cuda12x or cupy-cuda13x), "
                f"or use device='cpu'")
    if _gpu_checked is cp:
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
    _gpu_checked = cp
    return None


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


def gpu_available():
    return gpu_status() is None


def check_device(device):
    """Normalise a device name ('cpu', 'gpu' or 'cuda') and fail clearly if it cannot be used."""
    name = _DEVICE_ALIASES.get(str(device).lower()) if device is not None else None
    if name is None:
        raise DeviceError(f"unknown device {device!r}: use 'cpu' or 'gpu'")
    if name == "gpu":
        reason = gpu_status()
        if reason is not None:
            raise DeviceError(reason)
    return name


def get_array_module(*arrays):
    """numpy or cupy, whichever holds these arrays (numpy for Python scalars)."""
    if cp is None or all(type(a) is np.ndarray for a in arrays):  # the CPU's case, without CuPy's checks
        return np
    return cp.get_array_module(*arrays)


def device_of(array):
    if cp is not None and isinstance(array, cp.ndarray):
        return "gpu"
    return "cpu"


def to_numpy(array):
    """A host (NumPy) copy or view of an array on any device."""
    if cp is not None and isinstance(array, cp.ndarray):
        return cp.asnumpy(array)
    return np.asarray(array)


def to_device(array, device):
    """Move an array to 'cpu' or 'gpu' (no copy when it is already there)."""
    device = check_device(device)
    if device == "cpu":
        return to_numpy(array)
    return cp.asarray(array)


def xp_for(device):
    return cp if check_device(device) == "gpu" else np


def is_floating(dtype):
    return np.dtype(dtype).kind == "f"


# The default floating dtype, as in torch: float32 unless asked otherwise.
_default_dtype = np.dtype(np.float32)


def get_default_dtype():
    return _default_dtype


def set_default_dtype(dtype):
    global _default_dtype
    dtype = np.dtype(dtype)
    if not is_floating(dtype):
        raise TypeError(f"default dtype must be a floating type, got {dtype}")
    _default_dtype = dtype


# One seeded generator per device, so `manual_seed` makes runs repeatable.
_generators = {}


def manual_seed(seed):
    """Seed scratchnet's random generators (init, dropout, data shuffling) on every device."""
    _generators["cpu"] = np.random.default_rng(seed)
    if cp is not None:
        _generators["gpu"] = (seed,)  # created lazily, only if a GPU is used
    return seed


def rng(device="cpu"):
    """The random generator for a device (NumPy Generator or CuPy Generator)."""
    device = check_device(device)
    if device == "cpu":
        if "cpu" not in _generators:
            _generators["cpu"] = np.random.default_rng()
        return _generators["cpu"]
    state = _generators.get("gpu")
    if not hasattr(state, "random"):
        seed = state[0] if isinstance(state, tuple) else None
        _generators["gpu"] = cp.random.default_rng(seed)
    return _generators["gpu"]


def get_rng_state(device="cpu"):
    """A device's generator state as host data (a checkpoint stores it; set_rng_state restores it).

    CPU: NumPy's ``bit_generator.state``. GPU: the pending seed while nothing was drawn yet, else a
    host copy of CuPy's cuRAND states (its Generator has no public state API; ``_state`` holds them).
    """
    if check_device(device) == "cpu":
        return rng("cpu").bit_generator.state
    generator = _generators.get("gpu")
    if not hasattr(generator, "random"):
        return {"seed": generator[0] if isinstance(generator, tuple) else None}
    return {"curand_states": cp.asnumpy(generator.bit_generator._state)}


def set_rng_state(state, device="cpu"):
    """Put back a state from get_rng_state, so the next draws repeat those that followed it."""
    if check_device(device) == "cpu":
        rng("cpu").bit_generator.state = state
    elif "seed" in state:
        _generators["gpu"] = (state["seed"],)
    else:
        generator = cp.random.default_rng(0)
        saved, current = state["curand_states"], generator.bit_generator._state
        if saved.shape != current.shape:
            raise ValueError(f"the saved GPU random state holds {saved.size} bytes but this CuPy's generator "
                             f"{current.size}: resume with the CuPy version that wrote it")
        current[...] = cp.asarray(saved)
        _generators["gpu"] = generator


# ---- threads (the policy's settings are at the top of this file) ----


def get_num_threads():
    """Threads every CPU op may use (BLAS and Numba alike), as ``torch.get_num_threads``."""
    return _num_threads


def set_num_threads(n):
    """Use ``n`` threads for BLAS and for Numba's kernels alike, as ``torch.set_num_threads``.

    Default: ``$SCRATCHNET_NUM_THREADS``, else every CPU this process may run on
    (shared out between the processes an ``mpirun`` starts on one machine).
    Numba's count is per calling thread (Numba's rule): call this from the
    thread that trains.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    import numba
    from threadpoolctl import threadpool_limits

    n = int(n)
    pool = numba.config.NUMBA_NUM_THREADS
    if n > pool:
        raise ValueError(f"set_num_threads({n}): Numba's thread pool has {pool} threads (NUMBA_NUM_THREADS or "
                         f"SCRATCHNET_NUM_THREADS, fixed when Numba started); use n <= {pool}, or raise "
                         f"SCRATCHNET_NUM_THREADS before the process starts")
    threadpool_limits(n, user_api="blas")  # every BLAS NumPy/SciPy loaded (OpenBLAS, MKL, BLIS)
    numba.set_num_threads(n)
    _num_threads = n


if _num_threads != _usable_cpus() and LOADED_FIRST:  # too late for the environment: set the pools
    set_num_threads(_num_threads)
