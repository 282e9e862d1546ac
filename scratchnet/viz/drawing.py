"""How the graph is drawn: module calls boxed or framed, joins and forks marked, edges coloured by gradient.

A module call drawn as a box (3-D) hides its ops; its edges are the tensors that cross its border.
Open module calls are framed clusters. Ops are boxes, tensors ellipses with their shapes (parameters
grey, the output doubled); a join (orange) is an op fed by two or more paths, a residual ``+`` or a
``cat``: backward hands each path its part of the gradient (all of it for ``+``, its slice for ``cat``).
A fork (blue) is a tensor read by two or more ops: the gradients coming back from each add up there.
Each edge's label, colour and width give the norm of the gradient that crossed it: into an op, the
gradient w.r.t. that input; out of one, the gradient of the tensor it made. Colours follow one log
scale per drawing, spanned by the data paths (the legend gives it); weights' gradients, summed over
every position a weight is used at and often far larger, take its end colour.
"""
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np

from .trace import Graph, GraphError, Node

FORMATS = ("svg", "png", "pdf", "dot", "gv")
# low -> high gradient norm (matplotlib's plasma without its pale end, readable on white)
PALETTE = ("#0d0887", "#6a00a8", "#b12a90", "#e16462", "#f2844b")
JOIN_FILL, FORK_FILL, BOX_FILL = "#ffc98b", "#cfe3ff", "#e4efd9"


# --------------------------------------------------------------------------- one drawing of it


def _names(value):
    return (value,) if isinstance(value, str) else tuple(value or ())


def _matches(call, names):
    return call.name in names or call.type in names


Layout = namedtuple("Layout", ["nodes", "edges", "frames", "boxes"])


