"""What each rank runs in tests/distributed/test_distributed.py (launched with mpirun; not a test file itself).

    mpirun -n 2 python tests/distributed/distributed_worker.py SCENARIO

Each scenario checks its claims on every rank and raises AssertionError (exit code 1) when one
fails; rank 0 prints a line starting with "ok" when all pass.
"""
import os
import sys
import time

import numpy as np

import scratchnet as sn
from scratchnet import backend, distributed, nn
from scratchnet import functional as F
from scratchnet.models import get_model
from scratchnet.optim import SGD, Adam


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def small_bn_net():
    """Conv (no bias: BatchNorm cancels it, its gradient is rounding noise), BatchNorm, ReLU, linear."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5))


def batch(rng, n, shape, classes):
    return rng.standard_normal((n,) + shape), rng.integers(0, classes, n)


def grads_of(model, x, y):
    model.zero_grad()
    loss = F.cross_entropy(model(sn.tensor(x)), sn.tensor(y))
    loss.backward()
    return loss


def check_data_parallel_gradients(comm):
    """DDP on each rank's half of a batch == one process on the whole batch (float64, 1e-10)."""
    rng = np.random.default_rng(1)  # the same global batch on every rank
    x, y = batch(rng, 8, (1, 32, 32), 10)
    local = slice(comm.rank * 4, (comm.rank + 1) * 4)
    # one bucket, and one per tensor (tiny cap); buckets reduced during backward, and after it
    for name, cap_mb, overlap in (("lenet", 25, True), ("lenet", 0.001, True), ("lenet", 0.001, False)):
        sn.manual_seed(comm.rank)  # different initial weights: the wrapper must broadcast rank 0's
        model = get_model(name).double()
        ddp = distributed.DistributedDataParallel(model, comm, bucket_cap_mb=cap_mb, overlap=overlap)
        sn.manual_seed(0)
        reference = get_model(name).double()
        grads_of(ddp, x[local], y[local])
        ddp.average_gradients()
        grads_of(reference, x, y)
        for (key, p), q in zip(model.named_parameters(), reference.parameters()):
            assert relative_error(p.grad, q.grad) < 1e-10, (name, key, relative_error(p.grad, q.grad))
        if cap_mb < 1:
            assert ddp.num_buckets() == len(list(model.parameters())) > 1
    # SyncBatchNorm: the global batch's statistics, running stats included; local BN differs
    x, y = batch(rng, 8, (1, 6, 6), 5)
    for sync in (True, False):
        sn.manual_seed(0)
        model = small_bn_net().double()
        if sync:
            distributed.convert_sync_batchnorm(model, comm)
            assert isinstance(model[1], distributed.SyncBatchNorm)
        ddp = distributed.DistributedDataParallel(model, comm, broadcast_buffers=False)
        sn.manual_seed(0)
        reference = small_bn_net().double()
        grads_of(ddp, x[local], y[local])
        ddp.average_gradients()
        grads_of(reference, x, y)
        errors = [relative_error(p.grad, q.grad) for p, q in zip(model.parameters(), reference.parameters())]
        stats = relative_error(model[1].running_var.data, reference[1].running_var.data)
        if sync:
            assert max(errors) < 1e-10 and stats < 1e-12, (errors, stats)
        else:
            assert max(errors) > 1e-6, "local BatchNorm should differ from the global batch's"


class BackwardLog(sn.FunctionHook):
    """Appends ("backward", op) to ``events`` as each op's backward finishes."""

    def __init__(self, events):
        self.events = events

    def backward_postprocess(self, function, grad_outputs, grad_inputs):
        self.events.append(("backward", function.name))


