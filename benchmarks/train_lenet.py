"""LeNet-5 on the full Fashion-MNIST (60k/10k) through the training CLI, on the CPU.

    SCRATCHNET_DATA=../shared/data python benchmarks/train_lenet.py            # the README's numbers
    python benchmarks/train_lenet.py --dataset mnist                          # needs MNIST's training images

Runs ``python -m scratchnet.train lenet`` with its default recipe (10 epochs),
then prints a table of the epochs (test accuracy, seconds per epoch, images/s)
and writes it as JSON (``benchmarks/results/train_lenet[_DATASET].json``).
The target is >= 89% test accuracy on Fashion-MNIST within 10 epochs (and 99%
on MNIST with the same recipe, which needs MNIST's 60k training images).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default=None, help="run folder (default runs/bench-lenet-DATASET)")
    p.add_argument("--json", default=None, help="where to write the results")
    p.add_argument("extra", nargs="*", help="more options for the CLI, after --")
    args = p.parse_args()
    out = Path(args.out or ROOT / "runs" / f"bench-lenet-{args.dataset}")
    command = [sys.executable, "-m", "scratchnet.train", "lenet", "--dataset", args.dataset,
               "--epochs", str(args.epochs), "--out", str(out), "--no-progress", *args.extra]
    print("$", " ".join(command[1:]), flush=True)
    started, load_before = time.time(), os.getloadavg()
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(done.returncode)
    metrics = json.loads((out / "metrics.json").read_text())

    print(f"\n{'epoch':>5} {'train loss':>10} {'train acc':>9} {'test acc':>8} {'s/epoch':>8} {'img/s':>7}")
    for m in metrics:
        print(f"{m['epoch']:>5} {m['train_loss']:>10.4f} {100 * m['train_acc']:>8.2f}% {100 * m['test_acc']:>7.2f}% "
              f"{m['epoch_time_s']:>8.1f} {m['images_per_s']:>7.0f}")
    mean_epoch = sum(m["epoch_time_s"] for m in metrics) / len(metrics)
    best = max(m["test_acc"] for m in metrics)
    print(f"final test accuracy {100 * metrics[-1]['test_acc']:.2f}% (best {100 * best:.2f}%), "
          f"{mean_epoch:.1f} s per epoch (training only), {time.time() - started:.0f} s in all")

    result = {"command": "python -m scratchnet.train " + " ".join(command[3:]), "dataset": args.dataset,
              "final_test_acc": metrics[-1]["test_acc"], "best_test_acc": best,
              "mean_epoch_time_s": mean_epoch, "total_time_s": time.time() - started,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "processor": platform.processor() or platform.machine(),
                          # other work on the machine slows every epoch: keep the load with the timings
                          "load_average_before": load_before, "load_average_after": os.getloadavg()},
              "epochs": metrics}
    path = Path(args.json or ROOT / "benchmarks" / "results" /
                f"train_lenet{'' if args.dataset == 'fashion-mnist' else '_' + args.dataset}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
