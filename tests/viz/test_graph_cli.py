"""python -m scratchnet.graph's options: --list, --no-params, --no-grad, --train and --batch-size, each checked
on what is drawn (the Drawing the command builds, and the .dot file it writes); the gradient on the input's
edge against the same forward and backward run here in the mode the options ask for."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.graph import build_parser, loss_of, main, run
from scratchnet.models import get_model, list_models

CLI = ["resnet20", "--input-size", "3", "8", "8", "--num-classes", "3", "--depth", "1"]


def drawn(tmp_path, *options):
    """The Drawing the command draws with these options, and the .dot file it writes."""
    drawing, written = run(build_parser().parse_args(CLI + ["--out", str(tmp_path / "g.dot"), *options]))
    return drawing, written.read_text()


def input_gradient_norm(batch_size, train):
    """|dL/d input| of the graph command's forward and loss, recomputed here."""
    sn.manual_seed(0)
    model = get_model("resnet20", num_classes=3).train(train)
    x = sn.tensor(np.random.default_rng(0).standard_normal((batch_size, 3, 8, 8)).astype(np.float32),
                  requires_grad=True)
    loss_of(model, model(x)).backward()
    return float(np.linalg.norm(x.grad.numpy() if hasattr(x.grad, "numpy") else x.grad))


def input_edge(drawing):
    (source,) = [n for n, node in drawing.nodes.items() if node.label == "input"]
    (norm,) = [norm for (src, _), norm in drawing.edges.items() if src == source]
    return drawing.nodes[source], norm


def test_list_prints_every_model(capsys):
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.split() == list_models()


def test_parameters_are_drawn_unless_no_params(tmp_path, capsys):
    assert main(CLI + ["--out", str(tmp_path / "g.dot"), "--no-params"]) == 0
    assert f"wrote {tmp_path / 'g.dot'}" in capsys.readouterr().out
    with_params, dot = drawn(tmp_path)
    without, dot_without = drawn(tmp_path, "--no-params")
    params = sorted(node.label for node in with_params.nodes.values() if node.kind == "param")
    assert params == ["bn1.bias", "bn1.weight", "conv1.weight", "fc.bias", "fc.weight"]  # outside the boxed stages
    assert "param" not in [node.kind for node in without.nodes.values()]
    assert len(without.nodes) == len(with_params.nodes) - 5
    assert "conv1.weight" in dot and "conv1.weight" not in dot_without


def test_no_grad_draws_no_gradients(tmp_path):
    drawing, dot = drawn(tmp_path, "--no-grad")
    assert set(drawing.edges.values()) == {None} and "label=\" " not in dot
    with_grad, dot_with = drawn(tmp_path)
    assert None not in with_grad.edges.values() and "label=\" " in dot_with


@pytest.mark.parametrize("train", [False, True])
def test_the_input_gradient_is_that_of_the_mode_asked_for(tmp_path, train):
    """Eval mode by default (BN on running statistics), batch statistics with --train: the two give other
    gradients, and each equals the one recomputed here in that mode."""
    drawing, _ = drawn(tmp_path, "--batch-size", "2", *(["--train"] if train else []))
    node, norm = input_edge(drawing)
    assert node.shape == (2, 3, 8, 8)
    assert norm == pytest.approx(input_gradient_norm(2, train), rel=1e-6)
    assert norm != pytest.approx(input_gradient_norm(2, not train), rel=1e-3)
