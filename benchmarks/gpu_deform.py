"""GPU deformable convolution benchmark: the CUDA kernels (kernels/deform.cu + cuBLAS) vs the CuPy reference
route vs torchvision.ops.deform_conv2d on CUDA.

    python benchmarks/gpu_deform.py                          # on a CUDA machine (tools/gpu_check.sh runs it)
    python benchmarks/gpu_deform.py --device cpu --smoke     # the plumbing only: a tiny shape, on the CPU

Shapes: benchmarks/deform.py's (3x3 256->256 at 14x14, 1 and 4 offset groups, with and without a
mask) at its batch (16) and at 4x it. Routes, through F.deform_conv2d as a user calls it: 'im2col'
(the deformable im2col kernels, then one batched cuBLAS GEMM; Numba on the CPU) and 'reference' (the
same sampling written in CuPy array code, under set_conv_algo('reference')). torchvision's op is
timed in its own process when torch and torchvision load there (CUDA on the GPU; else the column is
left out and the step still passes). float32; forward (no graph) and forward+backward (all five
gradients); each the best and the median of --repeat runs after 2 warm-up runs, CUDA events on the
GPU. Prints a table and writes benchmarks/results/gpu_deform.json.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from deform import SHAPES, SMOKE, inputs  # noqa: E402  (the CPU benchmark's shapes and inputs)
from gpu_conv import timer  # noqa: E402  (CUDA events after a synchronize; perf_counter on the CPU)

SCALES = (1, 4)


def shapes(smoke):
    """(label, shape) with the batch scaled: benchmarks/deform.py's SHAPES at 1x and 4x, or its smoke shape."""
    for shape in SMOKE if smoke else SHAPES:
        for scale in (1,) if smoke else SCALES:
            name, n, *rest = shape
            yield f"{name}, N={n * scale}", (name, n * scale, *rest)


def row(label, framework, route, forward, forward_backward):
    return dict(shape=label, framework=framework, route=route, fwd_ms=1e3 * forward[0],
                fwd_median_ms=1e3 * forward[1], fb_ms=1e3 * forward_backward[0], fb_median_ms=1e3 * forward_backward[1])


def run_scratchnet(args):
    import scratchnet as sn
    import scratchnet.functional as F
    from scratchnet.functional import conv_routes

    time_it = timer(args.device, args.repeat)
    rows = []
    for label, shape in shapes(args.smoke):
        s, p = shape[6], shape[7]
        arrays = inputs(shape)
        for algo in ("auto", "reference"):
            conv_routes.set_conv_algo(algo)
            tensors = [None if a is None else sn.tensor(a, requires_grad=True, device=args.device) for a in arrays]
            x, offset, mask, weight, bias = tensors
            y = F.deform_conv2d(x, offset, weight, bias, stride=s, padding=p, mask=mask)
            gy = sn.tensor(sn.backend.xp_for(args.device).ones(y.shape, dtype=y.dtype), device=args.device)

            def forward():
                with sn.no_grad():
                    F.deform_conv2d(x, offset, weight, bias, stride=s, padding=p, mask=mask)

            def forward_backward():
                for t in tensors:
                    if t is not None:
                        t.grad = None
                F.deform_conv2d(x, offset, weight, bias, stride=s, padding=p, mask=mask).backward(gy)
            rows.append(row(label, "scratchnet", y.creator.route, time_it(forward), time_it(forward_backward)))
        conv_routes.set_conv_algo("auto")
    return rows


def run_torchvision(args):
    """torchvision's rows, or None when torch or torchvision does not load in this interpreter."""
    try:
        import torch
        from torchvision.ops import deform_conv2d
    except Exception as exc:  # torchvision missing, or built for another torch
        return None, f"{type(exc).__name__}: {exc}"
    device = "cuda" if args.device == "gpu" else "cpu"
    if device == "cpu":
        time_it = timer("cpu", args.repeat)
    else:
        def time_it(fn):
            fn(), fn()
            runs = []
            for _ in range(args.repeat):
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                runs.append(start.elapsed_time(stop) / 1e3)
            return min(runs), sorted(runs)[len(runs) // 2]
    rows = []
    for label, shape in shapes(args.smoke):
        s, p = shape[6], shape[7]
        tensors = [None if a is None else torch.tensor(a, device=device, requires_grad=True) for a in inputs(shape)]
        x, offset, mask, weight, bias = tensors

        def forward():
            with torch.no_grad():
                deform_conv2d(x, offset, weight, bias, stride=s, padding=p, mask=mask)

        def forward_backward():
            for t in tensors:
                if t is not None:
                    t.grad = None
            y = deform_conv2d(x, offset, weight, bias, stride=s, padding=p, mask=mask)
            y.backward(torch.ones_like(y))
        rows.append(row(label, "torchvision", device, time_it(forward), time_it(forward_backward)))
    return rows, f"torch {torch.__version__}, torchvision {__import__('torchvision').__version__}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="one tiny shape, one batch size (checks the plumbing)")
    parser.add_argument("--json", default=str(HERE / "results" / "gpu_deform.json"))
    parser.add_argument("--torch-worker", metavar="JSON", help=argparse.SUPPRESS)  # internal: the torch process
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.smoke:
        args.repeat = min(args.repeat, 2)
    if args.torch_worker:
        rows, versions = run_torchvision(args)
        Path(args.torch_worker).write_text(json.dumps({"rows": rows, "versions": versions}))
        return 0

    started, load_before = time.time(), os.getloadavg()
    rows = run_scratchnet(args)
    worker_json = Path(args.json).with_suffix(".torch.tmp.json")
    command = [sys.executable, __file__, "--device", args.device, "--repeat", str(args.repeat),
               "--torch-worker", str(worker_json)] + (["--smoke"] if args.smoke else [])
    done = subprocess.run(command)
    torchvision = "the torchvision process failed"
    if done.returncode == 0:
        part = json.loads(worker_json.read_text())
        worker_json.unlink()
        torchvision = part["versions"]
        rows += part["rows"] or []
        if part["rows"] is None:
            print(f"no torchvision column: {torchvision}")
    by = {(r["shape"], r["framework"], r["route"]): r for r in rows}
    print(f"\n{'shape':<50} {'route':<20} {'fwd ms':>8} {'f+b ms':>8} {'f+b vs torchvision':>18}")
    for label, _ in shapes(args.smoke):
        theirs = next((r for r in rows if r["shape"] == label and r["framework"] == "torchvision"), None)
        for (shape, framework, route), r in by.items():
            if shape != label:
                continue
            ratio = f"{theirs['fb_ms'] / r['fb_ms']:.2f}" if theirs and framework == "scratchnet" else "-"
            print(f"{label:<50} {framework + ' ' + route:<20} {r['fwd_ms']:8.3f} {r['fb_ms']:8.3f} {ratio:>18}")
    from scratchnet import backend
    device_name = None
    if args.device == "gpu":
        device_name = backend.cp.cuda.runtime.getDeviceProperties(0)["name"]
        device_name = device_name.decode() if isinstance(device_name, bytes) else device_name
    result = dict(device=args.device, gpu=device_name, smoke=args.smoke, repeat=args.repeat, dtype="float32",
                  timer="CUDA events" if args.device == "gpu" else "perf_counter", torchvision=torchvision,
                  machine=dict(cpus=os.cpu_count(), python=platform.python_version(),
                               load_average_before=load_before, load_average_after=os.getloadavg()),
                  seconds=round(time.time() - started, 1), rows=rows)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.json}")
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
