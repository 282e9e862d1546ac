"""``export(model, example_input, path, opset=17)``: run the model once and write what it computed as ONNX.

The model runs one forward on the example input, in eval mode and under ``no_grad``, inside a
``FunctionHook`` (autograd.py), which sees every Function call with its input and output tensors.
Each call is written at once by its emitter (ops.py) as standard ONNX nodes. Tensors are named as
they flow:

    the example input              "input" (static shape: the example's, batch included)
    a parameter or buffer          an initializer named by its state_dict key ("layer1.0.conv1.weight")
    any other constant             an initializer of its own (a zero pad, an index table, a pooling matrix)
    an op's output                 a fresh name; the model's output(s) "output" ("output0", "output1", ...)

Nothing is guessed from module types: what runs is what is written, so every model whose ops have
emitters exports, and a model calling one that has none stops with one sentence naming it. The
``onnx`` package (the ``onnx`` extra) builds and checks the graph; it is imported only here.
"""
import os
from collections import OrderedDict, namedtuple

import numpy as np

from .. import backend
from ..autograd import FunctionHook, Tensor, no_grad
from ..nn.module import Module
from ..nn.serialization import atomic_write
from .ops import EMITTERS, UnsupportedOpError

OPSETS = range(13, 22)  # Split/Squeeze/ReduceSum take their axes as inputs from 13 on


class ExportError(ValueError):
    """The model cannot be exported: an op without an ONNX form, a bad argument, onnx missing."""


Call = namedtuple("Call", ["fn", "inputs", "in_tensors", "out_tensors", "dtype"])


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install onnx (or scratchnet's extra, "
                          "pip install -e '.[onnx]')") from None
    return onnx


class Graph(FunctionHook):
    """The ONNX graph under construction; active as a FunctionHook during the traced forward."""

    def __init__(self, model, example, opset):
        self.onnx, self.opset = _onnx(), opset
        self.nodes, self.initializers, self.names = [], OrderedDict(), {}
        self.keep = []  # every tensor seen stays alive, so no id() is reused while tracing
        self.error = None
        self.float_dtype = example.dtype
        self.names[id(example)] = "input"
        # state_dict keys for parameters and buffers, by tensor and by array (batch norm gets raw arrays)
        self.state_names = {}
        for name, module in model.named_modules():
            prefix = f"{name}." if name else ""
            for table in (module._parameters, module._buffers):
                for key, t in table.items():
                    if t is not None:
                        self.state_names.setdefault(id(t), (prefix + key, t))
                        self.state_names.setdefault(id(t.data), (prefix + key, t))
        self._counter = 0

    # -- names and initializers
    def fresh(self, hint):
        self._counter += 1
        return f"/{hint}_{self._counter}"

    def constant(self, array, name=None):
        """An initializer holding ``array`` (floats in the model's dtype); returns its name."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(self.float_dtype)
        name = name or self.fresh("constant")
        if name not in self.initializers:
            self.initializers[name] = self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def array(self, array, dtype=None):
        """The name of a raw array a Function kept: its state_dict key if it is a buffer's, else a constant."""
        state = self.state_names.get(id(array))
        value = backend.to_numpy(array)
        value = value.astype(dtype) if dtype is not None else value
        return self.constant(value, state[0] if state else None)

    def value(self, tensor):
        """The ONNX name of a Function's input tensor."""
        name = self.names.get(id(tensor))
        if name is None:
            state = self.state_names.get(id(tensor))
            name = self.constant(backend.to_numpy(tensor.data), state[0] if state else None)
            self.names[id(tensor)] = name
            self.keep.append(tensor)
        return name

    def node(self, op_type, inputs, outputs=1, **attributes):
        """Append one node; returns its output name (a list of names when ``outputs`` > 1)."""
        names = [self.fresh(op_type) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names, name=names[0].strip("/"),
                                                     **attributes))
        return names[0] if outputs == 1 else names

    # -- the hook: each call is written when it happens
    def forward_postprocess(self, function, inputs, outputs):
        if self.error is not None:
            return
        emitter = EMITTERS.get(type(function))
        try:
            if emitter is None:
                raise UnsupportedOpError(f"the op {type(function).__name__} ({type(function).__module__}) has no "
                                         f"standard ONNX form in scratchnet's exporter")
            call = Call(function, [self.value(t) for t in inputs], inputs, outputs,
                        outputs[0].dtype if backend.is_floating(outputs[0].dtype) else self.float_dtype)
            names = emitter(self, call)
        except UnsupportedOpError as exc:
            self.error = exc  # raised after the forward, outside the op that is running
            return
        for tensor, name in zip(outputs, [names] if isinstance(names, str) else names):
            self.names[id(tensor)] = name
            for source in inputs:  # an op that wrote its input's array (relu_): that tensor now holds this value
                if isinstance(source, Tensor) and source.data is tensor.data:
                    self.names[id(source)] = name
        self.keep += list(inputs) + list(outputs)


