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
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from deform import SHAPES, SMOKE, inputs, timed_calls  # noqa: E402  (the CPU benchmark's shapes and calls)
from gpu_conv import benchmark_main, timer  # noqa: E402

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
            forward, forward_backward = timed_calls(F.deform_conv2d, sn.no_grad, tensors, s, p, lambda y: gy)
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
    time_it = timer(args.device, args.repeat, events="torch")
    rows = []
    for label, shape in shapes(args.smoke):
        s, p = shape[6], shape[7]
        tensors = [None if a is None else torch.tensor(a, device=device, requires_grad=True) for a in inputs(shape)]
        forward, forward_backward = timed_calls(deform_conv2d, torch.no_grad, tensors, s, p, torch.ones_like)
        rows.append(row(label, "torchvision", device, time_it(forward), time_it(forward_backward)))
    return rows, f"torch {torch.__version__}, torchvision {__import__('torchvision').__version__}"


def report(args, rows, part):
    """Print the table (each route against torchvision's); the result's fields."""
    torchvision = "the torchvision process failed"
    if part is not None:
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
    return dict(torchvision=torchvision, rows=rows)


def main(argv=None):
    return benchmark_main(argv, __file__, __doc__.split("\n\n")[0], "gpu_deform.json",
                          "one tiny shape, one batch size (checks the plumbing)", run_scratchnet, run_torchvision, report)


if __name__ == "__main__":
    sys.exit(main())
