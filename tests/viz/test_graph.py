"""scratchnet.viz and python -m scratchnet.graph: the drawn graph's structure and gradient norms, not pixels.

Gradient norms are checked against torch, where a tensor read by several ops is cloned once per reader so
that each clone's .grad is that edge's share of the gradient.
"""
import shutil
import sys

import numpy as np
import pytest
import torch

import scratchnet as sn
import scratchnet.nn.functional as F
from scratchnet import nn, viz
from scratchnet.graph import main
from scratchnet.viz.drawing import FORK_FILL, JOIN_FILL

RNG = np.random.default_rng(7)


def names(graph):
    """Readable node names: ops by function name, tensors by the op that made them, leaves by name."""
    out = {}
    for node_id, node in graph.nodes.items():
        if node.kind == "tensor":
            out[node_id] = "out(" + graph.nodes[graph.producer[node_id]].label + ")"
        else:
            out[node_id] = node.label
    return out


def readable_edges(graph, edges):
    n = names(graph)
    return {(n[src], n[dst]) for src, dst in edges}


# --------------------------------------------------------------------------- a small chain, exactly


def test_chain_nodes_edges_and_norms_match_torch():
    x_np, w_np = RNG.standard_normal((2, 3)), RNG.standard_normal((3, 4))
    x = sn.tensor(x_np, requires_grad=True)
    x.name = "x"
    w = nn.Parameter(sn.tensor(w_np))
    loss = (F.relu(x @ w) * 2.0).sum()
    drawing = viz.draw_graph(loss)
    graph = drawing.graph

    assert sorted(n.label for n in graph.nodes.values() if n.kind == "op") == ["MatMul", "Mul", "ReLU", "Sum"]
    assert {(n.kind, n.shape) for n in graph.nodes.values() if n.kind in ("leaf", "param")} == \
        {("leaf", (2, 3)), ("param", (3, 4))}
    assert readable_edges(graph, drawing.edges) == {
        ("x", "MatMul"), ("parameter", "MatMul"), ("MatMul", "out(MatMul)"), ("out(MatMul)", "ReLU"),
        ("ReLU", "out(ReLU)"), ("out(ReLU)", "Mul"), ("Mul", "out(Mul)"), ("out(Mul)", "Sum"),
        ("Sum", "out(Sum)")}
    assert graph.nodes[graph.root].shape == () and not graph.joins and not graph.forks

    tx, tw = torch.tensor(x_np, requires_grad=True), torch.tensor(w_np, requires_grad=True)
    h = tx @ tw
    r = torch.relu(h)
    m = r * 2.0
    for t in (h, r, m):
        t.retain_grad()
    m.sum().backward()
    expected = {"out(MatMul)": h.grad, "out(ReLU)": r.grad, "out(Mul)": m.grad, "out(Sum)": torch.tensor(1.0),
                "x": tx.grad, "parameter": tw.grad}
    n = names(graph)
    for (src, dst), norm in drawing.edges.items():
        tensor = n[dst] if graph.nodes[dst].kind == "tensor" else n[src]  # the tensor on this edge
        assert norm == pytest.approx(torch.linalg.norm(expected[tensor]).item(), rel=1e-12), (n[src], n[dst])
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-12)  # backward ran once, as usual


# --------------------------------------------------------------------------- joins and forks


class Block(nn.Module):
    """relu(fc2(relu(fc1(a))) + a): a residual unit (Linear layers keep it fast); its input forks inside it."""

    def __init__(self, features):
        super().__init__()
        self.fc1 = nn.Linear(features, features)
        self.fc2 = nn.Linear(features, features)

    def forward(self, a):
        return F.relu(self.fc2(F.relu(self.fc1(a))) + a)


