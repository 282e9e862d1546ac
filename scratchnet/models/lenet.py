"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998, "Gradient-based learning applied to document
recognition", Sec. II.B and Fig. 2), in its classic form and the modern one.

Classic LeNet-5 (``get_model("lenet5_classic")`` or ``get_model("lenet5", variant="classic")``):

    layer  type                               maps x size   trainable params (paper, Sec. II.B)
    input  32x32 image (28x28 digits padded)   1 x 32x32
    C1     conv 5x5                            6 x 28x28     156
    S2     trainable 2x2 subsampling           6 x 14x14     12    (coefficient + bias per map)
    C3     conv 5x5, partial table (Table I)  16 x 10x10     1,516 (60 connections x 25 + 16 biases)
    S4     trainable 2x2 subsampling          16 x 5x5       32
    C5     conv 5x5 (a "convolution", 1x1 out) 120 x 1x1      48,120
    F6     full                                84            10,164
    output Euclidean RBF to fixed +-1 codes    10            0     (distances: lower is better)
                                                              ------
                                                              60,000

Every layer C1..F6 is followed by the squashing function f(a) = A tanh(S a), A = 1.7159,
S = 2/3 (Sec. II.B and Appendix A). The 28x28 -> 32x32 zero padding is the data pipeline's job.

Modern LeNet-5 (the default for ``lenet5`` / ``lenet``): the same C1-C3-C5-F6 shape with max
(or average) pooling, a full C3, ReLU (or tanh) and a linear 10-way output for cross-entropy:
61,706 parameters. It is the default because the training CLI trains every model with
cross-entropy on logits; the classic net outputs distances and trains through ``model.loss``.

Output convention shared with the training CLI: every LeNet5 has ``loss(output, target)`` and
``scores(output)`` (higher = better, so ``scores(output).argmax(1)`` is the prediction). For the
modern net they are cross-entropy and the identity; for the classic net the loss is the paper's
Eq. (9) and the scores are the negated distances (argmin of the distances).

The output layer is a switch of its own, ``output="rbf"`` or ``"linear"`` (default: "rbf" for the
classic net, "linear" for the modern one), so the RBF head can be compared with a softmax head on the
same body: ``lenet5_classic(output="linear")`` is the 1998 net with a 84 -> 10 linear layer trained
with cross-entropy (60,850 parameters), ``lenet5(output="rbf")`` the modern body with the fixed codes
(60,856).
"""
from dataclasses import replace

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import as_tensor
from ..nn import init
from ..nn.layers import AvgPool2d, Conv2d, Linear, MaxPool2d, ReLU, Tanh
from ..nn.module import Module, Parameter
from .registry import Recipe, register_model

# Table I of the paper: which S2 maps (rows) each C3 map (columns) reads. 60 connections.
C3_TABLE = (
    # C3 map: 0123456789012345
    "X...XXX..XXXX.XX",  # S2 map 0
    "XX...XXX..XXXX.X",  # S2 map 1
    "XXX...XXX..X.XXX",  # S2 map 2
    ".XXX..XXXX..X.XX",  # S2 map 3
    "..XXX..XXXX.XX.X",  # S2 map 4
    "...XXX..XXXX.XXX",  # S2 map 5
)

# The RBF output's fixed parameter vectors (Sec. II.B, Fig. 3): "stylized images of the
# corresponding character class drawn on a 7x12 bitmap", +1 for ink and -1 for background.
# The paper's own bitmaps are not published as data; these hand-drawn 7-wide x 12-tall digits
# are a deterministic stand-in with the same shape and the same +-1 values, drawn side by side 0 to 9.
DIGIT_BITMAPS = tuple(zip(*(line.split() for line in """
.......  .......  .......  .......  .......  .......  .......  .......  .......  .......
..###..  ...#...  ..###..  .####..  ....#..  .#####.  ..###..  #######  ..###..  ..###..
.#...#.  ..##...  .#...#.  .....#.  ...##..  .#.....  .#.....  ......#  .#...#.  .#...#.
#.....#  .#.#...  .....#.  .....#.  ..#.#..  .#.....  #......  .....#.  .#...#.  #.....#
#.....#  ...#...  .....#.  .....#.  .#..#..  .#.....  #......  ....#..  .#...#.  #.....#
#.....#  ...#...  ....#..  ..###..  #...#..  .####..  #.###..  ....#..  ..###..  .#...##
#.....#  ...#...  ...#...  .....#.  #######  .....#.  ##...#.  ...#...  .#...#.  ..###.#
#.....#  ...#...  ..#....  .....#.  ....#..  .....#.  #.....#  ...#...  #.....#  ......#
#.....#  ...#...  .#.....  .....#.  ....#..  .....#.  #.....#  ..#....  #.....#  ......#
.#...#.  ...#...  .#.....  .....#.  ....#..  .....#.  .#...#.  ..#....  .#...#.  .....#.
..###..  .#####.  .#####.  .####..  ....#..  .####..  ..###..  ..#....  ..###..  ..###..
.......  .......  .......  .......  .......  .......  .......  .......  .......  .......
""".strip().splitlines())))

# Sec. II.B: f(a) = A tanh(S a) with A = 1.7159 and S = 2/3, so that f(1) = 1 and f(-1) = -1.
SQUASH_A, SQUASH_S = 1.7159, 2.0 / 3.0


def digit_prototypes():
    """The 10 RBF centres as a (10, 84) array of +-1 (row-major 12x7 bitmaps)."""
    rows = []
    for bitmap in DIGIT_BITMAPS:
        assert len(bitmap) == 12 and all(len(line) == 7 for line in bitmap), "bitmaps are 7 wide, 12 tall"
        rows.append([1.0 if pixel == "#" else -1.0 for line in bitmap for pixel in line])
    return np.array(rows)


def connection_table():
    """Table I as a (16, 6) boolean array: [C3 map, S2 map]."""
    return np.array([[mark == "X" for mark in row] for row in C3_TABLE]).T


# --------------------------------------------------------------------------- classic blocks


class ScaledTanh(Module):
    """The paper's squashing function A * tanh(S * a)."""

    def __init__(self, amplitude=SQUASH_A, slope=SQUASH_S):
        super().__init__()
        self.amplitude, self.slope = amplitude, slope

    def forward(self, x):
        return F.tanh(x * self.slope) * self.amplitude

    def extra_repr(self):
        return f"A={self.amplitude}, S={self.slope:.6g}"


