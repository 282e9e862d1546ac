"""What the CPU benchmarks share: the timing rule (the fastest of N calls after warm-up calls) and
the environment their timed children run in (this workplace's OpenBLAS overrides removed)."""
import os
import time

# set on every machine of this workplace (CI included); they slow NumPy's BLAS and users do not have them
OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def clean_env():
    """This process's environment without OVERRIDES, for a timed child process."""
    return {k: v for k, v in os.environ.items() if k not in OVERRIDES}


def best_time(fn, repeat, cpu_time=False, warmups=1):
    """Seconds of the fastest of ``repeat`` calls of ``fn``, after ``warmups`` untimed calls (Numba
    compiles, first allocations). ``cpu_time``: the process's CPU time (all threads) instead of wall
    time, steadier on a busy machine."""
    clock = time.process_time if cpu_time else time.perf_counter
    for _ in range(warmups):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best
