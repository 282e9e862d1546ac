"""Is every kernel LeNet uses as fast inside a training loop as alone? (issue 9, the thread policy)

    python benchmarks/threads.py                 # both policies, ~1 minute on 2 cores
    python benchmarks/threads.py --steps 60 --repeat 30

Thread oversubscription shows up as a kernel that is fast alone and slow right after the
other library's kernel: OpenBLAS's idle threads spin ~0.1 s after a GEMM, GNU OpenMP's
(Numba's pool) ~0.3 ms after a parallel loop, and the spinning pool takes the cores the next
kernel needs. So this runs the real LeNet-5 training step (batch 64, SGD momentum 0.9, wd
5e-4, float32) and times every kernel call inside it: the Numba kernels (im2col and its chunk
kernels, col2im, max-pool forward/backward: every public function of kernels/cpu.py) and the GEMMs
the conv routes issue (conv_routes' three GEMM helpers; _share_matmul: the im2col route's chunks
shared between the threads of the pool, where its kernels on Numba's threads cannot run). Then it
replays each call alone, back to back, with the same arrays. ratio = median time in the loop /
median time alone (<= 1: no slower in the loop; timings on a busy machine scatter, so read the
table with the load average).

It runs four times, each in its own process:
  policy       scratchnet's defaults (backend.THREAD_ENVIRONMENT: idle threads sleep at once)
  numpy first  the same, with NumPy imported (and its BLAS pool started) before scratchnet: the
               policy reaches OpenBLAS at run time (backend/threads.py), so this matches `policy`
  spinning     the libraries' own defaults (OpenBLAS spins 2^28 cycles, GNU OpenMP 300,000
               spins, Intel OpenMP 200 ms), i.e. the library as shipped before issue 9
  one thread   the policy with SCRATCHNET_NUM_THREADS=1 (the LeNet kernels are small)
All but the last use sn.get_num_threads()'s default count; all run with this workplace's OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE overrides unset. Prints the table and writes benchmarks/results/threads.json.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# benchmarks/timing.py: the shared rules
from timing import OVERRIDES, at_least, child_json, clean_env, started, write_result

ROOT = Path(__file__).resolve().parents[1]
# the libraries' own idle-wait defaults; GOMP_SPINCOUNT overrides OMP_WAIT_POLICY in libgomp
SPINNING = {"OPENBLAS_THREAD_TIMEOUT": "28", "GOMP_SPINCOUNT": "300000", "KMP_BLOCKTIME": "200"}


def measure(steps, repeat):
    """In this process: time each kernel call inside LeNet training steps, then alone."""
    import scratchnet as sn  # first: its thread policy must be in place before NumPy loads BLAS
    import numpy as np
    from scratchnet import functional as F
    from scratchnet.functional import conv_routes
    from scratchnet.kernels import cpu
    from scratchnet.models import get_model
    from scratchnet.optim import SGD

    calls = {}  # (kernel, shapes) -> {"loop": [seconds], "args": ..., "kwargs": ...}
    recording = [False]

    def shapes(values):
        return tuple(tuple(v.shape) if hasattr(v, "shape") else v for v in values
                     if hasattr(v, "shape") or isinstance(v, (int, tuple)))

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            took = time.perf_counter() - start
            if recording[0]:
                entry = calls.setdefault((name, shapes(args)), {"loop": [], "args": None})
                entry["loop"].append(took)
                if entry["args"] is None:  # keep copies to replay the call alone later
                    entry["args"] = [a.copy() if hasattr(a, "copy") and hasattr(a, "shape") else a for a in args]
                    entry["kwargs"] = {k: (np.empty(v.shape, v.dtype) if k == "out" else v)
                                       for k, v in kwargs.items()}
            return result
        return wrapper

    kernels = [name for name in dir(cpu) if not name.startswith("_") and callable(getattr(cpu, name))
               and getattr(getattr(cpu, name), "__module__", None) == cpu.__name__]
    originals = {name: getattr(cpu, name) for name in kernels}
    for name, fn in originals.items():
        setattr(cpu, name, timed(name, fn))
    # the conv routes' GEMMs go through these three helpers (with the @ operator, which no patch of
    # numpy.matmul sees); Linear's GEMMs are left out
    gemms = {f"gemm ({name})": getattr(conv_routes, name)
             for name in ("_grouped_matmul", "_weight_gradient", "_share_matmul")}
    for label, fn in gemms.items():
        setattr(conv_routes, fn.__name__, timed(label, fn))

    sn.manual_seed(0)
    model = get_model("lenet")
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 64)

    def step():
        loss = F.cross_entropy(model(sn.Tensor(x)), sn.Tensor(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(10):  # warm-up: Numba compiles, pools start
        step()
    recording[0] = True
    step_times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        step_times.append(time.perf_counter() - start)
    recording[0] = False
    for name, fn in originals.items():
        setattr(cpu, name, fn)
    for fn in gemms.values():
        setattr(conv_routes, fn.__name__, fn)

    rows = []
    for (name, key), entry in sorted(calls.items(), key=lambda item: -statistics.median(item[1]["loop"])):
        fn = gemms[name] if name in gemms else originals[name]
        alone = []
        fn(*entry["args"], **entry["kwargs"])
        for _ in range(repeat):
            start = time.perf_counter()
            fn(*entry["args"], **entry["kwargs"])
            alone.append(time.perf_counter() - start)
        loop_ms, alone_ms = 1e3 * statistics.median(entry["loop"]), 1e3 * statistics.median(alone)
        rows.append({"kernel": name, "shapes": str(key), "calls_per_step": len(entry["loop"]) // steps,
                     "loop_ms": loop_ms, "alone_ms": alone_ms, "ratio": loop_ms / alone_ms,
                     "loop_min_ms": 1e3 * min(entry["loop"]), "alone_min_ms": 1e3 * min(alone)})
    from threadpoolctl import threadpool_info
    return {"step_ms_median": 1e3 * statistics.median(step_times), "step_ms_min": 1e3 * min(step_times),
            "threads": sn.get_num_threads(), "loaded_before_scratchnet": sn.backend.threads.LOADED_FIRST,
            "pools": [{k: p.get(k) for k in ("internal_api", "num_threads", "threading_layer")}
                      for p in threadpool_info()],
            "environment": {k: os.environ.get(k) for k in (*sn.backend.THREAD_ENVIRONMENT, *SPINNING)},
            "kernels": rows}


def run_child(policy, steps, repeat):
    env = clean_env()
    if policy == "spinning":
        env.update(SPINNING)
    if policy == "one thread":
        env["SCRATCHNET_NUM_THREADS"] = "1"
    command = [sys.executable, __file__, "--child", "--steps", str(steps), "--repeat", str(repeat)]
    if policy == "numpy first":
        command.append("--numpy-first")
    return child_json(command, f"{policy} run", env)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=at_least(1), default=40, help="training steps timed")
    p.add_argument("--repeat", type=at_least(1), default=20, help="replays of each kernel alone")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--numpy-first", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.numpy_first:  # as a user's script may: NumPy's BLAS loaded and its threads started first
            import numpy
            numpy.ones((64, 64)) @ numpy.ones((64, 64))
        print(json.dumps(measure(args.steps, args.repeat)))
        return

    recorded, load_before = started(), os.getloadavg()
    results = {policy: run_child(policy, args.steps, args.repeat)
               for policy in ("policy", "numpy first", "one thread", "spinning")}
    for policy, r in results.items():
        print(f"\n{policy}: {r['threads']} threads, LeNet-5 step median {r['step_ms_median']:.2f} ms "
              f"(min {r['step_ms_min']:.2f})  environment {r['environment']}")
        print(f"{'kernel':<24} {'shapes':<58} {'alone ms':>9} {'loop ms':>9} {'loop/alone':>10}")
        for row in r["kernels"]:
            print(f"{row['kernel']:<24} {row['shapes'][:58]:<58} {row['alone_ms']:>9.3f} {row['loop_ms']:>9.3f} "
                  f"{row['ratio']:>10.2f}")
        worst = max(row["ratio"] for row in r["kernels"])
        print(f"worst loop/alone ratio: {worst:.2f}")
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} ({os.cpu_count()} CPUs)")
    out = ROOT / "benchmarks" / "results" / "threads.json"
    write_result(out, {"unset_for_runs": list(OVERRIDES), "results": results}, recorded)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
