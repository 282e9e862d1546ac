"""GPU convolution benchmark: the raw CUDA kernels vs the im2col route (CuPy + cuBLAS) vs PyTorch's cuDNN.

    python benchmarks/gpu_conv.py                          # on a CUDA machine (tools/gpu_check.sh runs it)
    python benchmarks/gpu_conv.py --device cpu --smoke     # the plumbing only: tiny shapes, on the CPU

Layers: benchmarks/conv.py's LAYERS (the CPU benchmark's shapes) at their
batch and at 4x it. Routes, through ``F.conv2d(conv_algo=...)`` as a user
calls them: the raw CUDA kernels ('direct' for dense and grouped layers, the
depthwise kernels for depthwise ones) and 'im2col' (the im2col/col2im kernels
+ one batched cuBLAS GEMM); PyTorch's F.conv2d (cuDNN, benchmark mode) is timed
in its own process on the same shapes. float32; forward (no graph) and
forward+backward (input and weight gradients); each the best and the median of
--repeat runs after 2 warm-up runs, timed with CUDA events on the GPU.
Prints a table, the targets (direct dense 3x3 within 2x of im2col, direct
depthwise faster than im2col) and writes benchmarks/results/gpu_conv.json.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from conv import LAYERS  # noqa: E402  (the CPU benchmark's layer shapes: one list for both)
from timing import at_least  # noqa: E402  (benchmarks/timing.py: the command lines' counts)

SCALES = (1, 4)


def layers(smoke):
    """(label, name, N, C, size, C_out, kernel, stride, padding, groups) for every benchmarked shape."""
    for name, batch, c, size, c_out, k, s, p, g in LAYERS:
        depthwise = g == c and g > 1
        if smoke and not ("3x3" in name and (depthwise or name.startswith("VGG"))):
            continue  # smoke: one dense 3x3 and one depthwise layer ...
        if smoke:  # ... small enough for the CPU in a second
            c, c_out, size, batch = min(c, 8), min(c_out, 8), min(size, 16), 2
            g = c if depthwise else 1
        for scale in (1,) if smoke else SCALES:
            n = batch * scale
            yield f"{name} N={n}", name, n, c, size, c_out, k, s, p, g


def flops(n, c, size, c_out, k, s, p, g):
    out = (size + 2 * p - k) // s + 1
    return 2 * n * c_out * out * out * (c // g) * k * k  # forward; forward+backward is 3x


def result_row(label, name, n, route, forward, forward_backward, forward_flops):
    """One table row; forward and forward_backward are (best, median) seconds."""
    return dict(layer=label, name=name, N=n, route=route, fwd_ms=1e3 * forward[0], fwd_median_ms=1e3 * forward[1],
                fb_ms=1e3 * forward_backward[0], fb_median_ms=1e3 * forward_backward[1], gflop=forward_flops / 1e9)


def timer(device, repeat, events="cupy"):
    """time(fn) -> (best, median) seconds: CUDA events after a synchronize on the GPU (CuPy's, or torch's
    in the torch process: events="torch"), perf_counter on the CPU."""
    if device == "gpu" and events == "torch":
        import torch

        def once(fn):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop) / 1e3
    elif device == "gpu":
        import cupy as cp

        def once(fn):
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            cp.cuda.Device().synchronize()
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            return cp.cuda.get_elapsed_time(start, stop) / 1e3
    else:
        def once(fn):
            started = time.perf_counter()
            fn()
            return time.perf_counter() - started

    def time_it(fn):
        fn(), fn()  # warm-up: NVRTC compiles, memory pool, cuDNN's algorithm search
        runs = [once(fn) for _ in range(repeat)]
        return min(runs), statistics.median(runs)
    return time_it


# --------------------------------------------------------------------------- scratchnet (this process)


def run_scratchnet(args):
    import scratchnet as sn
    import scratchnet.functional as F
    from scratchnet import backend
    from scratchnet.functional import conv

    depthwise_algo = "depthwise" if "depthwise" in conv.CONV_ALGOS else "direct"
    dense_algo = "direct" if args.device == "gpu" else "im2col"  # the CPU has no direct dense kernel
    time_it = timer(args.device, args.repeat)
    rng = np.random.default_rng(0)
    rows = []
    for label, name, n, c, size, c_out, k, s, p, g in layers(args.smoke):
        x_host = rng.standard_normal((n, c, size, size), dtype=np.float32)
        w_host = rng.standard_normal((c_out, c // g, k, k), dtype=np.float32) * 0.1
        x = sn.tensor(x_host, device=args.device)
        w = sn.tensor(w_host, device=args.device)
        xg = sn.tensor(x_host, requires_grad=True, device=args.device)
        wg = sn.tensor(w_host, requires_grad=True, device=args.device)
        routes = (depthwise_algo if g == c and g > 1 else dense_algo, "im2col")
        outputs = {}
        for algo in dict.fromkeys(routes):
            def forward():
                with sn.no_grad():
                    return F.conv2d(x, w, stride=s, padding=p, groups=g, conv_algo=algo)

            def forward_backward():
                xg.grad = wg.grad = None
                y = F.conv2d(xg, wg, stride=s, padding=p, groups=g, conv_algo=algo)
                y.backward(gy)
            outputs[algo] = backend.to_numpy(forward().data)
            gy = backend.to_device(np.ones(outputs[algo].shape, np.float32), args.device)
            rows.append(result_row(label, name, n, algo, time_it(forward), time_it(forward_backward),
                                   flops(n, c, size, c_out, k, s, p, g)))
        scale = np.abs(outputs["im2col"]).max()
        for row in rows[-len(outputs):]:  # the routes agree (the tests check them against torch)
            row["max_rel_diff_vs_im2col"] = float(np.abs(outputs[row["route"]] - outputs["im2col"]).max() / scale)
    return rows


# --------------------------------------------------------------------------- PyTorch (its own process)


def run_torch(args):
    import torch
    import torch.nn.functional as TF

    device = "cuda" if args.device == "gpu" else "cpu"
    torch.backends.cudnn.benchmark = True
    time_it = timer(args.device, args.repeat, events="torch")
    rows = []
    for label, name, n, c, size, c_out, k, s, p, g in layers(args.smoke):
        x = torch.randn(n, c, size, size, device=device)
        w = torch.randn(c_out, c // g, k, k, device=device) * 0.1
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()

        def forward():
            with torch.no_grad():
                return TF.conv2d(x, w, stride=s, padding=p, groups=g)
        gy = torch.ones_like(forward())

        def forward_backward():
            xg.grad = wg.grad = None
            TF.conv2d(xg, wg, stride=s, padding=p, groups=g).backward(gy)
        rows.append(result_row(label, name, n, "torch", time_it(forward), time_it(forward_backward),
                               flops(n, c, size, c_out, k, s, p, g)))
    return rows, {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version() if device == "cuda" else None}


# --------------------------------------------------------------------------- the torch process and the result file
# (gpu_deform.py runs and writes the same way)


def parse_options(argv, description, json_name, smoke_help):
    """The GPU benchmarks' options: --device, --repeat, --smoke, --json (default results/<json_name>) and
    the internal --torch-worker."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--repeat", type=at_least(1), default=5)
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    parser.add_argument("--json", default=str(HERE / "results" / json_name))
    parser.add_argument("--torch-worker", metavar="JSON", help=argparse.SUPPRESS)  # internal: the torch process
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeat = min(args.repeat, 2)
    return args


