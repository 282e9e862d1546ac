"""torchvision weights in scratchnet: load with one dict comprehension, compare the logits.

    pip install torch torchvision        # (not a scratchnet dependency)
    python benchmarks/torchvision_parity.py [--models resnet18 vgg11_bn ...] [--size 64]

For each model, torchvision builds it (random init, or pretrained weights
with --pretrained if they are in the local torch cache), scratchnet loads its
state_dict with

    model.load_state_dict({k: v.numpy() for k, v in tv_model.state_dict().items()})

and both run the same input in eval mode, in float64. Prints the largest
absolute and relative logit difference per model and writes
benchmarks/results/torchvision_parity.json.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import scratchnet as sn
from scratchnet.models import get_model

DEFAULT = ["vgg11", "vgg11_bn", "resnet18", "resnet50", "densenet121", "efficientnet_b0"]


def parity(name, size, pretrained):
    torch.manual_seed(0)
    weights = "DEFAULT" if pretrained else None
    reference = torchvision.models.get_model(name, weights=weights).double().eval()
    if not pretrained:  # non-trivial BN statistics, so eval-mode batch norm is really compared
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model = get_model(name).double().eval()  # float64 first: load_state_dict keeps each tensor's dtype
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, size, size))
    with torch.no_grad():
        expected = reference(torch.tensor(x)).numpy()
    with sn.no_grad():
        start = time.perf_counter()
        got = model(sn.tensor(x)).numpy()
        seconds = time.perf_counter() - start
    diff = np.abs(got - expected)
    return dict(model=name, input=[2, 3, size, size], max_abs_diff=float(diff.max()),
                max_rel_diff=float((diff / (np.abs(expected) + 1e-12)).max()),
                logit_scale=float(np.abs(expected).max()), argmax_equal=bool((got.argmax(1) == expected.argmax(1)).all()),
                scratchnet_forward_s=seconds)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT)
    p.add_argument("--size", type=int, default=64, help="input side (torchvision nets are size-agnostic)")
    p.add_argument("--pretrained", action="store_true")
    args = p.parse_args()
    rows = [parity(name, args.size, args.pretrained) for name in args.models]
    print(f"torchvision {torchvision.__version__}, input 2x3x{args.size}x{args.size}, float64, eval mode")
    print(f"{'model':<18}{'max |diff|':>12}{'max rel':>11}{'|logit| max':>13}{'argmax same':>13}")
    for r in rows:
        print(f"{r['model']:<18}{r['max_abs_diff']:>12.2e}{r['max_rel_diff']:>11.2e}{r['logit_scale']:>13.3g}"
              f"{str(r['argmax_equal']):>13}")
    out = Path(__file__).resolve().parent / "results" / "torchvision_parity.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dict(torchvision=torchvision.__version__, rows=rows), indent=1))


if __name__ == "__main__":
    main()