class TrainableSubsampling(Module):
    """S2/S4: each unit adds its 2x2 non-overlapping inputs, multiplies the sum by its map's
    trainable coefficient, adds the map's trainable bias (2 parameters per map); the squashing
    function follows in the model."""

    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        self.weight = Parameter(np.ones(channels, dtype=backend.get_default_dtype()))
        self.bias = Parameter(np.zeros(channels, dtype=backend.get_default_dtype()))

    def forward(self, x):
        n, c, h, w = x.shape
        if c != self.channels or h % 2 or w % 2:
            raise ValueError(f"TrainableSubsampling({self.channels}) needs (N, {self.channels}, H, W) input with "
                             f"even H and W, got shape {x.shape}")
        # the 2x2 window sum as a reshape + sum: no pooling kernel needed, exact gradient
        sums = x.reshape(n, c, h // 2, 2, w // 2, 2).sum((3, 5))
        return sums * self.weight.reshape(1, c, 1, 1) + self.bias.reshape(1, c, 1, 1)

    def extra_repr(self):
        return f"{self.channels}, kernel_size=2, stride=2"


class PartialConv2d(Module):
    """C3: a 5x5 convolution in which each output map sees only the input maps its table allows.

    Only the connected kernels are parameters (``weight``: one (k, k) kernel per connection,
    ordered output map by output map), so the parameter count is exact (1,516 for Table I).
    Forward scatters them into the dense (out, in, k, k) kernel with one index op (zeros where
    the table has no connection) and runs one ordinary convolution; the index op's backward
    gathers the dense gradient back into the connected kernels.
    """

    def __init__(self, table, kernel_size=5):
        super().__init__()
        table = np.asarray(table, dtype=bool)  # (out_channels, in_channels)
        self.out_channels, self.in_channels = table.shape
        self.kernel_size = kernel_size
        connections = int(table.sum())
        # dense slot -> 1 + index of its connection, or 0 for the all-zero kernel
        index = np.zeros(table.shape, dtype=np.int64)
        index[table] = np.arange(1, connections + 1)
        self.register_buffer("kernel_index", index, persistent=False)
        self.weight = Parameter(np.zeros((connections, kernel_size, kernel_size), dtype=backend.get_default_dtype()))
        self.bias = Parameter(np.zeros(self.out_channels, dtype=backend.get_default_dtype()))

    def dense_weight(self):
        """The (out, in, k, k) kernel: connected kernels in place, zeros elsewhere (differentiable)."""
        xp = backend.get_array_module(self.weight.data)
        zero = as_tensor(xp.zeros((1, self.kernel_size, self.kernel_size), dtype=self.weight.dtype))
        return F.cat([zero, self.weight], 0)[self.kernel_index]

    def forward(self, x):
        return F.conv2d(x, self.dense_weight(), self.bias)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"connections={self.weight.shape[0]}")


