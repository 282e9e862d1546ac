"""ResNet, its plain twins, and the CIFAR family.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016, arXiv:1512.03385).

ImageNet networks, the paper's Table 1 (input 224x224; output size of each stage on the right)::

    layer    output   18-layer    34-layer    50-layer          101-layer          152-layer
    conv1    112x112  7x7, 64, stride 2 (+ BN, ReLU)
    maxpool   56x56   3x3 max pool, stride 2
    layer1    56x56   [3x3,64]x2  [3x3,64]x3  [1x1,64  3x3,64  1x1,256 ]x3   x3   x3
    layer2    28x28   [3x3,128]x2 ...x4       [1x1,128 3x3,128 1x1,512 ]x4   x4   x8
    layer3    14x14   [3x3,256]x2 ...x6       [1x1,256 3x3,256 1x1,1024]x6   x23  x36
    layer4     7x7    [3x3,512]x2 ...x3       [1x1,512 3x3,512 1x1,2048]x3   x3   x3
    avgpool + fc       1x1        global average pool, 1000-way fc

Each ``[...]`` is one residual unit: ``relu(F(x) + shortcut(x))`` (Section 3.2, Eq. 1/2). Where a
stage halves the resolution and widens the channels, the shortcut is a 1x1 stride-2 projection
followed by BN (the paper's option B, Section 3.3; torchvision's ``downsample``). Identity shortcuts
everywhere else. Module names, state_dict keys and initialisation are torchvision's
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``/``.1``, ``fc``), so
torchvision weights load with ``model.load_state_dict({k: v.numpy() for k, v in sd.items()})``.

Where the bottleneck strides: the paper (and Caffe's original models) put the stride-2 on the
first 1x1 conv of the first unit of a stage; torchvision ("ResNet v1.5") moves it onto the 3x3,
which sees every input pixel instead of skipping three in four (~+0.5% top-1, a few more FLOPs).
We follow torchvision; ``stride_in_1x1=True`` gives the paper's placement. Parameters are equal.

Plain twins (``plain18`` ... ``plain152``, the degradation study of Section 4.1, Fig. 4): the very
same stacks without any shortcut. They hold exactly the ResNet's parameters minus the projection
shortcuts (e.g. plain18 = resnet18 - 173,824 = 11,515,688; plain34 = resnet34 - 173,824).

CIFAR-10 networks (Section 4.2): a 3x3 conv with 16 filters, then three stages of ``2n`` 3x3
layers on maps of 32x32, 16x16, 8x8 with 16, 32, 64 filters, global average pool, 10-way fc:
``6n + 2`` weighted layers (n = 3, 5, 7, 9, 18, 200 -> 20, 32, 44, 56, 110, 1202 layers)::

    output map   32x32   16x16   8x8
    # layers     1+2n    2n      2n
    # filters    16      32      64

All shortcuts are identities; where the channels double, option A (Section 3.3): subsample by 2
and pad the new channels with zeros (parameter-free), so ``resnetN`` and ``plainN`` have the SAME
parameter count with option A. ``shortcut="B"`` uses 1x1 projections instead.

Where the gradient splits. Every block is a ``ResidualUnit`` whose forward reads::

    branch = block.residual(x)          # F(x): conv-BN-ReLU-conv-BN (+ SE), no final ReLU
    skip   = block.shortcut(x)          # x, downsample(x) (option B) or zero-pad(x) (option A); None if plain
    out    = block.relu(branch + skip)

The addition hands one gradient to both summands; back at ``x`` the two paths carry different
shares (their sum is x's gradient). ``python -m scratchnet.study joins resnet20`` measures them
with function hooks (``scratchnet.study.joins``), so the model holds no plumbing for it.
"""
from .. import backend
from .. import functional as F
from ..nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, DeformConv2d, DeformConv2dPack, Linear, MaxPool2d, Module,
                  ReLU, Sequential, init)
from .registry import IMAGENET_SHAPED, Recipe, register_model

# --------------------------------------------------------------------------- the tables

# Table 1: residual units per stage; the block kind sets the unit (two 3x3, or 1x1-3x3-1x1).
IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)  # stage widths (a bottleneck's inner width; it outputs 4x that)

# Section 4.2: 6n+2 layers -> n basic units per stage, stages of 16, 32, 64 filters.
CIFAR_DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}
CIFAR_WIDTHS = (16, 32, 64)

SHORTCUTS = ("A", "B", None)  # option A zero-pad, option B projection, None: the plain twin


# --------------------------------------------------------------------------- blocks


