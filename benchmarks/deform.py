"""Deformable convolution on the CPU: F.deform_conv2d against torchvision.ops.deform_conv2d, forward and
forward+backward, each framework in its own process.

    python benchmarks/deform.py                                   # torch side: $SCRATCHNET_TORCH_PYTHON
    python benchmarks/deform.py --torch-python PATH --rounds 5 --repeat 5
    python benchmarks/deform.py --smoke                           # tiny shapes, one round: the plumbing only

Shapes: a ResNet conv4 layer, 3x3 256->256 at 14x14, batch 16 (where DCN puts its deformable
convolutions), with 1 and 4 offset groups, without a mask (v1) and with one (v2). Offsets are
Gaussian with standard deviation 1 pixel (learned offsets are of that order), the mask a sigmoid of a
Gaussian. float32. Forward under no_grad; forward+backward with every input requiring its gradient on
both sides (input, offset, mask, weight, bias: the five gradients). Each number is the best of
--repeat calls after a warm-up; the two children run --rounds times alternately (torch, scratchnet,
torch, ...), each number's minimum over the rounds kept. Both children run with this workplace's
OpenBLAS overrides removed (timing.clean_env) and with their libraries' default threads.
ratio = torch time / scratchnet time (> 1: scratchnet faster). Prints the table and the load average;
writes benchmarks/results/deform_cpu.json. The target (not a test): ratio >= 1.0 on every shape.
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path

# benchmarks/timing.py
from timing import add_torch_python, at_least, best_time, child_json, layer_calls, started, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# name, batch, in-channels, size, out-channels, kernel, stride, padding, offset groups, mask
SHAPES = [
    ("3x3 256->256 @14, 1 offset group", 16, 256, 14, 256, 3, 1, 1, 1, False),
    ("3x3 256->256 @14, 1 offset group, mask", 16, 256, 14, 256, 3, 1, 1, 1, True),
    ("3x3 256->256 @14, 4 offset groups", 16, 256, 14, 256, 3, 1, 1, 4, False),
    ("3x3 256->256 @14, 4 offset groups, mask", 16, 256, 14, 256, 3, 1, 1, 4, True),
]
SMOKE = [("smoke 3x3 8->8 @6, mask", 2, 8, 6, 8, 3, 1, 1, 2, True)]


def inputs(shape):
    """x, offset, mask (or None), weight, bias as float32 NumPy arrays, the same in both children."""
    import numpy as np
    _, n, c, size, c_out, k, s, p, groups, use_mask = shape
    out = (size + 2 * p - k) // s + 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, size, size), dtype=np.float32)
    offset = rng.standard_normal((n, 2 * groups * k * k, out, out), dtype=np.float32)
    mask = 1 / (1 + np.exp(-rng.standard_normal((n, groups * k * k, out, out), dtype=np.float32))) if use_mask else None
    weight = (rng.standard_normal((c_out, c, k, k), dtype=np.float32) * np.float32(0.05))
    bias = rng.standard_normal(c_out, dtype=np.float32)
    return x, offset, mask, weight, bias


def timed_calls(deform_conv2d, no_grad, arrays, stride, padding, output_grad):
    """forward() (under ``no_grad``) and forward_backward() (the five gradients cleared, then computed
    with ``output_grad(y)`` as y's gradient) for one shape, with either framework's deform_conv2d:
    what the CPU and GPU benchmarks time, the same on both sides."""
    x, offset, mask, weight, bias = arrays
    return layer_calls(lambda: deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, mask=mask),
                       no_grad, arrays, output_grad)


# ---------------------------------------------------------------- the children (one framework each)

def child_torch(shapes, repeat):
    import torch
    from torchvision.ops import deform_conv2d
    rows = []
    for shape in shapes:
        name, *_, s, p, _, _ = shape
        arrays = [None if a is None else torch.tensor(a, requires_grad=True) for a in inputs(shape)]
        forward, forward_backward = timed_calls(deform_conv2d, torch.no_grad, arrays, s, p, torch.ones_like)
        rows.append(dict(shape=name, framework="torchvision", threads=torch.get_num_threads(),
                         forward_ms=1e3 * best_time(forward, repeat),
                         forward_backward_ms=1e3 * best_time(forward_backward, repeat)))
    return rows, dict(torch=torch.__version__, torchvision=__import__("torchvision").__version__)


def child_scratchnet(shapes, repeat):
    import scratchnet as sn  # first: its thread policy must be in place before NumPy loads its BLAS
    import scratchnet.functional as F  # noqa: I100
    import numpy as np
    rows = []
    for shape in shapes:
        name, *_, s, p, _, _ = shape
        arrays = [None if a is None else sn.tensor(a, requires_grad=True) for a in inputs(shape)]
        x, offset, mask, weight, bias = arrays
        out = F.deform_conv2d(x, offset, weight, bias, stride=s, padding=p, mask=mask)
        gy = np.ones(out.shape, dtype=np.float32)
        forward, forward_backward = timed_calls(F.deform_conv2d, sn.no_grad, arrays, s, p, lambda y: gy)
        rows.append(dict(shape=name, framework="scratchnet", route=out.creator.route,
                         forward_ms=1e3 * best_time(forward, repeat),
                         forward_backward_ms=1e3 * best_time(forward_backward, repeat)))
    return rows, dict(numpy=np.__version__)


# ---------------------------------------------------------------- the parent

def run_child(framework, python, args):
    command = [str(python), __file__, "--child", framework, "--repeat", str(args.repeat)]
    command += ["--smoke"] if args.smoke else []
    return child_json(command, f"the {framework} child ({python})")


def keep_best(best, rows):
    for row in rows:
        if row["shape"] not in best:
            best[row["shape"]] = dict(row)
        else:
            for field in ("forward_ms", "forward_backward_ms"):
                best[row["shape"]][field] = min(best[row["shape"]][field], row[field])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=at_least(1), default=3, help="timed calls per number (best kept)")
    parser.add_argument("--rounds", type=at_least(1), default=3, help="the two children run alternately this often")
    add_torch_python(parser, needs="torch and torchvision")
    parser.add_argument("--smoke", action="store_true", help="one tiny shape, one round (checks the plumbing)")
    parser.add_argument("--out", type=Path, default=RESULTS / "deform_cpu.json")
    parser.add_argument("--child", choices=["torch", "scratchnet"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shapes = SMOKE if args.smoke else SHAPES
    if args.child:
        rows, versions = child_torch(shapes, args.repeat) if args.child == "torch" else \
            child_scratchnet(shapes, args.repeat)
        print(json.dumps(dict(rows=rows, versions=versions)))
        return 0

    python = args.torch_python
    recorded, load_before = started(), os.getloadavg()
    theirs, ours, versions = {}, {}, {}
    for _ in range(1 if args.smoke else args.rounds):
        for framework, best, interpreter in (("torch", theirs, python), ("scratchnet", ours, sys.executable)):
            result = run_child(framework, interpreter, args)
            keep_best(best, result["rows"])
            versions.update(result["versions"])
    load_after = os.getloadavg()

    rows = []
    for name, row in ours.items():
        other = theirs[name]
        rows.append(dict(row, torch_forward_ms=other["forward_ms"],
                         torch_forward_backward_ms=other["forward_backward_ms"], torch_threads=other["threads"],
                         forward_ratio=other["forward_ms"] / row["forward_ms"],
                         forward_backward_ratio=other["forward_backward_ms"] / row["forward_backward_ms"]))
    head = f"{'shape':42} {'fwd ms':>8} {'tv fwd':>8} {'ratio':>6} {'f+b ms':>8} {'tv f+b':>8} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['shape']:42} {r['forward_ms']:8.1f} {r['torch_forward_ms']:8.1f} {r['forward_ratio']:6.2f} "
              f"{r['forward_backward_ms']:8.1f} {r['torch_forward_backward_ms']:8.1f} "
              f"{r['forward_backward_ratio']:6.2f}")
    lowest = min(r["forward_backward_ratio"] for r in rows)
    geomean = math.exp(sum(math.log(r["forward_backward_ratio"]) for r in rows) / len(rows))
    print(f"\nforward+backward ratio (torchvision / scratchnet): geometric mean {geomean:.2f}, lowest {lowest:.2f} "
          f"(target >= 1.0 on every shape: {'met' if lowest >= 1 else 'not met'})")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    write_result(args.out, dict(
        rows=rows, geomean_forward_backward_ratio=geomean, lowest_forward_backward_ratio=lowest,
        repeat=args.repeat, rounds=1 if args.smoke else args.rounds, smoke=args.smoke, dtype="float32",
        versions=versions, torch_python=str(python)), recorded)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
