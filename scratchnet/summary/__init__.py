"""Model summary: per layer, the output shape, parameters, activation memory, MACs/FLOPs and
receptive field, from one forward pass.

    import scratchnet as sn
    result = sn.summary(model, (3, 224, 224))   # prints the table, returns a ModelSummary
    result.total_macs, result.layers[0].receptive_field

    python -m scratchnet.summary resnet50 [--input-size 3 224 224] [--num-classes 1000]

How it works: one forward (no_grad, eval mode, restored afterwards) on a random
input, with a forward hook on every LEAF module (a module with no children), and
on every module with a MAC rule that has children (a deformable convolution
predicting its offsets with its ``conv_offset`` child; its row comes after the
child's and holds its own parameters). A leaf called twice (a shared ReLU) gives
two rows; its parameters count once.

Conventions
-----------
* MACs (multiply-accumulates) per sample, counted for Conv2d and DeformConv2d
  (output elements x C_in/groups x kh x kw; a deformable conv's bilinear sampling
  is not counted), ConvTranspose2d (input elements x
  C_out/groups x kh x kw) and Linear (in x out) only: biases, BatchNorm,
  pooling, activations, element-wise adds and SE scalings count 0. This is the
  convention of torchvision's published GFLOPS (its ``_ops`` metadata counts
  conv and matmul multiply-adds), so totals match it: ResNet-50 4.09 G,
  VGG-16 15.47 G, EfficientNet-B0 0.39 G. FLOPs = 2 x MACs. The rules live in
  ``MAC_RULES`` (layer type -> MACs per sample), with LeNet-5's two special
  layers: the partial C3 counts only its connected kernels, the RBF output one
  square-and-accumulate per (class, feature). Add a rule there for a custom leaf.
* Activation memory: bytes of each leaf's output at the run's dtype and batch
  size, in KB (1 KB = 1024 bytes). Tensors made by ops between modules
  (residual adds, concats) are not counted.
* Receptive field, per axis: ``rf`` (pixels of the input one output pixel
  sees) and ``jump`` (input pixels between neighbouring outputs). Input: rf 1,
  jump 1. A window layer (conv, pooling; any leaf with a ``kernel_size``, and
  ``stride`` 1 when it has none) with kernel k, stride s, dilation d gives
  ``rf + d(k-1) jump`` and ``jump s``; a ConvTranspose2d gives ``jump / s`` and
  its widest output's field (``_transposed_rf``); an adaptive pool from n to m cells
  acts as kernel ceil(n/m), stride n//m (global pooling covers the whole
  map); a Linear sees its whole input map; every other leaf keeps the field.
  Ops between modules (``+``, ``cat``, ``*``, reshapes) are joins: the field is
  the maximum of rf and of jump over their inputs (the widest branch), except
  that a 1x1 map broadcast over a larger one (a squeeze-and-excitation gate)
  is treated as channel re-weighting and does not widen the field (strictly,
  the gate makes every pixel depend on the whole image). Padding does not
  change the field, so it may exceed the input size.
"""
import ast
import math
import weakref
from dataclasses import asdict, dataclass

import numpy as np

from .. import backend
from ..autograd import FunctionHook, Tensor, no_grad
from ..cli import ArgumentParser, UsageError, command, integer
from ..functional.conv import pair
from ..models.lenet import EuclideanRBF, PartialConv2d
from ..nn import AdaptiveAvgPool2d, Conv2d, ConvTranspose2d, DeformConv2d, Linear


@dataclass
class LayerRecord:
    """One leaf-module call."""
    name: str
    type: str
    output_shape: tuple
    params: int
    activation_kb: float
    macs: int  # per sample
    receptive_field: tuple  # (h, w) after this layer, or None when unknown
    jump: tuple  # (h, w)

    @property
    def flops(self):
        return 2 * self.macs


