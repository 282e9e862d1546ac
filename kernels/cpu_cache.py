"""The first call of a CPU kernel on a machine: Numba compiles it, says so, and keeps it.

Every Numba kernel here is ``njit(cache=True)`` without a signature: it is compiled on its first
call, for the types of that call only (float32 and float64 are two compiles), and the machine code
goes to Numba's on-disk cache, so a kernel compiles once per machine (and Numba version):

* beside the sources (``scratchnet/kernels/__pycache__``) when that folder is writable,
* else Numba's per-user folder (``~/.cache/numba/...``): an installed, read-only package,
* or ``$NUMBA_CACHE_DIR`` when it is set.

A compile takes seconds (a parallel kernel 1-10 s, ``COMPILE_SECONDS``); loading from the cache
takes milliseconds. This module watches Numba's compile events for this package's kernels:

* ``reporter(event, what, dtype, seconds)`` is called when a kernel starts compiling ("start",
  ``what``: "the CPU kernel im2col", seconds: the estimate) and when it is done ("end", seconds:
  the time it took); for a compile in the background ("background"), and when a process waits for
  its end ("wait", seconds: the estimate of what is left). The default prints one line on stderr
  (none at "end"); the training CLI shows it in its progress bar instead.
* ``seconds()``: the time spent compiling kernels in this process, which the training loop leaves
  out of its rate and ETA.
* ``load_only()``: inside it, a kernel that is not in the cache raises ``NotCompiled`` instead of
  compiling, so a warm-up can load what the cache holds and leave the rest to its first real call
  (compiled then, only if it is used).
* ``compile_in_processes(names, dtype, processes)``: compile several kernels at once, in child
  processes that fill the cache (longest first), for a machine whose cores would otherwise wait
  on one compile after another; ``compile_in_background(...)``: the same without waiting (a
  ``Compiling`` to poll), for a machine's first training run (scratchnet/train/cpu_kernels.py).
"""
import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from numba.core import event

PACKAGE = __name__.rpartition(".")[0]  # the kernels package, however it was imported

# CPU seconds to compile each kernel for one dtype with an empty cache (the helpers it calls
# included), one core of the 2-core AMD EPYC these tests run on: the estimate a report gives.
COMPILE_SECONDS = {
    "im2col": 4.0, "col2im": 2.3, "im2col_one_thread": 0.7, "col2im_one_thread": 0.6,
    "depthwise_forward": 8.0, "depthwise_backward_input": 6.5,
    "depthwise_backward_weight": 10.0, "max_pool2x2_forward": 0.8, "max_pool2d_forward": 2.2,
    "max_pool2d_backward": 0.8, "relu_forward": 0.6, "relu_forward_inplace": 0.5, "relu_backward": 0.5,
    "leaky_relu_forward": 0.6, "leaky_relu_backward": 0.7, "sgd_step": 1.3,
    "negative_abs": 0.4, "sigmoid_from_exp": 0.6, "sigmoid_backward": 0.5, "silu_from_exp": 0.6, "silu_backward": 0.5,
    "scale_planes": 0.6, "scale_planes_backward": 1.0,
    "channel_stats": 1.1, "scale_shift": 1.1, "grad_sums": 1.0, "grad_input": 1.2,  # batch norm's
    "lrn_scale": 0.5, "lrn_backward": 0.6, "winograd": 10.0, "deform_im2col": 4.0, "gemm_items": 0.5,
    "im2col_chunks_forward": 5.5, "im2col_chunks_backward": 6.5, "im2col_chunks": 12.0,  # (both: the warm-up's)
}
DEFAULT_SECONDS = 2.0  # a kernel not in the table


class NotCompiled(RuntimeError):
    """A kernel was called inside ``load_only()`` and the cache does not hold it."""


def _about(seconds):
    return "under a second" if seconds < 1 else f"about {seconds:.0f} s"


def describe(what, dtype, seconds, event_name="start", brief=False):
    """A compile in words: 'compiling the CPU kernel im2col for float32 (first use on this machine, ...)'.
    ``what`` may end with how, after a comma: '15 CPU kernels, in 2 processes'. ``event_name``: "start" (a
    compile this process waits for), "background" (one it does not wait for), "wait" (its end awaited;
    ``seconds``: the estimate of what is left). ``brief``: a background compile in a progress bar's words."""
    what, _, how = what.partition(", ")
    if brief and event_name == "background":
        return f"{what} compiling in the background ({_about(seconds)}); NumPy routes meanwhile"
    if event_name == "wait":  # (past its estimate the compile is slower than guessed: no time is promised)
        left = f"{_about(seconds)} left" if seconds >= 1 else "past the estimate"
        return f"waiting for the {what} compiling for {dtype} in the background ({left}), so " \
               f"that later runs start with them"
    background = event_name == "background"
    how = ("in the background" + (f", {how}" if how else "")) if background else how
    line = f"compiling {what} for {dtype}{' ' + how if how else ''} (first use on this machine, " \
           f"{_about(seconds)}; cached for later runs)"
    return line + ("; training runs on the NumPy routes meanwhile" if background else "")


def _print_line(event_name, what, dtype, seconds):
    if event_name != "end":
        print(f"scratchnet: {describe(what, dtype, seconds, event_name)}", file=sys.stderr, flush=True)


reporter = _print_line  # replaceable: the training CLI shows the line in its progress bar


