"""Draw the autograd graph that backward walks, each edge labelled with the gradient that crossed it.

    import scratchnet as sn
    with sn.viz.trace_modules(model) as modules:        # which module call made which op
        loss = F.cross_entropy(model(x), y)
    drawing = sn.viz.draw_graph(loss, modules)          # runs loss.backward(), noting every edge's gradient
    drawing.save("graph.svg")                           # .svg/.png/.pdf need Graphviz's `dot`; .dot never does

    python -m scratchnet.graph resnet50 --expand layer1.0 --out resnet50.svg

``trace`` finds what to draw (the graph, module calls, gradients), ``drawing`` draws it (boxes,
frames, joins, forks, colours; Graphviz). DeZero's ``plot_dot_graph`` and Chainer's
``computational_graph`` draw the graph; this one also shows what backward sent along it.
"""
from .drawing import FORMATS, Drawing, draw_graph
from .trace import Edge, Graph, GraphError, ModuleCall, ModuleTrace, Node, trace_modules

__all__ = ["Drawing", "Edge", "FORMATS", "Graph", "GraphError", "ModuleCall", "ModuleTrace", "Node",
           "draw_graph", "trace_modules"]
