"""A machine's first run (kernels/cpu_cache.py): kernels compile once per machine, only when used (or all at
once in child processes, asked for), each compile says what it is, and the training loop leaves it out
of its times. The subprocesses point NUMBA_CACHE_DIR at an empty folder: a fresh install's cache."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO

FIRST_USE = """
import numpy as np
from scratchnet.kernels import cpu, cpu_cache
missing = cpu.warm_up(np.float32)  # loads what the cache holds, compiles nothing
loaded_only = cpu_cache.seconds()
cpu.relu_forward(np.ones(5, np.float32))
print(missing, loaded_only, cpu_cache.seconds())
"""


def python(code, cache, *args):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1], done.stderr


def test_a_kernel_compiles_once_per_machine_on_first_use_and_says_so(tmp_path):
    out, err = python(FIRST_USE, tmp_path)
    missing, loaded_only, compiled = out.rsplit(" ", 2)
    # an empty cache: nothing loaded, nothing compiled
    assert eval(missing) == ["im2col", "col2im", "depthwise_forward", "depthwise_backward_input",
                             "depthwise_backward_weight", "max_pool2x2_forward", "max_pool2d_forward",
                             "max_pool2d_backward", "relu_forward", "relu_forward_inplace", "relu_backward",
                             "leaky_relu_forward", "leaky_relu_backward", "negative_abs", "sigmoid_from_exp",
                             "sigmoid_backward", "silu_from_exp", "silu_backward", "scale_planes",
                             "scale_planes_backward", "channel_stats", "scale_shift",
                             "grad_sums", "grad_input", "lrn_scale", "lrn_backward", "deform_im2col", "deform_col2im",
                             "deform_col2im_coord", "gemm_items", "im2col_chunks", "sgd_step",
                             "winograd"]
    assert float(loaded_only) == 0 and float(compiled) > 0
    assert err.strip() == ("scratchnet: compiling the CPU kernel relu_forward for float32 (first use on this machine, "
                           "under a second; cached for later runs)")
    out, err = python(FIRST_USE, tmp_path)  # the next process finds it in the cache: no compile, no line
    missing, loaded_only, compiled = out.rsplit(" ", 2)
    assert "relu_forward" not in eval(missing) and len(eval(missing)) == 32
    assert float(compiled) == 0 and err == ""


COMPILE_IN_PROCESSES = """
import numpy as np
from scratchnet.kernels import cpu, cpu_cache
ok = cpu_cache.compile_in_processes(["relu_forward", "relu_backward"], np.dtype("float64"), 2,
                                    "from scratchnet.kernels.cpu import compile_kernels; compile_kernels(NAMES, DTYPE)")
print(ok, cpu.warm_up(np.float64))
"""


def test_kernels_compile_side_by_side_in_child_processes(tmp_path):
    out, err = python(COMPILE_IN_PROCESSES, tmp_path)
    ok, missing = out.split(" ", 1)
    missing = eval(missing)
    assert ok == "True" and "relu_forward" not in missing and "relu_backward" not in missing
    assert "im2col" in missing  # only what was asked for
    assert err.startswith("scratchnet: compiling 2 CPU kernels for float64 in 2 processes (first use on this "
                          "machine, about 2 s;")


class _FakeBar:
    disable, desc = False, "epoch 1/1"

    def set_description_str(self, text):
        self.desc = text


def test_the_progress_bar_says_what_compiles_while_it_does(monkeypatch):
    from scratchnet.kernels import cpu_cache
    from scratchnet.train.cpu_kernels import KernelCompiles
    bar = _FakeBar()
    with KernelCompiles(bar) as compiles:
        assert cpu_cache.reporter == compiles.report  # the bar, not a line of its own
        compiles.report("start", "the CPU kernel im2col", "float32", 4.0)
        assert bar.desc == ("epoch 1/1: compiling the CPU kernel im2col for float32 (first use on this machine, "
                            "about 4 s; cached for later runs)")
        monkeypatch.setattr(cpu_cache._watcher, "total", cpu_cache._watcher.total + 2.5)
        compiles.report("end", "the CPU kernel im2col", "float32", 2.5)
        assert bar.desc == "epoch 1/1" and compiles.new() == pytest.approx(2.5) and compiles.new() == 0
    assert cpu_cache.reporter is cpu_cache._print_line


def test_a_compile_inside_a_step_is_left_out_of_the_epoch_time(data_dir, tmp_path, monkeypatch):
    """A step that compiles (here: a stand-in that takes 3 s and counts them as compile time) adds to the
    epoch's compile_time_s, not to its epoch_time_s (so images/s and the bar's ETA are the steady rate)."""
    from scratchnet import train
    from scratchnet.kernels import cpu_cache
    from scratchnet.optim import SGD
    monkeypatch.setenv("SCRATCHNET_DATA", str(data_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    step, calls = SGD.step, []

    def compiling_step(self, *args):
        if not calls:
            time.sleep(3.0)
            cpu_cache._watcher.total += 3.0
        calls.append(1)
        return step(self, *args)
    monkeypatch.setattr(SGD, "step", compiling_step)
    out = tmp_path / "run"
    assert train.main(["lenet", "--dataset", "fashion-mnist", "--limit", "32", "--test-limit", "16", "--batch-size",
                       "16", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "metrics.json").read_text())[0]
    assert record["compile_time_s"] >= 3.0  # (and the kernels this machine compiled for the test, if any)
    assert record["epoch_time_s"] < 3.0  # two LeNet steps of 16 images, without the 3 s


def test_every_cpu_kernel_function_names_the_numba_kernels_it_compiles():
    """What a machine's first run compiles in the background (scratchnet/train/cpu_kernels.py): the interface
    functions the model's routes call, mapped to the warm-up's Numba kernels, and back."""
    from scratchnet.kernels import cpu, interface
    every = [name for name, _ in cpu._warm_up_calls(np.float32)]
    assert cpu.kernels_of(interface.CPU) == every  # each kernel is some function's
    for function in interface.CPU:
        compiles = cpu.kernels_of([function])
        assert compiles and set(compiles) <= set(every), function
        assert function in cpu.functions_of(compiles), function
    assert cpu.kernels_of(["sigmoid_forward"]) == ["negative_abs", "sigmoid_from_exp"]
    assert cpu.kernels_of(["winograd_backward_weight"]) == ["winograd"]
    assert cpu.functions_of(["negative_abs"]) == ["sigmoid_forward", "silu_forward"]
