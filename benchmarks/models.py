"""Benchmark the model zoo: one training step (forward + backward) per ImageNet-size model.

    python benchmarks/models.py                       # every registered model with a >= 224 input (--min-size)
    python benchmarks/models.py --models resnet50,efficientnet_b0 --device all
    python benchmarks/models.py --macs                # params and MACs of every model vs torchvision's published

Each model runs in a fresh subprocess (so one model's memory cannot inflate the next) on a random
input of its native ``input_size`` in training mode; the loss is the sum of the outputs.

* time: wall-clock seconds of the forward and of the backward of one step (GPU: after a synchronize),
  and the step's CPU time (``time.process_time``, all threads: less sensitive to a busy machine);
  ``--steps N`` runs N steps and reports the fastest (the first one pays for allocations).
* memory, CPU: peak resident set size during the step minus the resident size just before it, in MB
  (Linux ``VmHWM`` from /proc/self/status, its high-water mark reset first through
  /proc/self/clear_refs; where that is not allowed, ``ru_maxrss`` from ``resource.getrusage``):
  activations kept for backward, im2col workspace and gradients. The model's weights are not included;
  memory the allocator kept from building the model is reused without raising the RSS (a lower bound).
* memory, GPU: bytes held by CuPy's memory pool after the step (the pool keeps every block it needed,
  so this is the step's peak), in MB.

Prints a table and writes JSON to benchmarks/results/models_<device>.json (or models_macs.json).
Timings are noisy on shared machines: compare models within one run, never across machines.
"""
import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scratchnet as sn  # noqa: E402  (first: its thread policy must be set before NumPy loads BLAS)
import numpy as np  # noqa: E402,I100
from scratchnet import backend  # noqa: E402
from scratchnet.models import get_model, list_models  # noqa: E402
# benchmarks/timing.py: the shared rules
from timing import at_least, reset_peak, rss_mb, started, write_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


# --------------------------------------------------------------------------- one model (child process)


def measure(name, device, batch, steps, min_size=0):
    sn.manual_seed(0)
    model = get_model(name)
    if model.input_size[1] < min_size:
        return {"model": name, "skipped": f"input {model.input_size} is smaller than {min_size}"}
    if device == "gpu":
        model.to("gpu")
    model.train()
    c, h, w = model.input_size
    data = np.random.default_rng(0).standard_normal((batch, c, h, w)).astype(np.float32)
    x = sn.Tensor(backend.to_device(data, device))
    xp = backend.xp_for(device)
    pool = xp.get_default_memory_pool() if device == "gpu" else None

    def sync():
        if device == "gpu":
            xp.cuda.Device().synchronize()

    times, memory = [], None
    for step in range(steps):
        model.zero_grad()
        gc.collect()
        if pool is not None:
            pool.free_all_blocks()
        before, _ = rss_mb()
        exact_peak = reset_peak()
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        sync()
        cpu_start, start = time.process_time(), time.perf_counter()
        out = model(x)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        loss = sum(o.sum() for o in outs)
        sync()
        forward = time.perf_counter() - start
        start = time.perf_counter()
        loss.backward()
        sync()
        backward = time.perf_counter() - start
        times.append((forward, backward, time.process_time() - cpu_start))
        if step == 0:
            if pool is not None:
                memory = pool.total_bytes() / 2 ** 20
            elif exact_peak:
                memory = rss_mb()[1] - before
            else:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                memory = max(0.0, peak - max(before, maxrss_before))
        del out, outs, loss
    forward, backward, cpu = min(times, key=lambda t: t[0] + t[1])
    return {"model": name, "device": device, "batch": batch, "input_size": list(model.input_size),
            "params": model.num_parameters(), "forward_s": forward, "backward_s": backward,
            "step_s": forward + backward, "step_cpu_s": cpu, "peak_mb": memory,
            "memory_method": "cupy pool" if device == "gpu" else "VmHWM" if exact_peak else "ru_maxrss"}