def check_buckets_overlap_backward(comm):
    """The buckets are the parameters in reverse order, identical on every rank (a rank whose model differs
    is refused on every rank); each bucket's allreduce starts, in bucket order, as soon as its gradients are
    final: the first one while the earlier layers' backward has still to run (the order of events)."""
    sn.manual_seed(0)
    model = get_model("lenet").double()
    params = list(model.parameters())
    ddp = distributed.DistributedDataParallel(model, comm, bucket_cap_mb=0.01)  # 10 KB: several buckets
    buckets = ddp.reducer.buckets
    assert 2 < len(buckets) < len(params)
    assert [p for bucket in buckets for p in bucket] == params[::-1]
    layouts = comm.allgather_object(ddp.reducer.layout())
    assert layouts[0] == layouts[1] and layouts[0][0] is True
    events = []
    ddp.reducer.on_start = lambda i: events.append(("allreduce started", i))
    rng = np.random.default_rng(comm.rank)
    x, y = batch(rng, 4, (1, 32, 32), 10)
    loss = F.cross_entropy(ddp(sn.tensor(x)), sn.tensor(y))
    with BackwardLog(events):
        loss.backward()
    starts = [event[1] for event in events if event[0] == "allreduce started"]
    assert starts == list(range(len(buckets))), starts  # all of them during backward, in bucket order
    first = events.index(("allreduce started", 0))
    later = [op for kind, op in events[first:] if kind == "backward"]
    assert len(later) > 3, events  # backward went on through the earlier layers while bucket 0 was reduced
    ddp.average_gradients()
    reference_grads = comm.allgather_object([p.grad.numpy() for p in params])
    for mine, other in zip(*reference_grads):
        assert np.array_equal(mine, other)  # every rank holds the same averaged gradients

    # a second backward before average_gradients: one clear error; no_sync accumulates instead
    loss = F.cross_entropy(ddp(sn.tensor(x)), sn.tensor(y))
    loss.backward(retain_graph=True)
    try:
        loss.backward()
    except RuntimeError as error:
        assert "no_sync" in str(error) and "average_gradients" in str(error), error
    else:
        raise AssertionError("a second backward before average_gradients was accepted")
    ddp.average_gradients()  # (completes the buckets the first backward started)
    ddp.zero_grad()
    with ddp.no_sync():
        with ddp.no_sync():
            pass
        assert not ddp.reducer.syncing  # the inner block restored the outer one's state, as torch
        F.cross_entropy(ddp(sn.tensor(x)), sn.tensor(y)).backward()
    assert ddp.reducer.syncing
    F.cross_entropy(ddp(sn.tensor(x)), sn.tensor(y)).backward()
    ddp.average_gradients()
    sn.manual_seed(0)
    reference = get_model("lenet").double()
    whole = np.concatenate([batch(np.random.default_rng(r), 4, (1, 32, 32), 10)[0] for r in range(2)])
    labels = np.concatenate([batch(np.random.default_rng(r), 4, (1, 32, 32), 10)[1] for r in range(2)])
    grads_of(reference, whole, labels)
    for p, q in zip(params, reference.parameters()):  # two accumulated backwards: twice the batch's gradient
        assert relative_error(p.grad, 2 * q.grad.numpy()) < 1e-10

    sn.manual_seed(0)
    other = get_model("lenet" if comm.rank == 0 else "lenet5_classic").double()
    try:
        distributed.DistributedDataParallel(other, comm)
    except distributed.DistributedError as error:
        assert "rank 1's gradient buckets differ from rank 0's" in str(error), error
    else:
        raise AssertionError("ranks with different models were accepted")


