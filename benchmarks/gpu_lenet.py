"""One LeNet-5 training epoch on the GPU: scratchnet vs the same net in PyTorch on the same GPU.

    python benchmarks/gpu_lenet.py --data-dir ../shared/data          # on a CUDA machine
    python benchmarks/gpu_lenet.py --device cpu --smoke --data-dir ../shared/data   # the plumbing only

Both frameworks train the modern LeNet-5 (conv 6@5x5, max pool, conv 16@5x5,
max pool, conv 120@5x5, 84, 10; ReLU) from the same initial weights on full
Fashion-MNIST (60,000 images, 28x28 padded to 32x32, normalised), batch 64, SGD
0.05 with momentum 0.9 and weight decay 5e-4 (the `lenet` recipe), in the same
shuffled order, with the same host work per step (the uint8 batch normalised
with NumPy, then copied to the GPU) and ``loss.item()`` every step, as a
training loop logs it. 20 warm-up steps, then one whole epoch timed. scratchnet
is timed in this process, PyTorch in a process of its own (torch is never
imported here). Target: scratchnet's epoch no slower than PyTorch's. Prints
both and writes benchmarks/results/gpu_lenet.json.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BATCH, LR, MOMENTUM, WEIGHT_DECAY, WARMUP_STEPS = 64, 0.05, 0.9, 5e-4, 20
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST (scratchnet/train/datasets.py's DATASETS)


def load_data(data_dir, limit):
    """uint8 images (N, 1, 28, 28) and int64 labels, and the epoch's shuffled order."""
    from scratchnet.data import load_mnist
    train = load_mnist("fashion-mnist", True, data_dir, download=False, progress=False)
    images, labels = train.inputs, train.targets
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images, labels, np.random.default_rng(0).permutation(len(labels))


def batches(images, labels, order):
    """(float32 (B, 1, 32, 32) normalised, int64 labels) per step: the host work both frameworks do."""
    for start in range(0, len(order), BATCH):
        index = order[start:start + BATCH]
        x = np.pad(images[index], ((0, 0), (0, 0), (2, 2), (2, 2))).astype(np.float32)
        yield (x * np.float32(1 / 255) - np.float32(MEAN)) / np.float32(STD), labels[index]


def timed_epoch(step, images, labels, order, sync, warmup):
    """Run `warmup` steps untimed, then one whole epoch; (seconds, mean loss)."""
    for number, (x, y) in enumerate(batches(images, labels, order)):
        if number == warmup:
            break
        step(x, y)
    sync()
    started, loss_sum = time.perf_counter(), 0.0
    for x, y in batches(images, labels, order):
        loss_sum += step(x, y) * len(y)
    sync()
    return time.perf_counter() - started, loss_sum / len(order)


# --------------------------------------------------------------------------- scratchnet (this process)


