"""Data parallelism: every rank holds the whole model and trains on its own share of each batch.

    comm = distributed.init()
    model = DistributedDataParallel(model, comm)        # parameters and buffers now equal rank 0's
    for x, y in loader:                                  # a DistributedSampler gives each rank its shard
        loss = F.cross_entropy(model(x), y)              # each rank: the mean over its local batch
        optimizer.zero_grad()
        loss.backward()
        model.average_gradients()                        # bucketed allreduce / size: the global mean
        optimizer.step()                                 # any optimizer: every rank takes the same step

What is synchronised (as in torch's DistributedDataParallel):
- parameters and buffers are broadcast from rank 0 when the wrapper is built, so replicas start equal;
- gradients are averaged before every step, so with equal local batch sizes they equal the gradient
  of one process on the concatenated batch, and replicas stay bit-identical;
- buffers (BatchNorm's running statistics) are broadcast from rank 0 at every training forward
  and by ``eval()`` (``broadcast_buffers=True``, torch's default), so all ranks evaluate with rank
  0's statistics and a checkpoint of rank 0 is the whole state.
What is not: BatchNorm normalises each rank's batch with that batch's own mean and variance
(torch's default too); ``convert_sync_batchnorm`` switches to statistics over the global batch.

Buckets: gradients are flattened into a few contiguous buffers of about ``bucket_cap_mb`` (25 MB,
torch's default) each, one dtype per bucket, so ResNet-50's 161 gradient tensors travel in 6
allreduce calls instead of 161. As in torch's DDP, the buckets hold the parameters in reverse order
(backward reaches the last layers first; the first bucket holds about 1 MB, as torch's, so that it
fills early), and each bucket's allreduce starts, non-blocking, as soon as its last gradient is final
(a post-accumulate-grad hook on every parameter), while backward goes on through the earlier layers;
``average_gradients()`` waits for them (``overlap=False``: every bucket is reduced in that call,
after backward). The same code serves NumPy (MPI) and CuPy (NCCL) arrays.
"""
from contextlib import contextmanager

from .. import backend
from ..autograd import Function, Tensor, no_grad
from ..nn.layers import BatchNorm1d, BatchNorm2d, _BatchNorm
from ..nn.module import Module
from .comm import DistributedError


# --------------------------------------------------------------------------- buckets


FIRST_BUCKET_BYTES = 2**20  # torch's first gradient bucket: small, so that its allreduce starts early


def make_buckets(tensors, cap_bytes, first_cap_bytes=None):
    """Split tensors (in order) into lists of one dtype whose sizes add up to about ``cap_bytes``
    (the first one to about ``first_cap_bytes`` when given)."""
    buckets, current, size = [], [], 0
    for t in tensors:
        cap = first_cap_bytes if first_cap_bytes is not None and not buckets else cap_bytes
        if current and (t.dtype != current[0].dtype or size + t.data.nbytes > cap):
            buckets.append(current)
            current, size = [], 0
        current.append(t)
        size += t.data.nbytes
    if current:
        buckets.append(current)
    return buckets


def flatten(arrays):
    """One contiguous vector holding the arrays one after the other."""
    xp = backend.get_array_module(*arrays)
    return xp.concatenate([a.reshape(-1) for a in arrays])


def unflatten(vector, like):
    """Cut a flat vector back into arrays shaped like ``like``."""
    out, start = [], 0
    for a in like:
        out.append(vector[start:start + a.size].reshape(a.shape))
        start += a.size
    return out


def broadcast_tensors(tensors, comm, root=0, cap_bytes=25 * 2**20):
    """Overwrite every tensor's data with rank ``root``'s, bucket by bucket."""
    for bucket in make_buckets(tensors, cap_bytes):
        flat = comm.broadcast(flatten([t.data for t in bucket]), root)
        for t, value in zip(bucket, unflatten(flat, [t.data for t in bucket])):
            t.data = value


def average_gradients(parameters, comm, cap_bytes=25 * 2**20):
    """Replace each parameter's ``.grad`` by its mean over all ranks, one allreduce per bucket.

    A parameter without a gradient on some rank (a branch that rank did not use) counts as zeros
    there; one that has no gradient on any rank keeps ``grad = None``, as in one process. To know
    which, each bucket carries one extra "has a gradient" entry per parameter.
    """
    for bucket in make_buckets([p for p in parameters if p.requires_grad], cap_bytes):
        write_means(bucket, comm.allreduce(bucket_vector(bucket)), comm.size)


