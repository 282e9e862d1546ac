"""Datasets held in memory, and the DataLoader that cuts them into (augmented) batches.

Everything a batch depends on is derived from ``(seed, epoch, batch index)``:
the shuffle order from ``(seed, epoch)``, the augmentation draws from
``(seed, epoch, batch)``. So a run restarted at any batch sees exactly the
batches it would have seen, which is what makes ``--resume`` bit-identical, and
a background thread may prepare batches ahead without changing them.
"""
import queue
import threading

import numpy as np


class ArrayDataset:
    """Samples as rows of arrays: ``inputs[i]`` with ``targets[i]`` (e.g. uint8 images and int labels)."""

    def __init__(self, inputs, targets, classes=None, name="dataset"):
        if len(inputs) != len(targets):
            raise ValueError(f"ArrayDataset: {len(inputs)} inputs but {len(targets)} targets")
        self.inputs, self.targets = inputs, targets
        self.classes = list(classes) if classes is not None else None
        self.name = name

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        return self.inputs[index], self.targets[index]

    def get_batch(self, indices):
        """Rows ``indices`` of every array at once (one fancy-index, no Python loop)."""
        return self.inputs[indices], self.targets[indices]

    def subset(self, n):
        """The first ``n`` samples (``--limit``), as a view."""
        return ArrayDataset(self.inputs[:n], self.targets[:n], self.classes, self.name)

    def __repr__(self):
        return f"ArrayDataset({self.name!r}, {len(self)} samples, inputs {self.inputs.shape[1:]})"


def batch_rng(seed, epoch, batch):
    """The generator behind the random augmentation of one batch."""
    return np.random.default_rng((seed, epoch, 1, batch))


class DataLoader:
    """Batches of ``dataset``, shuffled by seed, optionally transformed and prepared in the background.

    ``transform(inputs, rng)`` works on a whole batch of inputs (N, C, H, W) and
    returns the new batch. ``prefetch`` > 0 runs the loading and transforms of
    the next ``prefetch`` batches in a thread, overlapping them with training
    (NumPy releases the GIL in its heavy loops).
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, seed=0, drop_last=False, transform=None,
                 prefetch=0, sampler=None):
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle = dataset, int(batch_size), shuffle
        self.sampler = sampler  # e.g. a DistributedSampler: it chooses the indices (and their order)
        self.seed, self.drop_last, self.transform, self.prefetch = int(seed), drop_last, transform, int(prefetch)
        self.epoch = 0

    def set_epoch(self, epoch):
        """Choose the epoch whose shuffle order and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self):
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self):
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
            return np.fromiter(self.sampler, dtype=np.int64, count=len(self.sampler))
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng((self.seed, self.epoch, 0)).permutation(n)

    def make_batch(self, order, b):
        indices = order[b * self.batch_size:(b + 1) * self.batch_size]
        if hasattr(self.dataset, "get_batch"):
            inputs, targets = self.dataset.get_batch(indices)
        else:
            samples = [self.dataset[int(i)] for i in indices]
            inputs = np.stack([s[0] for s in samples])
            targets = np.stack([s[1] for s in samples])
        if self.transform is not None:
            inputs = self.transform(inputs, batch_rng(self.seed, self.epoch, b))
        return inputs, targets

    def batches(self, start=0):
        """Iterate the batches of the current epoch from batch index ``start`` (to resume mid-epoch)."""
        order = self.order()
        indices = range(start, len(self))
        if self.prefetch <= 0:
            return (self.make_batch(order, b) for b in indices)
        return _prefetched(lambda b: self.make_batch(order, b), indices, self.prefetch)

    def __iter__(self):
        return iter(self.batches())


def _prefetched(make, indices, depth):
    """Yield make(b) for b in indices, computed up to ``depth`` batches ahead in a thread."""
    ready = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item):  # put, but give up once the consumer has gone
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce():
        try:
            for b in indices:
                if stop.is_set():
                    return
                offer(make(b))
            offer(done)
        except BaseException as exc:  # hand the error to the consumer, which re-raises it
            offer(exc)

    worker = threading.Thread(target=produce, name="scratchnet-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # the consumer stopped early (break, error, Ctrl-C): let the thread finish
        stop.set()
        worker.join(timeout=5)