class EuclideanRBF(Module):
    """Output layer: y_i = sum_j (x_j - w_ij)^2, the squared distance to class i's fixed code.

    The codes are a buffer, not parameters (the paper keeps them fixed); lower is better.
    """

    def __init__(self, prototypes):
        super().__init__()
        self.register_buffer("prototypes", np.asarray(prototypes, dtype=backend.get_default_dtype()))

    def forward(self, x):
        n, features = x.shape
        classes = self.prototypes.shape[0]
        if features != self.prototypes.shape[1]:
            raise ValueError(f"EuclideanRBF: input has {features} features but the codes have "
                             f"{self.prototypes.shape[1]}")
        diff = x.reshape(n, 1, features) - self.prototypes.reshape(1, classes, features)
        return (diff * diff).sum(2)

    def extra_repr(self):
        return f"in_features={self.prototypes.shape[1]}, classes={self.prototypes.shape[0]}"


def rbf_loss(distances, target, j=None):
    """The paper's Eq. (9): mean over samples of y_D + log(exp(-j) + sum_i exp(-y_i)).

    That is exactly cross-entropy on the logits (-y_0, ..., -y_9, -j): the first term pulls
    the correct class's distance down, the second pushes the others up (the "competitive" term
    that stops every RBF unit from collapsing). ``j=None`` drops exp(-j) (j -> infinity).
    """
    logits = -distances
    if j is not None:
        xp = backend.get_array_module(distances.data)
        rejection = as_tensor(xp.full((distances.shape[0], 1), -float(j), dtype=distances.dtype))
        logits = F.cat([logits, rejection], 1)
    return F.cross_entropy(logits, target)


def _paper_init_(module):
    """Appendix A: weights uniform in (-2.4/F, 2.4/F), F the unit's fan-in; biases zero."""
    for name, p in module.named_parameters():
        if name.endswith("bias"):
            init.zeros_(p)
        elif isinstance(module, TrainableSubsampling):
            init.uniform_(p, -2.4 / 4, 2.4 / 4)  # each unit sums 4 inputs
        elif isinstance(module, PartialConv2d):
            # a C3 map's fan-in is its number of connections x k x k: 75, 100 or 150
            connected = backend.to_numpy(module.kernel_index.data) > 0
            fan_in = connected.sum(1) * module.kernel_size ** 2
            bounds = np.repeat(2.4 / fan_in, connected.sum(1)).reshape(-1, 1, 1)  # one per connection
            init.uniform_(p, -1.0, 1.0)
            p.data = p.data * backend.get_array_module(p.data).asarray(bounds, dtype=p.dtype)
        else:
            bound = 2.4 / int(np.prod(p.shape[1:]))
            init.uniform_(p, -bound, bound)


# --------------------------------------------------------------------------- the model


