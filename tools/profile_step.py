"""Where a training step's time goes: every op by type and route, forward and backward, and the rest.

    python tools/profile_step.py resnet50 --batch 8                # the table, sorted by total time
    python tools/profile_step.py densenet121 --batch 8 --detail    # one row per op, route and input shapes
    python tools/profile_step.py efficientnet_b0 --threads 1 --json benchmarks/results/profile_efficientnet_b0.json
    python tools/profile_step.py resnet20 --batch 32 --scaling     # where the second thread's time goes

One step is what benchmarks/zoo.py times: zero_grad, forward (training mode), the model's loss on
random labels, backward, SGD with momentum 0.9. A ``FunctionHook`` (scratchnet/autograd.py) times
every Function's forward (its ``__call__`` inside the hooks: the forward on raw arrays and the
output tensors) and its backward (the Function's ``backward`` alone); the optimizer's step and
zero_grad are timed around their calls. The route is the one the call took: conv2d's
(``function.route``: im2col, winograd, gemm1x1, depthwise, ...), "kernel" or "reference" where an op
has Numba kernels beside its array code, else "-" (array code only).

"outside ops" is the plain step's time (measured without the hook, same process, alternating with
the profiled steps) minus the time inside ops and the optimizer: the framework's Python (module
calls, argument checks, the autograd walk and its gradient accumulation, tensor bookkeeping) and
whatever the hook does not see. The header also gives a plain step's system time (the kernel's, on
every thread: page faults above all) and its minor page faults (docs/core.md, Memory). Times are
the mean over --steps steps after two warm-up steps; on a busy machine the shares are meaningful,
absolute times are not (--threads 1 --cpu-time is steadier).

--scaling profiles the step on one thread and on --threads (default: sn.get_num_threads()) in the same
process, one after the other, and ranks every row by the time it loses to imperfect scaling: its time
on n threads minus its one-thread time / n (a serial op loses (n-1)/n of its time; an op that waits for
a sleeping thread or shares its work unevenly loses the waiting). The losses add up to the step's.
"""
import argparse
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import scratchnet as sn  # noqa: E402  (first: the thread policy)
import numpy as np  # noqa: E402,I100
import scratchnet.functional as F  # noqa: E402
from scratchnet.autograd import FunctionHook  # noqa: E402
from scratchnet.models import list_models  # noqa: E402
from zoo import scratchnet_training  # noqa: E402  (benchmarks/zoo.py: the step it times)


def route_of(function):
    """The route a Function's call took: conv's table name, kernel/reference where the op has kernels."""
    route = getattr(function, "route", None)
    if isinstance(route, str):
        return route
    for flag in ("on_kernels", "kernels"):  # an op with Numba kernels beside its array code
        if flag in vars(function):
            return "kernel" if vars(function)[flag] not in (False, None) else "reference"
    if "plane_argmax" in vars(function):  # max pooling: the kernels return the argmax per plane
        return "kernel" if function.plane_argmax is not None else "reference"
    return "-"


class OpProfiler(FunctionHook):
    """Seconds per (op, route[, input shapes]), forward and backward, summed over the calls it sees."""

    def __init__(self, detail=False, clock=time.perf_counter):
        self.detail, self.clock = detail, clock
        self.forward_s = defaultdict(float)
        self.backward_s = defaultdict(float)
        self.calls = defaultdict(int)
        self._started = {}  # function -> perf_counter at its forward / backward start
        self._key = {}  # function -> its row, fixed at forward (backward frees the function's state)

    def forward_preprocess(self, function, inputs):
        self._started[function] = self.clock()

    def forward_postprocess(self, function, inputs, outputs):
        elapsed = self.clock() - self._started.pop(function)
        key = (function.name, route_of(function))
        if self.detail:
            key += (" ".join("x".join(map(str, t.shape)) for t in inputs),)
        self._key[function] = key
        self.forward_s[key] += elapsed
        self.calls[key] += 1

    def backward_preprocess(self, function, grad_outputs):
        self._started[function] = self.clock()

    def backward_postprocess(self, function, grad_outputs, grad_inputs):
        elapsed = self.clock() - self._started.pop(function)
        key = self._key.pop(function, (function.name, "?"))
        self.backward_s[key] += elapsed


def _data(model, batch):
    """A random input, a random target and the loss: cross-entropy on labels (the model's own loss: GoogLeNet
    adds its auxiliary heads'), or for a detector (4-d output) the squared error to a random output."""
    rng = np.random.default_rng(0)
    x = sn.tensor(rng.standard_normal((batch,) + tuple(model.input_size), dtype=np.float32))
    model.eval()
    with sn.no_grad():
        out_shape = model.main_output(model(x[:1])).shape
    model.train()
    if len(out_shape) > 2:
        return x, sn.tensor(rng.standard_normal((batch,) + out_shape[1:], dtype=np.float32)), F.mse_loss
    return x, sn.tensor(rng.integers(0, out_shape[-1], batch)), model.loss


