"""EfficientNet B0-B7 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for CNNs").

B0 (Table 1) is a stack of MBConv blocks, the inverted bottleneck of
MobileNetV2 with squeeze-and-excitation and swish (SiLU):

    expand 1x1 (+BN+SiLU, absent when the expand ratio is 1)
    -> depthwise kxk, stride s (+BN+SiLU)
    -> squeeze-and-excitation (global pool, 1x1 conv to in/4 channels, SiLU, 1x1 conv, sigmoid, scale)
    -> project 1x1 (+BN, linear: no activation)
    (+ input, through stochastic depth, when stride 1 and in == out channels)

Compound scaling (Sec. 3.3, Eq. 3) widens every stage by ``width_mult`` (channels
rounded to a multiple of 8 by ``_make_divisible``, the reference code's
round_filters), deepens it by ``depth_mult`` (layers rounded up, round_repeats)
and feeds a larger resolution: depth alpha^phi, width beta^phi, resolution
gamma^phi with alpha = 1.2, beta = 1.1, gamma = 1.15 found on B0, so that
alpha * beta^2 * gamma^2 = 1.92 ~ 2 and the FLOPs grow by about 2^phi.
``compound_scaling(phi)`` gives those coefficients and
``get_model("efficientnet_b0", phi=PHI)`` builds B0 scaled by them.

B1-B7 are NOT those formula values: the published coefficients (the official
TF code's ``efficientnet_params``, torchvision's, ``VARIANTS`` below) were set
by hand near them (tensorflow/tpu issue #390), e.g. B7 is width 2.0, depth 3.1,
600 pixels where phi = 7 gives 1.95, 3.58, 596::

    phi        1            2            3            4            5            6            7
    Eq. 3      1.10 1.20 258  1.21 1.44 296  1.33 1.73 341  1.46 2.07 392  1.61 2.49 451  1.77 2.99 518  1.95 3.58 596
    table      1.0  1.1  240  1.1  1.2  260  1.2  1.4  300  1.4  1.8  380  1.6  2.2  456  1.8  2.6  528  2.0  3.1  600

``python -m scratchnet.study claims efficientnet_scaling`` compares the two, stage by stage. The
registered B1-B7 keep the published coefficients (torchvision's weights load into them). The
multipliers, resolutions and dropout rates are torchvision's (which follow
the official TF code); so are the module tree and state_dict keys
(``features.0.0.weight``, ``features.1.0.block.0.0.weight``, ...,
``classifier.1.weight``), so parameter counts equal torchvision's (B0: 5,288,548)
and its weights load with ``load_state_dict``.

BatchNorm: torch's defaults (eps 1e-5, momentum 0.1) for B0-B4 and eps 1e-3,
momentum 0.01 for B5-B7, exactly as torchvision builds them (those weights
were ported from TF, whose BN uses eps 1e-3 and decay 0.99).
"""
import math

from .. import backend
from .. import functional as F
from ..autograd import Tensor
from ..nn import AdaptiveAvgPool2d, Conv2d, Dropout, Linear, Module, Sequential, Sigmoid, SiLU, init
from .mobilenet import Conv2dNormActivation
from .registry import IMAGENET_SHAPED, register_model

# Table 1 (EfficientNet-B0), stages 2-8 (stage 1 is the 3x3/2 stem conv, stage 9 the 1x1 head conv):
# (expand ratio, kernel, stride, in channels, out channels, layers)
B0_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]

# Sec. 3.3: the compound coefficients found by a grid search on B0 (phi = 1)
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution

# variant: (width_mult, depth_mult, resolution, dropout), as torchvision and the official TF code
VARIANTS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}
TF_BN_VARIANTS = ("b5", "b6", "b7")  # BN eps 1e-3, momentum 0.01

# A tiny stage table for gradient checks and smoke tests (``stages=TINY_STAGES, width_mult=1.0``,
# 16x16 input): it keeps every block kind: expand ratio 1 (no expand conv) and >1, kernels 3 and 5,
# stride 2, residual blocks (with stochastic depth from the second block on), SE everywhere.
TINY_STAGES = [
    (1, 3, 1, 8, 8, 2),
    (4, 5, 2, 8, 16, 2),
]


