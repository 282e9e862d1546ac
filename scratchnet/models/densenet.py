"""DenseNet-BC (121/169/201/161).

Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks"
(CVPR 2017, arXiv:1608.06993).

Table 1 (ImageNet, growth rate k = 32; input 224x224)::

    layer              output    DenseNet-121        -169        -201        (-161: k = 48, stem 96)
    convolution        112x112   7x7 conv, stride 2 (stem of 2k = 64 channels, BN, ReLU)
    pooling             56x56    3x3 max pool, stride 2
    dense block 1       56x56    [1x1 conv, 3x3 conv] x 6      x 6         x 6         x 6
    transition 1        28x28    1x1 conv, 2x2 average pool, stride 2
    dense block 2       28x28    x 12                          x 12        x 12        x 12
    transition 2        14x14    1x1 conv, 2x2 average pool, stride 2
    dense block 3       14x14    x 24                          x 32        x 48        x 36
    transition 3         7x7     1x1 conv, 2x2 average pool, stride 2
    dense block 4        7x7     x 16                          x 32        x 32        x 24
    classification       1x1     BN, ReLU, 7x7 global average pool, 1000-way fc, softmax

Dense connectivity (Section 3, Eq. 2): layer l sees the concatenation of every earlier map in
its block, ``x_l = H_l([x_0, x_1, ..., x_{l-1}])``, and adds k new channels. ``H_l`` is the
bottleneck "-B" layer: BN-ReLU-1x1 conv (4k channels)-BN-ReLU-3x3 conv (k channels). The
transitions ("-C", compression theta = 0.5) are BN-ReLU-1x1 conv (halving the channels)-2x2
average pool.

CIFAR networks (Section 3, "Implementation Details"; Table 2), input 32x32::

    layer              output    DenseNet-BC
    convolution        32x32     3x3 conv, 2k channels (no BN, ReLU or pooling in the stem)
    dense block 1      32x32     [1x1 conv, 3x3 conv] x n      n = (L - 4) / 6 bottleneck layers
    transition 1       16x16     1x1 conv (theta = 0.5), 2x2 average pool
    dense block 2      16x16     x n
    transition 2        8x8      1x1 conv, 2x2 average pool
    dense block 3       8x8      x n
    classification     1x1       BN, ReLU, global average pool, 10-way fc

    Table 2:  DenseNet-BC (L=100, k=12) 0.8M   (L=250, k=24) 15.3M   (L=190, k=40) 25.6M
              -> densenet_bc_100, densenet_bc_250, densenet_bc_190 (the same blocks, ``stem="cifar"``)

The concat join is visible: ``_DenseBlock.forward`` grows ``features = cat([features, new], 1)``
one layer at a time with ``F.cat`` (its backward splits the gradient back to every earlier
layer); no preallocated buffer, no in-place writes. Module names, state_dict keys and init are
torchvision's (``features.conv0``, ``features.denseblock1.denselayer1.norm1``,
``features.transition1.conv``, ``features.norm5``, ``classifier``). torchvision's
``memory_efficient`` checkpointing is not implemented.
"""
from collections import OrderedDict

from .. import functional as F
from ..nn import (AvgPool2d, BatchNorm2d, Conv2d, Dropout, Linear, MaxPool2d, Module, ModuleDict, ReLU,
                  Sequential, init)
from .registry import IMAGENET_SHAPED, Recipe, register_model

# --------------------------------------------------------------------------- the table

# Table 1: (growth rate k, dense layers per block, stem channels)
DENSENET_CONFIGS = {
    121: (32, (6, 12, 24, 16), 64),
    169: (32, (6, 12, 32, 32), 64),
    201: (32, (6, 12, 48, 32), 64),
    161: (48, (6, 12, 36, 24), 96),
}
# Table 2 (CIFAR, DenseNet-BC): depth L -> growth rate k; three blocks of (L - 4) / 6 bottleneck layers
CIFAR_BC_CONFIGS = {100: 12, 250: 24, 190: 40}
BN_SIZE = 4        # the 1x1 bottleneck produces bn_size * k maps (Section 3, "Bottleneck layers")
COMPRESSION = 0.5  # theta: a transition keeps floor(theta * m) of its m input maps ("Compression")