def run_torch_process(script, args):
    """Run ``script`` again as its torch process (``--torch-worker JSON``: torch never shares a process
    with CuPy) on the same options; (its {"rows", "versions"} or None when it failed, its exit code)."""
    worker_json = Path(args.json).with_suffix(".torch.tmp.json")
    command = [sys.executable, str(script), "--device", args.device, "--repeat", str(args.repeat),
               "--torch-worker", str(worker_json)] + (["--smoke"] if args.smoke else [])
    done = subprocess.run(command)
    if done.returncode != 0:
        return None, done.returncode
    part = json.loads(worker_json.read_text())
    worker_json.unlink()
    return part, 0


def torch_worker(args, run):
    """The torch process's whole job: ``run(args)``'s rows and versions into the --torch-worker JSON."""
    rows, versions = run(args)
    Path(args.torch_worker).write_text(json.dumps({"rows": rows, "versions": versions}))
    return 0


def write_result(args, started, load_before, **fields):
    """Write --json: the device and its GPU's name, the options, the timer, the machine and its load, the
    seconds since ``started``, and ``fields`` (the rows, the other framework's versions ...)."""
    from scratchnet import backend
    device_name = None
    if args.device == "gpu":
        device_name = backend.cp.cuda.runtime.getDeviceProperties(0)["name"]
        device_name = device_name.decode() if isinstance(device_name, bytes) else device_name
    result = dict(device=args.device, gpu=device_name, smoke=args.smoke, repeat=args.repeat, dtype="float32",
                  timer="CUDA events" if args.device == "gpu" else "perf_counter",
                  machine=dict(cpus=os.cpu_count(), python=platform.python_version(),
                               load_average_before=load_before, load_average_after=os.getloadavg()),
                  seconds=round(time.time() - started, 1), **fields)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.json}")