def _make_divisible(value, divisor=8, min_value=None):
    """Round channels to the nearest multiple of ``divisor``, never dropping more than 10%."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def compound_scaling(phi, alpha=ALPHA, beta=BETA, gamma=GAMMA, base_resolution=224):
    """Eq. 3: (width_mult, depth_mult, resolution) = (beta^phi, alpha^phi, round(224 gamma^phi))."""
    return beta ** phi, alpha ** phi, int(round(base_resolution * gamma ** phi))


def scale_stages(stages, width_mult, depth_mult):
    """A stage table scaled as the reference code does it: channels by ``width_mult`` rounded to a
    multiple of 8 (round_filters), layers by ``depth_mult`` rounded up (round_repeats)."""
    return [(expand, kernel, stride, _make_divisible(c_in * width_mult), _make_divisible(c_out * width_mult),
             int(math.ceil(layers * depth_mult)))
            for expand, kernel, stride, c_in, c_out, layers in stages]


class StochasticDepth(Module):
    """Drop a residual branch per sample (Huang et al. 2016), torchvision's ``StochasticDepth``.

    Training, mode "row": each sample's branch is kept with probability 1-p and
    then scaled by 1/(1-p), so its expectation is unchanged; mode "batch" draws
    one coin for the whole batch. Identity in eval mode or when p is 0.
    Built from math ops (a Bernoulli mask times the input), so autograd gives
    the backward: the gradient is masked and scaled the same way.
    """

    def __init__(self, p, mode="row"):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"StochasticDepth: drop probability must be in [0, 1], got {p}")
        if mode not in ("row", "batch"):
            raise ValueError(f"StochasticDepth: mode must be 'row' or 'batch', got {mode!r}")
        self.p, self.mode = p, mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1) if self.mode == "row" else (1,) * x.ndim
        xp = backend.get_array_module(x.data)
        keep = backend.rng(x.device).random(shape) < survival
        noise = xp.asarray(keep, dtype=x.dtype)
        if survival > 0.0:
            noise /= survival
        return x * Tensor(noise)

    def extra_repr(self):
        return f"p={self.p}, mode={self.mode}"


class SqueezeExcitation(Module):
    """SE (Hu et al. 2018) as torchvision.ops.SqueezeExcitation: scale = sigmoid(fc2(silu(fc1(avgpool(x)))))."""

    def __init__(self, channels, squeeze_channels):
        super().__init__()
        self.avgpool = AdaptiveAvgPool2d(1)
        self.fc1 = Conv2d(channels, squeeze_channels, 1)  # 1x1 convs on the pooled 1x1 map = FC layers
        self.fc2 = Conv2d(squeeze_channels, channels, 1)
        self.activation = SiLU()
        self.scale_activation = Sigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x  # one weight per channel, broadcast over H x W


class MBConv(Module):
    """Mobile inverted bottleneck with SE; residual (through stochastic depth) when shapes allow."""

    def __init__(self, expand_ratio, kernel, stride, in_channels, out_channels, stochastic_depth_prob,
                 bn_eps=1e-5, bn_momentum=0.1):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MBConv: stride must be 1 or 2, got {stride}")
        self.use_res_connect = stride == 1 and in_channels == out_channels
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        expanded = _make_divisible(in_channels * expand_ratio)
        layers = []
        if expanded != in_channels:
            layers.append(Conv2dNormActivation(in_channels, expanded, 1, activation=SiLU, **bn))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel, stride, groups=expanded, activation=SiLU,
                                           **bn))
        # the SE bottleneck is a quarter of the block's INPUT channels (not the expanded ones)
        layers.append(SqueezeExcitation(expanded, max(1, in_channels // 4)))
        layers.append(Conv2dNormActivation(expanded, out_channels, 1, activation=None, **bn))
        self.block = Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = out_channels

    def forward(self, x):
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result) + x
        return result


class EfficientNet(Module):
    """stem 3x3/2 conv -> MBConv stages -> 1x1 head conv (4x the last stage's channels) ->
    global average pool -> dropout -> linear."""

    def __init__(self, width_mult, depth_mult, resolution, dropout, num_classes=1000, stages=B0_STAGES,
                 stochastic_depth_prob=0.2, in_channels=3, bn_eps=1e-5, bn_momentum=0.1):
        super().__init__()
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        stages = scale_stages(stages, width_mult, depth_mult)  # compound scaling of the stage table

        features = [Conv2dNormActivation(in_channels, stages[0][3], 3, stride=2, activation=SiLU, **bn)]
        total_blocks, block_id = sum(stage[-1] for stage in stages), 0
        for expand, kernel, stride, c_in, c_out, layers in stages:
            stage = []
            for index in range(layers):
                # the drop probability grows linearly with depth, from 0 to (almost) stochastic_depth_prob
                drop = stochastic_depth_prob * block_id / total_blocks
                stage.append(MBConv(expand, kernel, stride if index == 0 else 1, c_in if index == 0 else c_out,
                                    c_out, drop, **bn))
                block_id += 1
            features.append(Sequential(*stage))
        head_channels = 4 * stages[-1][4]
        features.append(Conv2dNormActivation(stages[-1][4], head_channels, 1, activation=SiLU, **bn))
        self.features = Sequential(*features)
        self.avgpool = AdaptiveAvgPool2d(1)
        self.classifier = Sequential(Dropout(dropout), Linear(head_channels, num_classes))
        self.input_size = (in_channels, resolution, resolution)
        self._init_weights()

    def _init_weights(self):
        # torchvision's init: He normal (fan_out) convs, BN at identity (its default), small uniform FC
        for module in self.modules():
            if isinstance(module, Conv2d):
                init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    init.zeros_(module.bias)
            elif isinstance(module, Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                init.uniform_(module.weight, -bound, bound)
                init.zeros_(module.bias)

    def forward(self, x):
        return self.classifier(F.flatten(self.avgpool(self.features(x)), 1))


def _efficientnet(variant, num_classes=1000, in_channels=3, stochastic_depth_prob=0.2, dropout=None,
                  stages=B0_STAGES, width_mult=None, depth_mult=None, resolution=None, phi=None):
    """Build a variant; any of its table values can be overridden (a tiny test net: small
    ``stages``, ``width_mult``/``resolution``); ``phi`` takes width, depth and resolution from Eq. 3
    (``compound_scaling(phi)``) instead of the published table."""
    width, depth, res, drop = VARIANTS[variant]
    if phi is not None:
        if width_mult is not None or depth_mult is not None or resolution is not None:
            raise ValueError("efficientnet: pass either phi (Eq. 3's compound scaling) or width_mult / depth_mult / "
                             "resolution, not both")
        width, depth, res = compound_scaling(phi)
    tf_bn = variant in TF_BN_VARIANTS
    return EfficientNet(width if width_mult is None else width_mult, depth if depth_mult is None else depth_mult,
                        res if resolution is None else resolution, drop if dropout is None else dropout,
                        num_classes, stages, stochastic_depth_prob, in_channels,
                        bn_eps=1e-3 if tf_bn else 1e-5, bn_momentum=0.01 if tf_bn else 0.1)


@register_model("efficientnet_b0", recipe=IMAGENET_SHAPED)
def efficientnet_b0(num_classes=1000, **options):
    return _efficientnet("b0", num_classes, **options)


@register_model("efficientnet_b1", recipe=IMAGENET_SHAPED)
def efficientnet_b1(num_classes=1000, **options):
    return _efficientnet("b1", num_classes, **options)


@register_model("efficientnet_b2", recipe=IMAGENET_SHAPED)
def efficientnet_b2(num_classes=1000, **options):
    return _efficientnet("b2", num_classes, **options)


@register_model("efficientnet_b3", recipe=IMAGENET_SHAPED)
def efficientnet_b3(num_classes=1000, **options):
    return _efficientnet("b3", num_classes, **options)


@register_model("efficientnet_b4", recipe=IMAGENET_SHAPED)
def efficientnet_b4(num_classes=1000, **options):
    return _efficientnet("b4", num_classes, **options)


@register_model("efficientnet_b5", recipe=IMAGENET_SHAPED)
def efficientnet_b5(num_classes=1000, **options):
    return _efficientnet("b5", num_classes, **options)


@register_model("efficientnet_b6", recipe=IMAGENET_SHAPED)
def efficientnet_b6(num_classes=1000, **options):
    return _efficientnet("b6", num_classes, **options)


@register_model("efficientnet_b7", recipe=IMAGENET_SHAPED)
def efficientnet_b7(num_classes=1000, **options):
    return _efficientnet("b7", num_classes, **options)