@dataclass
class ModelSummary:
    """The per-layer records and the totals; ``str()`` (or ``table()``) is the printed table."""
    layers: list
    input_size: tuple
    batch_size: int
    dtype: str
    total_params: int
    trainable_params: int
    total_macs: int  # per sample
    param_kb: float
    activation_kb: float  # leaf outputs, for the whole batch
    input_kb: float

    @property
    def total_flops(self):
        return 2 * self.total_macs

    def to_dict(self):
        out = asdict(self)
        out["total_flops"] = self.total_flops
        return out

    def table(self):
        header = ("Layer", "Type", "Output shape", "Params", "Act KB", "MACs", "RF", "Jump")
        rows = [(r.name, r.type, str(list(r.output_shape)), f"{r.params:,}", f"{r.activation_kb:,.1f}",
                 f"{r.macs:,}", _axis_text(r.receptive_field), _axis_text(r.jump)) for r in self.layers]
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
        right = (False, False, False, True, True, True, True, True)

        def line(cells):
            return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

        rule = "-" * len(line(header))
        fields = [r.receptive_field for r in self.layers if r.receptive_field is not None]
        last_rf = _axis_text(fields[-1]) if fields else "?"
        lines = [rule, line(header), rule, *map(line, rows), rule,
                 f"Input: {self.batch_size} x {tuple(self.input_size)} {self.dtype} ({self.input_kb / 1024:,.2f} MB)",
                 f"Total params: {self.total_params:,} (trainable {self.trainable_params:,}; "
                 f"{self.param_kb / 1024:,.2f} MB)",
                 f"MACs per sample: {self.total_macs:,} ({self.total_macs / 1e9:.3f} G); "
                 f"FLOPs: {self.total_flops / 1e9:.3f} G",
                 f"Activations (leaf outputs, batch {self.batch_size}): {self.activation_kb / 1024:,.2f} MB",
                 f"Receptive field of the last layer: {last_rf}",
                 rule]
        return "\n".join(lines)

    __str__ = table


def _axis_text(pair_value):
    if pair_value is None:
        return "?"
    h, w = (round(v, 3) if isinstance(v, float) and not float(v).is_integer() else int(v) for v in pair_value)
    return str(h) if h == w else f"{h}x{w}"


# --------------------------------------------------------------------------- receptive field


@dataclass(frozen=True)
class _Field:
    rf: tuple  # per axis (h, w)
    jump: tuple
    grid: tuple  # spatial size of the map this field lives on (kept through flatten, for Linear)


def _spatial(t):
    return tuple(t.shape[2:]) if isinstance(t, Tensor) and t.ndim == 4 else None


def _window(field, kernel, stride, dilation=(1, 1), grid=None):
    rf = tuple(r + d * (k - 1) * j for r, k, d, j in zip(field.rf, kernel, dilation, field.jump))
    return _Field(rf, tuple(j * s for j, s in zip(field.jump, stride)), grid or field.grid)


