"""Work shared between the threads against the same work done the other way: the numbers behind docs/core.md's
"Stacks of small GEMMs" and docs/kernels.md's elementwise kernels on the threads.

    python benchmarks/shares.py                       # ~45 s on 2 cores
    python benchmarks/shares.py --rounds 5 --repeat 20

Three comparisons, each timed in the same process:
  gemms   the stack's items shared between Numba's threads (scratchnet.kernels.cpu_gemm.stacked_matmul, what the
          convolution routes call) and between the threads of scratchnet's own pool (backend.blas.stacked_matmul,
          its fallback), BLAS at one thread in each, against one np.matmul on the whole stack (one BLAS GEMM per
          item, each spread over every thread), on the stacks of GEMMS, with an ``out`` array as the convolution
          routes give it (three in turn, not a pair).
  chunks  conv2d's forward and backward (both gradients) on the im2col route (conv_algo='im2col'): its chunks
          of THREAD_COLUMN_BYTES shared between Numba's threads (kernels/cpu.py's im2col_chunks_*, what the route
          runs) and between the threads of scratchnet's own pool (its fallback), against chunks of
          COLUMN_CHUNK_BYTES (16 MB) run one after the other, each on every thread (the threaded kernels and GEMM:
          how the route ran its chunks before it shared them; three in turn, not a pair). No argument selects the
          other two: ``chunks_in_turn`` sets conv_routes' THREAD_COLUMN_BYTES to COLUMN_CHUNK_BYTES and its
          thread_count to 1 while it runs, ``chunks_on_pool`` has the chunk kernels answer "cannot run here"
          (monkeypatches of the modules).
  elementwise  the kernels that hand large arrays to the threads block by block, on the default threads against
          one (sn.set_num_threads(1)): one step of scratchnet.optim.SGD (momentum 0.9, weight decay 5e-4) over
          AlexNet's 61 M parameters, the gradients random (no forward); the ReLU and SiLU kernels' forward then
          backward on a large activation of DenseNet-121 and EfficientNet-B0 (ACTIVATIONS).

float32, wall time. Each number is the fastest of --repeat calls after a warm-up (timing.best_time); the
two sides of a pair alternate --rounds times (A, B, A, B, ...) and each side keeps its minimum. Threads:
sn.get_num_threads()'s default. Unsets this workplace's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for its own
run. Prints a table with the load average; writes benchmarks/results/shares.json, which
tools/publish_results.py renders into docs/core.md and docs/kernels.md.
"""
import os

# benchmarks/timing.py (no NumPy)
from timing import OVERRIDES, at_least, best_time, layer_calls, restart_without_overrides, started, write_result

restart_without_overrides()  # before NumPy loads OpenBLAS

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
from pathlib import Path  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# what, a's shape, b's shape: (B, m, k) @ (B, k, n), a 2-D operand broadcast over the stack
GEMMS = [
    ("ResNet-20 3x3 64 @8, batch 32: Winograd F(4x4)'s products", (36, 64, 64), (36, 64, 128)),
    ("DenseNet 3x3 128->32 @28, batch 8: Winograd F(4x4)'s input gradient", (36, 128, 32), (36, 32, 392)),
    ("ResNet-50 1x1 64->256 @56, batch 8: a GEMM per image", (256, 64), (8, 64, 3136)),
]
# name, batch, in-channels, size, out-channels, kernel, stride, padding
LAYERS = [
    ("LeNet-5 C3 5x5 6->16 @14", 64, 6, 14, 16, 5, 1, 0),
    ("ResNet-20 3x3/2 16->32 @32", 128, 16, 32, 32, 3, 2, 1),
    ("ResNet-18 stem 7x7/2 3->64 @224", 8, 3, 224, 64, 7, 2, 3),
]
# what, the input's shape, the kernels (forward then backward)
ACTIVATIONS = [
    ("ReLU forward+backward, DenseNet-121's (8, 256, 56, 56)", (8, 256, 56, 56), "relu"),
    ("SiLU forward+backward, EfficientNet-B0's (8, 96, 112, 112)", (8, 96, 112, 112), "silu"),
]


