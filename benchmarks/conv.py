"""Convolution benchmark: im2col + GEMM vs the direct kernels, on real layer shapes.

    python benchmarks/conv.py [--device cpu|gpu] [--repeat 3] [--batch-scale 1.0] [--only depthwise]

For every layer (shapes from the architectures, at realistic batch sizes) and
every route (conv_algo='im2col' | 'direct') it measures the forward and the
forward+backward time (best of --repeat after a warm-up; on the GPU with CUDA
events), GFLOP/s, the im2col column buffer and the peak extra memory, and the
ratio to the same-run numpy.matmul (cuBLAS on the GPU) GFLOP/s of that layer's
GEMM. Prints a table and writes benchmarks/results/conv_<device>.json and .png.
On the CPU there is no direct dense kernel (conv_algo='direct' runs im2col
there), so 'direct' is reported for depthwise layers only.
"""
import argparse
import json
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np

import scratchnet as sn
import scratchnet.functional as F
from scratchnet import backend
from scratchnet.functional.conv import conv_output_size

RESULTS = Path(__file__).resolve().parent / "results"

# name, batch, in-channels, size, out-channels, kernel, stride, padding, groups
LAYERS = [
    ("AlexNet conv1 11x11/4", 16, 3, 224, 64, 11, 4, 2, 1),
    ("VGG 3x3 @56", 4, 256, 56, 256, 3, 1, 1, 1),
    ("ResNet 3x3 @14", 32, 256, 14, 256, 3, 1, 1, 1),
    ("ResNet 1x1 bottleneck @14", 32, 1024, 14, 256, 1, 1, 0, 1),
    ("ResNet 1x1/2 projection @28", 32, 512, 28, 1024, 1, 2, 0, 1),
    ("MobileNet depthwise 3x3 @28", 32, 256, 28, 256, 3, 1, 1, 256),
    ("DenseNet 1x1 growth @28", 32, 256, 28, 128, 1, 1, 0, 1),
]


class Timer:
    """Best-of-n wall time; on the GPU, CUDA events around the call after a synchronize."""

    def __init__(self, device, repeat):
        self.device, self.repeat = device, repeat

    def __call__(self, fn):
        fn()  # warm-up: Numba/NVRTC compilation, memory pools
        best = float("inf")
        for _ in range(self.repeat):
            if self.device == "gpu":
                cp = backend.cp
                start, stop = cp.cuda.Event(), cp.cuda.Event()
                cp.cuda.Device().synchronize()
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
        return best


