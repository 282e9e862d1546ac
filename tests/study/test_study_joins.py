"""The joins study: it finds residual and concat joins from the graph alone (function hooks), tells a
shortcut's gradient from the residual branch's, and its numbers equal gradients computed independently."""
import json

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import autograd, study
from scratchnet.models import get_model
from scratchnet.models.densenet import DenseNet
from scratchnet.models.resnet import BasicBlock, make_stage
from scratchnet.nn import Conv2d, Linear, Module
from scratchnet.study.joins import JoinWatcher, join_gradients


def by_path(records):
    return {(r["join"], r["path"]): r for r in records}


class ScaledResidual(Module):
    """h = stem(x); out = c * h + h (or h + c * h): the branch multiplies by c, the shortcut is the identity,
    so with g = dL/d out the gradient reaching h is c * g through the branch and g through the shortcut."""

    def __init__(self, c, shortcut_first=False):
        super().__init__()
        self.c, self.shortcut_first = c, shortcut_first
        self.stem = Conv2d(1, 2, 3, padding=1)
        self.head = Linear(2 * 4 * 4, 10)
        self.input_size = (1, 4, 4)

    def forward(self, x):
        h = self.stem(x)
        out = h + h * self.c if self.shortcut_first else h * self.c + h
        self.join_output = out  # for the test only: its gradient is g
        out.retain_grad()
        return self.head(out.reshape(out.shape[0], -1))


@pytest.mark.parametrize("shortcut_first", [False, True])
def test_scaled_branch_and_identity_shortcut_carry_c_g_and_g(shortcut_first, rng):
    c = -2.5
    model = ScaledResidual(c, shortcut_first).double()
    x, y = rng.standard_normal((3, 1, 4, 4)), np.array([0, 2, 1])
    with JoinWatcher(model) as watcher:
        sn.nn.functional.cross_entropy(model(sn.tensor(x)), sn.tensor(y)).backward()
    records = watcher.records(keep_gradients=True)
    assert [(r["join"], r["kind"], r["path"]) for r in records] == [
        ("scaledresidual", "residual", "residual"), ("scaledresidual", "residual", "shortcut")]
    g = model.join_output.grad
    paths = {r["path"]: r for r in records}
    np.testing.assert_array_equal(paths["shortcut"]["grad"], g)
    np.testing.assert_array_equal(paths["residual"]["grad"], g * c)
    assert paths["shortcut"]["norm"] == np.linalg.norm(g)
    assert paths["residual"]["norm"] == pytest.approx(abs(c) * np.linalg.norm(g), rel=1e-14)
    assert not autograd._function_hooks and all(not m._forward_hooks for m in model.modules())


def test_join_gradients_runs_the_classification_loss_and_reports_the_same_numbers(rng):
    c = 3.0
    model = ScaledResidual(c).double()
    x, y = rng.standard_normal((2, 1, 4, 4)), np.array([1, 0])
    norms = {r["path"]: r["norm"] for r in join_gradients(model, x, y)}
    g = model.join_output.grad  # the classification loss's gradient at the join, from the same backward
    assert norms == pytest.approx({"residual": c * np.linalg.norm(g), "shortcut": np.linalg.norm(g)}, rel=1e-14)


class TwoConvs(Module):
    """h + conv_a(h) vs conv_a(h) + conv_b(h): only a shorter path makes a shortcut."""

    def __init__(self, equal):
        super().__init__()
        self.equal = equal
        self.stem, self.a, self.b = Conv2d(1, 2, 1), Conv2d(2, 2, 3, padding=1), Conv2d(2, 2, 1)

    def forward(self, x):
        h = self.stem(x)
        return self.a(h) + (self.b(h) if self.equal else h)


def test_paths_of_equal_length_are_no_residual_join(rng):
    x = sn.tensor(rng.standard_normal((1, 1, 3, 3)))
    for equal, expected in ((True, []), (False, ["residual", "shortcut"])):
        model = TwoConvs(equal).double()
        with JoinWatcher(model) as watcher:
            model(x).sum().backward()
        assert [r["path"] for r in watcher.records()] == expected


class UnitOnAnOp(Module):
    """A ResNet unit fed by an op (so its input is a graph tensor whose gradient we can retain)."""

    def __init__(self, unit):
        super().__init__()
        self.unit = unit

    def forward(self, x):
        self.unit_input = x * 1.0
        self.unit_input.retain_grad()
        return self.unit(self.unit_input)


