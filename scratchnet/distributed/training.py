"""What ``python -m scratchnet.train`` does differently on each rank, in one place.

The train CLI asks a ``Ranks`` object (``setup()``) at the few points where ranks matter:

    wrap_model        data parallel: DistributedDataParallel; model parallel: AlexNetTowers
    train_sampler     each rank's shard of the seeded shuffle (data parallel), or None
    test_sampler      each rank's share of the test set, every sample once (data parallel), or None
    augment_seed      rank 0 keeps the run's seed (one rank = the plain run); the others differ
    after_backward    average the gradients over the ranks (data parallel)
    step_totals       one small allreduce per step: the global batch's loss sum, sample count and
                      correct count, so every rank sees the same loss (and stops on a NaN together)
    any_stop          the signal (SIGINT/SIGTERM) any rank received, so every rank stops at one batch
    sum, gather       evaluation metrics over the test shards
    optimizer_state   the optimizer state as one process would hold it (model parallel: gathered)
    read_on_main      a file only rank 0 reads (the checkpoint): its content, or its error, on every rank
    agree             a step every rank takes itself (reading the data): its failure on any rank, on all
    resume_command    the exact command that continues this run (mpirun, rank count, flags, folder)
    is_main           rank 0: the only one that prints and writes files

A single process gets ``SingleProcess``, whose methods do nothing, so the training loop reads the
same either way. Batch size: ``--batch-size`` is per rank (as in torch's DDP), so N ranks train on
N times as many samples per step; the learning rate is not rescaled.
"""
import os
import shlex
import signal
import sys
from pathlib import Path

import numpy as np

from .comm import DistributedError, init
from .data_parallel import DistributedDataParallel, convert_sync_batchnorm
from .model_parallel import AlexNetTowers
from .sampler import DistributedSampler


class SingleProcess:
    """One process: every hook is the identity."""

    rank, size, is_main, mode, sync_batchnorm = 0, 1, True, None, False

    def __init__(self, device="cpu"):
        self.device = device

    def wrap_model(self, model):
        return model

    def train_sampler(self, dataset, seed):
        return None

    def test_sampler(self, dataset):
        return None

    def augment_seed(self, seed):
        return seed

    def after_backward(self, model):
        pass

    def step_totals(self, loss_sum, count, correct):
        return loss_sum, count, correct

    def any_stop(self, stop_signal):
        return stop_signal

    def sum(self, *values):
        return values

    def gather(self, items):
        return items

    def optimizer_state(self, model, optimizer):
        return optimizer.state_dict()

    def load_optimizer_state(self, model, optimizer, state):
        optimizer.load_state_dict(state)

    def broadcast_object(self, obj):
        return obj

    def read_on_main(self, read, error):
        return read()

    def agree(self, action, error):
        return action()

    def check_resume(self, state, folder):
        """Refuse a checkpoint written by another number of ranks (or mode): it cannot continue this run."""
        saved = state.get("distributed") or {"mode": None, "ranks": 1}
        if saved["ranks"] != self.size or saved["mode"] != self.mode:
            raise DistributedError(_resume_mismatch(saved, self, (state.get("config") or {}).get("model", "MODEL"),
                                                    folder))

    def resume_command(self, model, folder, device=None):
        """The command that continues this run from ``folder``."""
        return resume_command(model, folder, self.describe(), device or self.device, self.sync_batchnorm)

    def describe(self):
        return {"mode": None, "ranks": 1}