# --------------------------------------------------------------------------- the report


def targets(rows):
    """The issue's targets, per layer: direct dense 3x3 within 2x of im2col; direct depthwise faster."""
    by = {(r["layer"], r["route"]): r for r in rows}
    checks = []
    for r in rows:
        if r["route"] in ("im2col", "torch"):
            continue
        base = by.get((r["layer"], "im2col"))
        if base is None:
            continue
        ratio = r["fb_ms"] / base["fb_ms"]
        if "depthwise" in r["name"]:
            checks.append(dict(layer=r["layer"], target="depthwise: direct faster than im2col (f+b)",
                               ratio=ratio, met=ratio < 1))
        elif "3x3" in r["name"]:
            checks.append(dict(layer=r["layer"], target="dense 3x3: direct within 2x of im2col (f+b)",
                               ratio=ratio, met=ratio <= 2))
    return checks


def benchmark_main(argv, script, description, json_name, smoke_help, run_scratchnet, run_torch, report):
    """A GPU benchmark's main: its options; as the torch process, ``run_torch(args)``'s rows into the worker
    JSON; otherwise ``run_scratchnet(args)``'s rows, the torch process run on the same options, the table
    ``report(args, rows, torch_part)`` prints and --json written with the fields it returns. Exit 1 when the
    torch process failed."""
    args = parse_options(argv, description, json_name, smoke_help)
    if args.torch_worker:
        return torch_worker(args, run_torch)
    started, load_before = time.time(), os.getloadavg()
    rows = run_scratchnet(args)
    torch_part, exit_code = run_torch_process(script, args)
    if torch_part is None:
        print(f"the PyTorch process failed (exit {exit_code})")
    write_result(args, started, load_before, **report(args, rows, torch_part))
    return 0 if exit_code == 0 else 1


def report(args, rows, torch_part):
    """Print the table (each route against im2col and cuDNN) and the targets; the result's fields."""
    torch_versions = None
    if torch_part is not None:
        rows += torch_part["rows"]
        torch_versions = torch_part["versions"]
    else:
        print("no cuDNN column")

    print(f"\n{'layer':<36} {'route':<9} {'fwd ms':>8} {'f+b ms':>8} {'fwd TF/s':>8} {'f+b TF/s':>8} "
          f"{'f+b/im2col':>10} {'f+b/torch':>9}")
    by = {(r["layer"], r["route"]): r for r in rows}
    for label, *_ in layers(args.smoke):
        for route in [r["route"] for r in rows if r["layer"] == label]:
            r = by[(label, route)]
            vs = [by.get((label, other)) for other in ("im2col", "torch")]
            ratios = [f"{r['fb_ms'] / o['fb_ms']:.2f}" if o else "-" for o in vs]
            print(f"{label:<36} {route:<9} {r['fwd_ms']:8.3f} {r['fb_ms']:8.3f} {r['gflop'] / r['fwd_ms']:8.2f} "
                  f"{3 * r['gflop'] / r['fb_ms']:8.2f} {ratios[0]:>10} {ratios[1]:>9}")
    checks = targets(rows)
    print()
    for check in checks:
        verdict = "met    " if check["met"] else "NOT met"
        print(f"{verdict} {check['target']}: {check['layer']} ratio {check['ratio']:.2f}")
    return dict(torch=torch_versions, targets=checks, rows=rows)


def main(argv=None):
    return benchmark_main(argv, __file__, __doc__.split("\n\n")[0], "gpu_conv.json",
                          "tiny shapes, one batch size (checks the plumbing)", run_scratchnet, run_torch, report)


if __name__ == "__main__":
    sys.exit(main())
