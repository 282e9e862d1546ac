"""AlexNet's two-GPU split (Krizhevsky et al. 2012, Sec. 3.2 and Fig. 2), on two ranks.

The paper put half of the kernels of each layer on each of two GTX 580s (3 GB each; the net
did not fit on one) and let the GPUs "communicate only in certain layers": the kernels of
conv3 and of the fully connected layers see the maps of both GPUs, those of conv2, conv4 and
conv5 only the maps on their own GPU. In one process that is ``alexnet(groups=2)``; here each
rank holds one tower and the activations cross between ranks exactly at those layers.

    rank g (g = 0, 1)                                    communication
    conv1 (all 96 maps), ReLU, LRN, pool                 -           (replicated, see below)
    conv2 on maps 48g..48g+47 -> 128 maps, ReLU          gather      -> all 256 maps into conv3
    LRN, pool (all 256 maps)
    conv3: 192 maps from all 256, ReLU
    conv4 (192 -> 192), ReLU; conv5 (192 -> 128), ReLU, pool
                                                         gather      -> all 9216 inputs into fc6
    fc6: 2048 of 4096, ReLU                              gather      -> dropout, all 4096 into fc7
    fc7: 2048 of 4096, ReLU                              gather      -> dropout, all 4096 into fc8
    fc8: half the classes                                gather      -> all logits on both ranks

Two operators carry the activations (Megatron-LM's f and g, in the study notes' terms):
- ``gather_towers`` (forward: allgather the two halves and concatenate them; backward: keep this
  tower's half of the gradient, which is already complete);
- ``copy_to_towers`` (forward: identity on an activation every rank holds; backward: the sum
  over ranks, since each tower's layer contributed part of that activation's gradient).
Everything between a gather and the next copy is computed on both ranks (ReLU, LRN, pooling,
dropout with the same generator state), so both hold equal activations and gradients there.
Their backwards, as ops (for second derivatives), are the pair's mirror images: GatherTowers'
is TowerPiece (keep our piece; its backward gathers) and CopyToTowers' is ReduceFromTowers (add
the towers' partial gradients; its backward copies).

Why conv1 and the LRN/pool after conv2 are replicated: in ``alexnet(groups=2)`` the LRN window
(5 maps) crosses the boundary between the halves (map 47 is normalised with 48 and 49), so an
exact split must see all maps there. conv1 is cheap on its 3 input channels, and computing it on
both ranks keeps the forward exchanges exactly at conv3 and the fully connected layers; its
gradient is completed by the copy before conv2 (the one backward exchange the paper did not have).

The result equals the single-process grouped model: logits, loss and every gradient (float64,
relative difference ~1e-15). ``state_dict()`` gathers the grouped model's state dict (the same
keys and shapes), so checkpoints move freely between one process and two.
"""
import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Function, no_grad
from ..nn.layers import Conv2d, Dropout, Linear
from ..nn.module import Module, Sequential


class GatherTowers(Function):
    """g: every tower's piece, concatenated along ``axis`` on every rank; backward keeps our piece."""

    def __init__(self, comm, axis):
        self.comm, self.axis = comm, axis

    def forward(self, x):
        self.width = x.shape[self.axis]
        return _gather(self.comm, x, self.axis)

    def backward(self, gy):
        return (gy[_our_piece(self.comm, gy.ndim, self.axis, self.width)].copy(),)

    def differentiable_backward(self, gy):
        return (TowerPiece(self.comm, self.axis, self.width)(gy),)


class TowerPiece(Function):
    """This tower's piece of a tensor every rank holds (GatherTowers' backward as an op); backward gathers."""

    def __init__(self, comm, axis, width):
        self.comm, self.axis, self.width = comm, axis, width

    def forward(self, y):
        return y[_our_piece(self.comm, y.ndim, self.axis, self.width)].copy()

    def backward(self, g):
        return (_gather(self.comm, g, self.axis),)

    def differentiable_backward(self, g):
        return (GatherTowers(self.comm, self.axis)(g),)


def _gather(comm, x, axis):
    return backend.get_array_module(x).concatenate(list(comm.allgather(x)), axis=axis)  # allgather: (size, ...)


