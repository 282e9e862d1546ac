"""Pre-activation ResNet.

He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks" (ECCV 2016, arXiv:1603.05027).

The residual unit is re-ordered so that the shortcut carries x_l to every later unit untouched
(Eq. 4: x_L = x_l + sum F(x_i)): no ReLU after the addition, and BN and ReLU move in front of each
weight layer, "pre-activation" (Fig. 1(b), Fig. 4(e))::

    original (post-activation)   x_{l+1} = relu(x_l + F(x_l))   F = conv-BN-ReLU-conv-BN
    full pre-activation          x_{l+1} = x_l + F(x_l)         F = BN-ReLU-conv-BN-ReLU-conv

CIFAR networks (Sec. 4-5, Table 3; the authors' code: KaimingHe/resnet-1k-layers and
fb.resnet.torch's preresnet.lua)::

    model               unit                           units per stage   stage outputs     Table 3 params
    preact_resnet110    basic [3x3, 3x3]               18 (6n+2 layers)  16, 32, 64        1.7M
    preact_resnet164    bottleneck [1x1, 3x3, 1x1]     18 (9n+2 layers)  64, 128, 256      1.7M
    preact_resnet1001   bottleneck                     111               64, 128, 256      10.2M

    conv1 3x3, 16 -> stage 1 (32x32) -> stage 2 (16x16, stride 2) -> stage 3 (8x8, stride 2)
      -> BN-ReLU (the "extra activation" after the last addition) -> global average pool -> fc

CIFAR-10 test error in Table 3 (original -> pre-activation): ResNet-110 6.61 -> 6.37,
ResNet-164 5.93 -> 5.46, ResNet-1001 7.61 -> 4.92. ``preact_resnet20`` and ``preact_resnet56`` are the
same construction at the depths of the ResNet paper's CIFAR nets, for comparisons with resnet20/56.

Where the shape changes (the first unit of stages 2 and 3, and the bottleneck net's first unit,
16 -> 64 maps), the shortcut reads the pre-activated input too, "when pre-activation is used,
these projection shortcuts are also with pre-activation" (Appendix); so does the first unit's
identity shortcut, "we adopt the first activation right after conv1 and before splitting into
two paths" (Sec. 4.1). Every other shortcut is the identity on x. The basic nets change shape with
option A (subsample + zero channels, parameter-free, as the ResNet paper's CIFAR nets: so
preact_resnetN and resnetN have the same convolutions), the bottleneck nets with 1x1 projections
(option B, resnet-1k-layers), their stride on the first 1x1 conv as in that code. Convolutions
have no bias (BN follows each one), initialisation as the ResNets (He normal, fan_out).
"""
from .. import functional as F
from ..nn import AdaptiveAvgPool2d, BatchNorm2d, Linear, Module, ReLU, Sequential
from .resnet import CIFAR_RECIPE, SHORTCUTS, ZeroPadShortcut, conv1x1, conv3x3, init_resnet_
from .registry import register_model

CIFAR_WIDTHS = (16, 32, 64)  # stage widths (a bottleneck's inner width; it outputs 4x that)

# --------------------------------------------------------------------------- units


class PreActUnit(Module):
    """``x + residual(BN-ReLU(x))``, the shortcut reading x, or the pre-activated x where it must.

    Subclasses set ``downsample`` (the shortcut's module when it is not the identity: zero padding or
    a 1x1 projection) and ``preact_shortcut`` (the shortcut reads the pre-activated input: in the first
    unit of the net, and in every unit whose shortcut changes the shape).
    """

    def __init__(self, inplanes):
        super().__init__()
        self.bn1 = BatchNorm2d(inplanes)
        self.relu = ReLU()

    def residual(self, pre):
        raise NotImplementedError

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        skip = pre if self.preact_shortcut else x
        if self.downsample is not None:
            skip = self.downsample(skip)
        return self.residual(pre) + skip  # no activation after the addition: the shortcut stays clean


