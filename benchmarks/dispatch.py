"""The cost of choosing an implementation: per-call CPU time of each kernel-backed op's dispatch.

    python benchmarks/dispatch.py                      # best of 9 rounds of 20,000 calls
    python benchmarks/dispatch.py --calls 5000 --repeat 5

Two measurements per op (relu, batch_norm, max_pool2d, sgd, conv2d):
  choose  the decision alone (kernels/dispatch.py's Op.choose on that op's arrays, as the op calls it:
          a remembered decision, a dict lookup, counted), in nanoseconds per call
  op      the whole op on tiny arrays (forward under no_grad; sgd: one step of one 10-float
          parameter with momentum), in microseconds per call: the decision's share of a real call
Process CPU time, the best round (steadier than wall time on a busy machine). Writes
benchmarks/results/dispatch_cpu.json.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scratchnet as sn  # noqa: E402  (first: its thread policy must be set before NumPy loads BLAS)
import numpy as np  # noqa: E402,I100
import scratchnet.functional as F  # noqa: E402
from scratchnet import nn, optim  # noqa: E402
from scratchnet.functional import conv_routes  # noqa: E402
from scratchnet.kernels import routes  # noqa: E402
from timing import at_least  # noqa: E402  (benchmarks/timing.py: the command lines' counts)

RESULTS = ROOT / "benchmarks" / "results"


def per_call(fn, calls, repeat):
    """Seconds per call of fn: the best of `repeat` rounds of `calls` calls, process CPU time."""
    for _ in range(min(calls, 1000)):  # warm-up: Numba loads, decisions are remembered
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=at_least(1), default=20000)
    parser.add_argument("--repeat", type=at_least(1), default=9)
    parser.add_argument("--out", default=str(RESULTS / "dispatch_cpu.json"))
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    p, g, buf = np.ones(10, np.float32), np.ones(10, np.float32), np.zeros(10, np.float32)
    geo = conv_routes.Geometry((1, 1), (1, 1), (1, 1), 1, (4, 4))
    decisions = {
        "relu": lambda: routes.RELU.choose(x),
        "batch_norm": lambda: routes.BATCH_NORM.choose(x, gamma, beta),
        "max_pool2d": lambda: routes.MAX_POOL2D.choose(x),
        "sgd": lambda: routes.SGD.choose(p, g, buf),
        "conv2d": lambda: conv_routes.choose(None, x, w, geo),
    }
    t = {name: sn.tensor(a) for name, a in dict(x=x, w=w, gamma=gamma, beta=beta).items()}
    mean, var = sn.tensor(np.zeros(3, np.float32)), sn.tensor(np.ones(3, np.float32))
    param = nn.Parameter(p.copy())
    param.grad = g
    opt = optim.SGD([param], lr=0.01, momentum=0.9)
    ops = {
        "relu": lambda: F.relu(t["x"]),
        "batch_norm": lambda: F.batch_norm(t["x"], mean, var, t["gamma"], t["beta"], training=True),
        "max_pool2d": lambda: F.max_pool2d(t["x"], 2),
        "sgd": opt.step,
        "conv2d": lambda: F.conv2d(t["x"], t["w"], padding=1),
    }
    rows = []
    with sn.no_grad():
        for name in decisions:
            rows.append(dict(op=name, choose_ns=round(1e9 * per_call(decisions[name], args.calls, args.repeat)),
                             op_us=round(1e6 * per_call(ops[name], max(1, args.calls // 10), args.repeat), 2)))
    print(f"{'op':<12}{'choose ns':>10}{'whole op us':>13}")
    for row in rows:
        print(f"{row['op']:<12}{row['choose_ns']:>10}{row['op_us']:>13}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"load average {load}")
    out = dict(benchmark="dispatch", calls=args.calls, repeat=args.repeat, load_average=load,
               machine=platform.machine(), python=platform.python_version(), threads=sn.get_num_threads(),
               rows=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
