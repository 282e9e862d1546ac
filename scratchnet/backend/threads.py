"""The process's one thread policy: BLAS, OpenMP and Numba share the cores and never oversubscribe them.

BLAS (OpenBLAS, MKL) and Numba's parallel kernels take turns on the same cores: every op runs on
all n threads, one library after the other. Left alone, each library keeps its idle threads
spinning after its work (OpenBLAS ~0.1 s, GNU OpenMP ~0.3 ms, Intel OpenMP 200 ms), and a spinning
pool steals the cores the other one needs next: the LeNet training step took 70 ms instead of 5 ms
(issue 9). So the policy is: one count for every pool (``set_num_threads``), and idle threads that
go to sleep almost at once.

It is applied in two steps, because a library reads some settings only when it loads:

1. ``THREAD_ENVIRONMENT`` and the counts (``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``,
   ``OMP_NUM_THREADS``; ``NUMBA_NUM_THREADS`` when fewer than the CPUs) go into the environment
   when this module is imported, which ``import scratchnet`` does before NumPy: every library
   loaded afterwards starts with them (a value the user exported wins).
2. ``apply()`` then puts the policy into the libraries already loaded, whatever was imported
   first (numpy, scipy, torch): the count of every BLAS and OpenMP pool (threadpoolctl) and of
   Numba (``numba.set_num_threads``), and an OpenBLAS pool that started with another idle timeout
   is stopped, so that it restarts with this one at its next call (OpenBLAS re-reads its
   environment for that: ``openblas_read_env``, then ``blas_thread_shutdown_``, its fork
   handler's restart). Without it, numpy imported first kept OpenBLAS spinning 0.1 s after every
   GEMM, and a VGG 3x3 conv forward+backward took 37-39 ms instead of 28 (issue 21).

What cannot change once a library is loaded (docs/core.md, Threads): GNU OpenMP's spin
(``GOMP_SPINCOUNT``, ``OMP_WAIT_POLICY``; torch loads its own libgomp at import, and Numba's OpenMP
layer then shares it), Intel OpenMP's ``KMP_BLOCKTIME``, and the size of Numba's pool once Numba
has read its configuration (``NUMBA_NUM_THREADS``): up to that many threads can be used.

This module imports nothing that loads a BLAS: ``import scratchnet`` runs it before NumPy.
"""
import ctypes
import numbers
import os
import sys

# Read by each library when it loads. GNU OpenMP (Numba's usual layer) spins GOMP_SPINCOUNT=3000
# turns first (~30 us): waking a sleeping thread costs 20-50 us (more in a VM), which a LeNet step
# pays at each of its ~10 parallel kernels, while a spin that short rarely overlaps the BLAS call
# after it (LeNet step at 2 threads, best of 3: 3.85 ms vs 4.26 ms sleeping at once; spinning
# 10000 turns, 4.37 ms). (docs/core.md: Threads.)
THREAD_ENVIRONMENT = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000",
                      "KMP_BLOCKTIME": "0"}


def usable_cpus():
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
    return max(1, usable_cpus() // max(1, int(local) if local.isdigit() else 1))


_num_threads = _default_num_threads()
# libraries imported before scratchnet: the environment below comes too late for them (apply() is for them)
LOADED_FIRST = sorted(name for name in ("numpy", "scipy", "torch", "numba") if name in sys.modules)

# ---- step 1: the environment, for every library that loads from now on
for _name, _value in THREAD_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_name, str(_num_threads))
if _num_threads != usable_cpus():  # asked for fewer: also size Numba's pool (read when Numba loads)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(_num_threads))


# ---- step 2: the libraries already loaded

def get_num_threads():
    """Threads every CPU op may use (BLAS and Numba alike), as ``torch.get_num_threads``."""
    return _num_threads


def set_num_threads(n):
    """Use ``n`` threads for BLAS, OpenMP and Numba's kernels alike, as ``torch.set_num_threads``.

    Default: ``$SCRATCHNET_NUM_THREADS``, else every CPU this process may run on
    (shared out between the processes an ``mpirun`` starts on one machine).
    Numba's count is per calling thread (Numba's rule): call this from the
    thread that trains.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    import numba
    n = int(n)
    pool = numba.config.NUMBA_NUM_THREADS
    if n > pool:
        raise ValueError(f"set_num_threads({n}): Numba's thread pool has {pool} threads (NUMBA_NUM_THREADS or "
                         f"SCRATCHNET_NUM_THREADS, fixed when Numba started); use n <= {pool}, or raise "
                         f"SCRATCHNET_NUM_THREADS before the process starts")
    numba.set_num_threads(n)  # first: it may load Numba's OpenMP runtime, which the next line then limits
    _limit_pools(n)
    _num_threads = n


def _limit_pools(n):
    """n threads for every BLAS (OpenBLAS, MKL, BLIS) and OpenMP library loaded in the process."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(n)


def _restart_openblas_pools():
    """Stop every OpenBLAS thread pool whose idle timeout is not the environment's, so that it restarts
    (lazily, at its next call) with the environment's: the OpenBLAS loaded before this module set it.
    Returns the files of the pools restarted."""
    from threadpoolctl import threadpool_info
    wanted = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "")
    restarted = []
    for pool in threadpool_info():
        if pool["internal_api"] != "openblas" or pool.get("threading_layer") != "pthreads":
            continue  # an OpenMP build of OpenBLAS has no pool of its own
        library = ctypes.CDLL(pool["filepath"])  # already loaded: the same handle
        symbols = ("openblas_thread_timeout", "openblas_read_env", "blas_thread_shutdown_")
        if not wanted.isdigit() or not all(hasattr(library, name) for name in symbols):
            continue  # an OpenBLAS older than 0.3.x's environment API: its timeout stays
        if library.openblas_thread_timeout() != int(wanted):
            library.openblas_read_env()  # its cached copy of the environment, the timeout included
            library.blas_thread_shutdown_()  # the threads exit; the next BLAS call starts new ones
            restarted.append(pool["filepath"])
    return restarted


def apply():
    """Put the policy into the libraries this process has loaded so far (see the module docstring).

    ``import scratchnet`` runs it when numpy, scipy, torch or Numba came first (LOADED_FIRST), so they
    get the counts and the OpenBLAS timeout they would have had with scratchnet imported first.
    Numba, if imported already, gets its count in the calling thread (at most its pool's size);
    otherwise NUMBA_NUM_THREADS sizes its pool when it loads.
    """
    if "numba" in sys.modules:  # first: starting Numba's pool may load an OpenMP runtime, limited next
        import numba
        pool = numba.config.NUMBA_NUM_THREADS
        if pool != _num_threads:  # equal: every thread's default count already is the policy's
            numba.set_num_threads(min(pool, _num_threads))
    _limit_pools(_num_threads)
    _restart_openblas_pools()
