"""Regenerate tests/fixtures/torchvision_twins.json: numbers from nets and transforms that torchvision
has the parts of but not the whole, assembled here from its modules, and TenCrop's crops.

    pip install torch==2.14.1 torchvision==0.29.1   # in a scratch venv
    python tools/make_torchvision_twins.py

- ``densenet_bc_*``: the CIFAR DenseNet-BC nets of Huang et al.'s Table 2 assembled from torchvision's own
  ``_DenseBlock`` and ``_Transition`` with a 3x3 stem of 2k maps: parameter counts, and for L=100 every
  state_dict key with its shape.
- ``se_inception_v1``: the parameters that SENet's SE block (``torchvision.ops.SqueezeExcitation(C, C // 16)``)
  adds to each of GoogLeNet's nine Inception modules.
- ``mobilenet_v1`` / ``conv_mobilenet_v1``: MobileNet v1 and Table 4's full-convolution baseline assembled
  from ``torchvision.ops.Conv2dNormActivation``: parameter counts.
- ``ten_crop``: ``torchvision.transforms.TenCrop`` of small images whose pixels are their own indices, for
  odd and even margins (torchvision's centre crop rounds half-way margins with Python's ``round``).

The tests compare scratchnet against this file; nothing in it is typed by hand.
"""
import json
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.densenet import _DenseBlock, _Transition
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation
from torchvision.transforms import TenCrop

INCEPTION_OUT = (256, 480, 512, 512, 512, 528, 832, 832, 1024)  # GoogLeNet Table 1: 3a ... 5b
MOBILENET = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), (1, 512), (1, 512), (1, 512), (1, 512),
             (1, 512), (2, 1024), (1, 1024)]  # Howard et al. Table 1: (depthwise stride, pointwise maps)


def cifar_densenet_bc(depth, growth_rate, num_classes=10):
    layers = (depth - 4) // 6
    features = OrderedDict(conv0=nn.Conv2d(3, 2 * growth_rate, 3, padding=1, bias=False))
    channels = 2 * growth_rate
    for i in range(3):
        features[f"denseblock{i + 1}"] = _DenseBlock(layers, channels, bn_size=4, growth_rate=growth_rate,
                                                     drop_rate=0.0)
        channels += layers * growth_rate
        if i < 2:
            features[f"transition{i + 1}"] = _Transition(channels, channels // 2)
            channels //= 2
    features["norm5"] = nn.BatchNorm2d(channels)
    return nn.Sequential(OrderedDict(features=nn.Sequential(features), classifier=nn.Linear(channels, num_classes)))


def mobilenet_v1(separable=True):
    layers, channels = [Conv2dNormActivation(3, 32, 3, stride=2)], 32
    for stride, out in MOBILENET:
        if separable:
            layers += [Conv2dNormActivation(channels, channels, 3, stride=stride, groups=channels),
                       Conv2dNormActivation(channels, out, 1)]
        else:
            layers.append(Conv2dNormActivation(channels, out, 3, stride=stride))
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1000))


def count(module):
    return sum(p.numel() for p in module.parameters())


def ten_crops(height, width, size):
    image = torch.arange(height * width * 2, dtype=torch.float64).reshape(2, height, width)
    return [crop.tolist() for crop in TenCrop(size)(image)]


if __name__ == "__main__":
    out = {"torchvision_version": torchvision.__version__}
    for depth, k in ((100, 12), (250, 24), (190, 40)):
        net = cifar_densenet_bc(depth, k)
        out[f"densenet_bc_{depth}"] = {"num_params": count(net)}
        if depth == 100:  # the keys of one (the deeper nets repeat the same pattern)
            out[f"densenet_bc_{depth}"]["state_dict"] = [[key, list(v.shape)] for key, v in net.state_dict().items()]
    out["se_inception_v1"] = {"module_channels": list(INCEPTION_OUT),
                              "se_params": [count(SqueezeExcitation(c, c // 16)) for c in INCEPTION_OUT]}
    out["mobilenet_v1"] = {"num_params": count(mobilenet_v1(True))}
    out["conv_mobilenet_v1"] = {"num_params": count(mobilenet_v1(False))}
    out["ten_crop"] = [{"height": h, "width": w, "size": list(size), "crops": ten_crops(h, w, size)}
                       for h, w, size in ((7, 9, (4, 5)), (8, 8, (5, 5)), (6, 11, (3, 6)), (9, 9, (9, 9)))]
    path = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "torchvision_twins.json"
    path.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {path}")
