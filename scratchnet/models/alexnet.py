"""AlexNet (Krizhevsky, Sutskever, Hinton 2012, Sec. 3 and Fig. 2) and ZFNet (Zeiler & Fergus
2013, Fig. 3 and Table 1): five conv layers and three fully connected ones.

AlexNet, 227x227 input (the paper's Fig. 2 says 224, but 11x11/4 only gives 55x55 from 227):

    layer  kernel/stride pad  maps   output     after it (Sec. 3.3-3.5)         two-GPU split
    conv1  11x11/4      0     96     55x55      ReLU, LRN, max pool 3x3/2 -> 27
    conv2  5x5/1        2     256    27x27      ReLU, LRN, max pool 3x3/2 -> 13  groups=2
    conv3  3x3/1        1     384    13x13      ReLU                              (all-to-all)
    conv4  3x3/1        1     384    13x13      ReLU                              groups=2
    conv5  3x3/1        1     256    13x13      ReLU, max pool 3x3/2 -> 6         groups=2
    fc6    9216 -> 4096                         ReLU, dropout 0.5
    fc7    4096 -> 4096                         ReLU, dropout 0.5
    fc8    4096 -> classes

The paper's kernels on one GPU see only the maps on that GPU (conv2, conv4, conv5), which is
exactly a grouped convolution with groups=2: 60,965,224 parameters (the paper's "60 million",
Sec. 1). ``groups=1`` gives the common single-GPU AlexNet: 62,378,344.

LRN (Sec. 3.3): b = a / (k + alpha * sum a^2)^beta over n = 5 neighbouring maps, k = 2,
alpha = 1e-4, beta = 0.75. torch's (and our) local_response_norm divides alpha by the window
size, so the paper's layer is LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2).

Switches for the ablations of Sec. 3.3-3.4 (``python -m scratchnet.study claims`` trains them):
``lrn=False`` drops both LRN layers ("response normalization reduces our top-1 and top-5 error rates
by 1.4% and 1.2%"); ``overlapping_pool=False`` pools 2x2/2 ("s = z = 2, which produces output of
equivalent dimensions", 55 -> 27 -> 13 -> 6 as with 3x3/2) instead of the overlapping 3x3/2 ("reduces
the top-1 and top-5 error rates by 0.4% and 0.3%"). Neither changes the parameter count.

torchvision's ``alexnet`` is a different net (Krizhevsky's 2014 "one weird trick" variant):
64-192-384-256-256 maps, 11x11/4 with padding 2 on 224 input, no LRN, an adaptive 6x6 average
pool and 61,100,840 parameters. It is not registered here.

ZFNet (Fig. 3), 224x224 input, one GPU (dense connections in layers 3-5, Sec. 5):

    conv1  7x7/2   pad 1   96   110x110 -> ReLU, max pool 3x3/2 -> 55, contrast norm
    conv2  5x5/2   pad 0   256  26x26   -> ReLU, max pool 3x3/2 -> 13, contrast norm
    conv3  3x3/1   pad 1   384  13x13   -> ReLU
    conv4  3x3/1   pad 1   384  13x13   -> ReLU
    conv5  3x3/1   pad 1   256  13x13   -> ReLU, max pool 3x3/2 -> 6
    fc6 4096, fc7 4096 (ReLU, dropout 0.5), fc8 classes

The pools round up (Caffe's rule, ceil_mode=True) to give Fig. 3's 55, 13 and 6. The
"contrast normalisation" is AlexNet's LRN with AlexNet's constants (the ZF paper gives none).
``zfnet(wide=True)`` is Table 1's larger model with 512-1024-512 maps in layers 3, 4, 5.
"""
from dataclasses import replace

from .. import functional as F
from ..functional.conv import conv_output_size
from ..nn import init
from ..nn.layers import Conv2d, Dropout, Linear, LocalResponseNorm, MaxPool2d, ReLU
from ..nn.module import Module, Sequential
from .registry import IMAGENET_SHAPED, register_model

# (maps, kernel, stride, padding, split across the two GPUs, layers after ReLU)
ALEXNET = (
    (96, 11, 4, 0, False, ("lrn", "pool")),
    (256, 5, 1, 2, True, ("lrn", "pool")),
    (384, 3, 1, 1, False, ()),
    (384, 3, 1, 1, True, ()),
    (256, 3, 1, 1, True, ("pool",)),
)
ZFNET = (
    (96, 7, 2, 1, False, ("pool", "lrn")),
    (256, 5, 2, 0, False, ("pool", "lrn")),
    (384, 3, 1, 1, False, ()),
    (384, 3, 1, 1, False, ()),
    (256, 3, 1, 1, False, ("pool",)),
)
ZFNET_WIDE_345 = (512, 1024, 512)  # Table 1, "(a) bigger layers 3,4,5"


