"""Winograd F(2x2,3x3) and F(4x4,3x3) vs the im2col route vs PyTorch, and their float32 error.

    python benchmarks/winograd.py [--repeat 5] [--quick] [--threads N] [--out PATH]

For each 3x3 stride-1 layer below it times (best of --repeat after a warm-up):
forward, backward to the input and backward to the weight of kernels.winograd
with each tile (the fused path for layers of at most winograd.FUSED_CHANNELS
channels in and out, the chunked one above; the JSON says which), the im2col
route (F.conv2d(conv_algo='im2col'), forward and forward+backward), and
torch.nn.functional.conv2d in its own process (never imported here; $SCRATCHNET_TORCH_PYTHON,
else this Python: benchmarks/timing.py's torch_python). GFLOP/s count the
direct convolution's work, 2*N*K*C*9*OH*OW, whatever the algorithm did; the
same-run numpy.matmul GFLOP/s of the layer's im2col GEMM is the machine's
yardstick. Then the float32 error of every route against the float64 result
(He-initialised weights, unit-variance input and output gradient): max |error|
over max |reference|.

--threads N runs scratchnet (sn.set_num_threads) and torch on N threads; on a
loaded machine --threads 1 compares the work each does, free of thread wake-ups.
--quick: the first layer only (a smoke test). Unsets OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE for its own runs (a user's machine has neither). Prints a table
with the load average; writes benchmarks/results/winograd_cpu.json
(winograd_cpu_1thread.json with --threads 1, winograd_cpu_quick.json with
--quick; --out names another file), which tools/publish_results.py renders
into docs/kernels.md.
"""
import os

# benchmarks/timing.py (no NumPy)
from timing import at_least, best_time, restart_without_overrides, started, torch_python, write_result

restart_without_overrides()  # before NumPy loads OpenBLAS
# torch's child gets the environment as it was before scratchnet's thread policy was added to it
TORCH_ENV = dict(os.environ)

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402


import scratchnet as sn  # noqa: E402  (first: its thread policy must be set before NumPy loads BLAS)
import numpy as np  # noqa: E402,I100
import scratchnet.functional as F  # noqa: E402
from scratchnet.kernels import winograd  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# name, batch, in-channels, size, out-channels (3x3, stride 1, padding 1)
LAYERS = [
    ("ResNet-20 3x3 16->16 @32", 128, 16, 32, 16),  # the fused path; batch 128 as in ResNet-20's training
    ("VGG 3x3 64->64 @56", 8, 64, 56, 64),
    ("ResNet 3x3 256->256 @14", 32, 256, 14, 256),
]
TILES = (2, 4)

TORCH_SCRIPT = r"""
import json, sys, time, torch
import torch.nn.functional as F
n, c, s, k, repeat, threads = (int(a) for a in sys.argv[1:7])
if threads:
    torch.set_num_threads(threads)
x = torch.randn(n, c, s, s, requires_grad=True)
w = torch.randn(k, c, 3, 3, requires_grad=True)
gy = torch.randn(n, k, s, s)
def best(fn):
    fn()
    out = float("inf")
    for _ in range(repeat):
        t = time.perf_counter(); fn(); out = min(out, time.perf_counter() - t)
    return out
def fwd():
    with torch.no_grad():
        F.conv2d(x, w, padding=1)
def both():
    F.conv2d(x, w, padding=1).backward(gy)
print(json.dumps({"forward": best(fwd), "fwd+bwd": best(both), "threads": torch.get_num_threads(),
                  "version": torch.__version__}))
"""


def torch_times(n, c, s, k, repeat, threads):
    env = TORCH_ENV
    try:
        args = [str(v) for v in (n, c, s, k, repeat, threads)]
        run = subprocess.run([str(torch_python()), "-c", TORCH_SCRIPT, *args],
                             capture_output=True, text=True, env=env, timeout=600, check=True)
        return json.loads(run.stdout)
    except (subprocess.SubprocessError, ValueError) as exc:
        print(f"  (torch not timed: {exc})")
        return None


def layer_data(n, c, s, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, s, s))
    w = rng.standard_normal((k, c, 3, 3)) * np.sqrt(2.0 / (9 * c))  # He (fan-in) initialisation
    gy = rng.standard_normal((n, k, s, s))
    return x.astype(dtype), w.astype(dtype), gy.astype(dtype)


def im2col_route(x, w, gy):
    """(y, gx, gw) through F.conv2d(conv_algo='im2col')."""
    xt, wt = sn.tensor(x, requires_grad=True), sn.tensor(w, requires_grad=True)
    y = F.conv2d(xt, wt, padding=1, conv_algo="im2col")
    y.backward(gy)
    return y.data, xt.grad, wt.grad


def winograd_route(x, w, gy, tile):
    return (winograd.forward(x, w, (1, 1), tile=tile), winograd.backward_input(gy, w, x.shape, (1, 1), tile=tile),
            winograd.backward_weight(gy, x, w.shape, (1, 1), tile=tile))


