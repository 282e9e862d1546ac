"""LeNet-5 on the full Fashion-MNIST (60k/10k): the training CLI against a plain PyTorch loop.

    SCRATCHNET_DATA=../shared/data python benchmarks/train_lenet.py               # 1 epoch each (~1-2 min)
    SCRATCHNET_DATA=../shared/data python benchmarks/train_lenet.py --epochs 10   # the accuracy run
    python benchmarks/train_lenet.py --no-torch --dataset mnist                   # needs MNIST's training images

scratchnet: ``python -m scratchnet.train lenet`` with its default recipe (batch 64, SGD lr
0.05 momentum 0.9 wd 5e-4, cosine decay per step, 28x28 zero-padded to 32x32, normalised),
as a user runs it: its own process, default threads (sn.get_num_threads(); --threads N sets
both sides' count, e.g. 1 for a machine shared with other jobs), --no-progress.
The epoch time is the CLI's own ``epoch_time_s`` (training only, data loading included,
evaluation excluded).

PyTorch: the same net (conv 5x5 6 - relu - maxpool 2 - conv 5x5 16 - relu - maxpool 2 - conv
5x5 120 - relu - fc 84 - relu - fc 10), the same recipe and the same preprocessed data, in a
plain loop (the whole set as one tensor, a randperm per epoch, one slice per batch), in its
own process with torch's default threads, under --torch-python (default: $SCRATCHNET_TORCH_PYTHON,
else this Python: benchmarks/timing.py's torch_python); torch is never imported where scratchnet runs.

Both children run with this workplace's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE overrides
removed from their environment. --rounds alternates the two and keeps each side's fastest
epoch. ratio = PyTorch epoch time / scratchnet epoch time (> 1: scratchnet is faster).
Prints the table and the load average, writes benchmarks/results/train_lenet[_DATASET].json.
The accuracy target is >= 89% test accuracy on Fashion-MNIST within 10 epochs.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# benchmarks/timing.py
from timing import OVERRIDES, add_torch_python, at_least, clean_env, started, write_result

ROOT = Path(__file__).resolve().parents[1]
# scratchnet's normalisation of each dataset (scratchnet/train/datasets.py DATASETS)
MEAN_STD = {"fashion-mnist": (0.2860, 0.3530), "mnist": (0.1307, 0.3081)}


def run_scratchnet(args, out):
    command = [sys.executable, "-m", "scratchnet.train", "lenet", "--dataset", args.dataset, "--epochs",
               str(args.epochs), "--out", str(out), "--no-progress", *args.extra]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.threads:
        command += ["--threads", str(args.threads)]
    print("$", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=clean_env())
    if done.returncode != 0:
        sys.exit(done.returncode)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"epochs": metrics, "process_s": time.perf_counter() - started,
            "best_epoch_s": min(m["epoch_time_s"] for m in metrics)}


# ---- the PyTorch side (runs in its own process: `train_lenet.py --torch-child ...`)

def read_idx_gz(path):
    import gzip

    import numpy as np
    raw = gzip.open(path, "rb").read() if str(path).endswith(".gz") else open(path, "rb").read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find_data(dataset, data_dir):
    roots = [Path(p) for p in (data_dir, os.environ.get("SCRATCHNET_DATA")) if p]
    roots += [Path.home() / ".cache" / "scratchnet", Path("/usr/share/datasets")]
    for root in roots:
        for folder in (root / dataset, root):
            if (folder / "train-images-idx3-ubyte.gz").exists():
                return folder
    sys.exit(f"{dataset}: IDX files not found in {[str(r) for r in roots]}; pass --data-dir")


def torch_child(args):
    import math

    import numpy as np
    import torch
    from torch import nn

    folder = find_data(args.dataset, args.data_dir)
    mean, std = MEAN_STD[args.dataset]

    def prepare(images):  # scratchnet's pipeline: /255, zero-pad 28 -> 32, normalise
        x = torch.from_numpy(images.astype(np.float32)).div_(255).unsqueeze(1)
        return (nn.functional.pad(x, (2, 2, 2, 2)) - mean) / std

    x_train = prepare(read_idx_gz(folder / "train-images-idx3-ubyte.gz"))
    y_train = torch.from_numpy(read_idx_gz(folder / "train-labels-idx1-ubyte.gz").astype(np.int64))
    x_test = prepare(read_idx_gz(folder / "t10k-images-idx3-ubyte.gz"))
    y_test = torch.from_numpy(read_idx_gz(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64))

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
                          nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    batch, lr = 64, 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = args.epochs * math.ceil(len(x_train) / batch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)  # stepped per batch, as the CLI
    loss_fn = nn.CrossEntropyLoss()
    epochs = []
    for epoch in range(args.epochs):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(x_train))
        loss_sum = correct = 0.0
        for lo in range(0, len(x_train), batch):
            index = order[lo:lo + batch]
            x, y = x_train[index], y_train[index]
            output = model(x)
            loss = loss_fn(output, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(y)
            correct += (output.argmax(1) == y).sum().item()
        epoch_time = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            test_correct = sum((model(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum().item()
                               for i in range(0, len(x_test), 1000))
        epochs.append({"epoch": epoch + 1, "train_loss": loss_sum / len(x_train), "train_acc": correct / len(x_train),
                       "test_acc": test_correct / len(x_test), "epoch_time_s": epoch_time,
                       "images_per_s": len(x_train) / epoch_time})
    print(json.dumps({"epochs": epochs, "threads": torch.get_num_threads(), "torch": torch.__version__}))


def run_torch(args):
    command = [str(args.torch_python), __file__, "--torch-child", "--dataset", args.dataset, "--epochs", str(args.epochs),
               "--threads", str(args.threads or 0)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the PyTorch run failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(process_s=time.perf_counter() - started,
                  best_epoch_s=min(m["epoch_time_s"] for m in result["epochs"]))
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    p.add_argument("--epochs", type=at_least(1), default=1)
    p.add_argument("--rounds", type=at_least(1), default=1,
                   help="alternate the two runs this many times, keep the best")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-torch", action="store_true", help="only the scratchnet CLI")
    p.add_argument("--threads", type=at_least(0), default=0, help="threads for both sides (default: each one's own)")
    p.add_argument("--out", default=None, help="run folder (default runs/bench-lenet-DATASET)")
    p.add_argument("--json", default=None, help="where to write the results")
    add_torch_python(p)
    p.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("extra", nargs="*", help="more options for the CLI, after --")
    args = p.parse_args()
    if args.torch_child:
        return torch_child(args)

    out = Path(args.out or ROOT / "runs" / f"bench-lenet-{args.dataset}")
    recorded, load_before, start = started(), os.getloadavg(), time.time()
    runs = {"scratchnet": [], "pytorch": []}
    for _ in range(args.rounds):
        runs["scratchnet"].append(run_scratchnet(args, out))
        if not args.no_torch:
            runs["pytorch"].append(run_torch(args))
    load_after = os.getloadavg()

    ours = min(runs["scratchnet"], key=lambda r: r["best_epoch_s"])
    metrics = ours["epochs"]
    print(f"\nscratchnet CLI (best of {args.rounds} run(s)):")
    print(f"{'epoch':>5} {'train loss':>10} {'train acc':>9} {'test acc':>8} {'s/epoch':>8} {'img/s':>7}")
    for m in metrics:
        print(f"{m['epoch']:>5} {m['train_loss']:>10.4f} {100 * m['train_acc']:>8.2f}% {100 * m['test_acc']:>7.2f}% "
              f"{m['epoch_time_s']:>8.1f} {m['images_per_s']:>7.0f}")
    best_acc = max(m["test_acc"] for m in metrics)
    result = {"command": "python benchmarks/train_lenet.py " + " ".join(sys.argv[1:]), "dataset": args.dataset,
              "epochs": args.epochs, "final_test_acc": metrics[-1]["test_acc"], "best_test_acc": best_acc,
              "scratchnet_epoch_s": ours["best_epoch_s"], "unset_for_runs": list(OVERRIDES), "runs": runs}
    print(f"final test accuracy {100 * metrics[-1]['test_acc']:.2f}% (best {100 * best_acc:.2f}%)")
    if runs["pytorch"]:
        theirs = min(runs["pytorch"], key=lambda r: r["best_epoch_s"])
        ratio = theirs["best_epoch_s"] / ours["best_epoch_s"]
        print(f"\n{'':<12} {'s/epoch':>8} {'img/s':>7} {'test acc (last epoch)':>22}")
        for name, r in (("scratchnet", ours), (f"PyTorch {theirs['torch'].split('+')[0]}", theirs)):
            print(f"{name:<12} {r['best_epoch_s']:>8.2f} {60000 / r['best_epoch_s']:>7.0f} "
                  f"{100 * r['epochs'][-1]['test_acc']:>21.2f}%")
        print(f"ratio (PyTorch s/epoch / scratchnet s/epoch, higher is better): {ratio:.2f}")
        result.update(pytorch_epoch_s=theirs["best_epoch_s"], pytorch_threads=theirs["threads"], ratio=ratio,
                      torch=theirs["torch"].split("+")[0], torch_python=str(args.torch_python),
                      scratchnet_threads=args.threads or "default")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} ({os.cpu_count()} CPUs)")
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "processor": platform.processor() or platform.machine(),
                         # other work on the machine slows every epoch: keep the load with the timings
                         "load_average_before": load_before, "load_average_after": load_after}
    result["total_time_s"] = time.time() - start
    name = f"train_lenet{'' if args.dataset == 'fashion-mnist' else '_' + args.dataset}"
    name += f"_threads{args.threads}" if args.threads else ""
    path = Path(args.json or ROOT / "benchmarks" / "results" / f"{name}{'' if args.epochs == 10 else '_epoch'}.json")
    write_result(path, result, recorded)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
