"""One emitter per scratchnet ``Function``: the standard ONNX nodes that compute what it computed.

Each emitter gets the graph being built (``Graph`` in export.py) and one traced ``Call`` (the
Function object with the attributes its forward used, its inputs' ONNX names and tensors, its
outputs' tensors) and returns the ONNX names of the outputs. ``EMITTERS`` maps each Function class
to its emitter; a Function without one stops the export with one sentence naming it.

Where an op has no single ONNX twin it is written out exactly: SiLU is ``x * Sigmoid(x)``; an
adaptive average pool with uneven bins is two MatMuls with the pooling matrices the Function used;
an average pool whose divisor varies (padding left out, ceil mode) is a sum pool divided by the
Function's divisor map; ceil-mode and asymmetric pooling become explicit end pads.
"""
import numpy as np

from ..autograd import ToDeviceDtype
from ..functional import activation as act
from ..functional import math as ops
from ..functional.conv import Conv2d, ConvTranspose2d
from ..functional.deform import DeformConv2d as DeformConvFunction
from ..functional.linear import Linear
from ..functional.norm import BatchNorm, LocalResponseNorm
from ..functional.pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from ..functional.shape import BroadcastTo, Concat, GetItem, Reshape, Split, Transpose


class UnsupportedOpError(ValueError):
    """The model calls an op the exporter cannot write in standard ONNX."""


INT64_MIN = np.iinfo(np.int64).min  # a Slice end "before index 0" for negative steps


def _end_pad(size, kernel, stride, dilation, begin, out):
    """The end padding that makes ONNX's floor-mode window count give ``out``: ``begin`` where that does
    (symmetric padding), else the least that does (ceil mode, 'same' convolutions with an even kernel)."""
    needed = (out - 1) * stride + dilation * (kernel - 1) + 1  # the input extent the windows span
    least = needed - size - begin
    return begin if least <= begin < least + stride else max(0, least)


def _pads(call, kernel, stride, padding, dilation, out):
    """ONNX's [top, left, bottom, right] for a 2-D window op whose output is ``out``."""
    h, w = call.in_tensors[0].shape[2:]
    ends = [_end_pad(size, kernel[a], stride[a], dilation[a], padding[a], out[a]) for a, size in enumerate((h, w))]
    return [padding[0], padding[1], ends[0], ends[1]]


# --------------------------------------------------------------------------- convolution and linear


def conv2d(g, call):
    fn, (x, w, *b) = call.fn, call.inputs
    kernel = call.in_tensors[1].shape[2:]
    out = call.out_tensors[0].shape[2:]
    return g.node("Conv", [x, w, *b], kernel_shape=list(kernel), strides=list(fn.stride),
                  dilations=list(fn.dilation), group=fn.groups,
                  pads=_pads(call, kernel, fn.stride, fn.padding, fn.dilation, out))


def conv_transpose2d(g, call):
    fn, (x, w, *b) = call.fn, call.inputs
    kernel, (h, wd) = call.in_tensors[1].shape[2:], call.in_tensors[0].shape[2:]
    out = call.out_tensors[0].shape[2:]
    extra = [out[a] - ((size - 1) * fn.stride[a] - 2 * fn.padding[a] + fn.dilation[a] * (kernel[a] - 1) + 1)
             for a, size in enumerate((h, wd))]
    return g.node("ConvTranspose", [x, w, *b], kernel_shape=list(kernel), strides=list(fn.stride),
                  dilations=list(fn.dilation), group=fn.groups, output_padding=extra,
                  pads=[fn.padding[0], fn.padding[1], fn.padding[0], fn.padding[1]])


def linear_(g, call):
    x, w, *b = call.inputs
    if call.in_tensors[0].ndim == 2:
        return g.node("Gemm", [x, w, *b], transB=1)
    y = g.node("MatMul", [x, g.node("Transpose", [w], perm=[1, 0])])
    return g.node("Add", [y, b[0]]) if b else y


# --------------------------------------------------------------------------- pooling and normalisation


def max_pool2d(g, call):
    fn = call.fn
    return g.node("MaxPool", call.inputs, kernel_shape=list(fn.kernel), strides=list(fn.stride),
                  dilations=list(fn.dilation), pads=_pads(call, fn.kernel, fn.stride, fn.padding, fn.dilation,
                                                          fn.out_size))


def avg_pool2d(g, call):
    fn = call.fn
    (kh, kw), ones = fn.kernel, (1, 1)
    pads = _pads(call, fn.kernel, fn.stride, fn.padding, ones, fn.out_size)
    average = g.node("AveragePool", call.inputs, kernel_shape=[kh, kw], strides=list(fn.stride), pads=pads,
                     count_include_pad=1)
    divisor = np.broadcast_to(np.asarray(fn.divisor), fn.out_size)
    if np.all(divisor == kh * kw):  # every window divides by its full area: a plain average pool
        return average
    # a divisor that varies by position (padding left out, ceil overhang, divisor_override): sum, then divide
    sums = g.node("Mul", [average, g.constant(np.asarray(kh * kw, dtype=call.dtype))])
    return g.node("Div", [sums, g.constant(divisor.astype(call.dtype))])


