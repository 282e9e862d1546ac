"""The autograd layer's own cost per op: tiny tensors, so the arrays' arithmetic is negligible and what is
timed is Function.__call__, the Tensor it makes, and the backward walk.

    python benchmarks/autograd_overhead.py                       # this checkout
    python benchmarks/autograd_overhead.py --baseline ../main    # and another checkout, rounds alternating

Cases (each N = 100,000 ops on 4-element float32 tensors, CPU time of the fastest of --repeat runs):
* ``add, no grad``: ``a + b`` on tensors that do not require grad (inference);
* ``add, recorded``: ``a + b`` with ``a`` requiring grad (a graph is built; the outputs are dropped);
* ``relu, recorded``: ``F.relu(a)`` (an op that keeps a mask for backward);
* ``chain backward``: a chain of N/2 ``(y * c) + c`` ops built, then ``backward()`` (the walk only).

Each checkout runs in its own process with timing.clean_env(); with ``--baseline`` the two alternate
for --rounds rounds and the table gives each case's best time per op and the ratio
(this checkout / baseline: <= 1 means no slower). Writes benchmarks/results/autograd_overhead.json.
"""
import argparse
import json
import os
import sys
from pathlib import Path

# benchmarks/timing.py: the shared rules
from timing import at_least, best_time, child_json, clean_env, started, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
N = 100_000


def child(repeat):
    import scratchnet as sn  # first: its thread policy must be in place before NumPy loads its BLAS
    import numpy as np  # noqa: I100
    from scratchnet.nn import functional as F
    sn.set_num_threads(1)
    a = sn.tensor(np.ones(4, dtype=np.float32), requires_grad=True)
    plain = sn.tensor(np.ones(4, dtype=np.float32))
    b = sn.tensor(np.full(4, 2.0, dtype=np.float32))

    def add_no_grad():
        for _ in range(N):
            plain + b

    def add_recorded():
        for _ in range(N):
            a + b

    def relu_recorded():
        for _ in range(N):
            F.relu(a)

    def chain_backward():
        y = a
        for _ in range(N // 4):
            y = (y * b) + b
        y = y.sum()
        import time
        start = time.process_time()
        y.backward()
        a.grad = None
        return time.process_time() - start

    cases = {"add, no grad": add_no_grad, "add, recorded": add_recorded, "relu, recorded": relu_recorded}
    result = {name: best_time(fn, repeat, cpu_time=True) / N * 1e6 for name, fn in cases.items()}
    chain_backward()  # warm-up
    result["chain backward"] = min(chain_backward() for _ in range(repeat)) / (N // 2) * 1e6
    return result  # microseconds per op


def run(checkout, repeat):
    env = clean_env()
    env["PYTHONPATH"] = str(checkout)
    env["SCRATCHNET_NUM_THREADS"] = "1"
    return child_json([sys.executable, __file__, "--child", "--repeat", str(repeat)], f"the child in {checkout}", env)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to time the same way (e.g. ../main)")
    parser.add_argument("--repeat", type=at_least(1), default=5)
    parser.add_argument("--rounds", type=at_least(1), default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.repeat)))
        return
    recorded = started()
    runs = {"this": [], "baseline": []}
    for _ in range(args.rounds if args.baseline else 1):
        runs["this"].append(run(ROOT, args.repeat))
        if args.baseline:
            runs["baseline"].append(run(args.baseline.resolve(), args.repeat))
    best = {which: {case: min(r[case] for r in rs) for case in rs[0]} for which, rs in runs.items() if rs}
    print(f"load average {os.getloadavg()[0]:.1f}; microseconds of CPU time per op, best of "
          f"{args.repeat} x {len(runs['this'])} rounds")
    print(f"{'case':<18}{'this':>10}" + (f"{'baseline':>10}{'ratio':>8}" if args.baseline else ""))
    for case, value in best["this"].items():
        line = f"{case:<18}{value:>10.2f}"
        if args.baseline:
            line += f"{best['baseline'][case]:>10.2f}{value / best['baseline'][case]:>8.3f}"
        print(line)
    write_result(RESULTS / "autograd_overhead.json", dict(
        unit="microseconds of CPU time per op", best=best, baseline=str(args.baseline) if args.baseline else None),
        recorded)


if __name__ == "__main__":
    main()