def run_scratchnet(args, images, labels, order, weights_path):
    import scratchnet as sn
    import scratchnet.functional as F
    from scratchnet import backend
    from scratchnet.models import get_model
    from scratchnet.optim import SGD

    sn.manual_seed(0)
    model = get_model("lenet5")
    sn.save(model, weights_path)  # PyTorch starts from these very weights
    model = model.to(args.device)
    optimizer = SGD(list(model.parameters()), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    model.train()

    def step(x, y):
        loss = F.cross_entropy(model(sn.Tensor(backend.to_device(x, args.device))),
                               sn.Tensor(backend.to_device(y, args.device)))
        value = float(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return value

    sync = backend.cp.cuda.Device().synchronize if args.device == "gpu" else (lambda: None)
    return timed_epoch(step, images, labels, order, sync, args.warmup)


# --------------------------------------------------------------------------- PyTorch (its own process)


def run_torch(args, images, labels, order, weights_path):
    import torch
    import torch.nn as nn

    class LeNet5(nn.Module):  # scratchnet's modern LeNet-5, with its parameter names
        def __init__(self):
            super().__init__()
            self.c1, self.c3, self.c5 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5), nn.Conv2d(16, 120, 5)
            self.f6, self.output = nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.c1(x)), 2, 2)
            x = torch.max_pool2d(torch.relu(self.c3(x)), 2, 2)
            x = torch.relu(self.f6(torch.relu(self.c5(x)).flatten(1)))
            return self.output(x)

    device = "cuda" if args.device == "gpu" else "cpu"
    torch.backends.cudnn.benchmark = True
    model = LeNet5()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in np.load(weights_path).items()})
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step(x, y):
        loss = nn.functional.cross_entropy(model(torch.from_numpy(x).to(device)), torch.from_numpy(y).to(device))
        value = loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return value

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    seconds, loss = timed_epoch(step, images, labels, order, sync, args.warmup)
    return seconds, loss, torch.__version__


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--data-dir", help="folder with Fashion-MNIST (else $SCRATCHNET_DATA, the cache, ...)")
    parser.add_argument("--smoke", action="store_true", help="256 images, 1 warm-up step (checks the plumbing)")
    parser.add_argument("--json", default=str(HERE / "results" / "gpu_lenet.json"))
    parser.add_argument("--torch-worker", nargs=2, metavar=("WEIGHTS", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.limit, args.warmup = (256, 1) if args.smoke else (None, WARMUP_STEPS)
    images, labels, order = load_data(args.data_dir, args.limit)
    if args.torch_worker:
        seconds, loss, version = run_torch(args, images, labels, order, args.torch_worker[0])
        Path(args.torch_worker[1]).write_text(json.dumps(dict(seconds=seconds, loss=loss, torch=version)))
        return 0

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        weights, torch_json = Path(tmp) / "lenet5_init.npz", Path(tmp) / "torch.json"
        sn_seconds, sn_loss = run_scratchnet(args, images, labels, order, weights)
        command = [sys.executable, __file__, "--device", args.device, "--torch-worker", str(weights), str(torch_json)]
        command += (["--data-dir", args.data_dir] if args.data_dir else []) + (["--smoke"] if args.smoke else [])
        done = subprocess.run(command)
        torch_part = json.loads(torch_json.read_text()) if done.returncode == 0 else None
    n = len(order)
    rows = [("scratchnet", sn_seconds, sn_loss)] + ([("torch", torch_part["seconds"], torch_part["loss"])]
                                                   if torch_part else [])
    print(f"\nLeNet-5, one epoch of {n} images, batch {BATCH}, {args.device}")
    print(f"{'framework':<11} {'epoch s':>8} {'img/s':>8} {'mean loss':>9}")
    for name, seconds, loss in rows:
        print(f"{name:<11} {seconds:8.2f} {n / seconds:8.0f} {loss:9.4f}")
    ratio = sn_seconds / torch_part["seconds"] if torch_part else None
    if ratio is not None:
        print(f"scratchnet / PyTorch epoch time: {ratio:.2f} (target <= 1: "
              f"{'met' if ratio <= 1 else 'NOT met'})")
    else:
        print(f"the PyTorch process failed (exit {done.returncode})")
    result = dict(device=args.device, smoke=args.smoke, images=n, batch=BATCH, warmup_steps=args.warmup,
                  scratchnet=dict(epoch_s=sn_seconds, images_per_s=n / sn_seconds, mean_loss=sn_loss),
                  torch=torch_part and dict(epoch_s=torch_part["seconds"], images_per_s=n / torch_part["seconds"],
                                            mean_loss=torch_part["loss"], version=torch_part["torch"]),
                  ratio_scratchnet_over_torch=ratio, target_met=ratio is not None and ratio <= 1,
                  machine=dict(cpus=os.cpu_count(), python=platform.python_version(),
                               load_average_before=load_before, load_average_after=os.getloadavg()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")
    return 0 if torch_part else 1


if __name__ == "__main__":
    sys.exit(main())
