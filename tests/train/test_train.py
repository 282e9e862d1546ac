"""The training CLI: CI-sized runs of LeNet, a tiny ResNet and a tiny YOLO, resume, signals, bad input."""
import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from conftest import REPO, assert_same_weights, write_cifar
from scratchnet import train
from scratchnet.data import transforms as T

TINY_LENET = ["lenet", "--dataset", "fashion-mnist", "--limit", "96", "--test-limit", "64", "--batch-size", "16",
              "--no-progress", "--prefetch", "1"]
TINY_YOLO = ["fast_yolov1", "--limit", "24", "--test-limit", "8", "--batch-size", "8", "--no-progress",
             "--model-arg", "image_size=64", "--model-arg", "width_mult=0.0625", "--model-arg",
             "hidden_features=(32, 32)", "--lr", "1e-3"]


pytestmark = pytest.mark.usefixtures("data_env")


def cli(*args):
    """Run the CLI as a user would, in a fresh interpreter; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "scratchnet.train", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)


def suggested_command(err):
    """The command a message suggests between backticks, as argv words."""
    return shlex.split(err.split("`")[1])


def check_run_folder(out, epochs, metric="acc"):
    for name in ("metrics.json", "curves.png", "config.json", "best.npz", "final.npz", "checkpoint.npz"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))
    for m in metrics:
        for key in ("train_loss", "test_loss", "lr", "epoch_time_s"):
            assert np.isfinite(m[key]), key
        assert "train_acc" in m and "test_acc" in m
    if metric == "acc":
        assert all(0 <= m["test_acc"] <= 1 and 0 <= m["train_acc"] <= 1 for m in metrics)
    else:
        assert all(0 <= m["test_map50"] <= 1 for m in metrics)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return metrics


# --------------------------------------------------------------------------- smoke runs


def test_lenet_smoke_through_the_cli(tmp_path):
    out = tmp_path / "run"
    done = cli(*TINY_LENET, "--limit", "64", "--epochs", "2", "--out", out)
    assert done.returncode == 0, done.stderr
    metrics = check_run_folder(out, 2)
    assert "epoch 2/2" in done.stdout and "img/s" in done.stdout
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "fashion-mnist" and config["optimizer"] == "sgd" and config["limit"] == 64
    model = sn.models.get_model("lenet")
    model.load_state_dict(sn.load(out / "final.npz"))  # the weights load back into a fresh LeNet
    # --eval-only reproduces the last epoch's test accuracy from the checkpoint.
    assert train.main(["lenet", "--eval-only", "--resume", out, "--no-progress"]) == 0
    assert json.loads((out / "eval.json").read_text())["test_acc"] == metrics[-1]["test_acc"]


def test_tiny_resnet_on_cifar_format_files(tmp_path):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", [8, 8, 8, 8, 8, 12])
    out = tmp_path / "run"
    code = train.main(["resnet20", "--data-dir", tmp_path / "data", "--no-download", "--model-arg",
                       "widths=(4, 8, 8)", "--epochs", "1", "--batch-size", "16", "--out", out, "--no-progress",
                       "--limit", "32"])
    assert code == 0
    check_run_folder(out, 1)
    config = json.loads((out / "config.json").read_text())
    assert config["augment"] == ["crop", "flip"] and config["schedule"] == "step" and config["lr"] == 0.1


def test_tiny_yolo_reports_map(tmp_path):
    out = tmp_path / "run"
    assert train.main([*TINY_YOLO, "--epochs", "1", "--out", out, "--conv-algo", "auto"]) == 0
    metrics = check_run_folder(out, 1, metric="map50")
    assert json.loads((out / "config.json").read_text())["conv_algo"] == "auto"
    assert metrics[0]["test_acc"] is None and metrics[0]["train_acc"] is None


# --------------------------------------------------------------------------- resume is bit-identical


@pytest.mark.parametrize("case, stop_after", [("lenet", 8), ("yolo", 2)])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, case, stop_after, capsys):
    """SIGTERM (raised for real, in-process) mid-epoch -> checkpoint, exit 143; --resume ends bit-identical.
    From a cache that holds the model's kernels (a machine's first run takes the NumPy routes until they are
    compiled: docs/training.md): a one-step run first, which compiles them if this machine lacks them."""
    args = [*(TINY_LENET if case == "lenet" else TINY_YOLO), "--epochs", "2", "--seed", "3"]
    assert train.main([*args, "--epochs", "1", "--limit", "8", "--out", tmp_path / "kernels"]) == 0
    assert train.main([*args, "--out", tmp_path / "a"]) == 0
    assert train.main([*args, "--out", tmp_path / "b", "--debug-signal-after", str(stop_after)]) == 143
    suggested = suggested_command(capsys.readouterr().err)
    assert suggested[:3] == ["python", "-m", "scratchnet.train"] and "--resume" in suggested
    state = train.load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert state["batch"] > 0 and state["partial"] is not None  # stopped inside an epoch
    assert not (tmp_path / "b" / "final.npz").exists()
    assert train.main([*suggested[3:], "--no-progress"]) == 0  # the command the message suggests works
    assert_same_weights(tmp_path / "a" / "final.npz", tmp_path / "b" / "final.npz")
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    for ra, rb in zip(ma, mb, strict=True):
        assert ra["train_loss"] == rb["train_loss"] and ra["test_loss"] == rb["test_loss"]


def test_sigterm_from_outside_writes_a_checkpoint(tmp_path):
    """A real signal from another process: clean exit 143, no traceback, a resumable checkpoint."""
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "scratchnet.train", *TINY_LENET, "--limit", "32",
                                "--epochs", "50", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=REPO, env=env)
    for line in process.stdout:  # wait until training is under way
        if line.startswith("epoch 1/50"):
            break
    process.terminate()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "checkpoint written" in stderr
    state = train.load_checkpoint(out / "checkpoint.npz")
    assert state["epoch"] >= 1 and state["config"]["epochs"] == 50


# --------------------------------------------------------------------------- NaN stops the run


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    original = train.Classification.loss

    def poisoned(self, output, targets):
        loss = original(self, output, targets)
        if self.model.training:
            calls["n"] += 1
            if calls["n"] == 9:  # epoch 2, batch 3 (6 batches per epoch)
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train.Classification, "loss", poisoned)
    out = tmp_path / "run"
    assert train.main([*TINY_LENET, "--epochs", "3", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "loss is nan at epoch 2, batch 3" in err and "last good checkpoint (end of epoch 1)" in err
    state = train.load_checkpoint(out / "checkpoint.npz")
    assert state["epoch"] == 1 and state["batch"] == 0
    best = sn.load(out / "best.npz")
    for key, value in best.items():  # the checkpoint holds epoch 1's (finite) weights
        np.testing.assert_array_equal(state["model"][key], value)
        assert np.all(np.isfinite(value))
    assert not (out / "final.npz").exists()


# --------------------------------------------------------------------------- bad input: one line, exit 2


def test_bad_input_subprocess_one_line_no_traceback(tmp_path):
    done = cli("nosuchnet", "--out", tmp_path / "x")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: ")
    assert "unknown model 'nosuchnet'" in done.stderr and "lenet5" in done.stderr


@pytest.mark.parametrize("args, expected", [
    (["lenet", "--dataset", "shapes"], "classifier but dataset shapes is for detection"),
    (["fast_yolov1", "--dataset", "mnist"], "detector but dataset mnist"),
    (["lenet", "--augment", "lighting"], "needs RGB"),
    (["lenet", "--augment", "rotate"], "unknown rotate"),
    (["lenet", "--epochs", "0"], "argument --epochs: must be a positive int, got 0"),
    (["lenet", "--model-arg", "variant"], "KEY=VALUE"),
    (["lenet", "--model-arg", "variant='weird'"], "cannot build model 'lenet'"),
    (["lenet", "--eval-only"], "--eval-only needs trained weights"),
])
def test_bad_input_exits_2(tmp_path, capsys, args, expected):
    assert train.main([*args, "--out", tmp_path / "x", "--limit", "8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_missing_mnist_training_images(tmp_path, capsys):
    assert train.main(["lenet", "--dataset", "mnist", "--no-download", "--out", tmp_path / "x"]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz not found" in err and "Looked in" in err
    assert str(Path(os.environ["SCRATCHNET_DATA"]) / "mnist") in err and "To supply it" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_gpu_without_gpu_fails_before_loading_data(tmp_path, capsys):
    if sn.gpu_available():
        pytest.skip("this machine has a GPU")
    # A data folder that does not exist: were the data read first, the message would be about it.
    code = train.main(["lenet", "--device", "gpu", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "x"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'gpu' needs") and "not found" not in err
    assert not (tmp_path / "x").exists()


def test_conv_algo_option(tmp_path, capsys):
    assert train.main(["lenet", "--conv-algo", "no-such-algorithm", "--out", tmp_path / "x"]) == 2
    assert "--conv-algo" in capsys.readouterr().err


def test_resume_of_another_models_run_is_refused_naming_both(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main([*TINY_LENET, "--epochs", "1", "--out", out]) == 0
    capsys.readouterr()
    assert train.main(["vgg11", "--resume", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a lenet run, not vgg11" in err
    assert suggested_command(err) == ["python", "-m", "scratchnet.train", "lenet", "--resume", str(out)]
    assert train.main(["LeNet5", "--resume", out, "--eval-only", "--no-progress"]) == 0  # an alias, any case


def test_resume_without_checkpoint(tmp_path, capsys):
    assert train.main(["lenet", "--resume", tmp_path]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


# --------------------------------------------------------------------------- pieces


def test_checkpoint_round_trip_keeps_types(tmp_path):
    state = {"counter": Counter({10: 1, 20: 2}), "tuple": (0.9, 0.999), "int_keys": {0: {"m": np.arange(3.0)}},
             "scalar": np.float32(1.5), "none": None, "nested": [{"lr": 0.1, "ok": True}], "big": 2 ** 100}
    train.save_checkpoint(tmp_path / "c.npz", state)
    back = train.load_checkpoint(tmp_path / "c.npz")
    assert back["counter"] == state["counter"] and isinstance(back["counter"], Counter)
    assert back["tuple"] == (0.9, 0.999) and back["big"] == 2 ** 100 and back["none"] is None
    np.testing.assert_array_equal(back["int_keys"][0]["m"], np.arange(3.0))
    assert back["scalar"] == np.float32(1.5) and back["scalar"].dtype == np.float32
    assert back["nested"] == [{"lr": 0.1, "ok": True}]


class _FakeModel:
    def __init__(self, input_size):
        self.input_size = input_size


@pytest.mark.parametrize("dataset, input_size, augment, shape", [
    ("fashion-mnist", (1, 32, 32), [], (4, 1, 32, 32)),        # LeNet: 28 -> 32 by zero padding
    ("fashion-mnist", (3, 64, 64), ["crop", "flip"], (4, 3, 64, 64)),  # grayscale repeated, upsampled
    ("cifar10", (3, 227, 227), ["crop", "flip", "lighting"], (4, 3, 227, 227)),  # AlexNet
])
def test_pipelines_fit_the_model_input(dataset, input_size, augment, shape):
    config = {"dataset": dataset, "augment": augment, "model": "m"}
    train_tf, test_tf = train.pipelines(config, _FakeModel(input_size))
    channels = train.DATASETS[dataset]["channels"]
    side = train.DATASETS[dataset]["side"]
    x = np.full((4, channels, side, side), 128, np.uint8)
    assert train_tf(x, np.random.default_rng(0)).shape == shape
    out = test_tf(x, None)
    assert out.shape == shape and out.dtype == np.float32
    if dataset == "fashion-mnist" and input_size[-1] == 32:
        mean, std = train.DATASETS[dataset]["mean"][0], train.DATASETS[dataset]["std"][0]
        assert out[0, 0, 0, 0] == pytest.approx(-mean / std) and out[0, 0, 16, 16] == pytest.approx(
            (128 / 255 - mean) / std)
    assert any(isinstance(t, T.Normalize) for t in test_tf.transforms)


def test_recipes_by_model_name():
    assert train.recipe_name("lenet") == train.recipe_name("LeNet5") == "lenet"
    assert train.recipe_name("LeNet5_classic") == "lenet_classic"  # the RBF output wants a 10x smaller lr
    assert train.RECIPES["lenet_classic"]["lr"] == train.RECIPES["lenet"]["lr"] / 10
    assert train.recipe_name("resnet20") == train.recipe_name("plain110") == train.recipe_name("se_resnet56") == "cifar"
    assert train.recipe_name("resnet18") == train.recipe_name("vgg16_bn") == "imagenet"
    assert train.recipe_name("alexnet") == "alexnet" and train.recipe_name("fast_yolo") == "yolo"
    args = train.build_parser().parse_args(["lenet"])
    config = train.make_config(args)
    assert config["dataset"] == "fashion-mnist" and config["epochs"] == 10 and config["augment"] == []
