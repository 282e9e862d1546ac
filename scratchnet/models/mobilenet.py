"""MobileNet v1 (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks
for Mobile Vision Applications").

The idea (Sec. 3.1): factor a standard KxK convolution into a *depthwise* KxK
convolution (one filter per input channel: ``Conv2d(groups=channels)``) and a
*pointwise* 1x1 convolution that mixes channels. For a 3x3 kernel this costs
8-9 times fewer multiply-adds. Every convolution is followed by BatchNorm and
ReLU (Fig. 3).

Two global hyper-parameters (Sec. 3.3, 3.4): the width multiplier alpha
(``width_mult``: every layer gets ``int(alpha * channels)`` channels) and the
resolution multiplier rho (``resolution``: 224, 192, 160 or 128 input).

Reference numbers (Table 6 and 7, ImageNet, 1000 classes)::

    model               params   mult-adds      model          mult-adds
    1.0 MobileNet-224   4.2M     569M           1.0 ... -224   569M
    0.75 MobileNet-224  2.6M     325M           1.0 ... -192   418M
    0.5 MobileNet-224   1.3M     149M           1.0 ... -160   290M
    0.25 MobileNet-224  0.5M     41M            1.0 ... -128   186M

With BatchNorm (two parameters per channel) the 1.0 model has exactly
4,231,976 parameters; the paper's mult-adds count conv and FC multiply-adds
only, as ``scratchnet.summary`` does.

``separable=False`` is Table 4's "Conv MobileNet": every depthwise separable
block replaced by one full 3x3 convolution (+ BN + ReLU) with the same input,
output and stride, the cost comparison of Sec. 4.1::

    Table 4              ImageNet acc.   mult-adds   params
    Conv MobileNet       71.7%           4866M       29.3M
    MobileNet            70.6%           569M        4.2M

A full KxK conv from M to N maps on a DFxDF map costs DK*DK*M*N*DF*DF
mult-adds; the separable pair DK*DK*M*DF*DF + M*N*DF*DF, the fraction
1/N + 1/DK^2 of it (Eq. 5).
"""
from collections import OrderedDict

from ..nn import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, ReLU, Sequential
from .registry import IMAGENET_SHAPED, register_model

# Table 1 (MobileNet body): the stem "Conv / s2, 3x3x3x32", then 13 depthwise
# separable blocks as (depthwise stride, pointwise output channels). The
# paper's table prints the second-to-last depthwise layer as "Conv dw / s2"
# on a 7x7 input whose output is still 7x7: a typo, it is stride 1 (the
# reference implementations agree).
STEM_CHANNELS = 32
BLOCKS = [
    (1, 64),
    (2, 128), (1, 128),
    (2, 256), (1, 256),
    (2, 512), (1, 512), (1, 512), (1, 512), (1, 512), (1, 512),
    (2, 1024), (1, 1024),
]
RESOLUTIONS = (224, 192, 160, 128)  # the resolution multipliers of Sec. 3.4 / Table 7


class Conv2dNormActivation(Sequential):
    """Conv (no bias: BN's shift replaces it) -> BatchNorm -> activation, named 0/1/2 as torchvision.

    Shared by the mobile families (MobileNet, EfficientNet); ``activation=None`` leaves it linear.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1, activation=ReLU,
                 bn_eps=1e-5, bn_momentum=0.1):
        layers = [Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2,
                         groups=groups, bias=False),
                  BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class FullConv(Sequential):
    """Table 4's baseline block: one full 3x3 conv + BN + ReLU in place of a depthwise separable pair."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__(OrderedDict([("conv", Conv2dNormActivation(in_channels, out_channels, 3, stride))]))


class DepthwiseSeparable(Sequential):
    """Fig. 3 (right): 3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__(OrderedDict([
            ("depthwise", Conv2dNormActivation(in_channels, in_channels, 3, stride, groups=in_channels)),
            ("pointwise", Conv2dNormActivation(in_channels, out_channels, 1)),
        ]))


class MobileNetV1(Sequential):
    """features (stem + 13 blocks) -> global average pool -> flatten -> fc.

    Table 1 ends with a 7x7 average pool; an adaptive pool gives the same result at 224
    and lets the resolution multiplier (192, 160, 128) work unchanged.
    """

    def __init__(self, num_classes=1000, width_mult=1.0, resolution=224, in_channels=3, blocks=BLOCKS,
                 separable=True):
        if width_mult <= 0:
            raise ValueError(f"mobilenet_v1: width_mult (alpha) must be positive, got {width_mult}")

        def width(channels):  # Sec. 3.3: alpha thins every layer uniformly
            return max(1, int(channels * width_mult))

        layers = [Conv2dNormActivation(in_channels, width(STEM_CHANNELS), 3, stride=2)]
        channels = width(STEM_CHANNELS)
        Block = DepthwiseSeparable if separable else FullConv
        for stride, out_channels in blocks:
            layers.append(Block(channels, width(out_channels), stride))
            channels = width(out_channels)
        super().__init__(OrderedDict([
            ("features", Sequential(*layers)),
            ("avgpool", AdaptiveAvgPool2d(1)),
            ("flatten", Flatten(1)),
            ("fc", Linear(channels, num_classes)),
        ]))
        self.width_mult, self.resolution, self.separable = width_mult, resolution, separable
        self.input_size = (in_channels, resolution, resolution)

    def extra_repr(self):
        return (f"width_mult={self.width_mult}, resolution={self.resolution}"
                + ("" if self.separable else ", separable=False"))


@register_model("mobilenet_v1", "mobilenet", recipe=IMAGENET_SHAPED)
def mobilenet_v1(num_classes=1000, width_mult=1.0, resolution=224, in_channels=3, blocks=BLOCKS, separable=True):
    """MobileNet v1 with width multiplier ``width_mult`` (alpha: 1.0, 0.75, 0.5, 0.25) and
    input ``resolution`` (rho: 224, 192, 160, 128). ``blocks`` replaces Table 1's
    (stride, channels) list, e.g. for a tiny test network; ``separable=False`` builds Table 4's
    Conv MobileNet (full 3x3 convolutions)."""
    return MobileNetV1(num_classes, width_mult, resolution, in_channels, blocks, separable)