class _Watcher(event.Listener):
    """Numba's "numba:compile" events: the outermost compile of one of this package's kernels is
    reported and timed (the helpers it compiles on the way are part of it)."""

    def __init__(self):
        self.stack = []  # one entry per compile in progress: (ours and outermost, start time, name, dtype)
        self.total = 0.0
        self.local = threading.local()  # .load_only: refuse to compile (per thread)

    def on_start(self, ev):
        dispatcher = ev.data["dispatcher"]
        module = getattr(dispatcher.py_func, "__module__", "") or ""
        ours = not self.stack and module.startswith(PACKAGE + ".")
        name = dispatcher.py_func.__name__
        dtype = next((str(t.dtype) for t in ev.data["args"] if hasattr(t, "dtype")), "its arguments")
        self.stack.append((ours, time.perf_counter(), name, dtype))
        if ours and getattr(self.local, "load_only", False):
            raise NotCompiled(f"the CPU kernel {name} for {dtype} is not in Numba's cache yet")
        if ours:
            kernel = name.lstrip("_")
            reporter("start", f"the CPU kernel {kernel}", dtype, COMPILE_SECONDS.get(kernel, DEFAULT_SECONDS))

    def on_end(self, ev):
        ours, started, name, dtype = self.stack.pop()
        if ours and ev.data is not None and not getattr(self.local, "load_only", False):
            elapsed = time.perf_counter() - started
            self.total += elapsed
            reporter("end", f"the CPU kernel {name.lstrip('_')}", dtype, elapsed)


_watcher = _Watcher()
event.register("numba:compile", _watcher)


def seconds():
    """Wall seconds this process has spent compiling this package's kernels."""
    return _watcher.total


# The same set-then-restore shape as DistributedDataParallel.no_sync: two flags in two layers that must not
# import each other (kernels sits below distributed), each three lines of contextlib idiom.
@contextlib.contextmanager
def load_only():
    """Inside the block (this thread), a kernel missing from the cache raises NotCompiled instead of compiling."""
    previous = getattr(_watcher.local, "load_only", False)
    _watcher.local.load_only = True
    try:
        yield
    finally:
        _watcher.local.load_only = previous


def cache_folder(kernel):
    """Where Numba keeps a kernel's machine code (a jitted function of this package)."""
    return kernel._cache.cache_path


class Compiling:
    """Kernels compiling in child processes that fill the cache: ``names`` (COMPILE_SECONDS's keys: the
    Numba functions' names) for ``dtype``, shared among ``processes`` children (longest first, to the least
    loaded). ``compile_call``: the Python statement a child runs, with NAMES and DTYPE substituted; ``nice``:
    how much the children defer to this process for the CPU (a run training meanwhile)."""

    def __init__(self, names, dtype, processes, compile_call, nice=0):
        shares = [[] for _ in range(max(1, min(processes, len(names))))]
        loads = [0.0] * len(shares)
        for name in sorted(names, key=lambda n: -COMPILE_SECONDS.get(n, DEFAULT_SECONDS)):
            least = loads.index(min(loads))
            shares[least].append(name)
            loads[least] += COMPILE_SECONDS.get(name, DEFAULT_SECONDS)
        top = __name__.split(".")[0]  # the package's parent folder goes first on the children's path
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(sys.modules[top].__file__).resolve().parents[1])]
            + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
        prefix = f"import os\nif hasattr(os, 'nice'): os.nice({nice})\n" if nice else ""
        self.dtype, self.names = dtype, list(names)
        self.what = f"{len(names)} CPU kernels, in {len(shares)} process{'es' if len(shares) > 1 else ''}"
        self.estimate = max(loads) + 1.0  # (+ each child's start-up)
        self.started = time.perf_counter()
        self.children = [subprocess.Popen([sys.executable, "-c", prefix + compile_call.replace("NAMES", repr(share))
                                           .replace("DTYPE", repr(str(dtype)))], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for share in shares]

    def done(self):
        """Whether every child has ended (it does not wait)."""
        return all(child.poll() is not None for child in self.children)

    def ok(self):
        """Whether every child ended well (a failed one leaves its kernels to their first use)."""
        return all(child.poll() == 0 for child in self.children)

    def elapsed(self):
        return time.perf_counter() - self.started

    def wait(self, stop=None):
        """Wait for the children; ``stop()`` (polled) True kills them instead (an interrupted run). Whether
        they all ended well."""
        while not self.done():
            if stop is not None and stop():
                self.kill()
                return False
            time.sleep(0.05)
        return self.ok()

    def kill(self):
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait()


def compile_in_processes(names, dtype, processes, compile_call):
    """Compile the kernels ``names`` for ``dtype`` in ``processes`` child processes at once (``Compiling``)
    and wait for all: afterwards this process loads each from the cache in a moment. Returns False if a
    child failed (the caller's own first call then compiles what is missing)."""
    compiling = Compiling(names, dtype, processes, compile_call)
    reporter("start", compiling.what, dtype, compiling.estimate)
    ok = compiling.wait()
    _watcher.total += compiling.elapsed()
    reporter("end", compiling.what, dtype, compiling.elapsed())
    return ok


def compile_in_background(names, dtype, processes, compile_call):
    """Start compiling ``names`` for ``dtype`` in ``processes`` child processes, niced, and return at once
    (a ``Compiling``: poll ``done()``, then load the kernels from the cache): a machine's first training run
    takes the NumPy routes meanwhile (kernels/dispatch.py defer_cpu_kernels). Says so ("background"); the
    time is not this process's compile time (it waits for nothing)."""
    compiling = Compiling(names, dtype, processes, compile_call, nice=10)
    reporter("background", compiling.what, dtype, compiling.estimate)
    return compiling
