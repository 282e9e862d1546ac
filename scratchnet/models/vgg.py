"""VGG (Simonyan & Zisserman 2015, "Very deep convolutional networks", Table 1 configurations
A, B, D, E = VGG-11, 13, 16, 19), with and without batch norm, module for module as torchvision.

    Table 1:       A (11)        B (13)        C (16)                    D (16)           E (19)
    block 1        conv3-64      conv3-64 x2   conv3-64 x2               conv3-64 x2      conv3-64 x2
    block 2        conv3-128     conv3-128 x2  conv3-128 x2              conv3-128 x2     conv3-128 x2
    block 3        conv3-256 x2  conv3-256 x2  conv3-256 x2, conv1-256   conv3-256 x3     conv3-256 x4
    block 4        conv3-512 x2  conv3-512 x2  conv3-512 x2, conv1-512   conv3-512 x3     conv3-512 x4
    block 5        conv3-512 x2  conv3-512 x2  conv3-512 x2, conv1-512   conv3-512 x3     conv3-512 x4
    (each block ends in a maxpool 2x2/2)
    classifier     FC-4096, FC-4096 (ReLU, dropout 0.5), FC-classes
    Table 2 params 133M          133M          134M                      138M             144M

Every conv is 3x3, stride 1, padding 1 (Sec. 2.1), except configuration C's three 1x1 convs ("a way to
increase the non-linearity of the decision function without affecting the receptive fields", Sec. 2.3;
``vgg16_c``, 133,638,952 parameters), each followed by ReLU (and BatchNorm before it in
the _bn variants, which the paper predates). Channels double after each pool until 512.
As torchvision: ``features.N`` indices, an AdaptiveAvgPool2d((7, 7)) ``avgpool`` (the identity at
224x224 input) and ``classifier.0/3/6``; its initialisation (Kaiming-normal fan_out convs, N(0,
0.01) linears, zero biases). VGG-16: 138,357,544 parameters.
"""
from .. import functional as F
from ..nn import init
from ..nn.layers import AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Linear, MaxPool2d, ReLU
from ..nn.module import Module, Sequential
from .registry import IMAGENET_SHAPED, register_model

M = "M"  # a 2x2/2 max pool
CONFIGS = {  # Table 1 columns: conv3 widths in order, (width, 1) for a conv1, "M" for each pool
    "A": (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    "B": (64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    "C": (64, 64, M, 128, 128, M, 256, 256, (256, 1), M, 512, 512, (512, 1), M, 512, 512, (512, 1), M),
    "D": (64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M),
    "E": (64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M),
}


def make_features(config, batch_norm=False, in_channels=3, width=1.0):
    """The conv stack of one Table 1 column; ``width`` scales every channel count (tiny configs)."""
    layers = []
    for entry in config:
        if entry == M:
            layers.append(MaxPool2d(2, 2))
            continue
        maps, kernel = entry if isinstance(entry, tuple) else (entry, 3)
        maps = max(1, int(maps * width))
        layers.append(Conv2d(in_channels, maps, kernel, padding=kernel // 2))
        if batch_norm:
            layers.append(BatchNorm2d(maps))
        layers.append(ReLU(True))
        in_channels = maps
    return Sequential(*layers), in_channels


class VGG(Module):
    def __init__(self, config, num_classes=1000, batch_norm=False, in_channels=3, width=1.0, hidden=4096,
                 dropout=0.5, init_weights=True):
        super().__init__()
        self.input_size = (in_channels, 224, 224)
        self.features, maps = make_features(CONFIGS[config], batch_norm, in_channels, width)
        self.avgpool = AdaptiveAvgPool2d((7, 7))
        self.classifier = Sequential(
            Linear(maps * 7 * 7, hidden), ReLU(True), Dropout(dropout),
            Linear(hidden, hidden), ReLU(True), Dropout(dropout),
            Linear(hidden, num_classes),
        )
        if init_weights:
            for module in self.modules():  # torchvision's initialisation
                if isinstance(module, Conv2d):
                    init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                    init.zeros_(module.bias)
                elif isinstance(module, BatchNorm2d):
                    init.ones_(module.weight)
                    init.zeros_(module.bias)
                elif isinstance(module, Linear):
                    init.normal_(module.weight, 0.0, 0.01)
                    init.zeros_(module.bias)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(F.flatten(x, 1))


def _register(name, config, batch_norm):
    @register_model(name, recipe=IMAGENET_SHAPED)
    def constructor(num_classes=1000, **options):
        return VGG(config, num_classes, batch_norm=batch_norm, **options)
    constructor.__name__ = name
    constructor.__doc__ = f"VGG configuration {config} (Table 1){' with batch norm' if batch_norm else ''}."
    return constructor


vgg11 = _register("vgg11", "A", False)
vgg11_bn = _register("vgg11_bn", "A", True)
vgg13 = _register("vgg13", "B", False)
vgg13_bn = _register("vgg13_bn", "B", True)
vgg16_c = _register("vgg16_c", "C", False)
vgg16_c_bn = _register("vgg16_c_bn", "C", True)
vgg16 = _register("vgg16", "D", False)
vgg16_bn = _register("vgg16_bn", "D", True)
vgg19 = _register("vgg19", "E", False)
vgg19_bn = _register("vgg19_bn", "E", True)