# --------------------------------------------------------------------------- the zoo (parent process)


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def run_benchmarks(names, devices, batch, steps, timeout, min_size, recorded):
    results = []
    print(f"{'model':18s} {'device':6s} {'params':>12s} {'input':>13s} {'fwd s':>8s} {'bwd s':>8s} "
          f"{'step s':>8s} {'cpu s':>8s} {'peak MB':>9s}", flush=True)
    for device in devices:
        for name in names:
            command = [sys.executable, __file__, "--child", name, "--device", device, "--batch", str(batch),
                       "--steps", str(steps), "--min-size", str(min_size)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
                row = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {
                    "model": name, "device": device, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
            except subprocess.TimeoutExpired:
                row = {"model": name, "device": device, "error": f"timed out after {timeout} s"}
            if "skipped" in row:
                continue
            results.append(row)
            if "error" in row:
                print(f"{name:18s} {device:6s} failed: {row['error']}", flush=True)
            else:
                print(f"{name:18s} {device:6s} {row['params']:12,d} {'x'.join(map(str, row['input_size'])):>13s} "
                      f"{row['forward_s']:8.2f} {row['backward_s']:8.2f} {row['step_s']:8.2f} {row['step_cpu_s']:8.2f} "
                      f"{_fmt(row['peak_mb'], '9.0f')}", flush=True)
            _write(f"models_{'_'.join(devices)}.json", {"batch": batch, "steps": steps, "results": results}, recorded)
    return results


def run_macs(names, recorded):
    """Params and MACs of every model (scratchnet.summary) against torchvision's published GMACs."""
    from scratchnet.summary import summary

    reference = json.loads((ROOT / "tests" / "fixtures" / "torchvision_reference.json").read_text())
    crop = {"efficientnet_b2": (3, 288, 288)}  # torchvision measured B2 at its weights' 288 crop
    rows = []
    print(f"{'model':18s} {'input':>11s} {'params':>12s} {'GMACs':>8s} {'torchvision':>12s}", flush=True)
    for name in names:
        model = get_model(name)
        ref = reference.get(name) if isinstance(reference.get(name), dict) else {}
        same_net = ref.get("num_params") == model.num_parameters()
        size = crop.get(name, model.input_size) if same_net else model.input_size
        result = summary(model, size, print_table=False)
        published = ref.get("macs") / 1e9 if ref.get("macs") and same_net else None
        rows.append({"model": name, "input_size": list(size), "params": result.total_params,
                     "macs": result.total_macs, "torchvision_gmacs": published,
                     "torchvision_params": ref.get("num_params")})
        print(f"{name:18s} {'x'.join(map(str, size)):>11s} {result.total_params:12,d} {result.total_macs / 1e9:8.3f} "
              f"{_fmt(published, '12.3f')}", flush=True)
        _write("models_macs.json", {"results": rows}, recorded)
    return rows


def _write(filename, payload, recorded):
    """After each model: a partial run counts."""
    write_result(RESULTS / filename, {"numpy": np.__version__, **payload}, recorded)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="all", help="comma-separated names (default: every ImageNet-size model)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu", "all"])
    parser.add_argument("--batch", type=at_least(1), default=2)
    parser.add_argument("--steps", type=at_least(1), default=1, help="training steps per model (fastest reported)")
    parser.add_argument("--timeout", type=at_least(1), default=1800, help="seconds per model")
    parser.add_argument("--min-size", type=int, default=224, help="skip models whose native input is smaller")
    parser.add_argument("--macs", action="store_true", help="params and MACs (no timing) for every model")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.device, args.batch, args.steps, args.min_size)))
        return 0
    recorded = started()
    if args.macs:
        names = list_models() if args.models == "all" else args.models.split(",")
        run_macs(names, recorded)
        return 0
    names = list_models() if args.models == "all" else args.models.split(",")
    devices = ["cpu", "gpu"] if args.device == "all" else [args.device]
    if "gpu" in devices and not backend.gpu_available():
        print(f"skipping the GPU: {backend.gpu_status()}", flush=True)
        devices = [d for d in devices if d != "gpu"] or ["cpu"]
    run_benchmarks(names, devices, args.batch, args.steps, args.timeout, args.min_size, recorded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
