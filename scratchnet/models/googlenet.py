"""GoogLeNet, Inception v1 (Szegedy et al. 2014, "Going deeper with convolutions", Table 1, Fig. 2-3).

    Table 1:  type          patch/stride  output      #1x1 #3x3red #3x3 #5x5red #5x5 pool proj
              conv          7x7/2         112x112x64
              max pool      3x3/2         56x56x64        (then LRN)
              conv          3x3/1         56x56x192   (a 1x1 "reduce" conv of 64 first; then LRN)
              max pool      3x3/2         28x28x192
              inception 3a                28x28x256    64    96    128    16    32    32
              inception 3b                28x28x480   128   128    192    32    96    64
              max pool      3x3/2         14x14x480
              inception 4a                14x14x512   192    96    208    16    48    64   -> aux1
              inception 4b                14x14x512   160   112    224    24    64    64
              inception 4c                14x14x512   128   128    256    24    64    64
              inception 4d                14x14x528   112   144    288    32    64    64   -> aux2
              inception 4e                14x14x832   256   160    320    32   128   128
              max pool      3x3/2         7x7x832
              inception 5a                7x7x832     256   160    320    32   128   128
              inception 5b                7x7x1024    384   192    384    48   128   128
              avg pool      7x7/1         1x1x1024    (global), dropout 40%, linear, softmax

Every conv is followed by ReLU, there is no batch norm (the paper predates it), and the 5x5
branch really is 5x5 (torchvision's googlenet uses a 3x3 there, a bug kept for its pretrained
weights, and adds batch norm). Pools round up (ceil_mode, as the reference Caffe model) so the
sizes are Table 1's 112, 56, 28, 14, 7. The LRNs are the Caffe model's: size 5, alpha 1e-4
(Caffe and torch both divide alpha by the size), beta 0.75, k 1.

Auxiliary classifiers (Sec. 5) on 4a and 4d, used only while training: avg pool 5x5/3 (4x4
output), 1x1 conv 128 + ReLU, FC 1024 + ReLU, dropout 70%, linear. In train mode the forward
returns ``GoogLeNetOutputs(logits, aux1, aux2)``, in eval mode the logits; ``model.loss`` adds the
auxiliary losses with the paper's 0.3 weight and ``model.main_output`` (so ``model.scores``) picks
the main logits.

``image_size`` sets the input side (224); the auxiliary heads size their FC from the pooled map
(4x4 at 224, 1x1 from 80 to 127), so smaller CPU-sized nets can train with them.
``se_layer`` puts a squeeze-and-excitation block on every module's output (SENet's SE-Inception
module, ``se_googlenet`` in senet.py).

``naive=True`` builds the net from the naive module of Fig. 2(a) (1x1, 3x3, 5x5 convs and a
3x3 max pool side by side, no reductions): its output width grows by the input width at every
module, the blow-up that motivates the 1x1 reductions.

Module names follow torchvision (conv1.conv, inception3a.branch2.1.conv, aux1.fc1, fc...), so the
state dict keys line up with torchvision's wherever the layers themselves do.
"""
from collections import namedtuple

from .. import functional as F
from ..functional.conv import conv_output_size
from ..nn import init
from ..nn.layers import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Dropout, Linear, LocalResponseNorm, MaxPool2d
from ..nn.module import Module, Sequential
from .registry import IMAGENET_SHAPED, register_model

# Table 1: inception module -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
AUX_LOSS_WEIGHT = 0.3  # Sec. 5: auxiliary losses are added with a discount weight of 0.3

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux1", "aux2"])


