"""What is drawn: the graph behind a tensor, which module call made each op, each edge's gradient.

``trace_modules(model)`` notes, during a forward, which module call (nested in time: ``layer1`` holds
``layer1.0`` holds ``layer1.0.conv1``) was running when each function was called: forward hooks keep
the stack of calls, a ``FunctionHook`` reads its top. ``Graph(output)`` walks the graph from ``output``
through creator links (no hook needed) and must do so before ``backward`` frees it; while it is entered
as a ``FunctionHook`` (``graph.backward()``, or ``with graph: loss.backward()``) it notes the gradient
each function receives for its outputs and returns for each input, so an edge's gradient is exactly
what crossed it. At a fork (a tensor read by several ops) the edges' gradients differ and sum to the
tensor's; they are kept, so edges merged at a box border get the norm of their sum, not a sum of norms.
"""
import itertools
from collections import namedtuple
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..autograd import FunctionHook, Tensor
from ..nn import ModuleCallHook, Parameter


class GraphError(ValueError):
    """A graph that cannot be drawn: no graph, a freed one, an unknown module, an unwritable file."""


# --------------------------------------------------------------------------- module calls


@dataclass(eq=False)
class ModuleCall:
    """One call of one module in a traced forward; calls nest in time (``start`` .. ``end``)."""
    name: str  # as in named_modules(): "layer1.0"; "" for the traced model itself
    type: str
    depth: int  # 0 for the traced model, 1 for its children ...
    is_leaf: bool  # a module without children (Conv2d, ReLU)
    params: int
    parent: "ModuleCall"
    start: int
    end: int = -1

    def contains(self, other):
        return self.start <= other.start and other.end <= self.end

    @property
    def title(self):
        return self.name or self.type


class ModuleTrace(ModuleCallHook):
    """Active as ``with ModuleTrace(model) as trace: model(x)``: ``calls`` (every module call, in start
    order), ``owner`` (function -> the innermost call running when it was called), ``param_names``."""

    def __init__(self, model):
        super().__init__(model)
        self.calls, self.owner, self._stack = [], {}, []
        self.param_names = {id(p): name for name, p in model.named_parameters()}
        self._clock = itertools.count()

    def enter_module(self, name, module, inputs):
        depth, params = name.count(".") + 1 if name else 0, sum(p.size for p in module.parameters())
        call = ModuleCall(name, type(module).__name__, depth, next(module.children(), None) is None, params,
                          self._stack[-1] if self._stack else None, next(self._clock))
        self.calls.append(call)
        self._stack.append(call)

    def leave_module(self, name, module, inputs, output):
        self._stack.pop().end = next(self._clock)

    def forward_postprocess(self, function, inputs, outputs):
        if self._stack:
            self.owner[function] = self._stack[-1]


def trace_modules(model):
    """``with trace_modules(model) as modules: out = model(x)`` notes which module call made each op."""
    return ModuleTrace(model)


# --------------------------------------------------------------------------- the graph

Node = namedtuple("Node", ["kind", "label", "shape"])  # kind: op, tensor, param, leaf (later: module)
Edge = namedtuple("Edge", ["src", "dst", "index"])  # index: the consumer's input index; None for op -> tensor


def grad_norm(grad):
    xp = backend.get_array_module(grad)
    return float(xp.linalg.norm(grad.astype(np.float64).ravel()))