def check_unused_parameter(comm):
    """A parameter with no gradient on one rank counts as zeros there; with none anywhere it stays None."""
    a, b = nn.Linear(3, 2).double(), nn.Linear(3, 2).double()
    model = nn.ModuleList([a, b])
    distributed.broadcast_tensors(list(model.parameters()), comm)
    x = sn.tensor(np.full((1, 3), comm.rank + 1.0))
    (a(x).sum() if comm.rank == 0 else a(x).sum() * 0).backward()
    if comm.rank == 0:
        b(x).sum().backward()
    expected_b = np.ones((2, 3)) / 2  # rank 0's gradient (x = 1) and rank 1's zeros, averaged
    distributed.average_gradients(model.parameters(), comm)
    assert np.allclose(b.weight.grad, expected_b), b.weight.grad
    c = nn.Linear(3, 2).double()
    distributed.average_gradients(c.parameters(), comm)
    assert c.weight.grad is None
    # the same through the wrapper's buckets started during backward (one per tensor): b's bucket waits on
    # rank 1 until average_gradients(); c, used nowhere, keeps None; d, used by rank 1 only, in between
    d = nn.Linear(3, 2).double()
    model = nn.ModuleList([a, b, c, d])
    model.zero_grad()
    ddp = distributed.DistributedDataParallel(model, comm, bucket_cap_mb=1e-6)
    x = sn.tensor(np.full((1, 3), comm.rank + 1.0))
    (a(x).sum() + (b(x).sum() if comm.rank == 0 else d(x).sum())).backward()
    ddp.average_gradients()
    assert np.allclose(b.weight.grad, expected_b), b.weight.grad
    assert np.allclose(d.weight.grad, np.full((2, 3), 2.0) / 2), d.weight.grad  # rank 1's (x = 2) and zeros
    assert np.allclose(a.weight.grad, np.full((2, 3), 1.5)) and c.weight.grad is None and c.bias.grad is None


def check_replicas_identical(comm):
    """Several steps on different data with momentum and Adam: parameters and buffers stay bit-identical."""
    for make_opt in (lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-4), lambda ps: Adam(ps, lr=1e-3)):
        sn.manual_seed(comm.rank)
        model = small_bn_net()
        ddp = distributed.DistributedDataParallel(model, comm)
        optimizer = make_opt(list(ddp.parameters()))
        rng = np.random.default_rng(100 + comm.rank)  # each rank its own data
        for _ in range(5):
            x, y = batch(rng, 6, (1, 6, 6), 5)
            optimizer.zero_grad()
            F.cross_entropy(ddp(sn.tensor(x.astype(np.float32))), sn.tensor(y)).backward()
            ddp.average_gradients()
            optimizer.step()
        # each rank's last training forward updated its own running stats; eval() gives every
        # rank rank 0's (as every training forward does), and evaluation forwards need no talk
        assert not np.array_equal(comm.allgather(model[1].running_mean.data)[0],
                                  comm.allgather(model[1].running_mean.data)[1])
        ddp.eval()
        if comm.rank == 0:  # an uneven test shard: rank 0 evaluates one batch more
            ddp(sn.tensor(x.astype(np.float32)))
        state = ddp.state_dict()
        everyone = comm.allgather_object(state)
        for key in state:
            assert np.array_equal(everyone[0][key], everyone[1][key]), key
        assert not np.array_equal(state["1.running_mean"], 0)