class Drawing:
    """The graph as drawn: module calls boxed or framed, and the nodes and (merged) edges that remain.

    ``depth``: module calls this deep or deeper become boxes; None picks the deepest depth whose
    drawing has at most ``max_nodes`` nodes. ``collapse``: module names or types drawn as boxes at any
    depth. ``expand``: module names or types drawn open, with their parents. ``params``: draw parameters.
    Read back: ``nodes`` (id -> Node; a box has kind "module"), ``edges`` ((src, dst) -> gradient norm,
    None before backward), ``boxes`` (box id -> (ModuleCall, its op ids)), ``joins``, ``forks``.
    """

    def __init__(self, graph, depth=None, collapse=(), expand=(), params=True, max_nodes=150, title=None):
        self.graph, self.params, self.title = graph, params, title
        self._collapse, expand = _names(collapse), _names(expand)
        calls = list(graph.members)
        if (self._collapse or expand) and graph.modules is None:
            raise GraphError("collapse/expand need the module trace: pass modules= (see sn.viz.trace_modules)")
        for item in self._collapse + expand:
            if not any(_matches(c, (item,)) for c in calls):
                known = sorted({c.type for c in calls} | {c.name for c in calls if c.depth == 1})
                raise GraphError(f"no module named or typed {item!r} in this graph; there are e.g. "
                                 f"{', '.join(known[:15])}")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
            raise GraphError(f"depth must be an integer >= 1, got {depth!r}")
        opened = [c for c in calls if _matches(c, expand)]
        self._open = {c for c in calls if any(c.contains(e) for e in opened)}
        if depth is None:
            deepest = max((c.depth for c in calls), default=0) + 1
            depth = next((d for d in range(deepest, 1, -1) if len(self._layout(d).nodes) <= max_nodes), 1)
        self.depth = depth
        self.nodes, self.edges, self.frames, self.boxes = self._layout(depth)
        self.joins = {n for n in self.nodes if n in graph.joins}
        self.forks = {n for n in self.nodes if n in graph.forks}

    def _boxed(self, call, depth):
        ops = self.graph.members.get(call)
        if call.depth == 0 or call in self._open or not ops or (call.is_leaf and len(ops) == 1):
            return False  # a one-op layer is drawn as its op, named after it
        return _matches(call, self._collapse) or call.depth >= depth

    def _layout(self, depth):
        graph = self.graph
        box = {None: None}  # call -> the outermost boxed call around it (itself included), or None
        for call in sorted(graph.members, key=lambda c: c.start):
            box[call] = box.get(call.parent) or (call if self._boxed(call, depth) else None)

        def shown(op):  # what an op is drawn as: itself, or the box it is in
            outer = box[graph.owner.get(op)]
            return f"m{outer.start}" if outer is not None else op

        def frame(call):  # the innermost open module call around `call` that gets a frame
            while call is not None and (call.depth == 0 or call.is_leaf or box[call] is not None):
                call = call.parent
            return call

        nodes, frames, boxes = {}, {}, {}
        for op in graph.inputs:
            target = shown(op)
            if target == op:
                nodes[op], frames[op] = graph.nodes[op], frame(graph.owner.get(op))
            else:
                call = box[graph.owner[op]]
                boxes.setdefault(target, (call, []))[1].append(op)
                nodes[target], frames[target] = Node("module", call.title, None), frame(call.parent)
        for name, node in graph.nodes.items():
            if node.kind == "op":
                continue
            ends = {shown(op) for op, _ in graph.consumers.get(name, [])}
            made_by = shown(graph.producer[name]) if name in graph.producer else None
            if node.kind == "param" and (not self.params or all(e in boxes for e in ends)):
                continue
            if made_by in boxes and ends == {made_by} and name != graph.root:
                continue  # lives inside one box
            nodes[name] = node
            anchor = made_by or min(ends, key=lambda e: e in boxes)
            frames[name] = frames[anchor] if node.kind != "leaf" else None
        merged = {}
        for e in graph.edges:
            src, dst = (shown(e.src), e.dst) if e.index is None else (e.src, shown(e.dst))
            if src not in nodes or dst not in nodes or src == dst:
                continue
            if e.index is not None and e.src in graph.producer and shown(graph.producer[e.src]) == dst:
                continue  # a box reading back a tensor it made (shown because others read it too)
            merged.setdefault((src, dst), []).append(e)
        return Layout(nodes, {pair: graph.norm(group) for pair, group in merged.items()}, frames, boxes)

    # -- text
    def describe(self):
        """One line: what is drawn and the range of gradient norms."""
        norms = [v for v in self.edges.values() if v]
        grads = f"; gradient norms {min(norms):.3g} .. {max(norms):.3g}" if norms else "; no gradients"
        return (f"{len(self.nodes)} nodes, {len(self.edges)} edges, {len(self.boxes)} module boxes "
                f"(depth {self.depth}), {len(self.joins)} joins, {len(self.forks)} forks{grads}")

    def _label(self, name, node):
        graph = self.graph
        shape = "×".join(map(str, node.shape)) if node.shape is not None else ""
        if node.kind == "module":
            call, ops = self.boxes[name]
            joined = sorted({graph.nodes[op].label for op in ops if op in graph.joins})
            lines = [call.title, f"{call.type} · {len(ops)} ops"]
            lines += [f"{call.params:,} params"] if call.params else []
            count = sum(op in graph.joins for op in ops)
            lines += [f"{count} join{'s' * (count > 1)} ({', '.join(joined)})"] if joined else []
            return "\\n".join(lines)
        if node.kind == "op":
            owner = graph.owner.get(name)
            where = f"{owner.name.rsplit('.', 1)[-1]}: " if owner is not None and owner.is_leaf else ""
            return where + node.label + ("\\njoin" if name in graph.joins else "")
        if node.kind == "tensor":
            shape = f"output {shape or '(scalar)'}" if name == graph.root else shape
            return shape + ("\\nfork" if name in graph.forks else "")
        frame = self.frames.get(name)
        label = node.label
        if frame is not None and label.startswith(frame.name + "."):
            label = label[len(frame.name) + 1:]
        return f"{label}\\n{shape}"

    # -- Graphviz
    def to_dot(self):
        """This drawing as a ``graphviz.Digraph`` (its ``.source`` is the DOT text)."""
        graphviz = _graphviz()
        dot = graphviz.Digraph("autograd", graph_attr=dict(rankdir="TB", nodesep="0.25", ranksep="0.3",
                                                           fontname="Helvetica", fontsize="11", labelloc="t"),
                               node_attr=dict(fontname="Helvetica", fontsize="10", height="0.3"),
                               edge_attr=dict(fontname="Helvetica", fontsize="8", arrowsize="0.6"))
        if self.title:
            dot.attr(label=self.title)
        children, members = {}, {}
        for name in self.nodes:
            members.setdefault(self.frames.get(name), []).append(name)
        pending = [call for call in members if call is not None]
        while pending:  # every framed call's parent frames, up to the top
            call = pending.pop()
            parent = call.parent if call.parent is not None and call.parent.depth > 0 else None
            if call not in children.setdefault(parent, []):
                children[parent].append(call)
                if parent is not None:
                    pending.append(parent)
        self._emit(dot, None, children, members)
        scale = self._scale()
        for (src, dst), norm in self.edges.items():
            dot.edge(src, dst, **self._edge_style(norm, scale))
        if scale is not None:
            dot.node("legend", self._legend(scale), shape="plaintext")
        return dot

    def _emit(self, target, frame, children, members):
        for name in members.get(frame, []):
            target.node(name, self._label(name, self.nodes[name]), **self._node_style(name))
        for call in sorted(children.get(frame, []), key=lambda c: c.start):
            with target.subgraph(name=f"cluster_m{call.start}") as sub:
                sub.attr(label=f"{call.title} · {call.type}", style="rounded,dashed", color="#8a8a8a",
                         fontsize="10")
                self._emit(sub, call, children, members)

    def _node_style(self, name):
        kind = self.nodes[name].kind
        if kind == "module":
            return dict(shape="box3d", style="filled", fillcolor=BOX_FILL)
        if kind == "op":
            fill = JOIN_FILL if name in self.graph.joins else "#eeeeee"
            return dict(shape="box", style="rounded,filled", fillcolor=fill,
                        penwidth="2" if name in self.graph.joins else "1")
        style = dict(shape="ellipse", fontsize="9", style="filled", fillcolor="white")
        if name in self.graph.forks:
            style.update(fillcolor=FORK_FILL, penwidth="2")
        if kind == "param":
            style.update(fillcolor="#f2f2f2", color="#999999", fontcolor="#555555")
        if name == self.graph.root:
            style.update(peripheries="2")
        return style

    def _scale(self):
        """log10 of the smallest and largest norm along data paths (weights' would wash them out)."""
        norms = [v for (src, _), v in self.edges.items() if v and self.nodes[src].kind != "param"]
        norms = norms or [v for v in self.edges.values() if v]
        return (float(np.log10(min(norms))), float(np.log10(max(norms)))) if norms else None

    def _edge_style(self, norm, scale):
        if norm is None or scale is None:
            return {}
        if norm == 0:
            return dict(label=" 0", color="#bbbbbb", style="dashed")
        lo, hi = scale
        frac = 0.5 if hi == lo else min(max((np.log10(norm) - lo) / (hi - lo), 0.0), 1.0)
        colour = PALETTE[min(int(frac * len(PALETTE)), len(PALETTE) - 1)]
        return dict(label=f" {norm:.3g}", color=colour, fontcolor=colour, penwidth=f"{1 + 2.5 * frac:.2f}")

    def _legend(self, scale):
        lo, hi = scale
        cells = "".join(f'<td bgcolor="{c}"><font color="white"> {10 ** (lo + k * (hi - lo) / len(PALETTE)):.1e} '
                        f'</font></td>' for k, c in enumerate(PALETTE))
        return (f'<<table border="0" cellspacing="1"><tr><td>gradient norm ≥</td>{cells}</tr>'
                f'<tr><td colspan="{len(PALETTE) + 1}">orange: a join (each path gets its part of the gradient)'
                f' · blue: a fork (the gradients coming back add up)</td></tr></table>>')

    def _repr_mimebundle_(self, include=None, exclude=None):  # Jupyter shows the picture
        return self.to_dot()._repr_mimebundle_(include=include, exclude=exclude)

    def save(self, path):
        """Write ``.svg``, ``.png``, ``.pdf`` (rendered by Graphviz's ``dot``) or ``.dot``; returns the path
        written. Without ``dot`` a picture is written as ``.dot`` instead, with one line on how to render it."""
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise GraphError(f"cannot draw to {str(path)!r}: name a .svg, .png, .pdf or .dot file")
        dot = self.to_dot()
        if fmt in ("dot", "gv"):
            return _write(path, dot.source.encode())
        graphviz = _graphviz()
        try:
            data = dot.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            written = _write(path.with_suffix(".dot"), dot.source.encode())
            print(f"Graphviz's `dot` program is not installed, so wrote {written}; render it with "
                  f"`dot -T{fmt} {written} -o {path}` (Debian/Ubuntu: apt-get install graphviz)", file=sys.stderr)
            return written
        return _write(path, data)


def _write(path, data):
    try:
        path.write_bytes(data)
    except OSError as error:
        raise GraphError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def _graphviz():
    try:
        import graphviz
    except ImportError:
        raise ImportError("drawing the graph needs the graphviz Python package: pip install graphviz") from None
    return graphviz


def draw_graph(output, modules=None, *, backward=True, grad=None, path=None, **options):
    """Draw the graph behind ``output``; returns a ``Drawing`` (save it, or show it in Jupyter).

    ``modules``: a ``trace_modules`` trace of the forward, for module boxes and parameter names.
    ``backward``: run ``output.backward(grad)`` first and label every edge with its gradient norm
    (leaves' ``.grad`` accumulate as in any backward). ``path``: also save it there (see ``Drawing.save``).
    ``options``: ``depth``, ``collapse``, ``expand``, ``params``, ``max_nodes``, ``title`` (see ``Drawing``).
    """
    graph = Graph(output, modules)
    if backward:
        graph.backward(grad)
    drawing = Drawing(graph, **options)
    if path is not None:
        drawing.save(path)
    return drawing
