"""Convolution benchmark: every conv2d route against torch.nn.functional.conv2d, on layers of the zoo.

    python benchmarks/conv.py                 # all routes, every layer of LAYERS (a few minutes on 2 cores)
    python benchmarks/conv.py --only vgg --routes auto,winograd,im2col --repeat 5
    python benchmarks/conv.py --routes auto --threads 1 --cpu-time   # one thread each, CPU time (a busy machine)

LAYERS holds a layer for each of 'auto''s CPU rules (scratchnet/functional/conv_routes.py's AUTO), so
that every rule's route is timed against the im2col route and torch on a layer it picks (docs/kernels.md
renders them under the rules), and the zoo's small im2col layer, LeNet-5's C3, beside AlexNet's large
one. For every layer and every route that handles it (the routes' table, plus 'auto') it times the
forward (under no_grad) and the forward+backward, float32, best of --repeat after a warm-up. torch and
scratchnet each run in their OWN subprocess (torch is never imported where scratchnet is timed),
--rounds times alternately, keeping each number's best; both children run with this workplace's
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE overrides removed from their environment, and with their libraries'
default thread settings (scratchnet's policy is sn.set_num_threads's default) or --threads N on both.
The PyTorch side runs under --torch-python (default: $SCRATCHNET_TORCH_PYTHON, else this Python:
benchmarks/timing.py's torch_python). Fairness: on both sides the input and the weight require grad and
there is no bias, so the backward computes both the input and the weight gradient.

ratio = torch time / scratchnet time (higher is better; > 1: scratchnet is faster). The summary
is the geometric mean over every layer timed of 'auto' (what nn.Conv2d uses), with their number. "peak MB"
is tracemalloc's peak during one forward+backward (NumPy's buffers); the row 'im2col-unchunked' is
the im2col route with its whole batch in one column buffer (what the im2col rule's chunks are
measured against).
Prints the table and the machine's load average, writes benchmarks/results/conv_cpu.json.
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

# benchmarks/timing.py
from timing import OVERRIDES, add_torch_python, at_least, best_time, clean_env, layer_calls, started, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# name, batch, in-channels, size, out-channels, kernel, stride, padding, groups (issue 9)
LAYERS = [
    ("LeNet-5 C1 5x5 1->6 @32", 64, 1, 32, 6, 5, 1, 0, 1),  # a single-channel input: the depthwise route
    ("LeNet-5 C3 5x5 6->16 @14", 64, 6, 14, 16, 5, 1, 0, 1),  # im2col on a small layer: its columns kept
    ("LeNet-5 C5 5x5 16->120 @5", 64, 16, 5, 120, 5, 1, 0, 1),  # one window, the whole input: the window route
    ("AlexNet conv1 11x11/4 3->96 @227", 16, 3, 227, 96, 11, 4, 0, 1),
    ("VGG 3x3 64->64 @56", 8, 64, 56, 64, 3, 1, 1, 1),
    ("ResNet 3x3 256->256 @14", 32, 256, 14, 256, 3, 1, 1, 1),
    ("ResNet 1x1 256->64 @56", 16, 256, 56, 64, 1, 1, 0, 1),
    ("MobileNet depthwise 3x3 512 @14", 32, 512, 14, 512, 3, 1, 1, 512),
    ("ResNet-20 3x3 16->16 @32", 32, 16, 32, 16, 3, 1, 1, 1),
]


def inputs(layer):
    import numpy as np
    _, n, c, size, co, k, _, _, g = layer
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, c, size, size), dtype=np.float32),
            (rng.standard_normal((co, c // g, k, k), dtype=np.float32) * 0.05).astype(np.float32))


# ---------------------------------------------------------------- the children (one framework each)

def child_torch(layers, repeat, threads=0, cpu_time=False):
    import torch
    import torch.nn.functional as TF
    if threads:
        torch.set_num_threads(threads)
    rows = []
    for layer in layers:
        name, *_, s, p, g = layer
        x, w = (torch.tensor(a, requires_grad=True) for a in inputs(layer))

        def forward():
            with torch.no_grad():
                TF.conv2d(x, w, stride=s, padding=p, groups=g)

        def forward_backward():
            x.grad = w.grad = None
            y = TF.conv2d(x, w, stride=s, padding=p, groups=g)
            y.backward(torch.ones_like(y))

        rows.append(dict(layer=name, route="torch", threads=torch.get_num_threads(), version=torch.__version__,
                         forward_ms=1e3 * best_time(forward, repeat, cpu_time),
                         forward_backward_ms=1e3 * best_time(forward_backward, repeat, cpu_time)))
    return rows


def child_scratchnet(layers, repeat, routes, threads=0, cpu_time=False):
    import tracemalloc

    import scratchnet as sn  # first: its thread policy must be in place before NumPy loads its BLAS
    import scratchnet.functional as F  # noqa: I100
    import numpy as np
    from scratchnet.functional import conv_routes as R
    if threads:
        sn.set_num_threads(threads)

    rows = []
    for layer in layers:
        name, n, c, size, co, k, s, p, g = layer
        x_data, w_data = inputs(layer)
        out = R.conv_output_size(size, k, s, p)
        call = R.Call("cpu", np.dtype(np.float32), x_data.shape, w_data.shape,
                      R.Geometry((s, s), (p, p), (1, 1), g, (out, out)))
        auto = R.choose_for("auto", call)
        names = [r for r in routes if r in ("auto", "im2col-unchunked") or (r in R.ROUTES and R.fits(r, call))]
        for route in names:
            algo, chunk = ("im2col", 2**62) if route == "im2col-unchunked" else (route, R.THREAD_COLUMN_BYTES)
            saved, R.THREAD_COLUMN_BYTES = R.THREAD_COLUMN_BYTES, chunk
            x, w = sn.tensor(x_data, requires_grad=True), sn.tensor(w_data, requires_grad=True)
            gy = np.ones((n, co, out, out), dtype=np.float32)
            forward, forward_backward = layer_calls(
                lambda: F.conv2d(x, w, stride=s, padding=p, groups=g, conv_algo=algo), sn.no_grad, (x, w), lambda y: gy)
            row = dict(layer=name, route=route, picked=auto if route == "auto" else algo, threads=sn.get_num_threads(),
                       forward_ms=1e3 * best_time(forward, repeat, cpu_time),
                       forward_backward_ms=1e3 * best_time(forward_backward, repeat, cpu_time))
            tracemalloc.start()
            forward_backward()
            row["peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            R.THREAD_COLUMN_BYTES = saved
            rows.append(row)
    return rows


# ---------------------------------------------------------------- the parent

def run_child(framework, args):
    env = clean_env()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    python = args.torch_python if framework == "torch" else sys.executable
    command = [str(python), __file__, "--child", framework, "--repeat", str(args.repeat),
               "--only", args.only, "--routes", args.routes, "--threads", str(args.threads)]
    if args.cpu_time:
        command.append("--cpu-time")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"the {framework} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def keep_best(best, rows):
    for row in rows:
        key = (row["layer"], row["route"])
        if key not in best:
            best[key] = row
        else:
            for field in ("forward_ms", "forward_backward_ms"):
                best[key][field] = min(best[key][field], row[field])
            if "peak_mb" in row:
                best[key]["peak_mb"] = min(best[key]["peak_mb"], row["peak_mb"])


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=at_least(1), default=3, help="timed calls per number (best kept)")
    parser.add_argument("--rounds", type=at_least(1), default=2,
                        help="torch/scratchnet children run alternately this often")
    parser.add_argument("--only", default="", help="only the layers whose name contains this text (any case)")
    parser.add_argument("--routes", default="auto,reference,im2col,im2col-unchunked,gemm1x1,window,winograd,depthwise",
                        help="comma-separated routes to time (each where it handles the layer)")
    parser.add_argument("--threads", type=at_least(0), default=0,
                        help="both sides' thread count (default: each one's own)")
    parser.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time (a busy machine)")
    add_torch_python(parser)
    parser.add_argument("--out", type=Path, default=RESULTS / "conv_cpu.json")
    parser.add_argument("--child", choices=["torch", "scratchnet"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    layers = [layer for layer in LAYERS if args.only.lower() in layer[0].lower()]
    if args.child:
        rows = child_torch(layers, args.repeat, args.threads, args.cpu_time) if args.child == "torch" else \
            child_scratchnet(layers, args.repeat, args.routes.split(","), args.threads, args.cpu_time)
        print(json.dumps(rows))
        return 0

    recorded, load_before = started(), os.getloadavg()
    torch_best, ours_best = {}, {}
    for _ in range(args.rounds):
        keep_best(torch_best, run_child("torch", args))
        keep_best(ours_best, run_child("scratchnet", args))
    load_after = os.getloadavg()

    rows = []
    for (layer, route), row in ours_best.items():
        theirs = torch_best[(layer, "torch")]
        row = dict(row, torch_forward_ms=theirs["forward_ms"],
                   torch_forward_backward_ms=theirs["forward_backward_ms"])
        row["forward_ratio"] = theirs["forward_ms"] / row["forward_ms"]
        row["forward_backward_ratio"] = theirs["forward_backward_ms"] / row["forward_backward_ms"]
        rows.append(row)
    head = (f"{'layer':34} {'route':17} {'fwd ms':>8} {'torch':>8} {'ratio':>6} {'f+b ms':>8} {'torch':>8} "
            f"{'ratio':>6} {'peak MB':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        route = r["route"] + (f" ({r['picked']})" if r["route"] == "auto" else "")
        print(f"{r['layer']:34} {route:17} {r['forward_ms']:8.1f} {r['torch_forward_ms']:8.1f} "
              f"{r['forward_ratio']:6.2f} {r['forward_backward_ms']:8.1f} {r['torch_forward_backward_ms']:8.1f} "
              f"{r['forward_backward_ratio']:6.2f} {r['peak_mb']:8.1f}")
    auto = [r for r in rows if r["route"] == "auto"]
    summary = dict(geomean_forward_ratio=geomean([r["forward_ratio"] for r in auto]),
                   geomean_forward_backward_ratio=geomean([r["forward_backward_ratio"] for r in auto]),
                   lowest_forward_backward_ratio=min((r["forward_backward_ratio"] for r in auto), default=None),
                   layers=len(auto))
    if auto:
        print(f"\nauto over {len(auto)} layers: geometric-mean ratio (torch/scratchnet) forward "
              f"{summary['geomean_forward_ratio']:.2f}, forward+backward "
              f"{summary['geomean_forward_backward_ratio']:.2f} (lowest {summary['lowest_forward_backward_ratio']:.2f})")
    else:
        print("\n(no 'auto' rows: add auto to --routes for the summary)")
    torch_side = next(iter(torch_best.values()))
    torch_threads = torch_side["threads"]
    print(f"load average (1, 5, 15 min): before {tuple(round(v, 2) for v in load_before)}, "
          f"after {tuple(round(v, 2) for v in load_after)}; torch {torch_side['version']} ({args.torch_python}), "
          f"threads {torch_threads}; {'CPU' if args.cpu_time else 'wall'} time")
    meta = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), dtype="float32",
                repeat=args.repeat, rounds=args.rounds, load_before=load_before, load_after=load_after,
                unset=list(OVERRIDES), requires_grad="input and weight, no bias, on both sides",
                torch_threads=torch_threads, torch_version=torch_side["version"],
                torch_python=str(args.torch_python), clock="cpu" if args.cpu_time else "wall")
    write_result(args.out, dict(meta=meta, summary=summary, rows=rows), recorded)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