def bucket_vector(bucket):
    """The bucket's gradients (zeros for a parameter without one), flat, then one "has a gradient" entry each."""
    xp = backend.get_array_module(bucket[0].data)
    grads = [p.grad.data if p.grad is not None else xp.zeros_like(p.data) for p in bucket]
    present = xp.asarray([p.grad is not None for p in bucket], dtype=bucket[0].dtype)
    return xp.concatenate([flatten(grads), present])


def write_means(bucket, total, size):
    """Set each ``.grad`` from a bucket's allreduced vector: the mean, or None where no rank had a gradient."""
    means = unflatten(total[:-len(bucket)] / size, [p.data for p in bucket])
    for p, mean, anywhere in zip(bucket, means, backend.to_numpy(total[-len(bucket):])):
        p.grad = Tensor(mean) if anywhere > 0 else None


class GradientReducer:
    """DistributedDataParallel's buckets and their allreduces, started while backward runs (torch's Reducer).

    The buckets hold the parameters in reverse order, so the first bucket's gradients are final first.
    Each parameter's post-accumulate-grad hook counts its bucket down; a bucket whose last gradient is
    final starts its non-blocking allreduce, always in bucket order (bucket i waits for buckets < i), so
    every rank starts the same collectives in the same order whatever order its hooks fire in. ``finish()``
    starts the buckets still waiting (one with a parameter that got no gradient in this backward: an
    unused branch, counted as zeros as in ``average_gradients``), waits for every allreduce and writes
    the means. ``overlap=False`` registers no hooks: ``finish()`` reduces every bucket, blocking.
    """

    def __init__(self, parameters, comm, cap_bytes, overlap=True):
        self.comm, self.overlap = comm, overlap
        params = [p for p in parameters if p.requires_grad]
        self.buckets = make_buckets(params[::-1], cap_bytes, min(cap_bytes, FIRST_BUCKET_BYTES))
        self.bucket_of = {id(p): i for i, bucket in enumerate(self.buckets) for p in bucket}
        self.syncing = True  # False inside DistributedDataParallel.no_sync()
        self.on_start = None  # called with a bucket's index as its allreduce starts (tests watch the order)
        self.handles = [p.register_post_accumulate_grad_hook(self._grad_ready) for p in params] if overlap else []
        self._new_step()

    def _new_step(self):
        self.waiting = [len(bucket) for bucket in self.buckets]  # gradients each bucket still waits for
        self.ready = set()  # ids of the parameters whose gradient is final in this step
        self.in_flight = []  # (bucket index, PendingAllreduce), in bucket order
        self.next_bucket = 0  # the next bucket to start

    def _grad_ready(self, p):
        if not self.syncing:
            return
        if id(p) in self.ready:
            raise RuntimeError("DistributedDataParallel: a parameter got a second gradient before "
                               "average_gradients() averaged its first: call model.average_gradients() after "
                               "each backward(), or accumulate several backwards inside `with model.no_sync():`")
        self.ready.add(id(p))
        self.waiting[self.bucket_of[id(p)]] -= 1
        while self.next_bucket < len(self.buckets) and self.waiting[self.next_bucket] == 0:
            self._start(self.next_bucket)
        for _, pending in self.in_flight:  # MPI moves a non-blocking collective along only inside its calls
            pending.test()

    def _start(self, i):
        if self.on_start is not None:
            self.on_start(i)
        self.in_flight.append((i, self.comm.allreduce_start(bucket_vector(self.buckets[i]))))
        self.next_bucket = i + 1

    def finish(self):
        """Every bucket's mean in ``.grad`` (the buckets' allreduces started during backward, and the rest)."""
        try:
            if not self.overlap:
                for bucket in self.buckets:
                    write_means(bucket, self.comm.allreduce(bucket_vector(bucket)), self.comm.size)
                return
            while self.next_bucket < len(self.buckets):
                self._start(self.next_bucket)
            for i, pending in self.in_flight:
                write_means(self.buckets[i], pending.wait(), self.comm.size)
        finally:
            self._new_step()

    def layout(self):
        """What every rank must agree on: each bucket's dtype and parameter shapes, and the mode."""
        return self.overlap, [[(str(p.dtype), tuple(p.shape)) for p in bucket] for bucket in self.buckets]

    def remove_hooks(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []


class DistributedDataParallel(Module):
    """Wrap a model for data-parallel training (see the module docstring).

    Its ``state_dict`` is the wrapped model's, keys unchanged, so checkpoints load into the bare model.
    """

    def __init__(self, module, comm, bucket_cap_mb=25, broadcast_buffers=True, overlap=True):
        super().__init__()
        self.module = module
        object.__setattr__(self, "comm", comm)
        self.cap_bytes = int(bucket_cap_mb * 2**20)
        self.broadcast_buffers = broadcast_buffers
        reducer = GradientReducer(module.parameters(), comm, self.cap_bytes, overlap)
        layouts = comm.allgather_object(reducer.layout())
        if any(layout != layouts[0] for layout in layouts):
            reducer.remove_hooks()
            rank = next(r for r, layout in enumerate(layouts) if layout != layouts[0])
            raise DistributedError(f"DistributedDataParallel: rank {rank}'s gradient buckets differ from rank 0's "
                                   f"(another model, parameter order, dtype or overlap=): every rank must wrap the "
                                   f"same model with the same arguments")
        object.__setattr__(self, "reducer", reducer)
        with no_grad():
            broadcast_tensors(list(module.parameters()) + list(module.buffers()), comm, 0, self.cap_bytes)

    def forward(self, *args, **kwargs):
        if self.training:
            self._broadcast_buffers()
        return self.module(*args, **kwargs)

    def train(self, mode=True):
        """Also a synchronisation point: switching to evaluation gives every rank rank 0's buffers.

        Evaluation forwards do not communicate, so the ranks may evaluate different numbers of
        batches (an uneven test shard); every rank must call ``eval()`` (or ``train()``) together.
        """
        super().train(mode)
        if not mode:
            self._broadcast_buffers()
        return self

    def _broadcast_buffers(self):
        buffers = list(self.module.buffers())
        if self.broadcast_buffers and buffers:
            broadcast_tensors(buffers, self.comm, 0, self.cap_bytes)

    def average_gradients(self):
        """Average every gradient over the ranks; call it between ``backward()`` and ``step()``. With
        ``overlap=True`` most buckets were started during backward: this waits for them."""
        self.reducer.finish()

    # kernels/cpu_cache.load_only has this set-then-restore shape too: a contextlib idiom, not shared logic.
    @contextmanager
    def no_sync(self):
        """torch's ``no_sync``: backwards inside accumulate into ``.grad`` without communicating; the first
        backward after it starts the buckets' allreduces of the accumulated gradients. Nested, the outer
        block stays unsynced (as torch: the state before it is restored)."""
        before, self.reducer.syncing = self.reducer.syncing, False
        try:
            yield
        finally:
            self.reducer.syncing = before

    def num_buckets(self):
        return len(self.reducer.buckets)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict, strict=True):
        return self.module.load_state_dict(state_dict, strict)

    def main_output(self, output):  # the output contract is the wrapped model's (GoogLeNet's aux heads, ...)
        return self.module.main_output(output)

    def loss(self, output, target):
        return self.module.loss(output, target)

    def scores(self, output):
        return self.module.scores(output)

    def __getattr__(self, name):  # model attributes (input_size, S, B, ...) read through
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["module"], name)