# --------------------------------------------------------------------------- blocks


class _DenseLayer(Module):
    """H_l: BN-ReLU-Conv(1x1, bn_size*k)-BN-ReLU-Conv(3x3, k); returns the k NEW maps only."""

    def __init__(self, num_input_features, growth_rate, bn_size=BN_SIZE, drop_rate=0.0):
        super().__init__()
        self.norm1 = BatchNorm2d(num_input_features)
        self.relu1 = ReLU(inplace=True)
        self.conv1 = Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False)
        self.norm2 = BatchNorm2d(bn_size * growth_rate)
        self.relu2 = ReLU(inplace=True)
        self.conv2 = Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False)
        # Section 4.2: dropout 0.2 after each conv only in the runs without data augmentation;
        # torchvision (and we) apply it to the new maps only, 0 by default.
        self.drop_rate = float(drop_rate)
        self.dropout = Dropout(self.drop_rate) if drop_rate > 0 else None

    def forward(self, x):
        bottleneck = self.conv1(self.relu1(self.norm1(x)))
        new_features = self.conv2(self.relu2(self.norm2(bottleneck)))
        return new_features if self.dropout is None else self.dropout(new_features)


class _DenseBlock(ModuleDict):
    """``num_layers`` dense layers; the output holds the input maps plus k new maps per layer."""

    def __init__(self, num_layers, num_input_features, growth_rate, bn_size=BN_SIZE, drop_rate=0.0):
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size, drop_rate)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x):
        features = x  # [x_0, ..., x_{l-1}] concatenated along the channels
        for layer in self.values():
            features = F.cat([features, layer(features)], dim=1)
        return features


class _Transition(Module):
    """BN-ReLU-Conv(1x1)-AvgPool(2x2, stride 2) between dense blocks (Section 3, "Pooling layers")."""

    def __init__(self, num_input_features, num_output_features):
        super().__init__()
        self.norm = BatchNorm2d(num_input_features)
        self.relu = ReLU(inplace=True)
        self.conv = Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1, bias=False)
        self.pool = AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        return self.pool(self.conv(self.relu(self.norm(x))))


# --------------------------------------------------------------------------- network


