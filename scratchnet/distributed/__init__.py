"""Distributed training on the engines clusters already run: MPI (mpi4py) and NCCL (CuPy).

    mpirun -n 2 python -m scratchnet.train lenet --distributed          # data parallel
    mpirun -n 2 python -m scratchnet.train alexnet --model-parallel     # AlexNet's two-GPU split

See comm.py (ranks, collectives, timeouts), data_parallel.py (DistributedDataParallel,
SyncBatchNorm), sampler.py (DistributedSampler), model_parallel.py (AlexNetTowers) and
training.py (what the train CLI does on every rank).
"""
from .comm import Communicator, DistributedError, find_mpirun, init, launch_rank, launch_size, launched_by_mpi
from .data_parallel import (DistributedDataParallel, SyncBatchNorm, average_gradients, broadcast_tensors,
                            convert_sync_batchnorm, make_buckets)
from .model_parallel import AlexNetTowers, copy_to_towers, gather_towers
from .sampler import DistributedSampler
