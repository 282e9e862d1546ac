"""Backend: the array libraries, devices, dtypes, generators and threads every layer above builds on.

One module per job; this file only re-exports them (``backend.get_array_module`` and so on):

    threads     the process's one thread policy (BLAS, OpenMP, Numba): set_num_threads
    blas        work split between those threads on a pool of its own (run_shares, stacked_matmul)
    memory      the process's memory policy: freed memory is kept for the next step (release_memory)
    gpu         CuPy if it loads, and why a GPU cannot be used (gpu_status)
    arrays      NumPy or CuPy for an array, devices, moves between them
    dtypes      the default floating dtype
    generators  one seeded random generator per device, and their states
"""
from . import threads  # first: its environment must reach BLAS before NumPy loads it
from . import arrays, blas, dtypes, generators, gpu, memory  # noqa: I100 (after threads, on purpose)
from .arrays import DEVICES, DeviceError, check_device, device_of, get_array_module, to_device, to_numpy, xp_for
from .dtypes import get_default_dtype, is_floating, set_default_dtype
from .generators import get_rng_state, manual_seed, rng, set_rng_state
from .gpu import OLDEST_COMPUTE_CAPABILITY, cp, gpu_available, gpu_status
from .memory import release_memory
from .threads import THREAD_ENVIRONMENT, get_num_threads, set_num_threads

memory.apply()  # at run time, whatever was imported first
if threads.LOADED_FIRST:  # numpy, scipy, torch or Numba came first: their pools get the policy now
    threads.apply()
