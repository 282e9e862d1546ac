"""A machine's first training run (scratchnet/train/cpu_kernels.py): the kernels its model takes compile in the
background, once per machine, while its first steps take the NumPy routes; the next run compiles nothing.
The subprocesses point NUMBA_CACHE_DIR at an empty folder: a fresh install's cache. The model is LeNet-5 with
--conv-algo reference, whose kernels (ReLU, max pooling, the SGD step) compile in seconds."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

TINY = ["lenet5", "--dataset", "fashion-mnist", "--limit", "64", "--test-limit", "32", "--batch-size", "32",
        "--epochs", "1", "--no-progress", "--conv-algo", "reference"]
TAKES = ["max_pool2x2_forward", "max_pool2d_forward", "max_pool2d_backward", "relu_forward", "relu_forward_inplace",
         "relu_backward", "sgd_step"]  # the Numba kernels that run takes (relu_forward may run either ReLU kernel)

pytestmark = pytest.mark.usefixtures("data_env")


def run(cache, *args):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "scratchnet.train", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)


def missing_kernels(cache):
    """The float32 kernels the cache lacks (kernels/cpu.py warm_up, which compiles nothing)."""
    code = "import numpy as np; from scratchnet.kernels import cpu; print(cpu.warm_up(np.float32))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    return eval(done.stdout)


def test_a_first_run_compiles_what_its_model_takes_in_the_background_and_the_next_run_nothing(tmp_path):
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    first = run(cache, *TINY, "--out", tmp_path / "first")
    assert first.returncode == 0, first.stderr
    assert f"scratchnet: compiling {len(TAKES)} CPU kernels for float32 in the background, in " in first.stderr
    assert "training runs on the NumPy routes meanwhile" in first.stderr
    record = json.loads((tmp_path / "first" / "metrics.json").read_text())[0]
    assert record["steps_without_kernels"] >= 1  # its first step took the NumPy routes
    assert record["compile_time_s"] == 0 and record["first_step_s"] > 0  # (the step waited for no compile)
    every = missing_kernels(tmp_path / "empty")
    assert sorted(set(every) - set(missing_kernels(cache))) == sorted(TAKES)  # just what it takes, all of it
    second = run(cache, *TINY, "--out", tmp_path / "second")
    assert second.returncode == 0, second.stderr
    assert "compiling" not in second.stderr
    record = json.loads((tmp_path / "second" / "metrics.json").read_text())[0]
    assert record["steps_without_kernels"] == 0 and record["compile_time_s"] == 0


def children_using(cache):
    """The processes whose environment points Numba at ``cache`` (this test's runs and their children)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"NUMBA_CACHE_DIR={cache}\0".encode() in environ.read_bytes():
                found.append(environ.parent.name)
        except OSError:  # (gone meanwhile, or another user's)
            pass
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads other processes' environments in /proc")
def test_a_signal_during_the_background_compile_keeps_the_checkpoint_and_leaves_no_process(tmp_path):
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    out = tmp_path / "run"
    stopped = run(cache, *TINY, "--limit", "128", "--out", out, "--debug-signal-after", "1")
    assert stopped.returncode == 143, stopped.stderr
    assert "in the background" in stopped.stderr and "interrupted: checkpoint written" in stopped.stderr
    assert "Traceback" not in stopped.stderr and (out / "checkpoint.npz").is_file()
    assert children_using(cache) == []  # the compiling children were ended with the run


def test_the_end_of_a_run_waits_for_its_background_compile_or_ends_it(monkeypatch, capsys):
    """finish(): a compile still going is waited for (one line says so), or killed (an interrupted run);
    either way every kernel route is back."""
    from scratchnet.kernels import dispatch
    from scratchnet.train.cpu_kernels import CpuKernels

    class Compiling:  # kernels/cpu_cache.py's, without children
        what, estimate, names = "6 CPU kernels, in 1 process", 9.0, TAKES

        def __init__(self):
            self.calls = []

        def done(self):
            return False

        def elapsed(self):
            return 2.0

        def wait(self, stop=None):
            self.calls.append(("wait", stop))

        def kill(self):
            self.calls.append("kill")

    for wait in (True, False):
        kernels = CpuKernels(np.float32, "gpu", background=True)  # (no warm-up thread)
        kernels.compiling, kernels.phase = Compiling(), "compiling"
        dispatch.defer_cpu_kernels({"relu_forward"})
        kernels.finish(wait=wait, stop=None)
        assert kernels.compiling.calls == ([("wait", None)] if wait else ["kill"])
        assert dispatch.cpu_kernels_deferred() == frozenset() and kernels.phase is None
    err = capsys.readouterr().err
    assert err == ("scratchnet: waiting for the 6 CPU kernels compiling for float32 in the background (about 7 s "
                   "left), so that later runs start with them\n")


def test_a_compile_past_its_estimate_promises_no_time():
    from scratchnet.kernels import cpu_cache
    line = cpu_cache.describe("6 CPU kernels", "float32", 0.0, "wait")
    assert "(past the estimate)" in line and "second" not in line