def alternate(*fns, rounds, repeat):
    """(ms, ...): the fastest call of each fn, the fns timed in turn ``rounds`` times."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for side, fn in enumerate(fns):
            best[side] = min(best[side], 1e3 * best_time(fn, repeat))
    return tuple(best)


@contextlib.contextmanager
def chunks_in_turn():
    """The im2col route with chunks of COLUMN_CHUNK_BYTES, run one after the other on every thread."""
    from scratchnet.functional import conv_routes as R
    saved = R.THREAD_COLUMN_BYTES, R.thread_count
    R.THREAD_COLUMN_BYTES, R.thread_count = R.COLUMN_CHUNK_BYTES, lambda items: 1
    try:
        yield
    finally:
        R.THREAD_COLUMN_BYTES, R.thread_count = saved


@contextlib.contextmanager
def chunks_on_pool():
    """The im2col route's chunks shared between the threads of backend/blas.py's pool (the route's fallback)."""
    from scratchnet.kernels import cpu
    saved = cpu.im2col_chunks_forward, cpu.im2col_chunks_backward
    cpu.im2col_chunks_forward = cpu.im2col_chunks_backward = lambda *args: None
    try:
        yield
    finally:
        cpu.im2col_chunks_forward, cpu.im2col_chunks_backward = saved


def gemms(np, rounds, repeat):
    from scratchnet.backend import blas
    from scratchnet.kernels import cpu_gemm
    rng, rows = np.random.default_rng(0), []
    for what, a_shape, b_shape in GEMMS:
        a, b = rng.standard_normal(a_shape, dtype=np.float32), rng.standard_normal(b_shape, dtype=np.float32)
        out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]), np.float32)
        if cpu_gemm._plan(a, b, out) is None:
            raise SystemExit(f"shares.py: the stack {what} does not run on Numba's threads here (NumPy's BLAS is "
                             f"not its bundled OpenBLAS, or one thread); nothing to compare")
        matmul_ms, numba_ms, shared_ms = alternate(lambda: np.matmul(a, b, out=out),
                                                   lambda: cpu_gemm.stacked_matmul(a, b, out=out),
                                                   lambda: blas.stacked_matmul(a, b, out=out),
                                                   rounds=rounds, repeat=repeat)
        rows.append(dict(what=what, a=list(a_shape), b=list(b_shape), items=out.shape[0],
                         mflop_per_item=2 * a.shape[-2] * a.shape[-1] * b.shape[-1] / 1e6,
                         matmul_ms=matmul_ms, numba_ms=numba_ms, shared_ms=shared_ms))
    return rows


def chunks(sn, np, rounds, repeat):
    import scratchnet.functional as F
    rows = []
    for name, n, c, size, c_out, k, s, p in LAYERS:
        rng = np.random.default_rng(0)
        x = sn.tensor(rng.standard_normal((n, c, size, size), dtype=np.float32), requires_grad=True)
        w = sn.tensor(rng.standard_normal((c_out, c, k, k), dtype=np.float32) * np.float32(0.05), requires_grad=True)
        _, both = layer_calls(lambda: F.conv2d(x, w, stride=s, padding=p, conv_algo="im2col"), sn.no_grad, (x, w),
                              lambda y: np.ones(y.shape, np.float32))

        def in_turn():
            with chunks_in_turn():
                both()

        def on_pool():
            with chunks_on_pool():
                both()
        in_turn_ms, pool_ms, shared_ms = alternate(in_turn, on_pool, both, rounds=rounds, repeat=repeat)
        rows.append(dict(layer=name, shape=[n, c, size, c_out, k, s, p], in_turn_ms=in_turn_ms, pool_ms=pool_ms,
                         shared_ms=shared_ms))
    return rows


def on_threads(sn, n, work):
    """work, first switching the threads to n (the first call of each side's turn is best_time's warm-up)."""
    def call():
        if sn.get_num_threads() != n:
            sn.set_num_threads(n)
        work()
    return call


