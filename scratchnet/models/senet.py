"""Squeeze-and-Excitation networks.

Hu, Shen, Albanie, Sun, Wu, "Squeeze-and-Excitation Networks" (CVPR 2018, arXiv:1709.01507).

The SE block (Section 3, Fig. 1) recalibrates the C channels of a feature map ``u``::

    squeeze     z = global average pool(u)                   (C, 1, 1)     Eq. 2
    excitation  s = sigmoid(W2 relu(W1 z))    W1: C -> C/r, W2: C/r -> C   Eq. 3, r = 16
    scale       out = s * u                    (one gate per channel)      Eq. 4

In a residual unit it sits at the end of the residual branch, before the addition with the
shortcut (Fig. 3, "SE-ResNet module"). Table 1 (SE-ResNet-50) is ResNet-50 with an SE block in
every bottleneck.

FCs as 1x1 convolutions with biases: W1 and W2 are ``Conv2d(..., kernel_size=1, bias=True)``
named ``fc1``/``fc2`` (torchvision's ``SqueezeExcitation``; timm's and the Cadene/torch-hub
``se_resnet50``). On a 1x1 map a 1x1 conv IS a Linear layer: same numbers, same parameter count
(``C*C/r + C/r + C/r*C + C`` per block). The paper counts the FC weights only (Section 4,
"Model and Computational Complexity": ``2/r * sum_s N_s C_s^2`` = 2,514,944 for SE-ResNet-50,
"~2.5 million additional parameters beyond the ~25 million of ResNet-50"); with the biases
(16,048 more) SE-ResNet-50 has exactly 25,557,032 + 2,530,992 = 28,088,024 parameters, timm's
and torch hub's ``se_resnet50`` ("28.1M").

The ``se_resnet*`` constructors build resnet.py's ResNet with ``se_layer=SEBlock``; resnet.py
does not import this file (no import cycle). EfficientNet's MBConv can use ``SqueezeExcitation``
with its own squeeze width and activation (torchvision's signature).

SE-Inception (Fig. 2): the SE block recalibrates an Inception module's output, the concatenation of
its branches. Table 2 applies it to BN-Inception (Ioffe & Szegedy 2015); ``se_googlenet`` applies it to
the zoo's Inception v1 (GoogLeNet, googlenet.py), the Inception net of the study notes: the same SE
block on each of its nine modules (256 ... 1024 channels, r = 16), everything else GoogLeNet's.
BN-Inception, a different table (two 3x3 convs for each 5x5, batch norm, other widths), is not in the
zoo. SE adds 2 C^2/r + C/r + C parameters per module: 6,998,552 -> 7,478,655 without the auxiliary
heads.
"""
from functools import partial

from ..nn import AdaptiveAvgPool2d, Conv2d, Module, ReLU, Sigmoid
from .googlenet import GoogLeNet
from .registry import IMAGENET_SHAPED, register_model
from .resnet import CIFAR_RECIPE, cifar_resnet, imagenet_resnet

REDUCTION = 16  # r, Section 6.1 / Table 10: the best accuracy-complexity trade-off


class SqueezeExcitation(Module):
    """``x * scale_activation(fc2(activation(fc1(avgpool(x)))))`` with 1x1-conv FCs (biased).

    torchvision's ``SqueezeExcitation(input_channels, squeeze_channels, activation, scale_activation)``:
    same keys (``fc1``, ``fc2``) and numbers.
    """

    def __init__(self, input_channels, squeeze_channels, activation=ReLU, scale_activation=Sigmoid):
        super().__init__()
        if squeeze_channels < 1:
            raise ValueError(f"SqueezeExcitation: squeeze_channels must be >= 1, got {squeeze_channels} "
                             f"for {input_channels} channels (lower the reduction ratio)")
        self.avgpool = AdaptiveAvgPool2d(1)
        self.fc1 = Conv2d(input_channels, squeeze_channels, kernel_size=1)
        self.fc2 = Conv2d(squeeze_channels, input_channels, kernel_size=1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def scale(self, x):
        """The per-channel gates s, shape (N, C, 1, 1) (the excitation, Eq. 3)."""
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))

    def forward(self, x):
        return x * self.scale(x)


class SEBlock(SqueezeExcitation):
    """The paper's SE block: squeeze to ``channels // reduction`` (r = 16), ReLU, sigmoid."""

    def __init__(self, channels, reduction=REDUCTION):
        super().__init__(channels, channels // reduction)
        self.reduction = reduction

    def extra_repr(self):
        return f"{self.fc1.in_channels}, reduction={self.reduction}"


def se_resnet(depth, num_classes=1000, reduction=REDUCTION, **options):
    """ResNet-``depth`` (Table 1 of the ResNet paper) with an SE block in every residual unit."""
    return imagenet_resnet(depth, num_classes, se_layer=partial(SEBlock, reduction=reduction), **options)


@register_model("se_resnet18", recipe=IMAGENET_SHAPED)
def se_resnet18(num_classes=1000, **options):
    return se_resnet(18, num_classes, **options)


@register_model("se_resnet34", recipe=IMAGENET_SHAPED)
def se_resnet34(num_classes=1000, **options):
    return se_resnet(34, num_classes, **options)


@register_model("se_resnet50", recipe=IMAGENET_SHAPED)
def se_resnet50(num_classes=1000, **options):
    return se_resnet(50, num_classes, **options)


@register_model("se_resnet101", recipe=IMAGENET_SHAPED)
def se_resnet101(num_classes=1000, **options):
    return se_resnet(101, num_classes, **options)


@register_model("se_resnet152", recipe=IMAGENET_SHAPED)
def se_resnet152(num_classes=1000, **options):
    return se_resnet(152, num_classes, **options)


def se_cifar_resnet(depth, num_classes=10, reduction=REDUCTION, **options):
    """The CIFAR ResNet (6n+2 layers, Section 4.2 of the ResNet paper) with an SE block in every unit;
    Hu et al. evaluate SE-ResNet-110 on CIFAR-10/100 (Section 6.2). 16-channel units squeeze to 1."""
    return cifar_resnet(depth, num_classes, se_layer=partial(SEBlock, reduction=reduction), **options)


@register_model("se_resnet20", recipe=CIFAR_RECIPE)
def se_resnet20(num_classes=10, **options):
    return se_cifar_resnet(20, num_classes, **options)


@register_model("se_resnet56", recipe=CIFAR_RECIPE)
def se_resnet56(num_classes=10, **options):
    return se_cifar_resnet(56, num_classes, **options)


@register_model("se_resnet110", recipe=CIFAR_RECIPE)
def se_resnet110(num_classes=10, **options):
    return se_cifar_resnet(110, num_classes, **options)


@register_model("se_googlenet", "se_inception_v1", recipe=IMAGENET_SHAPED)
def se_googlenet(num_classes=1000, reduction=REDUCTION, **options):
    """GoogLeNet (Inception v1) with an SE block on each Inception module's output (SENet Fig. 2)."""
    return GoogLeNet(num_classes, se_layer=partial(SEBlock, reduction=reduction), **options)
