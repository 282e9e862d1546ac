"""Every ``python -m scratchnet.X``: starts clean (no warning on stderr, not even runpy's "found in
sys.modules after import of package"), and shares one error path (scratchnet/cli.py): a bad argument
or file is one stderr line naming it, and exit code 2, never a traceback."""
import gzip
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

import scratchnet as sn
from conftest import REPO
from scratchnet.models import get_model

PACKAGE = REPO / "scratchnet"


def entry_points():
    """scratchnet.X for every package with a __main__.py and every module with a __main__ block."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__main__":
            names.append(".".join(parts[:-1]))
        elif parts[-1] != "__init__" and 'if __name__ == "__main__"' in path.read_text():
            names.append(".".join(parts))
    return names


def run_module(name, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-W", "error", "-m", name, *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=120)


def test_the_tools_are_found():
    assert {"scratchnet.train", "scratchnet.summary", "scratchnet.study", "scratchnet.graph", "scratchnet.predict",
            "scratchnet.export"} <= set(entry_points())


@pytest.mark.parametrize("name", entry_points())
def test_help_starts_clean(name):
    done = run_module(name, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("usage: ")


@pytest.mark.parametrize("name", entry_points())
def test_every_entry_point_runs_through_the_one_error_path(name):
    """Its main is wrapped by scratchnet.cli.command, and a bad option is one line and exit 2 in a real process."""
    assert getattr(importlib.import_module(name).main, "is_scratchnet_command", False), \
        f"{name}.main is not decorated with scratchnet.cli.command"
    done = run_module(name, "--no-such-option")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


# --------------------------------------------------------------------------- the table of bad input

@pytest.fixture
def files(tmp_path, data_dir):
    """Files a user may get wrong: a damaged Fashion-MNIST, another model's weights, a folder."""
    damaged = tmp_path / "damaged" / "fashion-mnist"
    damaged.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (damaged / name).symlink_to(data_dir / "fashion-mnist" / name)
    stream = bytearray(gzip.compress(bytes(16 + 10000 * 784)))
    stream[20:40] = b"\xff" * 20  # the deflate stream breaks, not only the CRC at the end
    (damaged / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(stream))
    sn.save(get_model("resnet20"), tmp_path / "resnet20.npz")
    return {"damaged": damaged.parent, "damaged_file": damaged / "t10k-images-idx3-ubyte.gz",
            "foreign": tmp_path / "resnet20.npz", "folder": tmp_path, "missing": tmp_path / "missing.npz",
            "out": tmp_path / "out"}


GPU_MISSING = "device 'gpu'" if not sn.gpu_available() else None

