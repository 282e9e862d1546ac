"""What the CPU benchmarks share: the timing rule (the fastest of N calls after warm-up calls), the
environment their timed children run in (this workplace's OpenBLAS overrides removed) and how a child
is run (``child_json``), the process's resident memory (Linux), the interpreter of the PyTorch side,
where a result comes from (``started``/``write_result``), and the command lines' counts (``at_least``)."""
import argparse
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
ROOT = Path(__file__).resolve().parents[1]


def at_least(low):
    """An argparse ``type``: an integer of at least ``low``. Anything else (``--rounds 0``, ``--repeat x``) is
    argparse's one-line error and exit status 2, before any work starts."""
    def count(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    count.__name__ = f"integer >= {low}"  # (argparse names the type in its message)
    return count


def clean_env():
    """This process's environment without OVERRIDES, for a timed child process."""
    return {k: v for k, v in os.environ.items() if k not in OVERRIDES}


def restart_without_overrides():
    """Run this script again, in this process, without OVERRIDES, where any is set: a benchmark that times its own
    process calls this before NumPy loads OpenBLAS (which reads them once, at load)."""
    if any(v in os.environ for v in OVERRIDES):
        os.execve(sys.executable, [sys.executable] + sys.argv, clean_env())


def child_json(command, what, env=None):
    """Run a benchmark's child process ``command`` in the repo root and return the JSON object it prints
    on its last line; a failed child stops the benchmark with ``what`` and the child's stderr. ``env``:
    clean_env() with this checkout first on PYTHONPATH, unless the caller gives its own."""
    if env is None:
        env = clean_env()
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{what} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def trim_heap():
    """Hand the memory malloc keeps free back to the kernel (glibc's malloc_trim); False elsewhere.
    scratchnet keeps freed memory for reuse (scratchnet/backend/memory.py), PyTorch's CPU allocator keeps
    some: trimmed, a step's peak above the resident size before it is the memory the step needs. Not
    scratchnet's release_memory(): the PyTorch child must not import scratchnet (its policies)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes
    return bool(ctypes.CDLL(None).malloc_trim(0))


def measure_step(step, steps, warmups=1):
    """A training step's time and memory, the same way in either framework's child process.

    Time: the fastest wall and CPU seconds of ``steps`` calls after ``warmups``. Memory, from one more
    call after them, with the heap trimmed first (trim_heap) so that an allocator's cache does not hide
    it: the peak resident size during the step minus the resident size before it ("step MB":
    activations, workspaces, gradients), and the process's peak ("process MB")."""
    import gc
    for _ in range(warmups):
        step()
    wall, cpu = [], []
    for _ in range(steps):
        gc.collect()
        start_cpu, start = time.process_time(), time.perf_counter()
        step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    gc.collect()
    trim_heap()
    before = rss_mb()[0]
    if not reset_peak():
        raise OSError("the step's memory needs /proc/self/clear_refs (Linux) to reset the peak RSS")
    step()
    return dict(step_s=min(wall), step_cpu_s=min(cpu), steps_s=wall, step_mb=rss_mb()[1] - before,
                process_mb=rss_mb()[1])


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


def layer_calls(layer, no_grad, leaves, output_grad):
    """forward() (``layer()`` under ``no_grad``) and forward_backward() (the ``leaves``' gradients cleared,
    then ``layer()``'s output y backpropagated with ``output_grad(y)``): what a layer benchmark times, the
    same calls in either framework."""
    def forward():
        with no_grad():
            layer()

    def forward_backward():
        for a in leaves:
            if a is not None:
                a.grad = None
        y = layer()
        y.backward(output_grad(y))
    return forward, forward_backward


def torch_python():
    """The interpreter of a benchmark's PyTorch side: $SCRATCHNET_TORCH_PYTHON where set (a Python with the newest
    PyTorch and torchvision that install, which the published numbers are measured against), else this one."""
    return Path(os.environ.get("SCRATCHNET_TORCH_PYTHON") or sys.executable)


def add_torch_python(parser, needs="torch"):
    """--torch-python, the interpreter of a benchmark's PyTorch side (``needs``: what it must have installed),
    default torch_python(); a path that does not exist, given or from the environment, is one error line."""
    def interpreter(value):
        if not Path(value).exists():
            raise argparse.ArgumentTypeError(f"{value} does not exist: give the interpreter of a Python with "
                                             f"{needs} (--torch-python PATH or SCRATCHNET_TORCH_PYTHON)")
        return Path(value)
    # a string default goes through the type too, so an environment's path that does not exist is caught
    parser.add_argument("--torch-python", type=interpreter, default=str(torch_python()),
                        help=f"a Python with {needs}, for the PyTorch side (default: %(default)s: "
                             f"$SCRATCHNET_TORCH_PYTHON, else this Python)")


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
