"""What the CPU benchmarks share: the timing rule (the fastest of N calls after warm-up calls) and
the environment their timed children run in (this workplace's OpenBLAS overrides removed)."""
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

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


def started():
    """Where a result comes from, taken when a benchmark starts: its command, the UTC date, the commit, the
    machine and its load average (other jobs on the machine slow every number; the docs quote it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return dict(command=" ".join(["python", *sys.argv]), date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                commit=commit, machine=platform.machine(), cpus=os.cpu_count(), load_before=list(os.getloadavg()))


def write_result(path, result, recorded):
    """Write a benchmark's JSON with ``recorded`` (from ``started``) completed by the load at the end, the
    form tools/publish_results.py reads into the docs."""
    recorded = dict(recorded, load_after=list(os.getloadavg()))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(dict(result, recorded=recorded), indent=1) + "\n")