# --------------------------------------------------------------------------- synchronised batch norm


class AllReduceSum(Function):
    """Every rank's output is the sum of all ranks' inputs; so is each rank's input gradient (the
    same collective both ways). SyncBatchNorm's and CopyToTowers' differentiable backwards use it."""

    def __init__(self, comm):
        self.comm = comm

    def forward(self, x):
        return self.comm.allreduce(x)

    def backward(self, gy):
        return (self.comm.allreduce(gy),)

    def differentiable_backward(self, gy):
        return (AllReduceSum(self.comm)(gy),)


class SyncBatchNormFunction(Function):
    """Batch norm whose mean and variance are those of the global batch (all ranks' samples).

    Forward: two allreduces (the sum and count, then the sum of squared deviations from the
    global mean: the two-pass formula, as exact as one process). Backward: one allreduce of the
    two per-channel sums the closed-form gradient needs. It keeps x (as BatchNorm does) for the
    differentiable backward, which writes the same with AllReduceSum ops.
    """

    saved_inputs = {"x": 0, "w": 1}

    def __init__(self, comm, eps, has_weight, has_bias):
        self.comm, self.eps, self.has_weight, self.has_bias = comm, eps, has_weight, has_bias

    def forward(self, x, *affine):
        xp = backend.get_array_module(x)
        self.x, self.w = x, (affine[0] if self.has_weight else None)
        self.axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        local_count = x.size // x.shape[1]
        totals = self.comm.allreduce(xp.concatenate([x.sum(axis=self.axes), xp.asarray([local_count], x.dtype)]))
        self.count = float(totals[-1])
        self.mean = totals[:-1] / self.count
        centred = x - self.mean.reshape(shape)
        self.var = self.comm.allreduce((centred * centred).sum(axis=self.axes)) / self.count
        self.inv_std = (1 / xp.sqrt(self.var + self.eps)).reshape(shape)
        x_hat = centred * self.inv_std
        self.weight = affine[0].reshape(shape) if self.has_weight else None
        y = x_hat if self.weight is None else x_hat * self.weight
        return y + affine[-1].reshape(shape) if self.has_bias else y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        x_hat = (self.x - self.mean.reshape((1, -1) + (1,) * (gy.ndim - 2))) * self.inv_std
        g_hat = gy if self.weight is None else gy * self.weight
        c = gy.shape[1]
        sums = self.comm.allreduce(xp.concatenate([g_hat.sum(axis=self.axes),
                                                   (g_hat * x_hat).sum(axis=self.axes)]))
        shape = (1, -1) + (1,) * (gy.ndim - 2)
        sum_g, sum_gx = sums[:c].reshape(shape), sums[c:].reshape(shape)
        # the one-process closed form, with the global count and global sums
        gx = self.inv_std / self.count * (self.count * g_hat - sum_g - x_hat * sum_gx)
        grads = [gx]
        if self.has_weight:  # local sums: the data-parallel gradient averaging adds the ranks up
            grads.append((gy * x_hat).sum(axis=self.axes))
        if self.has_bias:
            grads.append(gy.sum(axis=self.axes))
        return tuple(grads)

    def differentiable_backward(self, gy):
        x, count, shape = self.saved_input(0), self.count, (1, -1) + (1,) * (gy.ndim - 2)

        def global_sum(t):  # per channel, over every rank's samples
            return AllReduceSum(self.comm)(t.sum(self.axes)).reshape(shape)
        centred = x - global_sum(x) / count
        inv_std = (global_sum(centred * centred) / count + self.eps) ** -0.5
        x_hat = centred * inv_std
        g_hat = gy * self.saved_input(1).reshape(shape) if self.has_weight else gy
        grads = [inv_std / count * (count * g_hat - global_sum(g_hat) - x_hat * global_sum(g_hat * x_hat))]
        if self.has_weight:
            grads.append((gy * x_hat).sum(self.axes))
        if self.has_bias:
            grads.append(gy.sum(self.axes))
        return tuple(grads)


