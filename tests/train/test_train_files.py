"""The train CLI's run folder: an exclusive lock, stale locks taken over, and every file failure one line + exit 2."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import train
from scratchnet.runlock import RUN_LOCK, RunFolderLocked, RunLock
from conftest import REPO

TINY = ["lenet", "--dataset", "fashion-mnist", "--limit", "16", "--test-limit", "16", "--batch-size", "16",
        "--no-progress", "--prefetch", "1", "--epochs", "1"]


pytestmark = pytest.mark.usefixtures("data_env")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    """One tiny finished run, copied by the tests that need one (training it once keeps them fast)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCRATCHNET_DATA", str(data_dir))
        patch.setenv("MPLBACKEND", "Agg")
        assert train.main([*TINY, "--out", out]) == 0
    return out


def python(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(predicate, timeout=300.0):
    """Poll until ``predicate()``; the bound only stops a hung test (a cold Numba cache on a loaded CI machine
    can take a minute before the first epoch ends)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def one_line_error(capsys, *expected):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, (text, err)
    return err


# --------------------------------------------------------------------------- the lock


def test_a_second_run_on_the_same_folder_stops_naming_the_first(tmp_path, capsys):
    out = tmp_path / "run"
    first = python("-m", "scratchnet.train", *TINY, "--epochs", "1000", "--out", str(out))
    try:
        started = first.stdout.readline()  # "training lenet ...": the lock is held
        assert started.startswith("training"), (started, first.communicate())
        assert train.main([*TINY, "--out", out]) == 2
        one_line_error(capsys, f"process {first.pid}", str(out), "choose another --out")
        assert json.loads((out / "config.json").read_text())["epochs"] == 1000  # the first run's, untouched
        # after an epoch the SIGTERM handler is surely installed: the run stops cleanly (143)
        wait_for(lambda: (out / "checkpoint.npz").is_file() or first.poll() is not None)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    assert not (out / RUN_LOCK).exists()  # the first run let go of its folder on the way out


def test_lock_in_two_processes_and_stale_lock_taken_over(tmp_path, capsys):
    """A killed run (kill -9: no cleanup) leaves its lock file; the next run takes it over and says so."""
    holder = python("-c", "import sys, time; from scratchnet.runlock import RunLock; "
                          "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(600)",
                    str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderLocked, match=f"process {holder.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.communicate()
    assert json.loads((tmp_path / RUN_LOCK).read_text())["pid"] == holder.pid  # left behind, stale
    assert train.main([*TINY, "--out", tmp_path]) == 0
    err = capsys.readouterr().err
    assert f"taking over the stale lock of process {holder.pid}" in err
    assert (tmp_path / "final.npz").is_file() and not (tmp_path / RUN_LOCK).exists()


def test_lock_is_released_after_a_failed_run(tmp_path, capsys):
    assert train.main([*TINY, "--out", tmp_path, "--weights", tmp_path / "missing.npz"]) == 2
    assert not (tmp_path / RUN_LOCK).exists()
    with RunLock(tmp_path) as lock:
        assert lock.taken_over is None


# --------------------------------------------------------------------------- file failures: one line, exit 2


def test_out_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert train.main([*TINY, "--out", target]) == 2
    one_line_error(capsys, "exists and is not a folder")
    assert target.read_text() == "keep me"
    assert train.main([*TINY, "--out", target / "sub"]) == 2
    one_line_error(capsys, "cannot create the folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into any folder")
def test_out_not_writable(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert train.main([*TINY, "--out", out]) == 2
        one_line_error(capsys, "is not writable")
    finally:
        out.chmod(0o700)


def test_resume_folder_missing(tmp_path, capsys):
    assert train.main(["lenet", "--resume", tmp_path / "nowhere"]) == 2
    one_line_error(capsys, "is not a folder")


def test_corrupt_and_foreign_checkpoints(tmp_path, capsys):
    (tmp_path / "checkpoint.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    assert train.main(["lenet", "--resume", tmp_path]) == 2
    one_line_error(capsys, "is not a readable checkpoint")
    np.savez(tmp_path / "checkpoint.npz", weight=np.zeros(3))  # a weights file, not a checkpoint
    assert train.main(["lenet", "--resume", tmp_path]) == 2
    one_line_error(capsys, "is not a readable checkpoint")


def test_checkpoint_that_does_not_fit_the_model(tmp_path, capsys, finished_run):
    tmp_path = Path(shutil.copytree(finished_run, tmp_path / "run"))
    state = train.load_checkpoint(tmp_path / "checkpoint.npz")
    state["model"]["c1.weight"] = np.zeros((1, 1, 1, 1), dtype=np.float32)  # wrong shape
    train.save_checkpoint(tmp_path / "checkpoint.npz", state)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    capsys.readouterr()
    assert train.main(["lenet", "--resume", tmp_path, "--no-progress"]) == 2
    one_line_error(capsys, "does not fit this run", "c1.weight")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # nothing existing was overwritten


def test_weights_of_the_wrong_type_name_the_key(tmp_path, capsys, finished_run):
    weights = dict(np.load(finished_run / "final.npz"))
    weights["output.bias"] = np.array(["x"] * len(weights["output.bias"]))
    np.savez(tmp_path / "bad.npz", **weights)
    capsys.readouterr()
    assert train.main([*TINY, "--out", tmp_path / "b", "--weights", tmp_path / "bad.npz", "--eval-only"]) == 2
    one_line_error(capsys, "--weights", "'output.bias' is a ndarray of dtype <U1")


# --------------------------------------------------------------------------- file modes


def _umask():
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_run_folder_files_have_the_users_file_mode(finished_run):
    """Every file is written to a temporary file (mkstemp: 0600) and renamed; the result has open()'s mode."""
    expected = 0o666 & ~_umask()
    for name in ("metrics.json", "curves.png", "config.json", "best.npz", "final.npz", "checkpoint.npz"):
        assert _mode(finished_run / name) == expected, (name, oct(_mode(finished_run / name)))


@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_file_mode_follows_the_umask(tmp_path, umask):
    metrics = [{"epoch": 1, "train_loss": 1.0, "test_loss": 1.5, "train_acc": 0.5, "test_acc": 0.25}]
    previous = os.umask(umask)
    try:
        train.write_json(tmp_path / "metrics.json", metrics)
        train.plot_curves(tmp_path / "curves.png", metrics, train.Classification(None, "cpu"))
        train.save_checkpoint(tmp_path / "checkpoint.npz", {"step": 1, "weights": np.arange(3.0)})
        sn.save({"w": np.zeros(2)}, tmp_path / "final.npz")
    finally:
        os.umask(previous)
    for path in tmp_path.iterdir():
        assert _mode(path) == 0o666 & ~umask, (path.name, oct(_mode(path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "curves.png", "final.npz", "metrics.json"]