class PreActBasicBlock(PreActUnit):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 (Fig. 4(e))."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, preact_shortcut=False):
        super().__init__(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample, self.preact_shortcut = downsample, preact_shortcut

    def residual(self, pre):
        return self.conv2(self.relu(self.bn2(self.conv1(pre))))


class PreActBottleneck(PreActUnit):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1 (x4), the stride on the first 1x1 conv."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, preact_shortcut=False):
        super().__init__(inplanes)
        self.conv1 = conv1x1(inplanes, planes, stride)
        self.bn2 = BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn3 = BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.downsample, self.preact_shortcut = downsample, preact_shortcut

    def residual(self, pre):
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        return self.conv3(self.relu(self.bn3(out)))


BLOCKS = {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck}
LAYERS_PER_UNIT = {"basic": 2, "bottleneck": 3}  # weighted layers per unit: depth = 3 * n * this + 2


# --------------------------------------------------------------------------- network


class PreActResNet(Module):
    """The CIFAR pre-activation ResNet: ``n`` units per stage of ``block`` ("basic" or "bottleneck").

    ``shortcut``: "A" (zero padding) or "B" (1x1 projection) where the shape changes; default A for
    basic units, B for bottlenecks (as the authors' code). ``widths``: the stages' (inner) widths.
    """

    def __init__(self, n, block="basic", num_classes=10, in_channels=3, widths=CIFAR_WIDTHS, shortcut=None):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"PreActResNet: block must be 'basic' or 'bottleneck', got {block!r}")
        shortcut = shortcut if shortcut is not None else ("A" if block == "basic" else "B")
        if shortcut not in [s for s in SHORTCUTS if s is not None]:
            raise ValueError(f"PreActResNet: shortcut must be 'A' (zero padding) or 'B' (projection), got "
                             f"{shortcut!r}")
        unit = BLOCKS[block]
        self.input_size = (in_channels, 32, 32)
        self.conv1 = conv3x3(in_channels, widths[0])
        inplanes = widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            units = []
            for position in range(n):
                outplanes = width * unit.expansion
                changes = position == 0 and (stride != 1 or inplanes != outplanes)
                downsample = None
                if changes:
                    downsample = (ZeroPadShortcut(inplanes, outplanes, stride) if shortcut == "A"
                                  else conv1x1(inplanes, outplanes, stride))
                first_of_net = index == 0 and position == 0
                units.append(unit(inplanes, width, stride if position == 0 else 1, downsample,
                                  preact_shortcut=changes or first_of_net))
                inplanes = outplanes
            setattr(self, f"layer{index + 1}", Sequential(*units))
        self.num_stages = len(widths)
        self.bn = BatchNorm2d(inplanes)  # the extra activation after the last unit's addition
        self.relu = ReLU()
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = Linear(inplanes, num_classes)
        init_resnet_(self, zero_init_residual=False)

    def stages(self):
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward(self, x):
        x = self.conv1(x)
        for stage in self.stages():
            x = stage(x)
        x = self.relu(self.bn(x))
        return self.fc(F.flatten(self.avgpool(x), 1))


def preact_resnet(depth, block="basic", num_classes=10, **options):
    """The pre-activation CIFAR ResNet with ``depth`` weighted layers: 6n+2 (basic) or 9n+2 (bottleneck)."""
    per_stage = 3 * LAYERS_PER_UNIT.get(block, 2)
    if (depth - 2) % per_stage or depth < 2 + per_stage:
        raise ValueError(f"pre-activation ResNets with {block} units have {per_stage}n+2 layers "
                         f"({2 + per_stage}, {2 + 2 * per_stage}, ...); got {depth}")
    return PreActResNet((depth - 2) // per_stage, block, num_classes, **options)


@register_model("preact_resnet20", recipe=CIFAR_RECIPE)
def preact_resnet20(num_classes=10, **options):
    return preact_resnet(20, "basic", num_classes, **options)


@register_model("preact_resnet56", recipe=CIFAR_RECIPE)
def preact_resnet56(num_classes=10, **options):
    return preact_resnet(56, "basic", num_classes, **options)


@register_model("preact_resnet110", recipe=CIFAR_RECIPE)
def preact_resnet110(num_classes=10, **options):
    return preact_resnet(110, "basic", num_classes, **options)


@register_model("preact_resnet164", recipe=CIFAR_RECIPE)
def preact_resnet164(num_classes=10, **options):
    return preact_resnet(164, "bottleneck", num_classes, **options)


@register_model("preact_resnet1001", recipe=CIFAR_RECIPE)
def preact_resnet1001(num_classes=10, **options):
    return preact_resnet(1001, "bottleneck", num_classes, **options)