class SyncBatchNorm(_BatchNorm):
    """torch.nn.SyncBatchNorm: BatchNorm over the global batch of all ranks (any input rank >= 2).

    Training normalises with the global mean and variance and updates the running statistics
    with them (so they are equal on every rank); evaluation uses the running statistics, as
    BatchNorm does. The input gradient is complete (it sees every rank's sums); the weight and
    bias gradients are this rank's share, which DistributedDataParallel's average combines.
    """

    def __init__(self, num_features, comm, **options):
        super().__init__(num_features, **options)
        object.__setattr__(self, "comm", comm)

    def _check_input(self, x):
        if x.ndim < 2:
            raise ValueError(f"SyncBatchNorm expects (N, C, ...) input, got shape {x.shape}")

    def forward(self, x):
        if not self.training and self.track_running_stats:
            return super().forward(x)
        self._check_input(x)
        momentum = 0.1 if self.momentum is None else self.momentum
        if self.track_running_stats:
            count = self.num_batches_tracked.data
            self.num_batches_tracked.data = backend.get_array_module(count).asarray(count + 1, dtype=count.dtype)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked.data)
        affine = [t for t in (self.weight, self.bias) if t is not None]
        fn = SyncBatchNormFunction(self.comm, self.eps, self.weight is not None, self.bias is not None)
        y = fn(x, *affine)
        if self.track_running_stats:
            with no_grad():
                mean, var = self.running_mean.data, self.running_var.data
                mean[...] = (1 - momentum) * mean + momentum * fn.mean
                var[...] = (1 - momentum) * var + momentum * fn.var * (fn.count / (fn.count - 1))
        return y


def convert_sync_batchnorm(module, comm):
    """Replace every BatchNorm1d/2d in ``module`` by a SyncBatchNorm with the same state (in place)."""
    for parent in list(module.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, (BatchNorm1d, BatchNorm2d)):
                sync = SyncBatchNorm(child.num_features, comm, eps=child.eps, momentum=child.momentum,
                                     affine=child.affine, track_running_stats=child.track_running_stats)
                like = next(iter(list(child.parameters()) + list(child.buffers())), None)
                if like is not None:  # the same device and dtype as the layer it replaces
                    sync.to(device=like.device, dtype=like.dtype)
                sync.load_state_dict(child.state_dict())
                sync.train(child.training)
                parent._modules[name] = sync  # in place: a Sequential keeps its order
    return module

