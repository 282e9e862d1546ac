"""Regenerate tests/fixtures/torchvision_reference.json from an installed torchvision.

    pip install torch==2.14.1 torchvision==0.29.1   # in a scratch venv
    python tools/make_torchvision_reference.py

For every torchvision model that scratchnet also builds, records the exact
parameter count, the published multiply-adds (the weights' ``_ops`` metadata,
GMACs, when torchvision publishes it) and every state_dict key with its shape.
The tests compare scratchnet against this file; nothing in it is typed by hand.
"""
import json
from pathlib import Path

import torchvision
from torchvision import models

NAMES = ["alexnet", "googlenet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
         "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "densenet121",
         "densenet169", "densenet201"] + [f"efficientnet_b{i}" for i in range(8)]


def reference(name):
    weights = models.get_model_weights(name)
    first = next(iter(weights))  # IMAGENET1K_V1: its metadata carries the published numbers
    options = {"aux_logits": True, "init_weights": False} if name == "googlenet" else {}
    model = models.get_model(name, weights=None, **options)
    ops = first.meta.get("_ops")
    return {
        "num_params": sum(p.numel() for p in model.parameters()),
        "published_num_params": first.meta.get("num_params"),
        "gmacs": ops,
        "macs": int(round(ops * 1e9)) if ops is not None else None,
        "state_dict": [[k, list(v.shape)] for k, v in model.state_dict().items()],
    }


if __name__ == "__main__":
    out = {"torchvision_version": torchvision.__version__}
    out.update({name: reference(name) for name in NAMES})
    path = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "torchvision_reference.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
