"""What the CPU benchmarks share: the timing rule (the fastest of N calls after warm-up calls), the
environment their timed children run in (this workplace's OpenBLAS overrides removed) and the
process's resident memory (Linux)."""
import os
import time

# set on every machine of this workplace (CI included); they slow NumPy's BLAS and users do not have them
OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def clean_env():
    """This process's environment without OVERRIDES, for a timed child process."""
    return {k: v for k, v in os.environ.items() if k not in OVERRIDES}


def rss_mb():
    """(resident, peak resident) MB of this process: Linux's VmRSS and VmHWM (/proc/self/status)."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak():
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False where /proc/self/clear_refs is
    not writable."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


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


def torch_python():
    """The interpreter of a benchmark's PyTorch side: the newest PyTorch that installs here (this workplace's
    bench venv, torch 2.14.1 and torchvision 0.29.1), else this interpreter (the test suite's torch)."""
    import sys
    from pathlib import Path
    bench = Path("/work/venvs/bench/bin/python")
    return bench if bench.exists() else Path(sys.executable)