def errors(n, c, s, k):
    """float32 error of each route vs the float64 result: max |err| / max |ref| for y, gx, gw."""
    x64, w64, gy64 = layer_data(n, c, s, k, np.float64, seed=1)
    ref = im2col_route(x64, w64, gy64)
    x, w, gy = (a.astype(np.float32) for a in (x64, w64, gy64))
    out = {}
    routes = {"im2col": lambda: im2col_route(x, w, gy)}
    routes.update({f"winograd F({t}x{t},3x3)": (lambda t=t: winograd_route(x, w, gy, t)) for t in TILES})
    for name, fn in routes.items():
        got = fn()
        out[name] = {part: {"max_abs": float(np.abs(g - r).max()),
                            "max_abs_over_max_ref": float(np.abs(g - r).max() / np.abs(r).max())}
                     for part, g, r in zip(("y", "gx", "gw"), got, ref)}
    # float64 Winograd against the float64 reference: exact up to rounding
    for t in TILES:
        got = winograd_route(x64, w64, gy64, t)
        out[f"winograd F({t}x{t},3x3) float64"] = {
            part: {"max_abs_over_max_ref": float(np.abs(g - r).max() / np.abs(r).max())}
            for part, g, r in zip(("y", "gx", "gw"), got, ref)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=at_least(1), default=5)
    parser.add_argument("--quick", action="store_true", help="the first layer only (a smoke test)")
    parser.add_argument("--threads", type=at_least(0), default=0,
                        help="threads for both frameworks (0: their defaults)")
    parser.add_argument("--out", type=Path, help="the JSON to write (default: benchmarks/results/winograd_cpu"
                        "[_quick][_Nthread].json)")
    args = parser.parse_args()
    if args.threads:
        sn.set_num_threads(args.threads)
    layers = LAYERS[:1] if args.quick else LAYERS
    recorded = started()
    report = {"threads": sn.get_num_threads(), "repeat": args.repeat, "layers": []}
    for name, n, c, s, k in layers:
        x, w, gy = layer_data(n, c, s, k, np.float32)
        flops = 2.0 * n * k * c * 9 * s * s
        a = np.random.default_rng(2).standard_normal((k, 9 * c)).astype(np.float32)
        b = np.random.default_rng(3).standard_normal((9 * c, n * s * s)).astype(np.float32)
        matmul = flops / best_time(lambda: a @ b, args.repeat) / 1e9
        row = {"layer": name, "shape": [n, c, s, k], "direct_gflop": flops / 1e9, "matmul_gflops": matmul,
               "winograd_path": "fused" if max(c, k) <= winograd.FUSED_CHANNELS else "chunked", "times_ms": {}}
        xt, wt = sn.tensor(x, requires_grad=True), sn.tensor(w, requires_grad=True)

        def im2col_forward():
            with sn.no_grad():
                F.conv2d(xt, wt, padding=1, conv_algo="im2col")

        def im2col_both():
            F.conv2d(xt, wt, padding=1, conv_algo="im2col").backward(gy)

        row["times_ms"]["im2col"] = {"forward": best_time(im2col_forward, args.repeat) * 1e3,
                                     "fwd+bwd": best_time(im2col_both, args.repeat) * 1e3}
        for t in TILES:
            fwd = best_time(lambda: winograd.forward(x, w, (1, 1), tile=t), args.repeat)
            bin_ = best_time(lambda: winograd.backward_input(gy, w, x.shape, (1, 1), tile=t), args.repeat)
            bwt = best_time(lambda: winograd.backward_weight(gy, x, w.shape, (1, 1), tile=t), args.repeat)
            row["times_ms"][f"winograd F({t}x{t},3x3)"] = {
                "forward": fwd * 1e3, "backward_input": bin_ * 1e3, "backward_weight": bwt * 1e3,
                "fwd+bwd": (fwd + bin_ + bwt) * 1e3}
        torch = torch_times(n, c, s, k, args.repeat, args.threads)
        if torch:
            row["times_ms"]["torch"] = {"forward": torch["forward"] * 1e3, "fwd+bwd": torch["fwd+bwd"] * 1e3}
            row["torch_threads"], row["torch_version"] = torch["threads"], torch["version"]
        row["float32_error"] = errors(n, c, s, k)
        report["layers"].append(row)
        print_row(row)
    print(f"scratchnet threads {report['threads']}; load average before {tuple(recorded['load_before'])}, "
          f"after {os.getloadavg()}")
    path = args.out or RESULTS / (f"winograd_cpu{'_quick' if args.quick else ''}"
                                  f"{f'_{args.threads}thread' if args.threads else ''}.json")
    write_result(path, report, recorded)
    print(f"wrote {path}")


def print_row(row):
    flops = row["direct_gflop"]
    print(f"\n{row['layer']}  (N, C, H, K) = {tuple(row['shape'])}, Winograd's {row['winograd_path']} path; "
          f"numpy.matmul (im2col GEMM) {row['matmul_gflops']:.0f} GFLOP/s")
    torch = row["times_ms"].get("torch")
    print(f"  {'route':24s} {'fwd ms':>8s} {'GFLOP/s':>8s} {'fwd+bwd ms':>11s} {'GFLOP/s':>8s} "
          f"{'vs torch fwd':>12s} {'fwd+bwd':>8s}")
    for route, t in row["times_ms"].items():
        ratio = (f"{torch['forward'] / t['forward']:12.2f} {torch['fwd+bwd'] / t['fwd+bwd']:8.2f}"
                 if torch else "")
        print(f"  {route:24s} {t['forward']:8.2f} {flops / t['forward'] * 1e3:8.0f} {t['fwd+bwd']:11.2f} "
              f"{3 * flops / t['fwd+bwd'] * 1e3:8.0f} {ratio}")
    for route, parts in row.get("float32_error", {}).items():
        print(f"  error {route:32s} " + "  ".join(f"{p} {e['max_abs_over_max_ref']:.1e}" for p, e in parts.items()))


if __name__ == "__main__":
    main()