def conv3x3(in_planes, out_planes, stride=1):
    return Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    return Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ResidualUnit(Module):
    """``relu(residual(x) + shortcut(x))``; a plain unit (``downsample is None`` and
    ``use_shortcut=False``) computes ``relu(residual(x))``.

    Subclasses build the residual branch and define ``residual(x)``; ``downsample`` is the
    shortcut's module when it is not the identity (option B: Sequential(conv1x1, BN); option A:
    ``ZeroPadShortcut``).
    """

    def __init__(self, use_shortcut):
        super().__init__()
        self.use_shortcut = use_shortcut

    def residual(self, x):
        raise NotImplementedError

    def shortcut(self, x):
        """The shortcut path: identity, or the projection / zero-padding ``downsample``."""
        if not self.use_shortcut:
            return None
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x):
        branch = self.residual(x)
        skip = self.shortcut(x)
        return self.relu(branch if skip is None else branch + skip)

    def last_bn(self):
        """The BN closing the residual branch (zero_init_residual sets its weight to 0)."""
        raise NotImplementedError


class BasicBlock(ResidualUnit):
    """Two 3x3 convs (ResNet-18/34 and the CIFAR nets), Fig. 5 left. torchvision's key names."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, use_shortcut=True, se_layer=None,
                 stride_in_1x1=False, conv3x3_layer=conv3x3):
        super().__init__(use_shortcut)
        self.conv1 = conv3x3_layer(inplanes, planes, stride)
        self.bn1 = BatchNorm2d(planes)
        self.relu = ReLU(inplace=True)
        self.conv2 = conv3x3_layer(planes, planes)
        self.bn2 = BatchNorm2d(planes)
        # SENet Fig. 3: recalibrate the branch before the addition
        self.se = se_layer(planes) if se_layer is not None else None
        self.downsample = downsample
        self.stride = stride

    def residual(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return out if self.se is None else self.se(out)

    def last_bn(self):
        return self.bn2


class Bottleneck(ResidualUnit):
    """1x1 reduce, 3x3, 1x1 expand (x4) (ResNet-50/101/152), Fig. 5 right. torchvision's key names.

    The stride sits on the 3x3 (torchvision, "v1.5"); ``stride_in_1x1=True`` puts it on the first
    1x1 as in the paper.
    """

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, use_shortcut=True, se_layer=None,
                 stride_in_1x1=False, conv3x3_layer=conv3x3):
        super().__init__(use_shortcut)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, planes, stride_1x1)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = conv3x3_layer(planes, planes, stride_3x3)
        self.bn2 = BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = BatchNorm2d(planes * self.expansion)
        self.relu = ReLU(inplace=True)
        self.se = se_layer(planes * self.expansion) if se_layer is not None else None
        self.downsample = downsample
        self.stride = stride

    def residual(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out if self.se is None else self.se(out)

    def last_bn(self):
        return self.bn3


class ZeroPadShortcut(Module):
    """Option A (Section 3.3): identity on the old channels, zeros for the new ones, subsampled by
    ``stride``. Parameter-free. As in fb.resnet.torch's ``shortcutType 'A'`` the zero channels
    are appended after the identity ones.
    """

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"ZeroPadShortcut: cannot shrink {in_channels} channels to {out_channels}; "
                             f"option A only pads (use shortcut='B' for a projection)")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.out_channels - self.in_channels
        if extra == 0:
            return x
        xp = backend.get_array_module(x.data)
        zeros = xp.zeros((x.shape[0], extra) + x.shape[2:], dtype=x.dtype)
        return F.cat([x, zeros], dim=1)

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_stage(block, inplanes, planes, blocks, stride=1, shortcut="B", se_layer=None, stride_in_1x1=False,
               conv3x3_layer=None):
    """One stage (``layerN``): ``blocks`` units, the first one striding and widening.

    Returns (Sequential, output channels). The shortcut of the first unit changes shape only
    when it must (stride != 1 or new width): a projection for "B", zero padding for "A".
    ``conv3x3_layer(in, out, stride)`` builds the units' 3x3 convolutions (None: ``conv3x3``; the
    deformable ResNets of deformable.py pass a deformable one).
    """
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS} ('A' zero-pad, 'B' projection, None plain), "
                         f"got {shortcut!r}")
    outplanes = planes * block.expansion
    downsample = None
    if shortcut is not None and (stride != 1 or inplanes != outplanes):
        if shortcut == "B":
            downsample = Sequential(conv1x1(inplanes, outplanes, stride), BatchNorm2d(outplanes))
        else:
            downsample = ZeroPadShortcut(inplanes, outplanes, stride)
    options = dict(use_shortcut=shortcut is not None, se_layer=se_layer, stride_in_1x1=stride_in_1x1,
                   conv3x3_layer=conv3x3_layer or conv3x3)
    units = [block(inplanes, planes, stride, downsample, **options)]
    units += [block(outplanes, planes, **options) for _ in range(1, blocks)]
    return Sequential(*units), outplanes


def init_resnet_(model, zero_init_residual):
    """torchvision's ResNet init: He normal (fan_out) convs, BN weight 1 / bias 0, default fc.

    ``zero_init_residual`` zeroes each unit's last BN weight so every unit starts as the identity
    (Goyal et al. 2017); it is refused for plain nets, where it would cut the signal.
    """
    for module in model.modules():
        if isinstance(module, (Conv2d, DeformConv2d)):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
    for module in model.modules():  # a deformable conv's offset branch (re-drawn above) starts at zero
        if isinstance(module, DeformConv2dPack):
            module.zero_offset_branch()
    if zero_init_residual:
        units = [m for m in model.modules() if isinstance(m, ResidualUnit)]
        if not all(unit.use_shortcut for unit in units):
            raise ValueError("zero_init_residual=True on a plain net (no shortcuts) would zero every "
                             "block's output; use it only with residual nets")
        for unit in units:
            init.zeros_(unit.last_bn().weight)


# --------------------------------------------------------------------------- networks


class ResNet(Module):
    """The ImageNet ResNet of Table 1 (torchvision's module tree).

    ``block``: BasicBlock or Bottleneck; ``layers``: units per stage; ``widths``: the stages'
    (inner) widths, the stem has ``widths[0]`` channels (shrink them for tiny test nets);
    ``shortcut``: "B" (default), "A", or None for the plain twin; ``se_layer``: a callable
    ``channels -> Module`` put at the end of every residual branch (SENet; see senet.py);
    ``stage_conv3x3``: per stage, None or a callable ``(in, out, stride) -> Module`` building its units'
    3x3 convolutions (the deformable ResNets; see deformable.py).
    """

    def __init__(self, block, layers, num_classes=1000, zero_init_residual=False, in_channels=3,
                 widths=IMAGENET_WIDTHS, shortcut="B", se_layer=None, stride_in_1x1=False, stage_conv3x3=None):
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"ResNet: {len(layers)} stages of units {tuple(layers)} but {len(widths)} "
                             f"widths {tuple(widths)}; give one width per stage")
        stage_conv3x3 = _per_stage(stage_conv3x3, len(layers))
        self.input_size = (in_channels, 224, 224)
        self.inplanes = widths[0]
        self.conv1 = Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = BatchNorm2d(self.inplanes)
        self.relu = ReLU(inplace=True)
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        for index, (blocks, width) in enumerate(zip(layers, widths)):
            stage, self.inplanes = make_stage(block, self.inplanes, width, blocks, stride=1 if index == 0 else 2,
                                              shortcut=shortcut, se_layer=se_layer, stride_in_1x1=stride_in_1x1,
                                              conv3x3_layer=stage_conv3x3[index])
            setattr(self, f"layer{index + 1}", stage)
        self.num_stages = len(layers)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = Linear(self.inplanes, num_classes)
        init_resnet_(self, zero_init_residual)

    def stages(self):
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return self.fc(F.flatten(self.avgpool(x), 1))


class CifarResNet(Module):
    """The CIFAR-10 ResNet of Section 4.2: 3x3 stem, three stages of ``n`` basic units, 6n+2 layers.

    ``shortcut``: "A" (the paper's CIFAR choice, default), "B", or None for the plain net.
    ``in_channels=1`` for 32x32 (zero-padded) Fashion-MNIST; ``stage_conv3x3`` as ``ResNet``'s. Same init
    as ``ResNet``.
    """

    def __init__(self, n, num_classes=10, shortcut="A", in_channels=3, widths=CIFAR_WIDTHS,
                 zero_init_residual=False, se_layer=None, block=BasicBlock, stage_conv3x3=None):
        super().__init__()
        stage_conv3x3 = _per_stage(stage_conv3x3, len(widths))
        self.input_size = (in_channels, 32, 32)
        self.inplanes = widths[0]
        self.conv1 = conv3x3(in_channels, self.inplanes)
        self.bn1 = BatchNorm2d(self.inplanes)
        self.relu = ReLU(inplace=True)
        for index, width in enumerate(widths):
            stage, self.inplanes = make_stage(block, self.inplanes, width, n, stride=1 if index == 0 else 2,
                                              shortcut=shortcut, se_layer=se_layer, conv3x3_layer=stage_conv3x3[index])
            setattr(self, f"layer{index + 1}", stage)
        self.num_stages = len(widths)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.fc = Linear(self.inplanes, num_classes)
        init_resnet_(self, zero_init_residual)

    stages = ResNet.stages

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for stage in self.stages():
            x = stage(x)
        return self.fc(F.flatten(self.avgpool(x), 1))


def _per_stage(stage_conv3x3, stages):
    """stage_conv3x3 as one entry (None: a regular 3x3 conv) per stage."""
    if stage_conv3x3 is None:
        return (None,) * stages
    if len(stage_conv3x3) != stages:
        raise ValueError(f"stage_conv3x3 needs one entry per stage ({stages}), got {len(stage_conv3x3)}")
    return tuple(stage_conv3x3)


def imagenet_resnet(depth, num_classes=1000, **options):
    """ResNet-``depth`` of Table 1; options go to ``ResNet`` (e.g. shortcut=None, se_layer=...)."""
    kind, layers = IMAGENET_DEPTHS[depth]
    return ResNet(BLOCKS[kind], layers, num_classes=num_classes, **options)


def cifar_resnet(depth, num_classes=10, **options):
    """The 6n+2-layer CIFAR net of Section 4.2; options go to ``CifarResNet``."""
    if depth not in CIFAR_DEPTHS:
        raise ValueError(f"CIFAR ResNets have 6n+2 layers, one of {sorted(CIFAR_DEPTHS)}; got {depth}")
    return CifarResNet(CIFAR_DEPTHS[depth], num_classes=num_classes, **options)


# He et al. 2016, Sec. 4.2: batch 128, lr 0.1 divided by 10 at 50% and 75%, wd 1e-4, pad-4 crop + flip
CIFAR_RECIPE = Recipe("cifar", dataset="cifar10", epochs=160, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
                      optimizer="sgd", schedule="step", warmup=0.0, augment=("crop", "flip"))


def _register(name, depth, imagenet):
    """Register ``resnet{depth}`` or its plain twin ``plain{depth}`` (shortcut=None, no shortcut options):
    Table 1's net (``imagenet``) or Section 4.2's CIFAR net, with its recipe and class count."""
    build, recipe, classes = (imagenet_resnet, IMAGENET_SHAPED, 1000) if imagenet else (cifar_resnet, CIFAR_RECIPE, 10)
    plain = name.startswith("plain")

    def constructor(num_classes=classes, **options):
        if plain:
            if options.pop("shortcut", None) is not None:
                raise ValueError(f"plain{depth} has no shortcuts; use resnet{depth} for shortcut options")
            options["shortcut"] = None
        return build(depth, num_classes, **options)
    constructor.__name__ = constructor.__qualname__ = name
    source = "Table 1" if imagenet else "Section 4.2"
    constructor.__doc__ = f"The {'plain' if plain else 'residual'} {depth}-layer net of {source}."
    return register_model(name, recipe=recipe)(constructor)


# --------------------------------------------------------------------------- ImageNet (Table 1)

resnet18 = _register("resnet18", 18, imagenet=True)
resnet34 = _register("resnet34", 34, imagenet=True)
resnet50 = _register("resnet50", 50, imagenet=True)
resnet101 = _register("resnet101", 101, imagenet=True)
resnet152 = _register("resnet152", 152, imagenet=True)
plain18 = _register("plain18", 18, imagenet=True)
plain34 = _register("plain34", 34, imagenet=True)
plain50 = _register("plain50", 50, imagenet=True)
plain101 = _register("plain101", 101, imagenet=True)
plain152 = _register("plain152", 152, imagenet=True)


# --------------------------------------------------------------------------- CIFAR-10 (Section 4.2, Table 6)

resnet20 = _register("resnet20", 20, imagenet=False)
resnet32 = _register("resnet32", 32, imagenet=False)
resnet44 = _register("resnet44", 44, imagenet=False)
resnet56 = _register("resnet56", 56, imagenet=False)
resnet110 = _register("resnet110", 110, imagenet=False)
resnet1202 = _register("resnet1202", 1202, imagenet=False)
plain20 = _register("plain20", 20, imagenet=False)
plain32 = _register("plain32", 32, imagenet=False)
plain44 = _register("plain44", 44, imagenet=False)
plain56 = _register("plain56", 56, imagenet=False)
plain110 = _register("plain110", 110, imagenet=False)