class LeNet5(Module):
    """LeNet-5; layer names follow the paper (c1, s2, c3, s4, c5, f6, output)."""

    def __init__(self, num_classes=10, variant="modern", in_channels=1, activation=None, pool="max", output=None):
        super().__init__()
        if variant not in ("modern", "classic"):
            raise ValueError(f"lenet5: variant must be 'modern' or 'classic', got {variant!r}")
        output = output or ("rbf" if variant == "classic" else "linear")
        if output not in ("rbf", "linear"):
            raise ValueError(f"lenet5: output must be 'rbf' (Euclidean RBF to fixed codes) or 'linear' (softmax "
                             f"cross-entropy), got {output!r}")
        if output == "rbf" and not 1 <= num_classes <= len(DIGIT_BITMAPS):
            raise ValueError(f"lenet5's RBF output has {len(DIGIT_BITMAPS)} codes (the digit bitmaps); "
                             f"num_classes={num_classes} is not supported")
        self.variant, self.head = variant, output
        self.input_size = (in_channels, 32, 32)
        if variant == "classic":
            if activation not in (None, "scaled_tanh"):
                raise ValueError("lenet5 classic uses the paper's scaled tanh; activation options are for "
                                 "variant='modern'")
            self.c1 = Conv2d(in_channels, 6, 5)
            self.s2 = TrainableSubsampling(6)
            self.c3 = PartialConv2d(connection_table(), 5)
            self.s4 = TrainableSubsampling(16)
            self.c5 = Conv2d(16, 120, 5)
            self.f6 = Linear(120, 84)
            self.output = EuclideanRBF(digit_prototypes()[:num_classes]) if output == "rbf" else Linear(84, num_classes)
            self.act = ScaledTanh()
            for module in (self.c1, self.s2, self.c3, self.s4, self.c5, self.f6, self.output):
                _paper_init_(module)
        else:
            activation = activation or "relu"
            if activation not in ("relu", "tanh") or pool not in ("max", "avg"):
                raise ValueError(f"lenet5 modern: activation must be 'relu' or 'tanh' and pool 'max' or 'avg', "
                                 f"got {activation!r}, {pool!r}")
            Pool = MaxPool2d if pool == "max" else AvgPool2d
            self.c1 = Conv2d(in_channels, 6, 5)
            self.s2 = Pool(2, 2)
            self.c3 = Conv2d(6, 16, 5)
            self.s4 = Pool(2, 2)
            self.c5 = Conv2d(16, 120, 5)
            self.f6 = Linear(120, 84)
            self.output = Linear(84, num_classes) if output == "linear" else EuclideanRBF(
                digit_prototypes()[:num_classes])
            self.act = ReLU() if activation == "relu" else Tanh()

    def forward(self, x):
        if x.ndim != 4 or x.shape[2:] != (32, 32):
            raise ValueError(f"LeNet5 expects (N, C, 32, 32) input (pad 28x28 MNIST by 2 in the data "
                             f"pipeline), got shape {x.shape}")
        act = self.act
        x = act(self.c1(x))
        x = self.s2(x)
        if self.variant == "classic":  # trainable subsampling is squashed too (Sec. II.B)
            x = act(x)
        x = act(self.c3(x))
        x = self.s4(x)
        if self.variant == "classic":
            x = act(x)
        x = act(self.c5(x))  # 5x5 maps -> 1x1: C5 is a convolution, not a full layer
        x = act(self.f6(F.flatten(x, 1)))
        return self.output(x)

    # -- the output contract (nn.Module.loss / scores)
    def loss(self, output, target):
        """Training loss: Eq. (9) on distances (RBF output) or cross-entropy on logits (linear output)."""
        return rbf_loss(output, target) if self.head == "rbf" else F.cross_entropy(output, target)

    def scores(self, output):
        """Higher is better: negated distances (RBF output) or the logits (linear output)."""
        return -output if self.head == "rbf" else output

    def extra_repr(self):
        default = "rbf" if self.variant == "classic" else "linear"
        return f"variant={self.variant!r}" + ("" if self.head == default else f", output={self.head!r}")


# no augmentation (the paper had none); SGD with momentum and a cosine decay
LENET_RECIPE = Recipe("lenet", dataset="fashion-mnist", epochs=10, batch_size=64, lr=0.05, momentum=0.9,
                      weight_decay=5e-4, optimizer="sgd", schedule="cosine", warmup=0.0, augment=())
# the 1998 net: its RBF output's gradient 2(x - w_i) is ~10x a linear layer's, so a 10x smaller rate
# (lr 0.05 diverged to loss ~30; 0.005 reached 81.1% after 2 epochs on 10k images, models-classic docs)
LENET_CLASSIC_RECIPE = replace(LENET_RECIPE, name="lenet_classic", lr=0.005)


@register_model("lenet5", "lenet", recipe=LENET_RECIPE)
def lenet5(num_classes=10, **options):
    """LeNet-5; ``variant="modern"`` (default: ReLU, max pool, full C3, linear output) or "classic"."""
    return LeNet5(num_classes, **options)


@register_model("lenet5_classic", recipe=LENET_CLASSIC_RECIPE)
def lenet5_classic(num_classes=10, **options):
    """The 1998 LeNet-5: trainable subsampling, Table I's C3, scaled tanh, Euclidean RBF output."""
    return LeNet5(num_classes, variant="classic", **options)