def check_collectives(comm):
    """allreduce, broadcast, allgather, send/recv, objects: values, dtypes and shapes."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3) * (comm.rank + 1)
    assert np.array_equal(comm.allreduce(a), np.arange(6).reshape(2, 3) * 3)
    assert np.array_equal(comm.allreduce(a, "max"), np.arange(6).reshape(2, 3) * 2)
    assert np.array_equal(comm.broadcast(a, root=1), np.arange(6).reshape(2, 3) * 2)
    gathered = comm.allgather(np.int64([comm.rank, 10]))
    assert gathered.shape == (2, 2) and gathered.tolist() == [[0, 10], [1, 10]]
    if comm.rank == 0:
        comm.send(np.linspace(0, 1, 7).reshape(7, 1), dest=1, tag=3)
    else:
        got = comm.recv(source=0, tag=3)
        assert got.dtype == np.float64 and got.shape == (7, 1) and np.array_equal(got[:, 0], np.linspace(0, 1, 7))
    assert comm.allgather_object({"rank": comm.rank}) == [{"rank": 0}, {"rank": 1}]
    assert comm.broadcast_object("hello" if comm.rank == 0 else None) == "hello"


def check_shapes_and_dtypes(comm):
    """A 0-d array keeps its shape through every collective; dtypes MPI cannot move are TypeErrors."""
    total = comm.allreduce(np.float64(comm.rank + 1.5) * np.ones(()))
    assert total.shape == () and total == 4.0, total
    assert comm.broadcast(np.array(7 + comm.rank), root=1).shape == ()
    assert comm.allgather(np.array(comm.rank)).tolist() == [0, 1]
    assert comm.broadcast(np.array([True, comm.rank == 0])).tolist() == [True, True]  # bools and text move...
    assert comm.allgather(np.array(["rank", str(comm.rank)])).tolist() == [["rank", "0"], ["rank", "1"]]
    for bad, call in ((np.array([True]), lambda a: comm.allreduce(a)),  # ... but MPI sums neither
                      (np.array(["text"]), lambda a: comm.allreduce(a)),
                      (np.array([object()]), lambda a: comm.broadcast(a)),
                      ([1.0, 2.0], lambda a: comm.allreduce(a))):
        try:
            call(bad)
        except TypeError as exc:
            assert "cannot move" in str(exc), exc
        else:
            raise AssertionError(f"{bad!r} was accepted")
    try:
        comm.allreduce(np.ones(2), op="avg")
    except ValueError as exc:
        assert "sum, max, min" in str(exc)
    else:
        raise AssertionError("op='avg' was accepted")


def check_paired_send_recv(comm):
    """Both ranks send first, then receive: 8 MB each way (far above MPI's eager limit) cannot deadlock."""
    comm.timeout = 30.0
    other = 1 - comm.rank
    big = np.full((1024, 1024), comm.rank, dtype=np.float64)
    comm.send(big, dest=other, tag=5)
    comm.send(np.float32(comm.rank + 0.5) * np.ones((), np.float32), dest=other, tag=5)
    got, scalar = comm.recv(source=other, tag=5), comm.recv(source=other, tag=5)
    assert got.shape == (1024, 1024) and np.all(got == other)
    assert scalar.shape == () and scalar.dtype == np.float32 and scalar == other + 0.5
    comm.barrier()  # waits for this rank's sends to be received, too
    assert comm._sends == []


def check_engine_agreement(comm):
    """NCCL on one rank and not the other: both take the host route, and say which rank lacks it."""
    assert comm.agree_on_nccl(comm.rank == 0, reason="no libnccl here") is None
    assert comm.engine == "MPI through host memory (no NCCL on rank 1: no libnccl here)", comm.engine
    assert comm.allgather_object(comm.engine) == [comm.engine] * 2


def check_more_ranks_than_gpus(comm):
    """Both ranks on one host with one GPU: refused on every rank, in one sentence; with two GPUs each
    rank takes the GPU of its local rank."""
    assert comm.local_size == 2
    try:
        comm.agree_on_gpus(device_count=1)
    except distributed.DistributedError as exc:
        assert "2 ranks run on host" in str(exc) and "1 GPU(s)" in str(exc) and "mpirun -n 1" in str(exc), exc
    else:
        raise AssertionError("two ranks on one GPU were accepted")
    assert comm.agree_on_gpus(device_count=2) == comm.local_rank


def check_alexnet_split(comm):
    """Two towers on two ranks == the grouped single-process AlexNet: logits, loss, every gradient."""
    options = dict(num_classes=10, image_size=67, channels=(8, 16, 24, 24, 16), hidden=32, groups=2)
    sn.manual_seed(0)
    grouped = get_model("alexnet", **options).double()
    x = np.random.default_rng(5).standard_normal((3, 3, 67, 67))
    y = np.array([1, 7, 3])
    towers = distributed.AlexNetTowers(grouped, comm)
    sn.manual_seed(11)  # dropout active: both must draw the same masks
    loss = F.cross_entropy(logits := towers(sn.tensor(x)), sn.tensor(y))
    loss.backward()
    sn.manual_seed(11)
    ref_loss = F.cross_entropy(ref_logits := grouped(sn.tensor(x)), sn.tensor(y))
    ref_loss.backward()
    assert relative_error(logits.data, ref_logits.data) < 1e-10
    assert relative_error(loss.data, ref_loss.data) < 1e-10
    full = towers.state_dict()
    assert list(full) == list(grouped.state_dict())
    grads = {key: p.grad for key, p in grouped.named_parameters()}
    for p, key, split in towers._full:
        expected = grads[key]
        if split:
            rows = expected.shape[0] // 2
            expected = expected[comm.rank * rows:(comm.rank + 1) * rows]
        assert relative_error(p.grad, expected) < 1e-10, (key, relative_error(p.grad, expected))
    for key, value in grouped.state_dict().items():
        assert np.array_equal(full[key], value), key


class HostArray(np.ndarray):
    """A NumPy array standing in for a CuPy one (see StandInCupy)."""


class StandInCupy:
    """The three names comm.py uses of CuPy, backed by NumPy: where no GPU exists, a HostArray takes the
    very code path a CuPy array takes without NCCL (to the host, through MPI, back to the device)."""
    ndarray = HostArray

    @staticmethod
    def asnumpy(array):
        assert type(array) is HostArray, type(array)
        return np.array(array)  # a plain ndarray copy, as cupy.asnumpy gives

    @staticmethod
    def asarray(array):
        assert type(array) is np.ndarray, type(array)
        return array.view(HostArray)


def check_device_arrays_through_the_host(comm, to_device=None):
    """Device arrays without NCCL: allreduce, broadcast, allgather and send/recv go through host memory and
    MPI and come back as device arrays with the values NumPy arrays get. On a GPU, CuPy arrays
    (``to_device``: cupy.asarray); elsewhere HostArrays, with StandInCupy as CuPy."""
    saved = backend.cp
    if to_device is None:
        backend.cp, to_device = StandInCupy, StandInCupy.asarray
    try:
        assert comm.nccl is None
        a = np.arange(6, dtype=np.float32).reshape(2, 3) * (comm.rank + 1)
        results = [(comm.allreduce(to_device(a)), np.arange(6, dtype=np.float32).reshape(2, 3) * 3),
                   (comm.allreduce(to_device(a), "max"), np.arange(6, dtype=np.float32).reshape(2, 3) * 2),
                   (comm.broadcast(to_device(a), root=1), np.arange(6, dtype=np.float32).reshape(2, 3) * 2),
                   (comm.allgather(to_device(np.int64([comm.rank, 10]))), np.int64([[0, 10], [1, 10]]))]
        if comm.rank == 0:
            comm.send(to_device(np.linspace(0, 1, 7).reshape(7, 1)), dest=1, tag=5)
        else:
            results.append((comm.recv(source=0, tag=5), np.linspace(0, 1, 7).reshape(7, 1)))
        for result, expected in results:
            assert isinstance(result, backend.cp.ndarray), type(result)  # handed back on the device
            host = backend.to_numpy(result)
            assert host.dtype == expected.dtype and np.array_equal(host, expected), (host, expected)
    finally:
        backend.cp = saved


def check_cupy_arrays_through_the_host(comm):
    """On a GPU, real CuPy arrays through a communicator without NCCL (one made for the CPU: no GPU is
    assigned, so both ranks may share the first GPU) take the host route."""
    check_device_arrays_through_the_host(comm, backend.cp.asarray)


def check_double_backward(comm):
    """Second derivatives through SyncBatchNorm and the towers' gather/copy equal one process's (1e-10):
    the gradient of sum(v . dL/dx) for L = sum(u * f(x)) over all ranks' samples."""
    rng = np.random.default_rng(3)  # the same global arrays on every rank
    x, u, v = (rng.standard_normal((4, 3, 2, 2)) for _ in range(3))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    local = slice(2 * comm.rank, 2 * comm.rank + 2)

    def second_derivatives(f, x, u, v, params):
        x = sn.tensor(x, requires_grad=True)
        inputs = [x] + params
        first = sn.autograd.grad((f(x) * sn.tensor(u)).sum(), inputs, create_graph=True)
        second = sn.autograd.grad((first[0] * sn.tensor(v)).sum() + sum(g.sum() for g in first[1:]), inputs,
                                  allow_unused=True)  # (the bias's gradient does not depend on anything)
        return [np.zeros(t.shape) if g is None else g.numpy() for g, t in zip(second, inputs)]

    ours = [sn.tensor(w, requires_grad=True), sn.tensor(b, requires_grad=True)]
    got = second_derivatives(lambda x: distributed.data_parallel.SyncBatchNormFunction(comm, 1e-5, True, True)(
        x, *ours), x[local], u[local], v[local], ours)
    whole = [sn.tensor(w, requires_grad=True), sn.tensor(b, requires_grad=True)]
    expected = second_derivatives(lambda x: F.batch_norm(x, None, None, *whole, training=True), x, u, v, whole)
    assert relative_error(got[0], expected[0][local]) < 1e-10
    for g, e in zip(got[1:], expected[1:]):  # the parameters' shares, added over the ranks
        assert np.allclose(comm.allreduce(g), e, rtol=1e-10, atol=1e-12)

    # the towers: y = gather(copy(h) * w_rank), each rank holding its half of the weights
    h, weights = rng.standard_normal(3), rng.standard_normal(6)
    mine = sn.tensor(weights[3 * comm.rank:3 * comm.rank + 3], requires_grad=True)
    x_t = sn.tensor(h, requires_grad=True)
    y = distributed.gather_towers(distributed.copy_to_towers(x_t, comm) * mine, comm, axis=0)
    first = sn.autograd.grad((y ** 3).sum(), [x_t, mine], create_graph=True)
    got = sn.autograd.grad(first[0].sum() + first[1].sum(), [x_t, mine])
    x_1, w_1 = sn.tensor(h, requires_grad=True), sn.tensor(weights, requires_grad=True)
    y_1 = (x_1.reshape(1, 3) * w_1.reshape(2, 3)).reshape(6)
    first_1 = sn.autograd.grad((y_1 ** 3).sum(), [x_1, w_1], create_graph=True)
    expected = sn.autograd.grad(first_1[0].sum() + first_1[1].sum(), [x_1, w_1])
    assert relative_error(got[0], expected[0]) < 1e-10
    assert relative_error(got[1], expected[1].numpy()[3 * comm.rank:3 * comm.rank + 3]) < 1e-10


def check_hang_times_out(comm):
    """A rank that stops answering: the other's watchdog ends the job within the timeout."""
    comm.timeout = 2.0
    if comm.rank == 1:
        time.sleep(60)  # hung (the abort ends it)
    else:
        comm.allreduce(np.ones(3))
    raise AssertionError("the allreduce with a hung rank returned")


def check_killed_rank(comm):
    """A rank killed mid-training: mpirun ends the job (the survivor must not hang)."""
    comm.timeout = 20.0
    for step in range(1000):
        comm.allreduce(np.ones(1000))
        if comm.rank == 1 and step == 3:
            os.kill(os.getpid(), 9)
    raise AssertionError("rank 0 finished 1000 allreduces with a dead partner")


SCENARIOS = {
    "core": [check_collectives, check_device_arrays_through_the_host, check_data_parallel_gradients,
             check_buckets_overlap_backward, check_unused_parameter, check_replicas_identical, check_alexnet_split, check_double_backward],
    "robust": [check_shapes_and_dtypes, check_paired_send_recv, check_engine_agreement, check_more_ranks_than_gpus],
    "hang": [check_hang_times_out],
    "killed": [check_killed_rank],
    "gpu_without_nccl": [check_cupy_arrays_through_the_host],
}

if __name__ == "__main__":
    comm = distributed.init()
    for check in SCENARIOS[sys.argv[1]]:
        check(comm)
        if comm.rank == 0:
            print(f"ok {check.__name__}", flush=True)
