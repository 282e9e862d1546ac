"""A machine's first training run: the time to the first step with Numba's cache empty, and then warm.

    SCRATCHNET_DATA=../shared/data python benchmarks/first_run.py              # LeNet-5, the CLI's default
    SCRATCHNET_DATA=../shared/data python benchmarks/first_run.py --model resnet20 --dataset fashion-mnist

Runs ``python -m scratchnet.train MODEL --limit B --batch-size B --epochs 1`` (one training step and
a small evaluation) as a user does, in its own process without this workplace's OpenBLAS overrides,
twice: first with NUMBA_CACHE_DIR pointing at an empty folder (Numba's cache then lives there only,
so nothing compiled before is found: a fresh install), then again with that folder filled (every
later run). For each: the time to the first step (the CLI's ``first_step_s``: from the process's
start to the end of its first training step), the whole process's wall time (start-up, imports,
data, the step, the evaluation, the files written, and on the first run the wait for the kernels
compiling in the background), its CPU time (children's user + system: the compiling children's
included), the CLI's own ``compile_time_s`` (kernels compiled in the foreground, left out of the
epoch's time), ``epoch_time_s`` and ``steps_without_kernels`` (steps that took the NumPy routes
while the kernels compiled). Prints a table, writes benchmarks/results/first_run.json.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import OVERRIDES, at_least, clean_env, started, write_result  # benchmarks/timing.py: the shared rules

ROOT = Path(__file__).resolve().parents[1]


def run(args, cache, out):
    env = clean_env()
    env["NUMBA_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "scratchnet.train", args.model, "--epochs", "1", "--limit", str(args.batch),
               "--batch-size", str(args.batch), "--test-limit", str(args.batch), "--out", str(out), "--no-progress"]
    if args.dataset:
        command += ["--dataset", args.dataset]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"the run failed:\n{done.stderr}")
    record = json.loads((out / "metrics.json").read_text())[0]
    return dict(process_s=wall, cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
                compile_time_s=record.get("compile_time_s"), epoch_time_s=record["epoch_time_s"],
                first_step_s=record.get("first_step_s"), steps_without_kernels=record.get("steps_without_kernels"),
                messages=[line for line in done.stderr.splitlines() if "compiling" in line])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", help="the CLI's --dataset (default: the model's recipe)")
    parser.add_argument("--batch", type=at_least(1), default=64, help="the one step's batch (and --limit)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "first_run.json")
    args = parser.parse_args(argv)
    recorded, load_before = started(), os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        cache, runs = Path(folder) / "numba-cache", {}
        cache.mkdir()
        for label in ("empty cache", "warm cache"):
            runs[label] = run(args, cache, Path(folder) / label.replace(" ", "-"))
    print(f"python -m scratchnet.train {args.model}: one step of batch {args.batch} and an evaluation, "
          f"its own process ({' and '.join(OVERRIDES)} unset), {os.cpu_count()} CPUs")
    print(f"{'':12s} {'first step s':>12s} {'process s':>10s} {'CPU s':>8s} {'compile s':>10s} {'epoch s':>8s} "
          f"{'NumPy steps':>11s}")
    for label, r in runs.items():
        print(f"{label:12s} {r['first_step_s']:12.1f} {r['process_s']:10.1f} {r['cpu_s']:8.1f} "
              f"{r['compile_time_s'] or 0:10.1f} {r['epoch_time_s']:8.2f} {r['steps_without_kernels']:11d}")
    for line in runs["empty cache"]["messages"]:
        print(f"  (the first run said: {line.strip()})")
    print(f"load average: before {tuple(round(v, 2) for v in load_before)}, after "
          f"{tuple(round(v, 2) for v in os.getloadavg())}")
    write_result(args.out, dict(model=args.model, batch=args.batch, runs=runs), recorded)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