def peak_extra_mb(fn, device):
    """Peak memory allocated during fn beyond what existed before (CPU: tracemalloc sees NumPy buffers)."""
    if device == "gpu":
        pool = backend.cp.get_default_memory_pool()
        pool.free_all_blocks()
        before = pool.total_bytes()
        fn()
        return (pool.total_bytes() - before) / 2**20  # the pool keeps what it needed at the peak
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def bench_layer(layer, device, timer, scale):
    name, n, c, size, co, k, s, p, g = layer
    n = max(1, round(n * scale))
    xp = backend.xp_for(device)
    rng = np.random.default_rng(0)
    x = backend.to_device(rng.standard_normal((n, c, size, size), dtype=np.float32), device)
    w = backend.to_device(rng.standard_normal((co, c // g, k, k), dtype=np.float32) * 0.01, device)
    oh = conv_output_size(size, k, s, p)
    gemm_k, gemm_cols = c // g * k * k, n * oh * oh
    flops = 2.0 * co * gemm_k * gemm_cols  # forward; each backward half costs the same
    col_mb = c * k * k * n * oh * oh * 4 / 2**20

    # the same-run GEMM of this layer's shape: (g, co/g, K) @ (g, K, N*oh*ow)
    a = xp.asarray(rng.standard_normal((g, co // g, gemm_k), dtype=np.float32))
    b = xp.asarray(rng.standard_normal((g, gemm_k, gemm_cols), dtype=np.float32))
    matmul_gflops = flops / timer(lambda: xp.matmul(a, b)) / 1e9

    depthwise = g == c and g > 1
    rows = []
    for algo in ("im2col", "direct"):
        if algo == "direct" and device == "cpu" and not depthwise:
            continue  # no direct dense kernel on the CPU: the route would be im2col again
        xt, wt = sn.tensor(x, requires_grad=True, device=device), sn.tensor(w, requires_grad=True, device=device)
        gy = xp.ones((n, co, oh, oh), dtype=np.float32)

        def forward():
            with sn.no_grad():
                F.conv2d(xt, wt, stride=s, padding=p, groups=g, conv_algo=algo)

        def forward_backward():
            xt.grad = wt.grad = None
            F.conv2d(xt, wt, stride=s, padding=p, groups=g, conv_algo=algo).backward(gy)

        t_fwd, t_both = timer(forward), timer(forward_backward)
        rows.append(dict(layer=name, batch=n, algo=algo, forward_ms=t_fwd * 1e3, forward_backward_ms=t_both * 1e3,
                         forward_gflops=flops / t_fwd / 1e9, forward_backward_gflops=3 * flops / t_both / 1e9,
                         matmul_gflops=matmul_gflops,
                         forward_ratio=flops / t_fwd / 1e9 / matmul_gflops,
                         forward_backward_ratio=3 * flops / t_both / 1e9 / matmul_gflops,
                         column_buffer_mb=col_mb if algo == "im2col" else 0.0,
                         peak_extra_mb=peak_extra_mb(forward_backward, device)))
    return rows


def print_table(rows):
    head = (f"{'layer':30} {'N':>3} {'algo':7} {'fwd ms':>9} {'f+b ms':>9} {'fwd GF/s':>9} {'f+b GF/s':>9} "
            f"{'mm GF/s':>8} {'f+b/mm':>7} {'col MB':>8} {'peak MB':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['layer']:30} {r['batch']:>3} {r['algo']:7} {r['forward_ms']:9.1f} {r['forward_backward_ms']:9.1f} "
              f"{r['forward_gflops']:9.1f} {r['forward_backward_gflops']:9.1f} {r['matmul_gflops']:8.1f} "
              f"{r['forward_backward_ratio']:7.2f} {r['column_buffer_mb']:8.1f} {r['peak_extra_mb']:8.1f}")


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.27
    for k, (label, pick) in enumerate([("matmul (same GEMM)", lambda r: r["matmul_gflops"]),
                                       ("im2col fwd+bwd", lambda r: r["forward_backward_gflops"]),
                                       ("direct fwd+bwd", lambda r: r["forward_backward_gflops"])]):
        algo = {1: "im2col", 2: "direct"}.get(k, "im2col")
        values = [next((pick(r) for r in rows if r["layer"] == layer and r["algo"] == algo), 0) for layer in layers]
        ax.bar(np.arange(len(layers)) + (k - 1) * width, values, width, label=label)
    ax.set_xticks(np.arange(len(layers)), [layer.replace(" @", "\n@") for layer in layers], fontsize=7)
    ax.set_ylabel("GFLOP/s (float32)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-scale", type=float, default=1.0, help="multiply every batch size (quick runs)")
    parser.add_argument("--only", default="", help="run only the layers whose name contains this text")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = backend.check_device(args.device)
    timer = Timer(device, args.repeat)
    layers = [layer for layer in LAYERS if args.only.lower() in layer[0].lower()]
    rows = [row for layer in layers for row in bench_layer(layer, device, timer, args.batch_scale)]
    print_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = dict(device=device, machine=platform.processor() or platform.machine(), repeat=args.repeat,
                batch_scale=args.batch_scale, numpy=np.__version__, dtype="float32")
    (args.out / f"conv_{device}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    plot(rows, args.out / f"conv_{device}.png")
    print(f"wrote {args.out / f'conv_{device}.json'} and .png")


if __name__ == "__main__":
    main()