def profile(name, batch, steps=3, detail=False, threads=None, cpu_time=False):
    """{rows, step_s, ...}: the profile of ``steps`` training steps of model ``name``; ``cpu_time``: the
    process's CPU time (every thread's) instead of wall time."""
    clock = time.process_time if cpu_time else time.perf_counter
    model, optimizer = scratchnet_training(name, threads)
    x, target, loss_fn = _data(model, batch)
    clocks = defaultdict(float)

    def timed(label, fn):
        start = clock()
        fn()
        clocks[label] += clock() - start

    def step():
        timed("zero_grad", optimizer.zero_grad)
        loss = loss_fn(model(x), target)
        loss.backward()
        timed("optimizer step", optimizer.step)

    for _ in range(2):  # warm-up: kernels loaded (or compiled), optimizer state, and the heap grown to a
        step()  # step's size (docs/core.md, Memory), which the first two steps do
    profiler, plain, kernel_s, faults = OpProfiler(detail, clock), [], 0.0, 0
    for _ in range(steps):
        usage, start = resource.getrusage(resource.RUSAGE_SELF), clock()
        step()
        plain.append(clock() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        kernel_s += after.ru_stime - usage.ru_stime
        faults += after.ru_minflt - usage.ru_minflt
        with profiler:
            step()
    clocks = {label: seconds / (2 * steps) for label, seconds in clocks.items()}
    step_s = sum(plain) / steps
    rows = []
    for key in set(profiler.forward_s) | set(profiler.backward_s):
        forward, backward = profiler.forward_s[key] / steps, profiler.backward_s[key] / steps
        rows.append(dict(op=key[0], route=key[1], shapes=key[2] if detail else None,
                         calls=profiler.calls[key] // steps, forward_s=forward, backward_s=backward,
                         total_s=forward + backward))
    rows.sort(key=lambda r: -r["total_s"])
    in_ops = sum(r["total_s"] for r in rows)
    outside = step_s - in_ops - sum(clocks.values())
    return dict(model=name, batch=batch, threads=sn.get_num_threads(), steps=steps, step_s=step_s,
                clock="cpu" if cpu_time else "wall", system_s=kernel_s / steps, page_faults=faults // steps,
                in_ops_s=in_ops, other=clocks, outside_ops_s=outside, rows=rows)


def print_profile(result, top):
    step = result["step_s"]
    print(f"{result['model']}, batch {result['batch']}, {result['threads']} thread(s): step {1e3 * step:.1f} ms "
          f"{'CPU' if result['clock'] == 'cpu' else 'wall'} time (mean of {result['steps']} plain steps); "
          f"in the kernel (system time) {1e3 * result['system_s']:.1f} ms, {result['page_faults']} page faults")
    width = max([len(r["op"]) + len(r["route"]) + 3 for r in result["rows"]] + [24])
    print(f"{'op (route)':{width}s} {'calls':>6s} {'fwd ms':>9s} {'bwd ms':>9s} {'total ms':>9s} {'share':>6s}"
          + ("  input shapes" if result["rows"] and result["rows"][0]["shapes"] is not None else ""))
    rows = result["rows"][:top] if top else result["rows"]
    for r in rows:
        label = f"{r['op']} ({r['route']})"
        print(f"{label:{width}s} {r['calls']:6d} {1e3 * r['forward_s']:9.2f} {1e3 * r['backward_s']:9.2f} "
              f"{1e3 * r['total_s']:9.2f} {100 * r['total_s'] / step:5.1f}%" + (f"  {r['shapes']}" if r["shapes"] else ""))
    if top and len(result["rows"]) > top:
        rest = sum(r["total_s"] for r in result["rows"][top:])
        label = f"... {len(result['rows']) - top} more rows"
        print(f"{label:{width}s} {'':6s} {'':9s} {'':9s} {1e3 * rest:9.2f} {100 * rest / step:5.1f}%")
    for label, seconds in list(result["other"].items()) + [("outside ops (Python, autograd walk)",
                                                             result["outside_ops_s"])]:
        print(f"{label:{width}s} {'':6s} {'':9s} {'':9s} {1e3 * seconds:9.2f} {100 * seconds / step:5.1f}%")
    print(f"{'in ops':{width}s} {'':6s} {'':9s} {'':9s} {1e3 * result['in_ops_s']:9.2f} "
          f"{100 * result['in_ops_s'] / step:5.1f}%")


def scaling(one, many):
    """{rows, step, ...}: each row of profile ``many`` (on n threads) beside the same row of ``one`` (1 thread):
    its speed-up and the time it loses to imperfect scaling, lost = t_n - t_1 / n, largest loss first. The
    optimizer's step, zero_grad and the time outside ops are rows too; a row only one profile has counts 0
    in the other."""
    n = many["threads"]

    def timed(result):
        rows = {(r["op"], r["route"], r["shapes"]): (r["calls"], r["total_s"]) for r in result["rows"]}
        rows.update({(label, "", None): (0, seconds) for label, seconds in result["other"].items()})
        rows[("outside ops (Python, autograd walk)", "", None)] = (0, result["outside_ops_s"])
        return rows

    first, second = timed(one), timed(many)
    rows = []
    for key in first.keys() | second.keys():
        calls, t1 = first.get(key, (0, 0.0))
        tn = second.get(key, (calls, 0.0))[1]
        rows.append(dict(op=key[0], route=key[1], shapes=key[2], calls=calls, one_s=t1, many_s=tn,
                         speedup=t1 / tn if tn > 0 else None, lost_s=tn - t1 / n))
    rows.sort(key=lambda r: -r["lost_s"])
    return dict(model=many["model"], batch=many["batch"], threads=n, clock=many["clock"], steps=many["steps"],
                one_step_s=one["step_s"], many_step_s=many["step_s"], lost_s=many["step_s"] - one["step_s"] / n,
                rows=rows)


def print_scaling(result, top):
    n, lost = result["threads"], result["lost_s"]
    print(f"{result['model']}, batch {result['batch']}: step {1e3 * result['one_step_s']:.1f} ms on 1 thread, "
          f"{1e3 * result['many_step_s']:.1f} ms on {n} ({result['one_step_s'] / result['many_step_s']:.2f}x of "
          f"{n}); {1e3 * lost:.1f} ms lost to scaling ({'CPU' if result['clock'] == 'cpu' else 'wall'} time, "
          f"mean of {result['steps']} plain steps each)")
    labels = [f"{r['op']} ({r['route']})" if r["route"] else r["op"] for r in result["rows"]]
    width = max([len(label) for label in labels] + [24])
    print(f"{'op (route)':{width}s} {'calls':>6s} {'1 thread ms':>12s} {f'{n} threads ms':>13s} {'speed-up':>9s} "
          f"{'lost ms':>8s} {'of lost':>8s}" + ("  input shapes" if any(r["shapes"] for r in result["rows"]) else ""))
    shown = result["rows"][:top] if top else result["rows"]
    for label, r in zip(labels, shown):
        speedup = f"{r['speedup']:9.2f}" if r["speedup"] is not None else f"{'-':>9s}"
        share = f"{100 * r['lost_s'] / lost:7.1f}%" if lost > 0 else f"{'-':>8s}"
        print(f"{label:{width}s} {r['calls']:6d} {1e3 * r['one_s']:12.2f} {1e3 * r['many_s']:13.2f} {speedup} "
              f"{1e3 * r['lost_s']:8.2f} {share}" + (f"  {r['shapes']}" if r["shapes"] else ""))
    if top and len(result["rows"]) > top:
        rest = result["rows"][top:]
        label = f"... {len(rest)} more rows"
        print(f"{label:{width}s} {'':6s} {1e3 * sum(r['one_s'] for r in rest):12.2f} "
              f"{1e3 * sum(r['many_s'] for r in rest):13.2f} {'':9s} {1e3 * sum(r['lost_s'] for r in rest):8.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a registered model name (python -m scratchnet.summary --list)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (and as many plain ones), after a warm-up")
    parser.add_argument("--threads", type=int, help="BLAS and Numba threads (default: sn.get_num_threads())")
    parser.add_argument("--cpu-time", action="store_true", help="process CPU time (steadier on a busy machine)")
    parser.add_argument("--detail", action="store_true", help="one row per op, route and input shapes")
    parser.add_argument("--top", type=int, default=0, help="print only the first N rows (0: all)")
    parser.add_argument("--json", type=Path, help="also write the profile to this JSON file")
    parser.add_argument("--scaling", action="store_true",
                        help="profile on 1 thread and on --threads, and rank the ops by the time they lose to scaling")
    args = parser.parse_args(argv)
    if args.model not in list_models():
        parser.error(f"unknown model {args.model!r}; one of: {', '.join(list_models())}")
    for flag in ("batch", "steps", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be at least 1, got {value}")
    if args.top < 0:
        parser.error(f"--top must be 0 (all rows) or more, got {args.top}")
    if args.scaling:
        threads = args.threads or sn.get_num_threads()
        if threads < 2:
            parser.error(f"--scaling compares 1 thread with more, but the count is {threads}: give --threads 2 or more")
        before = sn.get_num_threads()
        try:
            one = profile(args.model, args.batch, args.steps, args.detail, 1, args.cpu_time)
            result = scaling(one, profile(args.model, args.batch, args.steps, args.detail, threads, args.cpu_time))
        finally:
            sn.set_num_threads(before)
        print_scaling(result, args.top)
    else:
        result = profile(args.model, args.batch, args.steps, args.detail, args.threads, args.cpu_time)
        print_profile(result, args.top)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