# (tool, arguments, what the one line must say); {name} is a path from the ``files`` fixture
BAD_INPUT = [
    ("train", ["lenet", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ("train", ["lenet", "--warmup", "-1"], "argument --warmup: must be a finite number >= 0, got '-1'"),
    ("train", ["lenet", "--warmup", "nan"], "argument --warmup: must be a finite number >= 0, got 'nan'"),
    ("train", ["lenet", "--lr", "inf"], "argument --lr: must be a finite number > 0, got 'inf'"),
    ("train", ["lenet", "--lr", "0"], "argument --lr: must be a finite number > 0, got '0'"),
    ("train", ["lenet", "--momentum", "-0.9"], "argument --momentum: must be a finite number >= 0"),
    ("train", ["lenet", "--weight-decay", "nan"], "argument --weight-decay: must be a finite number >= 0"),
    ("train", ["lenet", "--epochs", "0"], "argument --epochs: must be a positive int, got 0"),
    ("train", ["lenet", "--epochs", "1.5"], "argument --epochs: must be a positive int, got '1.5'"),
    ("train", ["lenet", "--batch-size", "0"], "argument --batch-size: must be a positive int, got 0"),
    ("train", ["lenet", "--limit", "-4"], "argument --limit: must be a positive int, got -4"),
    ("train", ["lenet", "--seed", "-1"], "argument --seed: must be an int >= 0, got -1"),
    ("train", ["lenet", "--prefetch", "-1"], "argument --prefetch: must be an int >= 0, got -1"),
    ("train", ["lenet", "--threads", "0"], "argument --threads: must be a positive int, got 0"),
    ("train", ["lenet", "--dist-timeout", "0"], "argument --dist-timeout: must be a finite number > 0"),
    ("train", ["lenet", "--model-arg", "num_classes=0", "--out", "{out}"],
     "lenet5: num_classes must be a positive int, got 0"),
    ("train", ["nosuchnet", "--out", "{out}"], "unknown model 'nosuchnet'"),
    ("train", ["lenet", "--data-dir", "{damaged}", "--no-download", "--out", "{out}"],
     "{damaged_file} is corrupt or truncated (zlib.error"),
    ("train", ["lenet", "--eval-only", "--weights", "{folder}", "--out", "{out}"], "is a folder"),
    ("train", ["lenet", "--eval-only", "--weights", "{foreign}", "--out", "{out}"],
     "--weights {foreign}: load_state_dict for LeNet5 failed (no key matches: a checkpoint of another"),
    ("train", ["lenet", "--device", "gpu"], GPU_MISSING),
    ("summary", ["nosuchnet"], "unknown model 'nosuchnet'"),
    ("summary", ["resnet18", "--input-size", "0", "0", "0"], "argument --input-size: must be a positive int, got 0"),
    ("summary", ["resnet18", "--input-size", "-5"], "argument --input-size: expected 3 arguments"),
    ("summary", ["lenet", "--input-size", "1", "8", "8"], "LeNet5 cannot run on an input of size (1, 8, 8)"),
    ("summary", ["resnet18", "--num-classes", "-3"], "argument --num-classes: must be a positive int, got -3"),
    ("summary", ["resnet18", "--batch-size", "0"], "argument --batch-size: must be a positive int, got 0"),
    ("summary", ["lenet", "-o", "num_classes=0"], "lenet5: num_classes must be a positive int, got 0"),
    ("summary", ["resnet18", "--device", "gpu"], GPU_MISSING),
    ("study", ["joins", "resnet18", "--batch-size", "0"], "argument --batch-size: must be a positive int, got 0"),
    ("study", ["joins", "resnet18", "--side", "0"], "argument --side: must be a positive int, got 0"),
    ("study", ["gradflow", "lenet", "--steps", "-1"], "argument --steps: must be an int >= 0, got -1"),
    ("study", ["joins", "resnet18", "--out", "{out}", "--batch-size", "0"], "argument --batch-size"),
    ("study", ["features", "--weights", "{missing}", "--out", "{out}"], "--weights {missing}"),
    ("study", ["features", "--weights", "{foreign}", "--out", "{out}"],
     "--weights {foreign}: load_state_dict for LeNet5 failed (no key matches: a checkpoint of another"),
    ("study", ["degradation", "--limit", "64", "--out", "{out}"],
     "--limit 64 gives less than one batch (--batch-size 128)"),
    ("study", ["degradation", "--epochs", "0"], "argument --epochs: must be a finite number > 0, got '0'"),
    ("study", ["landscape", "--grid", "1"], "argument --grid: must be an int >= 2, got 1"),
    ("study", ["--threads", "0", "cost"], "argument --threads: must be a positive int, got 0"),
    ("study", ["cost", "--models", "nosuchnet", "--out", "{out}"], "unknown model 'nosuchnet'"),
    ("graph", ["nosuchnet", "--out", "{out}.svg"], "unknown model 'nosuchnet'"),
    ("graph", ["resnet20", "--input-size", "3", "0", "8"], "argument --input-size: must be a positive int, got 0"),
    ("graph", ["resnet20", "--batch-size", "0"], "argument --batch-size: must be a positive int, got 0"),
    ("graph", ["resnet20", "--max-nodes", "0"], "argument --max-nodes: must be a positive int, got 0"),
    ("predict", ["photo.jpg", "--top", "0"], "argument --top: must be a positive int, got 0"),
    ("predict", ["photo.jpg", "--crop", "-224"], "argument --crop: must be a positive int, got -224"),
    ("export", ["lenet5", "--batch-size", "0"], "argument --batch-size: must be a positive int, got 0"),
    ("export", ["lenet5", "--input-size", "1", "0", "32"], "argument --input-size: must be a positive int, got 0"),
]


@pytest.mark.parametrize("tool, argv, expected", BAD_INPUT,
                         ids=[f"{tool} {' '.join(argv)}" for tool, argv, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_it_and_exit_2(tool, argv, expected, files, capsys, monkeypatch):
    if expected is None:
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(files["folder"])  # nothing a refused command might write lands in the repository
    main = importlib.import_module(f"scratchnet.{tool}").main
    argv = [arg.format(**files) for arg in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected.format(**files) in err, err
    assert not (files["folder"] / "runs").exists()


def test_study_options_are_taken_before_or_after_the_study_name(tmp_path, capsys):
    from scratchnet.study import main
    assert main(["cost", "--models", "lenet", "--out", tmp_path / "after"]) == 0
    assert main(["--out", tmp_path / "before", "cost", "--models", "lenet"]) == 0
    assert (tmp_path / "after" / "cost.json").is_file() and (tmp_path / "before" / "cost.json").is_file()


def test_a_diverging_run_is_one_line_without_numpy_warnings(tmp_path, data_dir):
    """A learning rate far too large: the loss overflows to NaN; the run stops in one line (exit 1) and no
    RuntimeWarning is printed on the way, nothing non-finite is written."""
    env = dict(os.environ, PYTHONPATH=str(REPO), SCRATCHNET_DATA=str(data_dir))
    done = subprocess.run([sys.executable, "-m", "scratchnet.train", "lenet", "--lr", "1e12", "--limit", "64",
                           "--test-limit", "32", "--batch-size", "16", "--epochs", "1", "--no-progress",
                           "--prefetch", "0", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: the loss is") and done.stderr.count("\n") == 1, done.stderr
    assert "Warning" not in done.stderr
    for written in tmp_path.glob("*.npz"):
        assert all(np.all(np.isfinite(a)) for a in np.load(written).values() if a.dtype.kind == "f"), written
