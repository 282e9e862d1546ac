"""The one timing rule the CPU benchmarks share: the fastest of N calls after warm-up calls."""
import time


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