def adaptive_avg_pool2d(g, call):
    fn = call.fn  # y = A_h @ x @ A_w^T with the Function's own bin matrices
    rows = g.node("MatMul", [g.constant(np.asarray(fn.a_h)), call.inputs[0]])
    return g.node("MatMul", [rows, g.constant(np.ascontiguousarray(np.asarray(fn.a_w).T))])


def batch_norm(g, call):
    fn = call.fn
    if fn.training:
        raise UnsupportedOpError("batch norm runs in training mode, which ONNX's BatchNormalization does not "
                                 "export (export runs the model in eval mode; a module forcing training=True "
                                 "cannot be exported)")
    x, *affine = call.inputs
    channels = call.in_tensors[0].shape[1]
    weight = affine.pop(0) if fn.has_weight else g.constant(np.ones(channels, call.dtype))
    bias = affine.pop(0) if fn.has_bias else g.constant(np.zeros(channels, call.dtype))
    mean, var = g.array(fn.mean), g.array(fn.var)
    return g.node("BatchNormalization", [x, weight, bias, mean, var], epsilon=float(fn.eps))


def local_response_norm(g, call):
    fn = call.fn
    if fn.size % 2 == 0:  # torch's window is (size//2 before, (size-1)//2 after); ONNX's the reverse
        raise UnsupportedOpError(f"LocalResponseNorm with an even size ({fn.size}) has no ONNX form: ONNX's LRN "
                                 f"places its window one channel apart from torch's")
    # both divide alpha by the size: (k + alpha/size * sum of squares)^beta
    return g.node("LRN", call.inputs, size=fn.size, alpha=float(fn.alpha), beta=float(fn.beta), bias=float(fn.k))


# --------------------------------------------------------------------------- elementwise


def _same(op_type):
    return lambda g, call: g.node(op_type, call.inputs)


def leaky_relu(g, call):
    return g.node("LeakyRelu", call.inputs, alpha=float(call.fn.negative_slope))


def silu(g, call):  # swish: x * sigmoid(x) (no SiLU op before opset 24)
    x = call.inputs[0]
    return g.node("Mul", [x, g.node("Sigmoid", [x])])


def softmax(op_type):
    return lambda g, call: g.node(op_type, call.inputs, axis=int(call.fn.axis))


def power(g, call):
    return g.node("Pow", [call.inputs[0], g.constant(np.asarray(call.fn.exponent, dtype=call.dtype))])


def clamp(g, call):
    fn = call.fn
    bounds = [g.constant(np.asarray(v, dtype=call.dtype)) if v is not None else "" for v in (fn.low, fn.high)]
    return g.node("Clip", [call.inputs[0], *bounds])


def _reduce(op_type):
    def emit(g, call):
        axes = list(call.fn.axes)
        keepdims = int(bool(call.fn.keepdims))
        if op_type == "ReduceSum" or g.opset >= 18:  # axes became an input (ReduceSum at 13, the others at 18)
            return g.node(op_type, [call.inputs[0], g.constant(np.asarray(axes, np.int64))], keepdims=keepdims)
        return g.node(op_type, call.inputs, axes=axes, keepdims=keepdims)
    return emit


def cast(g, call):
    from onnx.helper import np_dtype_to_tensor_dtype
    return g.node("Cast", call.inputs, to=np_dtype_to_tensor_dtype(call.out_tensors[0].dtype))


# --------------------------------------------------------------------------- shapes


def reshape(g, call):
    return g.node("Reshape", [call.inputs[0], g.constant(np.asarray(call.out_tensors[0].shape, np.int64))])


def transpose(g, call):
    return g.node("Transpose", call.inputs, perm=list(call.fn.axes))


def broadcast_to(g, call):
    return g.node("Expand", [call.inputs[0], g.constant(np.asarray(call.fn.shape, np.int64))])


def concat(g, call):
    return g.node("Concat", call.inputs, axis=int(call.fn.axis))


def split(g, call):
    return g.node("Split", [call.inputs[0], g.constant(np.asarray(call.fn.sizes, np.int64))],
                  axis=int(call.fn.axis), outputs=len(call.fn.sizes))


