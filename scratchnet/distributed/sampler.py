"""DistributedSampler: each rank's disjoint share of one seeded shuffle, with torch's semantics.

Every rank draws the same permutation of the dataset from ``(seed, epoch)`` (the DataLoader's
own shuffle, so one rank sees exactly what a plain DataLoader sees), then keeps every
``num_replicas``-th index starting at its ``rank``. With ``pad=True`` (torch's behaviour,
for training) the permutation is first extended by its own first indices so that every rank
gets the same number of samples: the ranks then take the same number of steps, which the
gradient allreduce needs. With ``pad=False`` (for evaluation) the shards differ in length by at
most one and every sample is used exactly once, so summed metrics equal one process's.
``drop_last=True`` instead drops the tail so the shards are equal without repeats.

    sampler = DistributedSampler(train_set, comm.size, comm.rank, seed=0)
    loader = DataLoader(train_set, batch_size=64, sampler=sampler)
    for epoch in range(epochs):
        loader.set_epoch(epoch)           # the loader passes the epoch to the sampler
"""
import math

import numpy as np


class DistributedSampler:
    def __init__(self, dataset, num_replicas, rank, shuffle=True, seed=0, drop_last=False, pad=True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank must be in [0, {num_replicas}), got {rank}")
        self.n = len(dataset)
        self.num_replicas, self.rank, self.shuffle = int(num_replicas), int(rank), shuffle
        self.seed, self.drop_last, self.pad = int(seed), drop_last, pad
        self.epoch = 0
        if drop_last:  # torch: the largest equal share that needs no repeats
            self.num_samples = self.n // self.num_replicas
        elif pad:
            self.num_samples = math.ceil(self.n / self.num_replicas)
        else:
            self.num_samples = len(range(self.rank, self.n, self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch):
        """Choose the epoch whose shuffle the next iteration uses (the same on every rank)."""
        self.epoch = int(epoch)

    def indices(self):
        """This rank's sample indices for the current epoch."""
        order = np.random.default_rng((self.seed, self.epoch, 0)).permutation(self.n) if self.shuffle \
            else np.arange(self.n)
        if self.drop_last:
            order = order[:self.total_size]
        elif self.pad and self.total_size > self.n:  # repeat from the start (several times if n is tiny)
            order = np.resize(order, self.total_size)
        return order[self.rank::self.num_replicas] if self.pad or self.drop_last \
            else order[self.rank:self.n:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(rank {self.rank} of {self.num_replicas}, {self.num_samples} of {self.n} "
                f"samples, shuffle={self.shuffle}, seed={self.seed})")