@pytest.mark.parametrize("stride, inplanes", [(1, 2), (2, 3)])  # identity, projection shortcut
def test_resnet_unit_paths_add_up_to_the_input_gradient(stride, inplanes, rng):
    unit = make_stage(BasicBlock, inplanes, 2, 1, stride)[0][0].double()
    model = UnitOnAnOp(unit)
    join_in = {}

    def keep_relu_input(module, args):  # the unit's ReLU runs in the branch, then last on the join's sum
        join_in["t"] = args[0]
        args[0].retain_grad()

    unit.relu.inplace = False  # so that the join's sum stays a tensor of its own (in place it becomes the ReLU's)
    unit.relu.register_forward_pre_hook(keep_relu_input)
    x = sn.tensor(rng.standard_normal((2, inplanes, 4, 4)), requires_grad=True)
    weights = rng.standard_normal((2, 2, 4 // stride, 4 // stride))
    with JoinWatcher(model) as watcher:
        (model(x) * weights).sum().backward()
    paths = {r["path"]: r["grad"] for r in watcher.records(keep_gradients=True)}
    assert set(paths) == {"residual", "shortcut"}
    np.testing.assert_allclose(paths["residual"] + paths["shortcut"], model.unit_input.grad, rtol=1e-12, atol=1e-14)
    assert not np.allclose(paths["residual"], paths["shortcut"])
    if stride == 1:  # identity: the shortcut hands the join's gradient straight back
        np.testing.assert_array_equal(paths["shortcut"], join_in["t"].grad)
    else:  # projection: the gradient through downsample alone, from a backward with the branch cut off
        h = sn.tensor(model.unit_input.data, requires_grad=True)
        (sn.nn.functional.relu(unit.residual(sn.tensor(h.data)) + unit.shortcut(h)) * weights).sum().backward()
        np.testing.assert_allclose(paths["shortcut"], h.grad, rtol=1e-12, atol=1e-14)


def test_plain_units_and_chains_have_no_joins(rng):
    model = UnitOnAnOp(make_stage(BasicBlock, 2, 2, 1, shortcut=None)[0][0].double())
    with JoinWatcher(model) as watcher:
        model(sn.tensor(rng.standard_normal((1, 2, 4, 4)), requires_grad=True)).sum().backward()
    assert watcher.records() == []


def test_resnet20_reports_both_paths_of_every_unit(rng):
    model = get_model("resnet20", num_classes=10, widths=(2, 4, 4)).double()
    records = join_gradients(model, rng.standard_normal((2, 3, 8, 8)), np.array([3, 7]))
    units = [name for name, m in model.named_modules() if isinstance(m, BasicBlock)]
    assert [(r["join"], r["path"]) for r in records] == [(u, p) for u in units for p in ("residual", "shortcut")]
    assert all(r["norm"] > 0 for r in records)


# --------------------------------------------------------------------------- concat joins, checked by slicing


def test_googlenet_branch_norms_are_slices_of_the_concat_gradient(rng):
    model = get_model("googlenet", width=1 / 16, num_classes=5, aux_logits=False).double()
    outputs = {}
    for name, m in model.named_modules():
        if name.startswith("inception") and "." not in name:  # the modules, not their branches
            m.register_forward_hook(lambda m, i, out, name=name: outputs.setdefault(name, out).retain_grad())
    records = join_gradients(model, rng.standard_normal((2, 3, 64, 64)), np.array([1, 4]))
    assert len(records) == 4 * 9 and {r["kind"] for r in records} == {"concat"}
    for name, out in outputs.items():
        mine = [r for r in records if r["join"] == name]
        assert [r["path"] for r in mine] == ["branch1", "branch2", "branch3", "branch4"]
        assert sum(r["channels"] for r in mine) == out.shape[1]
        start = 0
        for r in mine:
            assert r["norm"] == np.linalg.norm(out.grad[:, start:start + r["channels"]])
            start += r["channels"]


def test_densenet_new_features_norms_are_slices_of_each_concat_gradient(rng):
    growth = 2
    model = DenseNet(growth_rate=growth, block_config=(3, 2), num_init_features=4, bn_size=2, num_classes=3).double()
    concat_out = {}  # (block, l) -> the features after layer l's concatenation
    for block_name, block in model.named_modules():
        if not block_name.endswith(tuple(f"denseblock{i}" for i in range(1, 9))):
            continue
        layers = list(block.values())
        for l, layer in enumerate(layers[1:], start=1):  # layer l+1 reads the features after layer l's cat
            layer.register_forward_pre_hook(lambda m, args, key=(block_name, l): concat_out.setdefault(
                key, args[0]).retain_grad())
        block.register_forward_hook(lambda m, i, out, key=(block_name, len(layers)): concat_out.setdefault(
            key, out).retain_grad())
    records = join_gradients(model, rng.standard_normal((2, 3, 16, 16)), np.array([0, 2]))
    assert len(records) == len(concat_out) == 3 + 2
    for r in records:
        assert r["kind"] == "concat" and r["channels"] == growth
        layer = int(r["path"][len("denselayer"):])
        grad = concat_out[(r["join"], layer)].grad
        assert r["norm"] == np.linalg.norm(grad[:, -growth:])  # layer l's new maps: the last k channels


# --------------------------------------------------------------------------- the runner's files


def test_joins_writes_its_numbers_and_reads_them_back(tmp_path, data_env):
    model = ScaledResidual(-2.0)
    model.input_size = (1, 4, 4)
    results = study.joins([model], batch_size=2, out=tmp_path)
    saved = json.loads((tmp_path / "joins.json").read_text())
    assert saved == results and (tmp_path / "joins.png").stat().st_size > 0
    paths = {r["path"]: r["norm"] for r in saved["scaledresidual"]}
    assert paths["residual"] == pytest.approx(2.0 * paths["shortcut"], rel=1e-6)  # float32: |c| g vs g