def getitem(g, call):
    """x[index] with slices, integers, None and at most one integer array: Slice, Squeeze, Unsqueeze, Gather."""
    index = call.fn.index if isinstance(call.fn.index, tuple) else (call.fn.index,)
    in_shape = call.in_tensors[0].shape
    ellipses = [position for position, i in enumerate(index) if i is Ellipsis]
    if len(ellipses) > 1:
        raise UnsupportedOpError("indexing with two Ellipses has no ONNX form here")
    if ellipses:
        at = ellipses[0]
        named = sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:at] + (slice(None),) * (len(in_shape) - named) + index[at + 1:]
    arrays = [i for i in index if isinstance(i, (np.ndarray, list)) or hasattr(i, "__array__")]
    if len(arrays) > 1 or any(np.asarray(a).dtype == bool for a in arrays):
        raise UnsupportedOpError("indexing with a boolean mask or with several index arrays has no ONNX form here")
    starts, ends, axes, steps, squeeze, unsqueeze, gather = [], [], [], [], [], [], None
    dim = 0
    for entry in index:
        if entry is None:
            unsqueeze.append(dim + len(unsqueeze) - len(squeeze))
            continue
        size = in_shape[dim]
        if isinstance(entry, slice):
            start, stop, step = entry.indices(size)
            if (start, stop, step) != (0, size, 1):
                starts.append(start)
                ends.append(INT64_MIN if step < 0 and stop < 0 else stop)
                axes.append(dim)
                steps.append(step)
        elif isinstance(entry, (int, np.integer)):
            position = int(entry) % size
            starts.append(position), ends.append(position + 1), axes.append(dim), steps.append(1)
            squeeze.append(dim)
        else:
            gather = (dim, np.asarray(entry))
        dim += 1
    y = call.inputs[0]
    if starts:
        y = g.node("Slice", [y, *(g.constant(np.asarray(v, np.int64)) for v in (starts, ends, axes, steps))])
    if gather is not None:
        axis, indices = gather
        y = g.node("Gather", [y, g.array(indices, dtype=np.int64)], axis=axis)
        squeeze = [a + (indices.ndim - 1 if a > axis else 0) for a in squeeze]
    if squeeze:
        y = g.node("Squeeze", [y, g.constant(np.asarray(squeeze, np.int64))])
    if unsqueeze:
        y = g.node("Unsqueeze", [y, g.constant(np.asarray(unsqueeze, np.int64))])
    return y


# --------------------------------------------------------------------------- deformable convolution


def deform_conv2d(g, call):
    """torchvision's deform_conv2d is ONNX's DeformConv (opset 19): the same offset layout, (dy, dx) per kernel
    tap per offset group, and the same optional modulation mask (v2)."""
    if g.opset < 19:
        raise UnsupportedOpError("deform_conv2d needs ONNX's DeformConv, which exists from opset 19 on: export "
                                 "with opset=19 (--opset 19)")
    fn = call.fn
    x, offset, w, *rest = call.inputs
    (kh, kw), offset_channels = call.in_tensors[2].shape[2:], call.in_tensors[1].shape[1]
    inputs = [x, w, offset, rest[-1] if fn.has_bias else "", rest[0] if fn.has_mask else ""]
    while inputs[-1] == "":  # trailing optional inputs are left out
        inputs.pop()
    geo = fn.geo
    return g.node("DeformConv", inputs, kernel_shape=[kh, kw], strides=list(geo.stride),
                  pads=[geo.padding[0], geo.padding[1], geo.padding[0], geo.padding[1]],
                  dilations=list(geo.dilation), group=geo.groups, offset_group=offset_channels // (2 * kh * kw))


# --------------------------------------------------------------------------- the table

EMITTERS = {
    Conv2d: conv2d, ConvTranspose2d: conv_transpose2d, Linear: linear_,
    MaxPool2d: max_pool2d, AvgPool2d: avg_pool2d, AdaptiveAvgPool2d: adaptive_avg_pool2d,
    BatchNorm: batch_norm, LocalResponseNorm: local_response_norm,
    act.ReLU: _same("Relu"), act.LeakyReLU: leaky_relu, act.Sigmoid: _same("Sigmoid"), act.Tanh: _same("Tanh"),
    act.SiLU: silu, act.Softmax: softmax("Softmax"), act.LogSoftmax: softmax("LogSoftmax"),
    ops.Add: _same("Add"), ops.Sub: _same("Sub"), ops.Mul: _same("Mul"), ops.Div: _same("Div"),
    ops.Neg: _same("Neg"), ops.Exp: _same("Exp"), ops.Log: _same("Log"), ops.Sqrt: _same("Sqrt"),
    ops.Abs: _same("Abs"), ops.MatMul: _same("MatMul"), ops.Pow: power, ops.Clamp: clamp,
    ops.Sum: _reduce("ReduceSum"), ops.Mean: _reduce("ReduceMean"), ops.Max: _reduce("ReduceMax"),
    Reshape: reshape, Transpose: transpose, BroadcastTo: broadcast_to, GetItem: getitem, Concat: concat,
    Split: split, ToDeviceDtype: cast, DeformConvFunction: deform_conv2d,
}