def _our_piece(comm, ndim, axis, width):
    """The index of this tower's piece along the gathered axis."""
    index = [slice(None)] * ndim
    index[axis] = slice(comm.rank * width, (comm.rank + 1) * width)
    return tuple(index)


class CopyToTowers(Function):
    """f: identity forward; backward sums the gradient over the towers."""

    def __init__(self, comm):
        self.comm = comm

    def forward(self, x):
        return x

    def backward(self, gy):
        return (self.comm.allreduce(gy),)

    def differentiable_backward(self, gy):
        return (ReduceFromTowers(self.comm)(gy),)


class ReduceFromTowers(Function):
    """The towers' partial sums added up on every rank (CopyToTowers' backward as an op): its result is one
    value every rank holds, so its own backward passes the gradient unchanged (CopyToTowers mirrored)."""

    def __init__(self, comm):
        self.comm = comm

    def forward(self, x):
        return self.comm.allreduce(x)

    def backward(self, gy):
        return (gy,)

    def differentiable_backward(self, gy):
        return (CopyToTowers(self.comm)(gy),)


def gather_towers(x, comm, axis=1):
    return GatherTowers(comm, axis)(x)


def copy_to_towers(x, comm):
    return CopyToTowers(comm)(x)


class AlexNetTowers(Module):
    """One rank's tower of a ``groups=2`` AlexNet (two ranks; see the module docstring).

    Built from the full grouped model (equal on both ranks, e.g. from the same seed): the tower
    copies its rows of every split layer, so it starts exactly where that model starts.
    """

    @staticmethod
    def split_convs(model):
        """The five conv layers of an AlexNet with the two-GPU split (``features`` with conv groups 1, 2, 1, 2,
        2 and a ``classifier``), or None for a model without it."""
        features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
        if not (isinstance(features, Sequential) and isinstance(classifier, Sequential)):
            return None
        convs = [m for m in features if isinstance(m, Conv2d)]
        return convs if [c.groups for c in convs] == [1, 2, 1, 2, 2] else None

    def __init__(self, model, comm):
        super().__init__()
        if comm.size != 2:
            raise ValueError(f"the AlexNet split runs on exactly 2 ranks (the paper's two GPUs), got {comm.size}; "
                             f"launch with mpirun -n 2")
        convs = self.split_convs(model)
        if convs is None:
            raise ValueError("model parallelism needs AlexNet with the two-GPU split (alexnet, groups=2); "
                             f"{type(model).__name__} has no such split")
        object.__setattr__(self, "comm", comm)
        self.input_size = model.input_size
        g = comm.rank
        names = {id(p): name for name, p in model.named_parameters()}
        self._full = []  # (our parameter, the grouped model's key, split along axis 0?)

        def part(layer, split_outputs):
            """Our copy of a layer: all of it, or this tower's half of its outputs."""
            rows = layer.weight.shape[0] // 2 if split_outputs else layer.weight.shape[0]
            keep = slice(g * rows, (g + 1) * rows) if split_outputs else slice(None)
            if isinstance(layer, Conv2d):
                in_channels = layer.weight.shape[1]  # per group: a grouped conv's half is a dense conv
                copy = Conv2d(in_channels, rows, layer.kernel_size, layer.stride, layer.padding,
                              bias=layer.bias is not None)
            else:
                copy = Linear(layer.weight.shape[1], rows, bias=layer.bias is not None)
            for name in ("weight", "bias"):
                source = getattr(layer, name)
                if source is not None:
                    getattr(copy, name).data = source.data[keep].copy()
                    self._full.append((getattr(copy, name), names[id(source)], split_outputs))
            return copy.to(device=layer.weight.device, dtype=layer.weight.dtype)

        # building the copies must not move the random generator (dropout draws from it next, and must
        # draw the masks the grouped model would): put its state back afterwards
        generator = backend.rng("cpu")
        saved = generator.bit_generator.state
        layers = list(model.features)
        at = [layers.index(c) for c in convs]
        self.stem = Sequential(part(convs[0], False), *layers[at[0] + 1:at[1]])   # conv1 ReLU LRN pool
        self.conv2 = Sequential(part(convs[1], True), layers[at[1] + 1])          # conv2 ReLU
        self.mix2 = Sequential(*layers[at[1] + 2:at[2]])                           # LRN pool, all maps
        self.body = Sequential(part(convs[2], True), *[m if not isinstance(m, Conv2d) else part(m, True)
                                                      for m in layers[at[2] + 1:]])  # conv3..conv5, pool
        fcs = [m for m in model.classifier if isinstance(m, Linear)]
        drops = [m for m in model.classifier if isinstance(m, Dropout)]
        self.fc6, self.fc7, self.fc8 = (part(fc, True) for fc in fcs)
        self.drop6, self.drop7 = drops
        self.in_channels2 = convs[1].weight.shape[1]
        generator.bit_generator.state = saved

        # parameters() lists ours in the grouped model's order too, so optimizer state indices line up
        assert [key for _, key, _ in self._full] == [key for key in names.values()]

    def forward(self, x):
        comm, g, width = self.comm, self.comm.rank, self.in_channels2
        x = self.stem(x)                                          # replicated
        x = copy_to_towers(x, comm)[:, g * width:(g + 1) * width]  # this tower's 48 maps
        x = gather_towers(self.conv2(x), comm)                    # -> all 256 maps (into conv3)
        x = copy_to_towers(self.mix2(x), comm)
        x = gather_towers(self.body(x), comm)                     # -> all maps of pool5 (into fc6)
        x = copy_to_towers(F.flatten(x, 1), comm)
        x = copy_to_towers(self.drop6(gather_towers(F.relu(self.fc6(x)), comm, 1)), comm)
        x = copy_to_towers(self.drop7(gather_towers(F.relu(self.fc7(x)), comm, 1)), comm)
        return gather_towers(self.fc8(x), comm, 1)

    def num_parameters(self, trainable_only=False):
        """The whole model's count (both towers), as the grouped model reports it."""
        return sum(p.size * (2 if split else 1) for p, _, split in self._full
                   if p.requires_grad or not trainable_only)

    # -- the grouped model's state, gathered (collective: every rank must call these)
    def state_dict(self):
        """The grouped model's state dict (keys and shapes of ``alexnet(groups=2)``), on every rank."""
        from collections import OrderedDict
        state = OrderedDict()
        for p, key, split in self._full:
            value = backend.to_numpy(p.data)
            state[key] = np.concatenate(list(self.comm.allgather(value)), axis=0) if split else value.copy()
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Take this tower's rows of a grouped model's state dict."""
        missing = [key for _, key, _ in self._full if key not in state_dict]
        if missing and strict:
            raise KeyError(f"load_state_dict for AlexNetTowers: missing keys {', '.join(missing)}")
        with no_grad():
            for p, key, split in self._full:
                if key in state_dict:
                    value = np.asarray(backend.to_numpy(state_dict[key]))
                    if split:
                        rows = value.shape[0] // 2
                        value = value[self.comm.rank * rows:(self.comm.rank + 1) * rows]
                    if value.shape != p.shape:
                        raise ValueError(f"load_state_dict for AlexNetTowers: {key} has shape {value.shape}, "
                                         f"expected {p.shape}")
                    p.data = backend.to_device(value.astype(p.dtype), p.device)

    def gather_optimizer_state(self, state_dict):
        """An optimizer's state dict (over our ``parameters()``) in the grouped model's shapes."""
        gathered = {"param_groups": state_dict["param_groups"], "state": {}}
        for index, entries in state_dict["state"].items():
            p, _, split = self._full[int(index)]
            gathered["state"][index] = {
                k: np.concatenate(list(self.comm.allgather(v)), axis=0)
                if split and getattr(v, "shape", None) == p.shape else v for k, v in entries.items()}
        return gathered

    def scatter_optimizer_state(self, state_dict):
        """This tower's rows of a grouped model's optimizer state dict (the inverse of gathering)."""
        mine = {"param_groups": state_dict["param_groups"], "state": {}}
        for index, entries in state_dict["state"].items():
            p, _, split = self._full[int(index)]
            rows = p.shape[0]
            mine["state"][index] = {
                k: v[self.comm.rank * rows:(self.comm.rank + 1) * rows]
                if split and getattr(v, "shape", (None,))[1:] == p.shape[1:] and v.shape[0] == 2 * rows else v
                for k, v in entries.items()}
        return mine