class Graph(FunctionHook):
    """The graph behind ``output`` and, once a backward ran inside it, every edge's gradient norm.

    ``nodes``: id -> Node ("f3" an op, "t3_0" output 0 of op f3, "l5" a leaf); ``edges``: Edges in walk
    order; ``producer``/``consumers``/``inputs``: the links; ``joins``: ops fed by two or more paths
    (parameters do not count); ``forks``: tensors read by two or more ops; ``norms``: Edge -> norm.
    With a module trace: ``owner`` (op -> innermost ModuleCall) and ``members`` (call -> its ops, nested
    calls' included).
    """

    def __init__(self, output, modules=None):
        if not isinstance(output, Tensor):
            raise GraphError(f"draw_graph needs a Tensor, got {type(output).__name__}")
        if output.creator is None:
            raise GraphError("this tensor has no graph: it was computed under no_grad or from tensors that do "
                             "not require grad (or it is a leaf); pass the output of a computation on them")
        self.output, self.modules = output, modules
        self.nodes, self.edges = {}, []
        self.producer, self.consumers, self.inputs = {}, {}, {}  # tensor -> op; tensor -> [(op, i)]; op -> [(src, i)]
        self.norms, self._shares = {}, {}  # Edge -> gradient norm; fork tensor -> {Edge: gradient}
        self._ids, self._objects = {}, {}  # id(function or leaf) -> node id; node id -> the object (kept alive)
        self.root = self._walk(output)
        self.joins = {op for op, ins in self.inputs.items()
                      if len({src for src, _ in ins if self.nodes[src].kind != "param"}) >= 2}
        self.forks = {t for t, uses in self.consumers.items() if len(uses) >= 2}
        self.owner, self.members = {}, {}
        for op in self.inputs:
            call = self.owner[op] = modules.owner.get(self._objects[op]) if modules is not None else None
            while call is not None:
                self.members.setdefault(call, set()).add(op)
                call = call.parent

    # -- walk
    def _walk(self, output):
        root = self._tensor(output.creator, output.output_index)
        stack, seen = [output.creator], {id(output.creator)}
        while stack:
            fn = stack.pop()
            if getattr(fn, "freed", False):
                raise GraphError("backward() has freed this graph; build it first: graph = sn.viz.Graph(loss), "
                                 "then graph.backward() (or draw_graph(loss), which runs backward itself)")
            op = self._op(fn)
            for index, edge in enumerate(fn.edges):
                if edge is None:
                    continue
                if isinstance(edge, Tensor):
                    src = self._leaf(edge)
                else:
                    src = self._tensor(*edge)
                    if id(edge[0]) not in seen:
                        seen.add(id(edge[0]))
                        stack.append(edge[0])
                self.consumers.setdefault(src, []).append((op, index))
                self.inputs[op].append((src, index))
                self.edges.append(Edge(src, op, index))
        return root

    def _node_id(self, obj, prefix):
        """(obj's node id, whether it is new): a function or a leaf gets one id, kept with the object."""
        if id(obj) in self._ids:
            return self._ids[id(obj)], False
        node = self._ids[id(obj)] = f"{prefix}{len(self._ids)}"
        self._objects[node] = obj
        return node, True

    def _op(self, fn):
        op, new = self._node_id(fn, "f")
        if new:
            self.nodes[op] = Node("op", fn.name, None)
            self.inputs[op] = []
        return op

    def _tensor(self, fn, index):
        op = self._op(fn)
        tensor = f"t{op[1:]}_{index}"
        if tensor not in self.nodes:
            self.nodes[tensor] = Node("tensor", "", tuple(fn.output_meta[index][0]))
            self.producer[tensor] = op
            self.edges.append(Edge(op, tensor, None))
        return tensor

    def _leaf(self, t):
        leaf, new = self._node_id(t, "l")
        if new:
            names = self.modules.param_names if self.modules is not None else {}
            if isinstance(t, Parameter):
                self.nodes[leaf] = Node("param", names.get(id(t), "parameter"), t.shape)
            else:
                self.nodes[leaf] = Node("leaf", t.name or "input", t.shape)
        return leaf

    # -- gradients
    def backward_postprocess(self, function, grad_outputs, grad_inputs):
        op = self._ids.get(id(function))  # ids are unique: this graph keeps its functions alive
        if op is None:
            return  # a function of another graph
        for index, grad in enumerate(grad_outputs):
            tensor = f"t{op[1:]}_{index}"
            if tensor in self.nodes:
                self.norms[Edge(op, tensor, None)] = grad_norm(grad)
        for src, index in self.inputs[op]:
            grad = grad_inputs[index]
            if grad is not None:
                self.norms[Edge(src, op, index)] = grad_norm(grad)
                if src in self.forks:
                    self._shares.setdefault(src, {})[Edge(src, op, index)] = grad.copy()

    def backward(self, grad=None):
        """``output.backward(grad)`` with this graph watching: every edge's gradient is noted."""
        if grad is None and self.output.size != 1:
            raise GraphError(f"the output has shape {self.output.shape}, not one element: pass grad= of that "
                             f"shape, or backward=False to draw the graph without gradients")
        with self:
            self.output.backward(grad)

    def norm(self, edges):
        """The gradient norm along ``edges`` taken together (one edge, or a fork's edges into one box)."""
        if len(edges) == 1:
            return self.norms.get(edges[0])
        shares = [self._shares.get(e.src, {}).get(e) for e in edges]
        shares = [g for g in shares if g is not None]
        return grad_norm(sum(shares[1:], shares[0])) if shares else None