class DenseNet(Module):
    """DenseNet-BC of Table 1 (torchvision's module tree and init), or of the CIFAR experiments.

    ``growth_rate`` k, ``block_config`` (dense layers per block), ``num_init_features`` (stem),
    ``bn_size``, ``drop_rate``, ``compression`` theta, ``in_channels``. Shrink them for tiny test nets.
    ``stem``: "imagenet" (7x7/2 conv, BN, ReLU, 3x3/2 max pool; 224x224 input) or "cifar" (one 3x3
    conv; 32x32 input).
    """

    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=BN_SIZE,
                 drop_rate=0.0, num_classes=1000, compression=COMPRESSION, in_channels=3, stem="imagenet"):
        super().__init__()
        if not 0 < compression <= 1:
            raise ValueError(f"DenseNet: compression must be in (0, 1], got {compression}")
        if stem == "imagenet":
            self.input_size = (in_channels, 224, 224)
            self.features = Sequential(OrderedDict([
                ("conv0", Conv2d(in_channels, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
                ("norm0", BatchNorm2d(num_init_features)),
                ("relu0", ReLU(inplace=True)),
                ("pool0", MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]))
        elif stem == "cifar":
            self.input_size = (in_channels, 32, 32)
            self.features = Sequential(OrderedDict([
                ("conv0", Conv2d(in_channels, num_init_features, kernel_size=3, padding=1, bias=False)),
            ]))
        else:
            raise ValueError(f"DenseNet: stem must be 'imagenet' or 'cifar', got {stem!r}")
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers, num_features, growth_rate, bn_size, drop_rate)
            self.features.add_module(f"denseblock{i + 1}", block)
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                compressed = int(num_features * compression)
                self.features.add_module(f"transition{i + 1}", _Transition(num_features, compressed))
                num_features = compressed
        self.features.add_module("norm5", BatchNorm2d(num_features))
        self.classifier = Linear(num_features, num_classes)
        self._init_weights()

    def _init_weights(self):
        """torchvision: He normal (fan_in) convs, BN 1/0, fc bias 0 (weight: Linear's default)."""
        for module in self.modules():
            if isinstance(module, Conv2d):
                init.kaiming_normal_(module.weight)
            elif isinstance(module, BatchNorm2d):
                init.ones_(module.weight)
                init.zeros_(module.bias)
            elif isinstance(module, Linear):
                init.zeros_(module.bias)

    def forward(self, x):
        out = F.relu(self.features(x))
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(F.flatten(out, 1))


def densenet(depth, num_classes=1000, **options):
    """DenseNet-BC-``depth`` of Table 1; options go to ``DenseNet``."""
    growth_rate, block_config, num_init_features = DENSENET_CONFIGS[depth]
    options.setdefault("growth_rate", growth_rate)
    options.setdefault("block_config", block_config)
    options.setdefault("num_init_features", num_init_features)
    return DenseNet(num_classes=num_classes, **options)


@register_model("densenet121", recipe=IMAGENET_SHAPED)
def densenet121(num_classes=1000, **options):
    return densenet(121, num_classes, **options)


@register_model("densenet161", recipe=IMAGENET_SHAPED)
def densenet161(num_classes=1000, **options):
    return densenet(161, num_classes, **options)


@register_model("densenet169", recipe=IMAGENET_SHAPED)
def densenet169(num_classes=1000, **options):
    return densenet(169, num_classes, **options)


@register_model("densenet201", recipe=IMAGENET_SHAPED)
def densenet201(num_classes=1000, **options):
    return densenet(201, num_classes, **options)


# --------------------------------------------------------------------------- CIFAR (Table 2)


# Huang et al. Sec. 4.2: batch 64, 300 epochs, lr 0.1 divided by 10 at 50% and 75%, wd 1e-4, momentum 0.9
DENSENET_CIFAR_RECIPE = Recipe("densenet_cifar", dataset="cifar10", epochs=300, batch_size=64, lr=0.1, momentum=0.9,
                               weight_decay=1e-4, optimizer="sgd", schedule="step", warmup=0.0,
                               augment=("crop", "flip"))


def cifar_densenet_bc(depth, num_classes=10, growth_rate=None, **options):
    """DenseNet-BC with ``depth`` = L layers on 32x32 input: three blocks of (L - 4) / 6 bottleneck
    layers, a stem of 2k channels; ``growth_rate`` defaults to Table 2's k for that depth."""
    if (depth - 4) % 6 or depth < 10:
        raise ValueError(f"CIFAR DenseNet-BC has 6n+4 layers (10, 16, ..., 100, 190, 250); got {depth}")
    k = growth_rate if growth_rate is not None else CIFAR_BC_CONFIGS.get(depth, 12)
    layers = (depth - 4) // 6
    options.setdefault("num_init_features", 2 * k)
    return DenseNet(growth_rate=k, block_config=(layers,) * 3, num_classes=num_classes, stem="cifar", **options)


@register_model("densenet_bc_100", recipe=DENSENET_CIFAR_RECIPE)
def densenet_bc_100(num_classes=10, **options):
    return cifar_densenet_bc(100, num_classes, **options)


@register_model("densenet_bc_250", recipe=DENSENET_CIFAR_RECIPE)
def densenet_bc_250(num_classes=10, **options):
    return cifar_densenet_bc(250, num_classes, **options)


@register_model("densenet_bc_190", recipe=DENSENET_CIFAR_RECIPE)
def densenet_bc_190(num_classes=10, **options):
    return cifar_densenet_bc(190, num_classes, **options)