class BasicConv2d(Module):
    """conv + ReLU (with bias, no batch norm); named ``.conv`` as torchvision's block."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, kernel_size, stride, padding)

    def forward(self, x):
        return F.relu(self.conv(x))


class Inception(Module):
    """Fig. 2(b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, concatenated on channels.

    ``se_layer`` (a callable ``channels -> Module``) recalibrates the concatenation: SENet's
    "SE-Inception module" (Hu et al., Fig. 2)."""

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, se_layer=None):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1)
        self.branch2 = Sequential(BasicConv2d(in_channels, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3, padding=1))
        self.branch3 = Sequential(BasicConv2d(in_channels, ch5x5red, 1), BasicConv2d(ch5x5red, ch5x5, 5, padding=2))
        self.branch4 = Sequential(MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(in_channels, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.se = se_layer(self.out_channels) if se_layer is not None else None

    def forward(self, x):
        out = F.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)
        return out if self.se is None else self.se(out)


class NaiveInception(Module):
    """Fig. 2(a): 1x1 | 3x3 | 5x5 convs and a 3x3 max pool on the same input, concatenated.

    The pool branch keeps all input channels, so out = in + ch1x1 + ch3x3 + ch5x5."""

    def __init__(self, in_channels, ch1x1, ch3x3, ch5x5, se_layer=None):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1)
        self.branch2 = BasicConv2d(in_channels, ch3x3, 3, padding=1)
        self.branch3 = BasicConv2d(in_channels, ch5x5, 5, padding=2)
        self.branch4 = MaxPool2d(3, 1, 1, ceil_mode=True)
        self.out_channels = in_channels + ch1x1 + ch3x3 + ch5x5
        self.se = se_layer(self.out_channels) if se_layer is not None else None

    def forward(self, x):
        out = F.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)
        return out if self.se is None else self.se(out)


class InceptionAux(Module):
    """Sec. 5's side classifier: avg pool 5x5/3 -> 1x1 conv 128 -> FC 1024 -> dropout 0.7 -> FC."""

    def __init__(self, in_channels, num_classes, conv_channels=128, hidden=1024, dropout=0.7, map_size=14):
        super().__init__()
        pooled = conv_output_size(map_size, 5, 3, 0)  # 14x14 -> 4x4 at the 224x224 input
        if pooled < 1:
            raise ValueError(f"GoogLeNet's auxiliary heads pool 5x5/3 a {map_size}x{map_size} map: too small; "
                             f"use a larger image_size (at least 80) or aux_logits=False")
        self.pool = AvgPool2d(5, 3)
        self.conv = BasicConv2d(in_channels, conv_channels, 1)
        self.fc1 = Linear(conv_channels * pooled * pooled, hidden)
        self.dropout = Dropout(dropout)
        self.fc2 = Linear(hidden, num_classes)

    def forward(self, x):
        x = self.conv(self.pool(x))
        x = F.relu(self.fc1(F.flatten(x, 1)))
        return self.fc2(self.dropout(x))


class GoogLeNet(Module):
    def __init__(self, num_classes=1000, in_channels=3, aux_logits=True, naive=False, width=1.0, dropout=0.4,
                 aux_dropout=0.7, init_weights=True, se_layer=None, image_size=224):
        super().__init__()
        self.input_size = (in_channels, image_size, image_size)
        self.aux_logits, self.naive = aux_logits, naive

        def c(n):  # channel count at this width
            return max(1, int(n * width))

        # the stem (Table 1's first rows); LRN as in the reference Caffe model
        self.conv1 = BasicConv2d(in_channels, c(64), 7, stride=2, padding=3)
        self.maxpool1 = MaxPool2d(3, 2, ceil_mode=True)
        self.lrn1 = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.conv2 = BasicConv2d(c(64), c(64), 1)
        self.conv3 = BasicConv2d(c(64), c(192), 3, padding=1)
        self.lrn2 = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.maxpool2 = MaxPool2d(3, 2, ceil_mode=True)

        channels = c(192)

        def inception(name):
            nonlocal channels
            n1, n3r, n3, n5r, n5, proj = (c(n) for n in INCEPTION[name])
            block = (NaiveInception(channels, n1, n3, n5, se_layer) if naive
                     else Inception(channels, n1, n3r, n3, n5r, n5, proj, se_layer))
            channels = block.out_channels
            return block

        self.inception3a = inception("3a")
        self.inception3b = inception("3b")
        self.maxpool3 = MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = inception("4a")
        aux1_channels = channels
        self.inception4b = inception("4b")
        self.inception4c = inception("4c")
        self.inception4d = inception("4d")
        aux2_channels = channels
        self.inception4e = inception("4e")
        self.maxpool4 = MaxPool2d(3, 2, ceil_mode=True)
        self.inception5a = inception("5a")
        self.inception5b = inception("5b")
        if aux_logits:  # both heads read stage 4's maps: 14x14 at the 224x224 input
            side = conv_output_size(image_size, 7, 2, 3)  # conv1
            for _ in range(3):  # maxpool1, maxpool2, maxpool3
                side = conv_output_size(side, 3, 2, 0, ceil_mode=True)
            self.aux1 = InceptionAux(aux1_channels, num_classes, c(128), c(1024), aux_dropout, side)
            self.aux2 = InceptionAux(aux2_channels, num_classes, c(128), c(1024), aux_dropout, side)
        self.avgpool = AdaptiveAvgPool2d((1, 1))
        self.dropout = Dropout(dropout)
        self.fc = Linear(channels, num_classes)
        if init_weights:
            self._init_weights()

    def _init_weights(self):
        """Xavier as Caffe defines it (U(+-sqrt(3/fan_in))) and 0.2 conv biases, as the BVLC
        reference model; linear biases zero. (The paper trained with DistBelief and gives none.)"""
        for module in self.modules():
            if isinstance(module, (Conv2d, Linear)):
                init.kaiming_uniform_(module.weight, nonlinearity="linear")
                init.constant_(module.bias, 0.2 if isinstance(module, Conv2d) else 0.0)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.lrn1(x)
        x = self.conv3(self.conv2(x))
        x = self.maxpool2(self.lrn2(x))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux_logits and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux_logits and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.avgpool(x)
        logits = self.fc(self.dropout(F.flatten(x, 1)))
        if aux1 is not None:
            return GoogLeNetOutputs(logits, aux1, aux2)
        return logits

    # -- the output contract (nn.Module.main_output / loss / scores)
    def main_output(self, output):
        """The main classifier's logits (the auxiliary heads are discarded at inference)."""
        return output.logits if isinstance(output, GoogLeNetOutputs) else output

    def loss(self, output, target):
        """Cross-entropy; in training, plus 0.3 x each auxiliary classifier's (Sec. 5)."""
        if isinstance(output, GoogLeNetOutputs):
            aux = F.cross_entropy(output.aux1, target) + F.cross_entropy(output.aux2, target)
            return F.cross_entropy(output.logits, target) + aux * AUX_LOSS_WEIGHT
        return F.cross_entropy(output, target)


@register_model("googlenet", "inception_v1", recipe=IMAGENET_SHAPED)
def googlenet(num_classes=1000, **options):
    """GoogLeNet / Inception v1 as in Table 1 (true 5x5 branches, LRN, no BN, two aux heads)."""
    return GoogLeNet(num_classes, **options)
