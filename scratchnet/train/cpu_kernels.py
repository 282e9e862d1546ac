"""A training run's CPU kernels: loaded from Numba's cache while the data loads, and on a machine's first run
compiled in the background while the first steps take the NumPy routes.

Numba's start-up and each kernel the cache holds load in a thread while the model is built and the data
loads (~0.3 s; ``ready()`` waits for it before the first step). What the cache lacks (kernels/cpu_cache.py:
a kernel compiles once per machine) would take seconds to tens of seconds to compile, so a run in one
process does not wait for it:

1. its first step runs with the missing kernels deferred (kernels/dispatch.py ``defer_cpu_kernels``): an op
   whose route calls one takes its next route, the NumPy array code at the latest, and notes the kernels
   it would have taken (an op whose kernels the cache holds takes them as in every later run);
2. after that step, just those start compiling in child processes (one fewer than the cores, at least one,
   niced), which fill the cache; one line says so and roughly how long (none: no step waited for them);
3. at the first step boundary after the children are done, this process loads the kernels from the cache
   (milliseconds) and the kernel routes come back;
4. at the end of the run a compile still going is waited for (one line says so), so that the next run finds
   every kernel it needs; an interrupted or failed run kills the children instead.

Several ranks (each its own process, all compiling the same kernels) compile what is missing before the
first step instead, in that many processes side by side (``kernels/cpu.py warm_up(compile=True)``).
"""
import sys
import threading
import time

import numpy as np

from .. import backend, kernels
from ..kernels import dispatch

class CpuKernels:
    """The CPU kernels of one run on ``device`` in ``dtype``; ``background``: a machine's first run compiles
    them in the background (one process), else before the first step (several ranks)."""

    def __init__(self, dtype, device, background):
        self.dtype, self.background = np.dtype(dtype), background
        self.missing = []  # the kernels the cache lacked (the warm-up's names)
        self.compiled_first = False  # whether the warm-up compiled them itself, before the first step
        self.compiling = None  # a kernels/cpu_cache.py Compiling while children compile in the background
        self.phase = None  # what the next step boundary does: None (nothing), "first step", "compiling"
        self.planned = False  # whether the first training step has been prepared (once per run)
        self.steps_without = 0  # training steps that took other routes than their kernels' (deferred)
        self.thread = None
        if device == "cpu" and self.dtype in kernels.DTYPES:
            self.thread = threading.Thread(target=self._load, name="scratchnet-warm-up", daemon=True)
            self.thread.start()

    def _load(self):
        from ..kernels.cpu import warm_up  # imports Numba: only where the CPU kernels will run
        processes = backend.get_num_threads()
        try:
            self.missing = warm_up(self.dtype)  # (what the cache lacks)
            if self.missing and not self.background and processes > 1:
                warm_up(self.dtype, compile=True, processes=processes)
                self.compiled_first = True
        except Exception:  # noqa: BLE001 (a kernel that fails here fails again in training, which reports it)
            self.missing = []

    def ready(self, training=True):
        """Wait for the warm-up; the seconds of it that compiled kernels (left out of the epoch's time). The
        first training step on a cache that lacks kernels starts the background plan (module docstring)."""
        started = time.perf_counter()
        if self.thread is not None and self.thread.is_alive():
            self.thread.join()
        waited = time.perf_counter() - started
        if self.compiled_first:
            self.compiled_first = False
            return waited
        if training and self.background and self.missing and not self.planned:
            self.planned = True
            from ..kernels.cpu import functions_of
            dispatch.defer_cpu_kernels(functions_of(self.missing))
            self.phase = "first step"
        return 0.0

    def step_done(self):
        """At a step boundary: after the first step, start compiling what it would have taken; once that is
        compiled, load it and take the kernel routes again."""
        if self.phase is None:  # (every step of every later run: one attribute test)
            return
        if self.phase == "first step":
            from ..kernels import cpu, cpu_cache
            needed = [name for name in cpu.kernels_of(dispatch.wanted_cpu_kernels(self.dtype))
                      if name in self.missing]
            if not needed:  # the cache holds all that this run takes: the step took the usual routes
                self._kernels_on(())
                return
            self.steps_without += 1
            self.compiling = cpu_cache.compile_in_background(
                needed, self.dtype, max(1, backend.get_num_threads() - 1), cpu.COMPILE_CALL)
            self.phase = "compiling"
            return
        self.steps_without += 1
        if self.compiling.done():
            from ..kernels import cpu_cache
            cpu_cache.reporter("end", self.compiling.what, self.dtype, self.compiling.elapsed())
            self._kernels_on(self.compiling.names)

    def _kernels_on(self, names):
        from ..kernels.cpu import compile_kernels
        try:
            compile_kernels(names, self.dtype)  # loads what the children compiled (compiles what they could not)
        except Exception:  # noqa: BLE001 (a kernel that fails here fails again in training, which reports it)
            pass
        dispatch.defer_cpu_kernels(())
        self.phase = None

    def describe(self):
        """The line of a background compile still going (for a progress bar that opens meanwhile), or None."""
        if self.phase != "compiling":
            return None
        from ..kernels import cpu_cache
        left = max(0.0, self.compiling.estimate - self.compiling.elapsed())
        return cpu_cache.describe(self.compiling.what, self.dtype, left, "background", brief=True)

    def finish(self, wait, stop=None):
        """The end of the run: a background compile still going is waited for (``wait``; ``stop()`` True
        kills it, a signal meanwhile) or killed, and the kernel routes are back."""
        if self.phase == "compiling" and not self.compiling.done():
            if wait:
                from ..kernels import cpu_cache
                left = max(0.0, self.compiling.estimate - self.compiling.elapsed())
                cpu_cache.reporter("wait", self.compiling.what, self.dtype, left)
                self.compiling.wait(stop)
            else:
                self.compiling.kill()
        if self.phase is not None:
            dispatch.defer_cpu_kernels(())
            self.phase = None


class KernelCompiles:
    """Numba compiling CPU kernels on a machine's first run (kernels/cpu_cache.py): the progress bar says so
    while it lasts (one line: what, and about how long), and the loop leaves a compile this process waits for
    out of the epoch's time, its rate and ETA (``new()``: compile seconds since the last call). ``cpu_kernels``:
    the run's CpuKernels, whose background compile the bar shows when it opens."""

    def __init__(self, bar, cpu_kernels=None):
        self.bar, self.description = bar, getattr(bar, "desc", "")  # (a disabled tqdm has no desc)
        self.watcher = sys.modules.get(kernels.__name__ + ".cpu_cache")  # imported where CPU kernels run
        self.counted = self.seconds()
        self.line = cpu_kernels.describe() if cpu_kernels is not None else None

    def seconds(self):
        return self.watcher.seconds() if self.watcher is not None else 0.0

    def new(self):
        now = self.seconds()
        elapsed, self.counted = now - self.counted, now
        return elapsed

    def __enter__(self):
        if self.watcher is not None and not self.bar.disable:  # without a bar: the watcher's own stderr line
            self.previous, self.watcher.reporter = self.watcher.reporter, self.report
            if self.line is not None:
                self.bar.set_description_str(f"{self.description}: {self.line}")
        return self

    def __exit__(self, *exc_info):
        if hasattr(self, "previous"):
            self.watcher.reporter = self.previous

    def report(self, event, name, dtype, seconds):
        if event == "end":
            self.bar.set_description_str(self.description)
        else:
            line = self.watcher.describe(name, dtype, seconds, event, brief=True)
            self.bar.set_description_str(f"{self.description}: {line}")

