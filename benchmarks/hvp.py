"""A Hessian-vector product of ResNet-20 (CIFAR, 32x32), scratchnet against PyTorch.

    python benchmarks/hvp.py                  # batch 32, float32, 3 timed products each
    python benchmarks/hvp.py --batch 8 --repeat 2

H v is Pearlmutter's trick in both frameworks: the gradient of the loss (mean cross-entropy, random
labels, training-mode batch norm) taken with create_graph=True, then the gradient of g.v. Beside it
each framework times one plain gradient (forward + backward), so the cost of the double backward is
read as a ratio taken in the same process. Each framework runs in its OWN subprocess (torch is never
imported where scratchnet is timed) with this workplace's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE
overrides removed (timing.clean_env) and the libraries' default threads. torch's ResNet-20 (zoo.py's
torch_cifar_resnet) has the same state_dict keys (option-A shortcuts: subsample, append zero channels) and loads
scratchnet's weights, so both compute the same product: after the timing each child takes H v once more
in float64, and the parent checks the two agree to 1e-9 (|difference| / |H v|; the float32 products
are reported too: scratchnet's Winograd route rounds 3x3 convolutions of >= 16 channels more coarsely
than torch in float32, docs/kernels.md).

* time: the fastest of --repeat calls after one warm-up call.
ratio = torch / scratchnet (>= 1: scratchnet is faster). Prints a table with the load average, writes
benchmarks/results/hvp_cpu.json.
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

# benchmarks/timing.py: the shared rules
from timing import OVERRIDES, at_least, best_time, child_json, started, write_result
from zoo import torch_cifar_resnet  # torch's ResNet-20 with scratchnet's state_dict keys

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def problem(batch, shapes):
    """The same input, labels and direction v for both frameworks (v: one array per parameter shape, |v| = 1)."""
    import numpy as np
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, batch)
    rng = np.random.default_rng(1)
    v = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    norm = np.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for a in v))
    return x, y, [a / norm for a in v]


def products(grad, loss, model, x, y, params, v):
    """The two timed calls: one plain gradient, and H v by Pearlmutter's trick (``grad``: the framework's
    autograd.grad, ``loss``: its cross_entropy)."""
    def gradient():
        return grad(loss(model(x), y), params)

    def hvp():
        grads = grad(loss(model(x), y), params, create_graph=True)
        return grad(sum((g * vi).sum() for g, vi in zip(grads, v)), params)
    return gradient, hvp


# ---------------------------------------------------------------- the child
# One child serves both frameworks: scratchnet has PyTorch's names (tensor, autograd.grad, cross_entropy,
# double, detach, numel, get_num_threads), so only the model's making differs and both time the same lines.

def resnet20(framework, lib, weights):
    """ResNet-20 in training mode (batch statistics) with the same weights in both: scratchnet's seed-0 model,
    saved to ``weights``, which torch's twin then loads (the parent runs scratchnet's child first)."""
    import numpy as np
    if framework == "scratchnet":
        from scratchnet.models import get_model
        lib.manual_seed(0)
        model = get_model("resnet20")
        lib.save(model, weights)
        return model
    model = torch_cifar_resnet(3)
    with np.load(weights) as saved:
        model.load_state_dict({k: lib.tensor(saved[k]) for k in saved.files})
    return model


def child(framework, batch, repeat, weights):
    if framework == "scratchnet":
        import scratchnet as lib  # first: its thread policy must be in place before NumPy loads its BLAS
        import scratchnet.functional as F  # noqa: I100
    else:
        import torch as lib
        import torch.nn.functional as F
    import numpy as np  # noqa: I100
    model = resnet20(framework, lib, weights)
    params = list(model.parameters())
    x, y, v = problem(batch, [tuple(p.shape) for p in params])
    x, y, v = lib.tensor(x), lib.tensor(y), [lib.tensor(a) for a in v]
    gradient, hvp = products(lib.autograd.grad, F.cross_entropy, model, x, y, params, v)
    timed = dict(gradient_s=best_time(gradient, repeat), hvp_s=best_time(hvp, repeat))
    hv = [h.detach().numpy().astype(np.float64) for h in hvp()]
    np.save(weights.with_name(f"{framework}_hv.npy"), np.concatenate([h.ravel() for h in hv]))
    model.double()  # the same product in float64, for the check
    params = list(model.parameters())
    _, hvp64 = products(lib.autograd.grad, F.cross_entropy, model, x.double(), y, params, [vi.double() for vi in v])
    np.save(weights.with_name(f"{framework}_hv64.npy"), np.concatenate([h.detach().numpy().ravel() for h in hvp64()]))
    return dict(framework=framework, params=sum(p.numel() for p in params), threads=lib.get_num_threads(), **timed,
                v_hv=float(sum((h * vi.detach().numpy().astype(np.float64)).sum() for h, vi in zip(hv, v))),
                hv_norm=float(np.sqrt(sum((h ** 2).sum() for h in hv))))


# ---------------------------------------------------------------- the parent

def run_child(framework, args, weights):
    command = [sys.executable, __file__, "--child", framework, "--batch", str(args.batch),
               "--repeat", str(args.repeat), "--weights", str(weights)]
    return child_json(command, f"the {framework} child")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=at_least(1), default=32)
    parser.add_argument("--repeat", type=at_least(1), default=3)
    parser.add_argument("--child", choices=["scratchnet", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.repeat, args.weights)))
        return
    recorded = started()
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "resnet20.npz"
        ours = run_child("scratchnet", args, weights)  # first: it writes the weights torch loads
        theirs = run_child("torch", args, weights)
        import numpy as np
        difference = {}
        for suffix in ("hv64", "hv"):
            a, b = (np.load(Path(folder) / f"{name}_{suffix}.npy").astype(np.float64) for name in ("scratchnet", "torch"))
            difference[suffix] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    if ours["params"] != theirs["params"] or not difference["hv64"] < 1e-9:
        sys.exit(f"the two products differ: |difference| / |H v| = {difference['hv64']:.2g} in float64, "
                 f"parameters {ours['params']} vs {theirs['params']}")
    print(f"ResNet-20, batch {args.batch}, float32, {ours['params']:,} parameters; load average "
          f"{os.getloadavg()[0]:.1f}; |Hv| {ours['hv_norm']:.6g} (torch {theirs['hv_norm']:.6g}); "
          f"|difference| / |Hv| {difference['hv64']:.1e} in float64, {difference['hv']:.1e} in float32")
    print(f"{'':<12}{'gradient':>10}{'H v':>10}{'H v / gradient':>16}")
    for r in (ours, theirs):
        print(f"{r['framework']:<12}{r['gradient_s'] * 1e3:>8.1f}ms{r['hvp_s'] * 1e3:>8.1f}ms"
              f"{r['hvp_s'] / r['gradient_s']:>16.2f}")
    print(f"ratio torch / scratchnet: gradient {theirs['gradient_s'] / ours['gradient_s']:.2f}, "
          f"H v {theirs['hvp_s'] / ours['hvp_s']:.2f}")
    write_result(RESULTS / "hvp_cpu.json", dict(
        batch=args.batch, repeat=args.repeat, unset=list(OVERRIDES), scratchnet=ours, torch=theirs,
        hv_relative_difference=dict(float64=difference["hv64"], float32=difference["hv"]),
        ratio=dict(gradient=theirs["gradient_s"] / ours["gradient_s"], hvp=theirs["hvp_s"] / ours["hvp_s"])), recorded)


if __name__ == "__main__":
    main()