def _transposed_rf(rf, jump, kernel, stride, dilation):
    """The widest field of a transposed conv's outputs. Tap m of input pixel i lands on output i*s + d*m - p,
    so the taps reaching one output are every g-th one (g = s / gcd(d, s)): at most ceil(k / g) input
    pixels, d / gcd(d, s) apart."""
    step = math.gcd(dilation, stride)
    return rf + (math.ceil(kernel / (stride // step)) - 1) * (dilation // step) * jump


def _layer_field(module, field, output):
    """The field after a leaf layer, given the field of its (first) input."""
    grid = _spatial(output)
    if isinstance(module, ConvTranspose2d):  # upsampling: the jump shrinks by the stride
        return _Field(tuple(_transposed_rf(field.rf[a], field.jump[a], module.kernel_size[a], module.stride[a],
                                           module.dilation[a]) for a in range(2)),
                      tuple(j / s for j, s in zip(field.jump, module.stride)), grid)
    kernel = getattr(module, "kernel_size", None)
    if kernel is not None:  # conv-like (stride 1 unless it says) or pooling (stride None: the kernel)
        stride = getattr(module, "stride", 1)
        stride = kernel if stride is None else stride
        return _window(field, pair(kernel), pair(stride), pair(getattr(module, "dilation", 1)), grid)
    if isinstance(module, Linear):  # every output sees the whole input map
        return _window(field, field.grid, field.grid, grid=(1, 1))
    if isinstance(module, AdaptiveAvgPool2d) or (grid is not None and grid != field.grid):
        # n cells pooled to m: windows of at most ceil(n/m), n//m apart (global pool: the whole map)
        kernel = tuple(math.ceil(n / m) for n, m in zip(field.grid, grid))
        return _window(field, kernel, tuple(max(1, n // m) for n, m in zip(field.grid, grid)), grid=grid)
    return _Field(field.rf, field.jump, grid or field.grid)  # point-wise: BN, activations, dropout, LRN


class _FieldTracker(FunctionHook):
    """Receptive fields of the tensors of one forward, keyed by identity (weakly: no activation is kept).

    Active as a function hook, it sees every op: ops between modules (``+``, ``cat``,
    ``flatten`` ...) have no module to hook, and seeing them links the layers' fields.
    """

    def __init__(self):
        self._fields = {}

    def set(self, tensor, field):
        if isinstance(tensor, Tensor) and field is not None:
            self._fields[id(tensor)] = (weakref.ref(tensor), field)

    def get(self, tensor):
        entry = self._fields.get(id(tensor)) if isinstance(tensor, Tensor) else None
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def forward_postprocess(self, function, inputs, outputs):
        """Any op: its outputs get the widest field of its inputs."""
        out_grid = _spatial(outputs[0])
        known = []
        for t in inputs:
            field = self.get(t)
            if field is None:
                continue
            # a 1x1 map broadcast over a larger one is a per-channel gate (SE): it re-weights, not widens
            if out_grid is not None and _spatial(t) == (1, 1) and out_grid != (1, 1):
                continue
            known.append(field)
        if not known:
            return
        rf = tuple(max(f.rf[i] for f in known) for i in range(2))
        jump = tuple(max(f.jump[i] for f in known) for i in range(2))
        grid = tuple(max(f.grid[i] for f in known) for i in range(2))
        for out in outputs:
            self.set(out, _Field(rf, jump, _spatial(out) or grid))


# --------------------------------------------------------------------------- counting

# layer type -> multiply-accumulates per sample of one call: rule(module, input, output, batch)
MAC_RULES = {
    Conv2d: lambda m, x, y, batch: y.size // batch * (m.in_channels // m.groups) * math.prod(m.kernel_size),
    # the convolution at the sampled points (its bilinear sampling, 4 per sampled value, is not counted; a block
    # that predicts its own offsets counts its conv_offset as the Conv2d it is)
    DeformConv2d: lambda m, x, y, batch: y.size // batch * (m.in_channels // m.groups) * math.prod(m.kernel_size),
    ConvTranspose2d: lambda m, x, y, batch: x.size // batch * (m.out_channels // m.groups) * math.prod(m.kernel_size),
    Linear: lambda m, x, y, batch: y.size // batch * m.in_features,
    # LeNet-5's C3: only the connected kernels multiply (the dense kernel's zeros are free)
    PartialConv2d: lambda m, x, y, batch: y.shape[2] * y.shape[3] * m.weight.size,
    # LeNet-5's output: one square-and-accumulate per (class, feature)
    EuclideanRBF: lambda m, x, y, batch: m.prototypes.size,
}


def _macs(module, inputs, output, batch):
    """Multiply-accumulates per sample of one leaf call, by the rule of its type (0 without one)."""
    x = next((t for t in inputs if isinstance(t, Tensor)), None)
    rule = next((MAC_RULES[cls] for cls in type(module).__mro__ if cls in MAC_RULES), None)
    return 0 if rule is None else rule(module, x, output, batch)


def _is_leaf(module):
    return next(module.children(), None) is None


def _has_rule(module):
    return any(cls in MAC_RULES for cls in type(module).__mro__)


def summary(model, input_size=None, batch_size=1, device="cpu", dtype=None, print_table=True):
    """Run one forward of ``model`` on a random (batch_size, *input_size) input and summarise it.

    ``input_size``: (C, H, W) without the batch; defaults to ``model.input_size``.
    ``dtype``: defaults to the model's parameter dtype. Returns a ``ModelSummary``.
    """
    if input_size is None:
        input_size = getattr(model, "input_size", None)
        if input_size is None:
            raise ValueError(f"summary: {type(model).__name__} has no input_size attribute; pass input_size=(C, H, W)")
    input_size = tuple(int(n) for n in input_size)
    if not input_size or min(input_size) < 1:
        raise ValueError(f"summary: every input size must be >= 1, got {input_size}")
    if batch_size < 1:
        raise ValueError(f"summary: batch_size must be >= 1, got {batch_size}")
    first = next(model.parameters(), None)
    dtype = np.dtype(dtype if dtype is not None else first.dtype if first is not None else backend.get_default_dtype())
    data = np.random.default_rng(0).standard_normal((batch_size, *input_size)).astype(dtype)
    x = Tensor(backend.to_device(data, device))

    names = {id(m): name for name, m in model.named_modules()}
    tracker, records, seen = _FieldTracker(), [], set()
    if len(input_size) == 3:
        tracker.set(x, _Field((1, 1), (1, 1), input_size[1:]))

    def hook(module, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        field_in = tracker.get(next((t for t in inputs if isinstance(t, Tensor)), None))
        field = _layer_field(module, field_in, out) if field_in is not None else None
        tracker.set(out, field)
        first_call = id(module) not in seen
        seen.add(id(module))
        outs = output if isinstance(output, (tuple, list)) else (output,)
        records.append(LayerRecord(
            name=names.get(id(module), "?"), type=type(module).__name__, output_shape=tuple(out.shape),
            params=sum(p.size for p in module.parameters(recurse=False)) if first_call else 0,
            activation_kb=sum(o.data.nbytes for o in outs if isinstance(o, Tensor)) / 1024,
            macs=int(_macs(module, inputs, out, batch_size)),
            receptive_field=field.rf if field else None, jump=field.jump if field else None))

    training = [(m, m.training) for m in model.modules()]
    # leaves, and the modules with a MAC rule that hold children (a deformable conv with its conv_offset)
    handles = [m.register_forward_hook(hook) for m in model.modules() if _is_leaf(m) or _has_rule(m)]
    try:
        model.eval()
        # an untrained very deep net in eval mode may overflow on random input: shapes still count
        with no_grad(), tracker, np.errstate(over="ignore", invalid="ignore"):
            try:
                model(x)
            except ValueError as exc:  # say which input, in one sentence
                raise ValueError(f"summary: {type(model).__name__} cannot run on an input of size "
                                 f"{input_size}: {exc}") from None
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in training:
            object.__setattr__(module, "training", mode)

    params = list(model.parameters())
    result = ModelSummary(
        layers=records, input_size=input_size, batch_size=batch_size, dtype=str(dtype),
        total_params=sum(p.size for p in params), trainable_params=sum(p.size for p in params if p.requires_grad),
        total_macs=sum(r.macs for r in records), param_kb=sum(p.data.nbytes for p in params) / 1024,
        activation_kb=sum(r.activation_kb for r in records), input_kb=data.nbytes / 1024)
    if print_table:
        print(result.table())
    return result


# --------------------------------------------------------------------------- CLI


@command
def main(argv=None):
    from ..models import get_model, list_models

    parser = ArgumentParser(prog="python -m scratchnet.summary",
                            description="Per-layer shapes, parameters, memory, MACs and receptive field.")
    parser.add_argument("model", help="a registered model name, e.g. resnet50 (see --list)", nargs="?")
    parser.add_argument("--input-size", type=integer(1), nargs=3, metavar=("C", "H", "W"),
                        help="input without the batch (default: the model's native input_size)")
    parser.add_argument("--num-classes", type=integer(1), help="number of classes (default: the model's)")
    parser.add_argument("--batch-size", type=integer(1), default=1)
    parser.add_argument("--dtype", default=None, choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="extra constructor option, e.g. -o width_mult=0.5 (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the registered models and exit")
    args = parser.parse_args(argv)
    if args.list or not args.model:
        print("\n".join(list_models()))
        return 0
    device = backend.check_device(args.device)  # before building anything: no GPU is one line
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    try:
        model = get_model(args.model, **options)
    except (ValueError, TypeError) as exc:  # an unknown name, or an option the model does not take
        raise UsageError(f"cannot build model {args.model!r}: {exc}") from None
    if device != "cpu" or args.dtype:
        model.to(device=device, dtype=args.dtype)
    print(f"{args.model}")
    try:
        summary(model, args.input_size, batch_size=args.batch_size, device=device, dtype=args.dtype)
    except ValueError as exc:  # an input the model cannot take (too small, wrong channels)
        raise UsageError(str(exc)) from None
    return 0
