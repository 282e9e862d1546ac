"""Every benchmark's counts (--repeat, --rounds, --steps, --batch, --epochs, --calls, --timeout, --threads) out of
range or not integers are one argparse line and exit status 2 (benchmarks/timing.py ``at_least``), before any
child process or timing starts; so is a PyTorch interpreter that does not exist."""
import subprocess
import sys

import pytest

from conftest import REPO

CASES = [  # script, its arguments, what the error says
    ("autograd_overhead", ["--repeat", "0"], "argument --repeat: must be at least 1, got 0"),
    ("conv", ["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
    ("conv", ["--threads", "-1"], "argument --threads: must be at least 0, got -1"),
    ("deform", ["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
    ("depthwise", ["--repeat", "-1"], "argument --repeat: must be at least 1, got -1"),
    ("depthwise", ["--torch-python", "/no/such/python"], "argument --torch-python: /no/such/python does not exist"),
    ("dispatch", ["--calls", "0"], "argument --calls: must be at least 1, got 0"),
    ("distributed", ["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
    ("first_run", ["--batch", "0"], "argument --batch: must be at least 1, got 0"),
    ("gpu_conv", ["--repeat", "0"], "argument --repeat: must be at least 1, got 0"),
    ("hvp", ["--repeat", "two"], "argument --repeat: 'two' is not an integer"),
    ("models", ["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    ("resnet50", ["--batch", "0"], "argument --batch: must be at least 1, got 0"),
    ("shares", ["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
    ("shares", ["--repeat", "x"], "argument --repeat: 'x' is not an integer"),
    ("threads", ["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    ("train_lenet", ["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
    ("winograd", ["--threads", "-2"], "argument --threads: must be at least 0, got -2"),
    ("zoo", ["--steps", "0"], "argument --steps: must be at least 1, got 0"),
]


TORCH_SIDES = ["conv", "deform", "depthwise", "train_lenet", "zoo"]  # the benchmarks that run a PyTorch child


@pytest.mark.parametrize("script", TORCH_SIDES)
def test_a_torch_interpreter_that_does_not_exist_is_one_error_line(script, monkeypatch):
    """From --torch-python or from SCRATCHNET_TORCH_PYTHON (the default), before anything runs."""
    monkeypatch.setenv("SCRATCHNET_TORCH_PYTHON", "/no/such/python")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{script}.py")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert "argument --torch-python: /no/such/python does not exist" in done.stderr
    assert "SCRATCHNET_TORCH_PYTHON" in done.stderr and "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("script, argv, says", CASES, ids=[f"{s}{' '.join(a)}" for s, a, _ in CASES])
def test_bad_counts_are_one_error_line(script, argv, says):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{script}.py"), *argv],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