def _outputs(output):
    """The model's output tensors: one Tensor, or a tuple/namedtuple/list of them."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (tuple, list)) and output and all(isinstance(o, Tensor) for o in output):
        return list(output)
    raise ExportError(f"ONNX export needs a model returning a Tensor or a tuple of Tensors, got "
                      f"{type(output).__name__}")


def _example_tensor(model, example_input):
    if isinstance(example_input, Tensor):
        example_input = example_input.data
    array = backend.to_numpy(np.asarray(example_input) if not hasattr(example_input, "shape") else example_input)
    params = list(model.parameters())
    dtype = params[0].dtype if params else backend.get_default_dtype()
    return Tensor(np.ascontiguousarray(array, dtype=dtype))


def build(model, example_input, opset=17, name=None):
    """The ONNX ModelProto of ``model`` run on ``example_input`` (eval mode), checked by onnx.checker."""
    if not isinstance(model, Module):
        raise ExportError(f"export needs an nn.Module, got {type(model).__name__}")
    if opset not in OPSETS:
        raise ExportError(f"opset {opset} is not supported: choose one from {OPSETS.start} to {OPSETS.stop - 1}")
    if model.device != "cpu":
        raise ExportError("export a model on the CPU: model.to('cpu') first")
    onnx = _onnx()
    label = name or type(model).__name__
    example = _example_tensor(model, example_input)
    graph = Graph(model, example, opset)
    was_training = model.training
    model.eval()
    try:
        with no_grad(), graph:
            outputs = _outputs(model(example))
    finally:
        model.train(was_training)
    if graph.error is not None:
        raise ExportError(f"ONNX export of {label}: {graph.error}") from graph.error
    helper = onnx.helper
    tensor_type = helper.np_dtype_to_tensor_dtype
    out_names = ["output"] if len(outputs) == 1 else [f"output{i}" for i in range(len(outputs))]
    for tensor, out_name in zip(outputs, out_names):
        graph.nodes.append(helper.make_node("Identity", [graph.value(tensor)], [out_name], name=out_name))
    proto = helper.make_graph(
        graph.nodes, label,
        [helper.make_tensor_value_info("input", tensor_type(example.dtype), list(example.shape))],
        [helper.make_tensor_value_info(n, tensor_type(t.dtype), list(t.shape)) for t, n in zip(outputs, out_names)],
        list(graph.initializers.values()))
    opset_id = helper.make_opsetid("", opset)
    model_proto = helper.make_model(proto, opset_imports=[opset_id], producer_name="scratchnet",
                                    ir_version=helper.find_min_ir_version_for([opset_id]))
    onnx.checker.check_model(model_proto)
    return model_proto


def export(model, example_input, path, opset=17, name=None):
    """Write ``model`` as an ONNX file at ``path`` (atomically), traced on ``example_input``; returns the
    ModelProto. Initializers are named by the state_dict keys; the input is "input", the output "output"."""
    model_proto = build(model, example_input, opset, name)
    data = model_proto.SerializeToString()
    if len(data) >= 2 ** 31:
        raise ExportError(f"the ONNX graph is {len(data) / 2 ** 30:.1f} GiB, over protobuf's 2 GiB limit for "
                          f"one file")
    with atomic_write(os.fspath(path)) as f:
        f.write(data)
    return model_proto