class Net(nn.Module):
    """stem -> block; the stem's output also goes round the block into a cat (a second join)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 3)
        self.block = Block(3)

    def forward(self, x):
        a = F.relu(self.stem(x))
        return sn.cat([self.block(a), a * 3.0], 1)


def torch_net(net, x_np, target_np):
    """The same computation in torch; every tensor read twice is cloned per reader to expose its shares."""
    p = {k: torch.tensor(v, requires_grad=True) for k, v in net.state_dict().items()}
    linear = torch.nn.functional.linear
    a = torch.relu(linear(torch.tensor(x_np), p["stem.weight"], p["stem.bias"]))
    a_block, a_around = a.clone(), a.clone()
    a_fc1, a_skip = a_block.clone(), a_block.clone()
    h = torch.relu(linear(a_fc1, p["block.fc1.weight"], p["block.fc1.bias"]))
    s = linear(h, p["block.fc2.weight"], p["block.fc2.bias"]) + a_skip
    out = torch.relu(s)
    c = torch.cat([out, a_around * 3.0], 1)
    for t in (a, a_block, a_around, a_fc1, a_skip, s, out, c):
        t.retain_grad()
    (c * torch.tensor(target_np)).sum().backward()
    return dict(a=a, a_block=a_block, a_around=a_around, a_fc1=a_fc1, a_skip=a_skip, s=s, out=out, c=c), p


@pytest.fixture(scope="module")
def traced():
    sn.manual_seed(3)
    net = Net().double()
    x_np, target_np = RNG.standard_normal((5, 4)), RNG.standard_normal((5, 6))
    x = sn.tensor(x_np, requires_grad=True)
    with viz.trace_modules(net) as modules:
        c = net(x)
    loss = (c * sn.tensor(target_np)).sum()
    graph = viz.Graph(loss, modules)
    with graph:  # the graph notes the gradients of a backward the user runs inside it
        loss.backward()
    return graph, torch_net(net, x_np, target_np)


def test_joins_and_forks_are_marked(traced):
    graph, _ = traced
    drawing = viz.Drawing(graph, depth=9)  # everything open
    assert sorted(graph.nodes[op].label for op in drawing.joins) == ["Add", "Concat"]
    (fork,) = drawing.forks  # the stem's output, read by block.fc1, the block's + and the * 3
    assert graph.nodes[graph.producer[fork]].label == "ReLU"
    assert sorted(graph.nodes[op].label for op, _ in graph.consumers[fork]) == ["Add", "Linear", "Mul"]
    source = drawing.to_dot().source
    for node_id in list(drawing.joins) + [fork]:
        line = next(line for line in source.splitlines() if line.strip().startswith(node_id + " "))
        assert (JOIN_FILL if node_id in drawing.joins else FORK_FILL) in line


def test_fork_join_and_weight_edges_match_torch(traced):
    graph, (t, p) = traced
    drawing = viz.Drawing(graph, depth=9)
    fork = next(iter(drawing.forks))
    by_reader = {graph.nodes[op].label: (op, i) for op, i in graph.consumers[fork]}
    expect = {
        (fork, by_reader["Linear"][0]): t["a_fc1"].grad, (fork, by_reader["Add"][0]): t["a_skip"].grad,
        (fork, by_reader["Mul"][0]): t["a_around"].grad,
        (graph.producer[fork], fork): t["a"].grad,  # the fork's total
    }
    add = by_reader["Add"][0]
    add_out = next(n for n, op in graph.producer.items() if op == add)
    expect[(add, add_out)] = t["s"].grad
    for name in ("stem.weight", "block.fc1.weight", "block.fc2.bias"):
        leaf = next(n for n, node in graph.nodes.items() if node.label == name)
        expect[(leaf, graph.consumers[leaf][0][0])] = p[name].grad
    for pair, grad in expect.items():
        assert drawing.edges[pair] == pytest.approx(torch.linalg.norm(grad).item(), rel=1e-12), pair
    assert all(norm is not None and norm > 0 for norm in drawing.edges.values())
    source = drawing.to_dot().source
    assert f'label=" {drawing.edges[(fork, add)]:.3g}"' in source


def test_collapsed_module_is_one_box_with_its_border_edges(traced):
    graph, (t, _) = traced
    drawing = viz.Drawing(graph, collapse="Block")
    (box, (call, ops)), = drawing.boxes.items()
    assert call.name == "block" and drawing.nodes[box].kind == "module"
    assert sorted(graph.nodes[op].label for op in ops) == ["Add", "Linear", "Linear", "ReLU", "ReLU"]
    assert not set(ops) & set(drawing.nodes)  # its ops, inner tensors and parameters are hidden
    assert not any(graph.nodes[n].label.startswith("block.") for n in drawing.nodes if n in graph.nodes)
    into = {src: norm for (src, dst), norm in drawing.edges.items() if dst == box}
    out_of = {dst: norm for (src, dst), norm in drawing.edges.items() if src == box}
    fork = next(iter(graph.forks))
    assert list(into) == [fork] and len(out_of) == 1
    # the fork's two edges into the box merge: the norm of their sum (the block input's gradient)
    assert into[fork] == pytest.approx(torch.linalg.norm(t["a_block"].grad).item(), rel=1e-12)
    assert out_of[next(iter(out_of))] == pytest.approx(torch.linalg.norm(t["out"].grad).item(), rel=1e-12)
    (concat,) = [n for n in drawing.nodes if graph.nodes.get(n, viz.Node("", "", None)).label == "Concat"]
    assert (next(iter(out_of)), concat) in drawing.edges

    opened = viz.Drawing(graph, depth=1, expand="block")
    assert not opened.boxes and set(ops) <= set(opened.nodes)
    assert {opened.frames[op].name for op in ops} == {"block"}
    assert viz.Drawing(graph, depth=1).boxes.keys() == drawing.boxes.keys()  # depth 1 boxes the block too
    budget = viz.Drawing(graph, max_nodes=10)  # the budget picks a shallower depth: the block boxed
    assert budget.depth == 1 and len(budget.nodes) < len(viz.Drawing(graph).nodes)


def test_drawing_without_backward_has_no_gradients():
    x = sn.tensor(RNG.standard_normal((3,)), requires_grad=True)
    drawing = viz.draw_graph(x * x, backward=False)
    assert set(drawing.edges.values()) == {None} and "label=\" " not in drawing.to_dot().source
    assert not drawing.joins  # x * x: one tensor read twice is a fork, not a join of two paths
    assert len(drawing.forks) == 1


def test_bad_input_errors():
    x = sn.tensor(RNG.standard_normal((3,)), requires_grad=True)
    with sn.no_grad():
        y = x * 2
    with pytest.raises(viz.GraphError, match="has no graph"):
        viz.draw_graph(y)
    with pytest.raises(viz.GraphError, match="has no graph"):
        viz.draw_graph(x)
    z = (x * 2).sum()
    z.backward()
    with pytest.raises(viz.GraphError, match="freed"):
        viz.draw_graph(z)
    with pytest.raises(viz.GraphError, match="pass grad="):
        viz.draw_graph(x * 2)
    with pytest.raises(viz.GraphError, match="module trace"):
        viz.draw_graph((x * 2).sum(), collapse="Block")
    with pytest.raises(viz.GraphError, match="depth"):
        viz.draw_graph((x * 2).sum(), depth=0)
    with pytest.raises(viz.GraphError, match=".svg, .png"):
        viz.draw_graph((x * 2).sum()).save("graph.txt")


def test_unknown_module_name(traced):
    graph, _ = traced
    with pytest.raises(viz.GraphError, match="no module named or typed 'Bottleneck'.*Block"):
        viz.Drawing(graph, collapse="Bottleneck")


# --------------------------------------------------------------------------- the command line

CLI = ["resnet20", "--input-size", "3", "8", "8", "--num-classes", "3"]


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_cli_writes_dot_when_dot_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dot` to be found
    assert main(CLI + ["--out", str(tmp_path / "g.svg"), "--depth", "2"]) == 0
    captured = capsys.readouterr()
    dot_file = tmp_path / "g.dot"
    assert not (tmp_path / "g.svg").exists() and dot_file.exists()
    assert f"dot -Tsvg {dot_file} -o {tmp_path / 'g.svg'}" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert f"wrote {dot_file}" in captured.out
    source = dot_file.read_text()
    assert source.startswith("digraph") and source.count("{") == source.count("}")
    assert source.count("box3d") == 9  # resnet20: 3 stages x 3 residual units, each one box at depth 2
    assert "input" in source and "output" in source


def test_cli_renders_svg_and_the_dot_file_is_valid(tmp_path, capsys):
    assert shutil.which("dot"), "Graphviz's dot program is missing: apt-get install graphviz (.ci/run installs it)"
    assert main(CLI + ["--out", str(tmp_path / "g.dot"), "--expand", "layer1.0"]) == 0
    assert main(CLI + ["--out", str(tmp_path / "g.svg"), "--collapse", "BasicBlock"]) == 0
    svg = (tmp_path / "g.svg").read_text()
    assert "<svg" in svg and svg.count("class=\"cluster\"") >= 3  # the three stages framed
    import subprocess
    rendered = subprocess.run(["dot", "-Tsvg", str(tmp_path / "g.dot")], capture_output=True, text=True)
    assert rendered.returncode == 0 and "<svg" in rendered.stdout and not rendered.stderr


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    out = ["--out", str(tmp_path / "g.dot")]
    assert "unknown model 'nonet'" in one_line_error(capsys, ["nonet"] + out)
    assert "cannot run on an input of size (5, 8, 8)" in one_line_error(
        capsys, ["resnet20", "--input-size", "5", "8", "8"] + out)
    assert "argument --input-size: must be a positive int, got 0" in one_line_error(
        capsys, ["resnet20", "--input-size", "3", "0", "8"] + out)
    assert "does not exist" in one_line_error(capsys, CLI + ["--out", str(tmp_path / "nope" / "g.svg")])
    assert ".svg, .png" in one_line_error(capsys, CLI + ["--out", str(tmp_path / "g.txt")])
    assert "no module named or typed 'Nope'" in one_line_error(capsys, CLI + out + ["--collapse", "Nope"])
    (tmp_path / "taken.svg").mkdir()
    assert "cannot write" in one_line_error(capsys, CLI + ["--out", str(tmp_path / "taken.svg")])


def test_cli_without_the_graphviz_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz now raises ImportError
    assert "pip install graphviz" in one_line_error(capsys, CLI + ["--out", str(tmp_path / "g.dot")])
