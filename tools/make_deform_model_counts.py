"""Write tests/fixtures/deform_models.json: the deformable ResNets assembled from torchvision's ops, counted.

    $SCRATCHNET_TORCH_PYTHON tools/make_deform_model_counts.py      # needs torch + torchvision (CPU)

Each net is built here the way a torchvision user would build it: torchvision.models.resnet50 (or the
CIFAR ResNet-20 of He et al. Sec. 4.2, written below in torch.nn: 16-32-64 filters, option A
zero-padding shortcuts) with the chosen 3x3 convolutions replaced by a torchvision.ops.DeformConv2d
(no bias) that owns a ``conv_offset`` nn.Conv2d (same kernel, stride, padding; 2 or 3 values per tap).
For each, the file keeps the number of parameters and every state_dict key with its shape, which
tests/models/test_models_deformable.py compares with scratchnet's registry models.
"""
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "deform_models.json"


def build():
    import torch.nn as nn
    from torchvision.models import resnet50
    from torchvision.ops import DeformConv2d

    class DeformConv2dPack(DeformConv2d):
        """torchvision's DeformConv2d predicting its own offsets (and mask, v2) with a zero-initialised conv."""

        def __init__(self, in_channels, out_channels, stride, values_per_tap):
            super().__init__(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
            self.conv_offset = nn.Conv2d(in_channels, values_per_tap * 9, 3, stride=stride, padding=1)

    def deformable(net, stages, values_per_tap):
        for stage in stages:
            for block in getattr(net, stage):
                conv = block.conv2
                block.conv2 = DeformConv2dPack(conv.in_channels, conv.out_channels, conv.stride, values_per_tap)
        return net

    class ZeroPad(nn.Module):  # option A: subsample, append zero channels (no parameters)
        def forward(self, x):
            return x

    class Basic(nn.Module):
        def __init__(self, inplanes, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = ZeroPad() if stride != 1 or inplanes != planes else None

    class CifarResNet(nn.Module):
        def __init__(self, n=3, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
            inplanes = 16
            for index, planes in enumerate((16, 32, 64)):
                units = [Basic(inplanes, planes, 1 if index == 0 else 2)] + [Basic(planes, planes, 1)
                                                                               for _ in range(n - 1)]
                setattr(self, f"layer{index + 1}", nn.Sequential(*units))
                inplanes = planes
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, num_classes)

    def deformable_cifar(values_per_tap):
        net = CifarResNet()
        for block in net.layer3:
            for name in ("conv1", "conv2"):
                conv = getattr(block, name)
                setattr(block, name, DeformConv2dPack(conv.in_channels, conv.out_channels, conv.stride,
                                                      values_per_tap))
        return net

    conv3_to_conv5 = ("layer2", "layer3", "layer4")
    return {
        "resnet50": resnet50(),
        "resnet50_dcn": deformable(resnet50(), conv3_to_conv5, 2),
        "resnet50_dcnv2": deformable(resnet50(), conv3_to_conv5, 3),
        "resnet20": CifarResNet(),
        "resnet20_dcn": deformable_cifar(2),
        "resnet20_dcnv2": deformable_cifar(3),
    }


def main():
    import torch
    import torchvision
    nets = {}
    for name, net in build().items():
        state = net.state_dict()
        nets[name] = dict(parameters=sum(p.numel() for p in net.parameters()),
                          state_dict=[[key, list(value.shape)] for key, value in state.items()])
    OUT.write_text(json.dumps(dict(torch=torch.__version__, torchvision=torchvision.__version__, models=nets),
                              indent=None, separators=(",", ":")) + "\n")
    for name, entry in nets.items():
        print(f"{name:16} {entry['parameters']:>12,} parameters, {len(entry['state_dict'])} state_dict entries")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
