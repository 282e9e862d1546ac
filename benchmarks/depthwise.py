"""Depthwise convolution: the Numba kernels (kernels/cpu_depthwise.py, through kernels/cpu.py) against torch, on MobileNet and EfficientNet shapes.

    python benchmarks/depthwise.py                       # both libraries' default threads, wall time
    python benchmarks/depthwise.py --threads 1 --cpu-time   # one thread, process CPU time (steadier on a busy machine)

For each layer it times scratchnet's three kernels (forward, input gradient, weight gradient;
"f+b" is their sum: what conv2d's depthwise route runs, without autograd's bookkeeping) and
torch.nn.functional.conv2d(groups=C) forward (no_grad) and forward+backward (input and weight
gradients), float32, best of --repeat after two warm-up calls. Each library runs in its own
subprocess (torch is never imported where scratchnet is timed; torch under --torch-python, by default
$SCRATCHNET_TORCH_PYTHON, else this Python: timing.torch_python), --rounds times alternately, each number's
best kept, with this workplace's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE overrides removed from its
environment. --threads sets
sn.set_num_threads / torch.set_num_threads in the children (default: each library's own).
ratio = torch time / scratchnet time (> 1: scratchnet is faster). Prints the table and the load
average, writes benchmarks/results/depthwise_cpu.json. benchmarks/conv.py times the same kernels
as conv2d's 'depthwise' route on the issue's MobileNet layer.
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path

# benchmarks/timing.py
from timing import add_torch_python, at_least, best_time, child_json, layer_calls, started, write_result

RESULTS = Path(__file__).resolve().parent / "results"

# name, batch, channels, size, multiplier, kernel, stride, padding, dilation. A table of the same form as
# benchmarks/conv.py's LAYERS but its own columns and layers: each benchmark's data, nothing to share.
LAYERS = [
    ("MobileNet 3x3 512 @14", 32, 512, 14, 1, 3, 1, 1, 1),
    ("MobileNet 3x3 256 @28", 32, 256, 28, 1, 3, 1, 1, 1),
    ("MobileNet 3x3/2 256 @28", 32, 256, 28, 1, 3, 2, 1, 1),
    ("MobileNet 3x3 32 @112", 16, 32, 112, 1, 3, 1, 1, 1),
    ("EfficientNet 5x5 240 @28", 16, 240, 28, 1, 5, 1, 2, 1),
    ("EfficientNet 5x5/2 240 @28", 16, 240, 28, 1, 5, 2, 2, 1),
    ("multiplier 2, 3x3 64 @28", 16, 64, 28, 2, 3, 1, 1, 1),
    ("dilation 2, 3x3 256 @28", 16, 256, 28, 1, 3, 1, 2, 2),
]


def child(library, repeat, threads, cpu_time):
    """Time one library on every layer; returns {name: {phase: seconds}}."""
    if library != "torch":
        import scratchnet  # noqa: F401 (first: its thread policy must be set before NumPy loads BLAS)
    import numpy as np
    if library == "torch":
        import torch
        import torch.nn.functional as TF
        if threads:
            torch.set_num_threads(threads)
    else:
        import scratchnet as sn
        from scratchnet.kernels import cpu
        if threads:
            sn.set_num_threads(threads)
    out = {"_version": torch.__version__ if library == "torch" else np.__version__}
    for name, n, c, size, mult, k, s, p, d in LAYERS:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, size, size), dtype=np.float32)
        w = rng.standard_normal((c * mult, 1, k, k), dtype=np.float32) * np.float32(0.1)
        oh = (size + 2 * p - d * (k - 1) - 1) // s + 1
        gy = rng.standard_normal((n, c * mult, oh, oh), dtype=np.float32)

        def timed(fn):
            return best_time(fn, repeat, cpu_time, warmups=2)
        if library == "torch":
            xt, wt, gt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True), torch.tensor(gy)
            forward, forward_backward = layer_calls(
                lambda: TF.conv2d(xt, wt, stride=s, padding=p, dilation=d, groups=c), torch.no_grad, (xt, wt), lambda y: gt)
            out[name] = dict(forward=timed(forward), forward_backward=timed(forward_backward))
        else:
            geometry = ((s, s), (p, p), (d, d))
            times = dict(forward=timed(lambda: cpu.depthwise_forward(x, w, *geometry, (oh, oh))),
                         backward_input=timed(lambda: cpu.depthwise_backward_input(gy, w, x.shape, *geometry)),
                         backward_weight=timed(lambda: cpu.depthwise_backward_weight(gy, x, w.shape, *geometry)))
            times["forward_backward"] = sum(times.values())
            out[name] = times
    return out


def keep_best(best, result):
    """Fold one child's {layer: {phase: seconds}} into ``best``, each number's smallest kept."""
    for name, times in result.items():
        if name == "_version":
            best[name] = times
        else:
            best[name] = {phase: min(t, best.get(name, {}).get(phase, t)) for phase, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=at_least(1), default=10, help="timed calls per number (best kept)")
    parser.add_argument("--threads", type=at_least(0), default=0, help="threads for both libraries (0: their defaults)")
    parser.add_argument("--cpu-time", action="store_true", help="time process CPU time instead of wall time")
    parser.add_argument("--rounds", type=at_least(1), default=2,
                        help="scratchnet/torch children run alternately this often")
    add_torch_python(parser)
    parser.add_argument("--out", type=Path, default=RESULTS / "depthwise_cpu.json")
    parser.add_argument("--child", choices=["torch", "scratchnet"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.repeat, args.threads, args.cpu_time)))
        return 0

    recorded, load_before = started(), os.getloadavg()
    results = {"scratchnet": {}, "torch": {}}
    for _ in range(args.rounds):
        for library in ("scratchnet", "torch"):
            python = args.torch_python if library == "torch" else sys.executable
            command = [str(python), __file__, "--child", library, "--repeat", str(args.repeat),
                       "--threads", str(args.threads)] + (["--cpu-time"] if args.cpu_time else [])
            keep_best(results[library], child_json(command, f"the {library} child"))
    load_after = os.getloadavg()
    torch_version = results["torch"].pop("_version")
    results["scratchnet"].pop("_version")

    rows = []
    for name in results["scratchnet"]:
        ours, theirs = results["scratchnet"][name], results["torch"][name]
        rows.append(dict(layer=name, **{f"{k}_ms": v * 1e3 for k, v in ours.items()},
                         torch_forward_ms=theirs["forward"] * 1e3,
                         torch_forward_backward_ms=theirs["forward_backward"] * 1e3,
                         forward_ratio=theirs["forward"] / ours["forward"],
                         forward_backward_ratio=theirs["forward_backward"] / ours["forward_backward"]))
    clock = "process CPU time" if args.cpu_time else "wall time"
    print(f"float32, best of {args.repeat} in each of {args.rounds} alternating round(s), {clock}, threads: "
          f"{args.threads or 'library defaults'}, torch {torch_version} ({args.torch_python})")
    print(f"{'layer':28} {'fwd ms':>7} {'gx ms':>7} {'gw ms':>7} {'f+b ms':>7} {'torch f':>8} {'torch f+b':>9} "
          f"{'fwd ratio':>9} {'f+b ratio':>9}")
    for r in rows:
        print(f"{r['layer']:28} {r['forward_ms']:7.2f} {r['backward_input_ms']:7.2f} {r['backward_weight_ms']:7.2f} "
              f"{r['forward_backward_ms']:7.2f} {r['torch_forward_ms']:8.2f} {r['torch_forward_backward_ms']:9.2f} "
              f"{r['forward_ratio']:9.2f} {r['forward_backward_ratio']:9.2f}")
    geomean = math.exp(sum(math.log(r["forward_backward_ratio"]) for r in rows) / len(rows))
    print(f"\nforward+backward ratio: geometric mean {geomean:.2f}, lowest "
          f"{min(r['forward_backward_ratio'] for r in rows):.2f}")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    write_result(args.out, dict(rows=rows, geomean_forward_backward_ratio=geomean, clock=clock,
                                threads=args.threads, repeat=args.repeat, rounds=args.rounds,
                                torch=torch_version), recorded)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