def elementwise(sn, np, rounds, repeat):
    """The SGD step and the activations (forward and backward kernels) on the default threads against one."""
    from scratchnet import kernels
    from scratchnet.models import get_model
    from scratchnet.optim import SGD
    params = list(get_model("alexnet").parameters())
    rng = np.random.default_rng(0)
    for p in params:
        p.grad = sn.tensor(rng.standard_normal(p.shape, dtype=np.float32))
    optimizer = SGD(params, lr=1e-4, momentum=0.9, weight_decay=5e-4)
    cpu = kernels.for_device("cpu")

    def relu(x, gy):
        cpu.relu_backward(gy, cpu.relu_forward(x)[1])

    def silu(x, gy):
        cpu.silu_backward(gy, x, cpu.silu_forward(x)[1])

    passes = {"relu": relu, "silu": silu}
    count = sum(p.data.size for p in params)
    works = [(f"SGD step, AlexNet's {count / 1e6:.0f} M parameters", None, optimizer.step)]
    for what, shape, name in ACTIVATIONS:
        x, gy = (rng.standard_normal(shape, dtype=np.float32) for _ in range(2))
        works.append((what, shape, functools.partial(passes[name], x, gy)))
    threads, rows = sn.get_num_threads(), []
    for what, shape, work in works:
        default_ms, one_thread_ms = alternate(on_threads(sn, threads, work), on_threads(sn, 1, work), rounds=rounds,
                                              repeat=repeat)
        rows.append(dict(what=what, shape=shape, threads=threads, default_ms=default_ms, one_thread_ms=one_thread_ms))
    sn.set_num_threads(threads)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=at_least(1), default=5, help="alternating rounds of each pair")
    parser.add_argument("--repeat", type=at_least(1), default=10, help="timed calls per side and round (fastest kept)")
    parser.add_argument("--out", type=Path, default=RESULTS / "shares.json")
    args = parser.parse_args()

    import scratchnet as sn  # first: its thread policy must be in place before NumPy loads BLAS
    import numpy as np  # noqa: I100
    from scratchnet.functional import conv_routes as R

    recorded = started()
    result = dict(threads=sn.get_num_threads(), rounds=args.rounds, repeat=args.repeat, dtype="float32",
                  unset_for_runs=list(OVERRIDES), shared_chunk_bytes=R.THREAD_COLUMN_BYTES,
                  in_turn_chunk_bytes=R.COLUMN_CHUNK_BYTES)
    result["gemms"] = gemms(np, args.rounds, args.repeat)
    result["chunks"] = chunks(sn, np, args.rounds, args.repeat)
    result["elementwise"] = elementwise(sn, np, args.rounds, args.repeat)

    print(f"{sn.get_num_threads()} threads, float32, fastest of {args.repeat} calls over {args.rounds} rounds\n")
    print(f"{'stack':70} {'np.matmul ms':>12} {'Numba ms':>9} {'pool ms':>8} {'x':>6}")
    for r in result["gemms"]:
        print(f"{r['what']:70} {r['matmul_ms']:12.3f} {r['numba_ms']:9.3f} {r['shared_ms']:8.3f} "
              f"{r['matmul_ms'] / r['numba_ms']:6.2f}")
    print(f"\n{'conv2d fwd+bwd, im2col route':70} {'in turn ms':>12} {'pool ms':>8} {'Numba ms':>9} {'x':>6}")
    for r in result["chunks"]:
        layer = f"{r['layer']}, batch {r['shape'][0]}"
        print(f"{layer:70} {r['in_turn_ms']:12.2f} {r['pool_ms']:8.2f} {r['shared_ms']:9.2f} "
              f"{r['in_turn_ms'] / r['shared_ms']:6.2f}")
    print(f"\n{'elementwise kernels':70} {'1 thread ms':>12} {str(sn.get_num_threads()) + ' threads ms':>12} {'x':>6}")
    for r in result["elementwise"]:
        print(f"{r['what']:70} {r['one_thread_ms']:12.2f} {r['default_ms']:12.2f} "
              f"{r['one_thread_ms'] / r['default_ms']:6.2f}")
    load = os.getloadavg()
    print(f"load average before {recorded['load_before'][0]:.2f}, after {load[0]:.2f} ({os.cpu_count()} CPUs)")
    write_result(args.out, result, recorded)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