class AlexNet(Module):
    """Five conv layers (``features``) and three FC layers (``classifier``), from a layer table.

    ``channels`` overrides the five conv widths (tiny configurations for gradient checks),
    ``hidden`` the FC width; ``groups`` is the number of GPUs the split layers are split over;
    ``lrn`` and ``overlapping_pool`` switch Sec. 3.3's normalisation and Sec. 3.4's 3x3/2 pooling
    (2x2/2 when off).
    """

    def __init__(self, table, num_classes=1000, in_channels=3, image_size=227, groups=2, channels=None,
                 hidden=4096, dropout=0.5, pool_ceil_mode=False, init_weights="paper", lrn=True,
                 overlapping_pool=True):
        super().__init__()
        if init_weights not in ("paper", "torch"):
            raise ValueError(f"init_weights must be 'paper' or 'torch' (torch's layer defaults), got {init_weights!r}")
        channels = tuple(channels) if channels is not None else tuple(row[0] for row in table)
        if len(channels) != len(table):
            raise ValueError(f"channels must list {len(table)} conv widths, got {channels}")
        self.input_size = (in_channels, image_size, image_size)
        pool = 3 if overlapping_pool else 2  # z; the stride s is 2 either way
        layers, size, previous = [], image_size, in_channels
        for maps, (_, kernel, stride, padding, split, after) in zip(channels, table):
            layers += [Conv2d(previous, maps, kernel, stride, padding, groups=groups if split else 1), ReLU(True)]
            size = conv_output_size(size, kernel, stride, padding)
            for name in after:
                if name == "lrn":  # Sec. 3.3: n=5, k=2, alpha=1e-4 (torch scales alpha by 1/size), beta=0.75
                    if lrn:
                        layers.append(LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0))
                else:  # Sec. 3.4: overlapping pooling, z=3, s=2
                    layers.append(MaxPool2d(pool, 2, ceil_mode=pool_ceil_mode))
                    size = conv_output_size(size, pool, 2, 0, ceil_mode=pool_ceil_mode)
            previous = maps
        if size < 1:
            raise ValueError(f"image_size={image_size} is too small for this network")
        self.features = Sequential(*layers)
        # Sec. 4.2: dropout 0.5 on the outputs of the first two fully connected layers
        self.classifier = Sequential(
            Linear(previous * size * size, hidden), ReLU(True), Dropout(dropout),
            Linear(hidden, hidden), ReLU(True), Dropout(dropout),
            Linear(hidden, num_classes),
        )
        if init_weights == "paper":
            self._paper_init()

    def _paper_init(self):
        """Sec. 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC layers, else 0."""
        convs = [m for m in self.features if isinstance(m, Conv2d)]
        fcs = [m for m in self.classifier if isinstance(m, Linear)]
        for index, layer in enumerate(convs + fcs):
            init.normal_(layer.weight, 0.0, 0.01)
            init.constant_(layer.bias, 1.0 if index in (1, 3, 4, 5, 6) else 0.0)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(F.flatten(x, 1))


# AlexNet/ZFNet: the ImageNet-shaped recipe with Krizhevsky et al.'s augmentation (Sec. 4.1): random patches
# of images rescaled by 256/224, their mirror images, and the PCA colour noise
ALEXNET_RECIPE = replace(IMAGENET_SHAPED, name="alexnet", augment=("patches", "flip", "lighting"))


@register_model("alexnet", recipe=ALEXNET_RECIPE)
def alexnet(num_classes=1000, **options):
    """AlexNet as in the paper (groups=2: the two-GPU split; groups=1: single-GPU)."""
    options.setdefault("image_size", 227)
    return AlexNet(ALEXNET, num_classes, **options)


@register_model("zfnet", recipe=ALEXNET_RECIPE)
def zfnet(num_classes=1000, wide=False, **options):
    """ZFNet (Fig. 3); ``wide=True``: Table 1's 512-1024-512 maps in layers 3-5."""
    options.setdefault("image_size", 224)
    options.setdefault("groups", 1)
    if wide and "channels" not in options:
        options["channels"] = tuple(row[0] for row in ZFNET[:2]) + ZFNET_WIDE_345
    return AlexNet(ZFNET, num_classes, pool_ceil_mode=True, **options)