class Ranks(SingleProcess):
    """One rank of a distributed run: ``mode`` is "data" (data parallel) or "model" (AlexNet split)."""

    def __init__(self, comm, mode, sync_batchnorm=False):
        super().__init__(comm.device)
        self.comm, self.mode, self.sync_batchnorm = comm, mode, sync_batchnorm
        self.rank, self.size, self.is_main = comm.rank, comm.size, comm.rank == 0

    def wrap_model(self, model):
        if self.mode == "model":
            if AlexNetTowers.split_convs(model) is None:
                raise ValueError(f"--model-parallel splits AlexNet's two towers over 2 ranks (alexnet, groups=2); "
                                 f"{type(model).__name__} has no such split: train it data parallel with "
                                 f"--distributed instead")
            return AlexNetTowers(model, self.comm)
        if self.sync_batchnorm:
            convert_sync_batchnorm(model, self.comm)
        return DistributedDataParallel(model, self.comm)

    def train_sampler(self, dataset, seed):
        return DistributedSampler(dataset, self.size, self.rank, seed=seed) if self.mode == "data" else None

    def test_sampler(self, dataset):
        if self.mode != "data":
            return None
        return DistributedSampler(dataset, self.size, self.rank, shuffle=False, pad=False)

    def augment_seed(self, seed):
        if self.mode != "data" or self.rank == 0:
            return seed
        return int(np.random.SeedSequence((seed, self.rank)).generate_state(1)[0])

    def after_backward(self, model):
        if self.mode == "data":
            model.average_gradients()

    def step_totals(self, loss_sum, count, correct):
        """Sums over the ranks' local batches (model parallel: both ranks saw the same batch)."""
        if self.mode == "model":
            return loss_sum, count, correct
        totals = self.comm.allreduce(np.array([loss_sum, count, correct], dtype=np.float64))
        return float(totals[0]), int(totals[1]), int(totals[2])

    def any_stop(self, stop_signal):
        """The signal any rank received (SIGTERM first), so that every rank stops at the same batch."""
        flags = self.comm.allreduce(np.array([stop_signal == signal.SIGINT, stop_signal == signal.SIGTERM], np.int64))
        return signal.SIGTERM if flags[1] else signal.SIGINT if flags[0] else None

    def sum(self, *values):
        if self.mode != "data":
            return values
        totals = self.comm.allreduce(np.array(values, dtype=np.float64))
        return tuple(type(v)(t) for v, t in zip(values, totals))

    def gather(self, items):
        if self.mode != "data":
            return items
        return [item for part in self.comm.allgather_object(items) for item in part]

    def optimizer_state(self, model, optimizer):
        state = optimizer.state_dict()
        return model.gather_optimizer_state(state) if self.mode == "model" else state

    def load_optimizer_state(self, model, optimizer, state):
        optimizer.load_state_dict(model.scatter_optimizer_state(state) if self.mode == "model" else state)

    def broadcast_object(self, obj):
        return self.comm.broadcast_object(obj)

    def read_on_main(self, read, error):
        """Rank 0 runs ``read()``; every rank gets its result, or raises ``error`` with rank 0's message
        (so that no rank waits for a file that rank 0 could not read)."""
        result = failure = None
        if self.is_main:
            try:
                result = read()
            except error as exc:
                failure = str(exc)
        result, failure = self.comm.broadcast_object((result, failure))
        if failure is not None:
            raise error(failure)
        return result

    def agree(self, action, error):
        """Every rank runs ``action()`` (e.g. reads its data); when it fails on any rank, every rank raises
        ``error`` with the first failure's message (naming its rank), so none goes on to wait for the rank
        that stopped, and rank 0 alone reports it."""
        try:
            result, failure = action(), None
        except error as exc:
            result, failure = None, str(exc)
        for rank, message in enumerate(self.comm.allgather_object(failure)):
            if message is not None:
                raise error(message if rank == 0 else f"on rank {rank}: {message}")
        return result

    def describe(self):
        return {"mode": self.mode, "ranks": self.size}


def resume_command(model, folder, run, device="cpu", sync_batchnorm=False):
    """The command that continues a run described by ``run`` (``describe()``: mode and ranks) from ``folder``."""
    words = ["python", "-m", "scratchnet.train", model]
    words += {"data": ["--distributed"], "model": ["--model-parallel"], None: []}[run["mode"]]
    if sync_batchnorm:
        words.append("--sync-batchnorm")
    if device != "cpu":
        words += ["--device", device]
    words += ["--resume", str(folder)]
    return (f"mpirun -n {run['ranks']} " if run["mode"] else "") + shlex.join(words)


def _resume_mismatch(saved, now, model, folder):
    def words(d):
        if d["mode"] is None:
            return "one process"
        return f"{d['ranks']} ranks ({'model' if d['mode'] == 'model' else 'data'} parallel)"

    weights = [Path(folder) / name for name in ("best.npz", "final.npz") if (Path(folder) / name).is_file()]
    start_new = (f", or start a new run from its weights with --weights {weights[0]}" if weights else
                 "; no epoch of it has finished, so it has no weights yet to start a new run from")
    return (f"--resume {folder}: this checkpoint was written by {words(saved)} and this run has "
            f"{words(now.describe())}; the shards, the global batch and the step schedule depend on the number "
            f"of ranks, so it cannot continue the same run: resume it with "
            f"`{resume_command(model, folder, saved, now.device)}`{start_new}")


def setup(distributed, model_parallel, device, timeout=None, sync_batchnorm=False):
    """The ranks of this run: SingleProcess() without the flags, else join the MPI launch."""
    if sync_batchnorm and not distributed:
        raise DistributedError("--sync-batchnorm synchronises data-parallel ranks: add --distributed")
    if timeout is not None and not timeout > 0:
        raise DistributedError(f"--dist-timeout must be a positive number of seconds, got {timeout}")
    if not (distributed or model_parallel):
        return SingleProcess(device)
    comm = init(device, timeout)
    ranks = Ranks(comm, "model" if model_parallel else "data", sync_batchnorm)
    if not ranks.is_main:  # rank 0 speaks for the run; the others stay quiet unless they fail
        sys.stdout = open(os.devnull, "w")
    print(f"{comm.size} rank{'s' if comm.size != 1 else ''} ({ranks.mode} parallel), arrays moved by "
          f"{comm.engine}", flush=True)
    return ranks


def abort_other_ranks(code):
    """After an error on this rank, end the whole MPI job (the others may be waiting in a collective)."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(code)

