"""scratchnet.summary: per-layer shapes, params, MACs, receptive fields, against hand-computed numbers
and torchvision's published GMACs (tests/fixtures/torchvision_reference.json)."""
import math

import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet.models import get_model, list_models
from scratchnet.nn import BatchNorm2d, Conv2d, ConvTranspose2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential
from scratchnet.summary import LayerRecord, ModelSummary, main, summary
from conftest import torchvision_reference

REFERENCE = torchvision_reference()


def rows(result):
    return {(r.name, i): r for i, r in enumerate(result.layers)}


# --------------------------------------------------------------------------- hand-computed: LeNet-5, AlexNet conv1


def test_lenet5_per_layer_numbers():
    """Modern LeNet-5 on 1x32x32, computed by hand: params = k*k*C_in*C_out + C_out,
    MACs = out_h*out_w*C_out*k*k*C_in, RF grows by (k-1)*jump, jump by the stride."""
    result = summary(get_model("lenet5"), print_table=False)
    expected = [  # name, type, output shape, params, MACs, RF, jump
        ("c1", "Conv2d", (1, 6, 28, 28), 156, 28 * 28 * 6 * 25, 5, 1),
        ("act", "ReLU", (1, 6, 28, 28), 0, 0, 5, 1),
        ("s2", "MaxPool2d", (1, 6, 14, 14), 0, 0, 6, 2),
        ("c3", "Conv2d", (1, 16, 10, 10), 2416, 10 * 10 * 16 * 150, 14, 2),
        ("act", "ReLU", (1, 16, 10, 10), 0, 0, 14, 2),
        ("s4", "MaxPool2d", (1, 16, 5, 5), 0, 0, 16, 4),
        ("c5", "Conv2d", (1, 120, 1, 1), 48120, 120 * 400, 32, 4),
        ("act", "ReLU", (1, 120, 1, 1), 0, 0, 32, 4),
        ("f6", "Linear", (1, 84), 10164, 120 * 84, 32, 4),
        ("act", "ReLU", (1, 84), 0, 0, 32, 4),
        ("output", "Linear", (1, 10), 850, 84 * 10, 32, 4),
    ]
    got = [(r.name, r.type, r.output_shape, r.params, r.macs, r.receptive_field, r.jump) for r in result.layers]
    assert got == [(n, t, s, p, m, (rf, rf), (j, j)) for n, t, s, p, m, rf, j in expected]
    assert result.total_params == 61706 == sum(r.params for r in result.layers)  # the shared ReLU counts once
    assert result.total_macs == 117600 + 240000 + 48000 + 10080 + 840
    assert result.total_flops == 2 * result.total_macs
    assert result.layers[0].activation_kb == 6 * 28 * 28 * 4 / 1024  # float32


def test_lenet5_classic_custom_layers_keep_the_receptive_field():
    """Trainable subsampling (no kernel_size: the 28->14 map change acts as a 2x2/2 window) and the
    partial-connection C3 (kernel_size 5, stride 1) give the same fields as the modern net."""
    result = summary(get_model("lenet5_classic"), print_table=False)
    fields = {r.name: (r.receptive_field, r.jump) for r in result.layers}
    assert fields["s2"] == ((6, 6), (2, 2)) and fields["c3"] == ((14, 14), (2, 2))
    assert fields["s4"] == ((16, 16), (4, 4)) and fields["c5"] == ((32, 32), (4, 4))
    assert result.total_params == get_model("lenet5_classic").num_parameters()


def test_alexnet_conv1():
    """conv1: 96 kernels 11x11x3, stride 4 on 227x227 -> 96x55x55; 11*11*3*96 + 96 = 34,944 params;
    55*55*96 * 11*11*3 = 105,415,200 MACs; receptive field 11, jump 4."""
    result = summary(get_model("alexnet"), print_table=False)
    conv1 = result.layers[0]
    assert (conv1.name, conv1.type, conv1.output_shape) == ("features.0", "Conv2d", (1, 96, 55, 55))
    assert (conv1.params, conv1.macs, conv1.receptive_field, conv1.jump) == (34944, 105415200, (11, 11), (4, 4))
    # overlapping pool 3x3/2 after conv1: 11 + 2*4 = 19, jump 8
    pool1 = next(r for r in result.layers if r.type == "MaxPool2d")
    assert (pool1.output_shape, pool1.receptive_field, pool1.jump) == ((1, 96, 27, 27), (19, 19), (8, 8))
    assert result.total_params == get_model("alexnet").num_parameters()


def test_equivalent_sequential_of_alexnet_conv1_and_batch():
    model = Sequential(Conv2d(3, 96, 11, 4), ReLU(), MaxPool2d(3, 2))
    result = summary(model, (3, 227, 227), batch_size=2, print_table=False)
    conv = result.layers[0]
    assert conv.output_shape == (2, 96, 55, 55) and conv.macs == 105415200  # MACs stay per sample
    assert conv.activation_kb == 2 * 96 * 55 * 55 * 4 / 1024  # memory is for the whole batch


# --------------------------------------------------------------------------- rules: joins, gates, dilation


class TwoBranches(Module):
    """A 3x3 and a 5x5 branch joined by + and by cat: the join takes the widest field."""

    def __init__(self):
        super().__init__()
        self.narrow = Conv2d(2, 4, 3, padding=1)
        self.wide = Conv2d(2, 4, 5, padding=2)
        self.after = Conv2d(8, 2, 3, stride=2, dilation=2, padding=2)

    def forward(self, x):
        joined = self.narrow(x) + self.wide(x)
        return self.after(sn.cat([joined, self.narrow(x)], 1))


def test_branches_join_at_the_maximum_and_dilation_widens():
    result = summary(TwoBranches(), (2, 16, 16), print_table=False)
    by_name = [(r.name, r.receptive_field[0]) for r in result.layers]
    # narrow 3, wide 5, narrow again 3, after: max(5, 3) + dilation 2 * (3 - 1) * jump 1 = 9
    assert by_name == [("narrow", 3), ("wide", 5), ("narrow", 3), ("after", 9)]
    assert result.layers[-1].jump == (2, 2)
    assert result.layers[0].params == 2 * 4 * 9 + 4 and result.layers[2].params == 0  # reused: counted once


def test_squeeze_excitation_gate_does_not_widen_the_field():
    """EfficientNet's first block: stem 3x3/2 (rf 3, jump 2), depthwise 3x3 (rf 7); the SE branch is
    global, but the project conv after `gate * x` keeps the depthwise field."""
    model = get_model("efficientnet_b0", num_classes=10)
    result = summary(model, (3, 32, 32), print_table=False)
    named = {r.name: r for r in result.layers}
    assert named["features.1.0.block.0.0"].receptive_field == (7, 7)
    assert named["features.1.0.block.1.avgpool"].receptive_field == (7 + 15 * 2, 7 + 15 * 2)  # 16x16 map pooled
    assert named["features.1.0.block.2.0"].receptive_field == (7, 7)


def test_summary_restores_mode_and_state():
    model = get_model("lenet5")
    model.train()
    bn = BatchNorm2d(3)
    seq = Sequential(bn, Flatten(), Linear(3 * 4 * 4, 2))
    before = bn.running_mean.numpy().copy()
    summary(seq, (3, 4, 4), print_table=False)
    summary(model, print_table=False)
    assert all(m.training for m in model.modules()) and all(m.training for m in seq.modules())
    np.testing.assert_array_equal(bn.running_mean.numpy(), before)  # ran in eval mode: stats untouched
    assert int(bn.num_batches_tracked.item()) == 0
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_result_is_structured_and_printable(capsys):
    result = summary(get_model("lenet5"))
    printed = capsys.readouterr().out
    assert isinstance(result, ModelSummary) and all(isinstance(r, LayerRecord) for r in result.layers)
    assert "c1" in printed and "117,600" in printed and "Total params: 61,706" in printed
    assert result.to_dict()["total_flops"] == 2 * result.total_macs
    assert result.input_size == (1, 32, 32) and result.dtype == "float32"


def test_float64_model_reports_float64_memory():
    model = Sequential(Conv2d(1, 2, 3)).double()
    result = summary(model, (1, 5, 5), print_table=False)
    assert result.dtype == "float64" and result.layers[0].activation_kb == 2 * 3 * 3 * 8 / 1024


def test_cli_prints_the_table(capsys):
    assert main(["lenet5", "--num-classes", "7"]) == 0
    out = capsys.readouterr().out
    assert "output" in out and "[1, 7]" in out
    assert main(["mobilenet_v1", "--input-size", "3", "32", "32", "-o", "width_mult=0.25"]) == 0
    assert "Total params: 470,072" in capsys.readouterr().out  # alpha 0.25 with 1000 classes


def test_missing_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="input_size"):
        summary(Sequential(Linear(2, 2)), print_table=False)


# --------------------------------------------------------------------------- MACs vs torchvision's published GMACs

# torchvision measured each model at its weights' crop size; for B2 that is 288 (EfficientNet_B2_Weights:
# crop_size=288), not the paper's 260 that `input_size` keeps.
REFERENCE_INPUT = {"efficientnet_b2": (3, 288, 288)}
# Every model torchvision publishes GMACs for: one forward each at full resolution, batch 1, on zero weights
# (skip_random_init: the count needs shapes, not random draws).
TORCHVISION_FAMILY = [name for name, ref in REFERENCE.items() if isinstance(ref, dict) and ref.get("macs")
                      and name.split("_")[0].rstrip("0123456789") in ("vgg", "resnet", "densenet", "efficientnet")]


@pytest.mark.parametrize("name", TORCHVISION_FAMILY)
def test_macs_equal_torchvision_published(name, skip_random_init):
    assert name in list_models(), f"{name} has torchvision's published MACs but is not in the zoo"
    model = get_model(name)
    ref = REFERENCE[name]
    assert model.num_parameters() == ref["num_params"]
    result = summary(model, REFERENCE_INPUT.get(name), print_table=False)
    # published as GMACs with 3 decimals: within its rounding
    assert abs(result.total_macs / 1e9 - ref["macs"] / 1e9) <= 0.0005 + 1e-12, (result.total_macs, ref["macs"])
    if name == "vgg16":  # pool5 sees 212x212 pixels, 32 apart (Araujo et al. 2019, Distill, Table 1: vgg_16 212)
        pool5 = [r for r in result.layers if r.type == "MaxPool2d"][-1]
        assert (pool5.receptive_field, pool5.jump) == ((212, 212), (32, 32))


def test_the_whole_published_table_is_checked():
    """torchvision publishes GMACs for 24 models of these families (tests/fixtures/torchvision_reference.json)."""
    assert len(TORCHVISION_FAMILY) == 24
    assert {"resnet50", "vgg16", "densenet121", "efficientnet_b0", "efficientnet_b7"} <= set(TORCHVISION_FAMILY)


# --------------------------------------------------------------------------- MAC rules, function hooks


class Squares(Module):
    """A custom leaf: y = x * x, one multiply per element (no rule: 0 MACs; with a rule: counted)."""

    def forward(self, x):
        return x * x


def test_a_custom_leaf_is_counted_by_its_mac_rule(monkeypatch):
    from scratchnet import autograd
    from scratchnet.summary import MAC_RULES
    model = Sequential(Conv2d(1, 2, 3), Squares())
    assert [r.macs for r in summary(model, (1, 6, 6), print_table=False).layers] == [4 * 4 * 2 * 9, 0]
    monkeypatch.setitem(MAC_RULES, Squares, lambda m, x, y, batch: y.size // batch)
    result = summary(model, (1, 6, 6), batch_size=3, print_table=False)
    assert [r.macs for r in result.layers] == [4 * 4 * 2 * 9, 2 * 4 * 4]  # per sample, whatever the batch
    assert not autograd._function_hooks  # the tracer's function hook is gone after the forward


def test_lenet5_classic_counts_only_the_connected_c3_kernels_and_the_rbf():
    """C3: 10x10 outputs x 60 connected 5x5 kernels; RBF: 10 classes x 84 features (no model method)."""
    named = {r.name: r for r in summary(get_model("lenet5_classic"), print_table=False).layers}
    assert named["c3"].macs == 10 * 10 * 60 * 25 and named["output"].macs == 10 * 84


def test_deformable_convolutions_count_their_convolution_and_their_offset_branch():
    """A deformable 3x3 conv costs its regular twin's MACs (the bilinear sampling is not counted) plus its
    conv_offset, a Conv2d with 18 outputs per pixel (v1); its row holds its own weight, the child's row the rest."""
    plain, deformable = (summary(get_model(name), print_table=False) for name in ("resnet20", "resnet20_dcn"))
    offsets = [r for r in deformable.layers if r.name.endswith("conv_offset")]
    assert [r.name for r in offsets] == [f"layer3.{u}.conv{c}.conv_offset" for u in range(3) for c in (1, 2)]
    assert sum(r.macs for r in offsets) == 8 * 8 * 18 * 9 * (32 + 5 * 64)
    assert deformable.total_macs == plain.total_macs + sum(r.macs for r in offsets)
    row = next(r for r in deformable.layers if r.name == "layer3.1.conv1")
    assert (row.type, row.params, row.macs) == ("DeformConv2dPack", 64 * 64 * 9, 8 * 8 * 64 * 64 * 9)
    assert sum(r.params for r in deformable.layers) == deformable.total_params == 326_854


# --------------------------------------------------------------------------- ConvTranspose2d

TRANSPOSED = [  # (convs before it: (kernel, stride)), ConvTranspose2d options
    ((), dict(kernel_size=4, stride=2)),
    ((), dict(kernel_size=3, stride=2, dilation=2)),
    (((3, 2),), dict(kernel_size=3, stride=2)),
    (((4, 2),), dict(kernel_size=4, stride=2, padding=1)),
    (((3, 2), (3, 2)), dict(kernel_size=5, stride=3, dilation=2)),
]


def widest_dependence(layers, size):
    """The most input rows one output pixel depends on (away from the border), from torch's gradients of the
    middle column's pixels in a one-channel net with positive weights (no cancellation hides a dependence)."""
    net = torch.nn.Sequential(*layers).double()
    for p in net.parameters():
        torch.nn.init.uniform_(p, 0.5, 1.5)
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = net(x)[0, 0]
    widest = 0
    for pixel in y[:, y.shape[1] // 2]:
        (grad,) = torch.autograd.grad(pixel, x, retain_graph=True)
        rows = grad[0, 0].any(1).nonzero().flatten()
        if len(rows) and rows.min() > 0 and rows.max() < size - 1:
            widest = max(widest, int(rows.max() - rows.min() + 1))
    return widest


@pytest.mark.parametrize("before, options", TRANSPOSED)
def test_transposed_conv_receptive_field_is_its_widest_outputs(before, options):
    ours = Sequential(*[Conv2d(1, 1, k, stride=s) for k, s in before], ConvTranspose2d(1, 1, **options))
    last = summary(ours, (1, 23, 23), print_table=False).layers[-1]
    jump_before = math.prod(s for _, s in before)
    assert last.jump == (jump_before / options["stride"],) * 2
    theirs = [torch.nn.Conv2d(1, 1, k, stride=s) for k, s in before] + [torch.nn.ConvTranspose2d(1, 1, **options)]
    assert last.receptive_field == (widest_dependence(theirs, 23),) * 2


@pytest.mark.parametrize("groups, stride, dilation", [(1, 1, 1), (2, 2, 1), (2, 3, 2)])
def test_transposed_conv_macs_are_those_of_its_adjoint_conv(groups, stride, dilation):
    """ConvTranspose2d(4 -> 6) is the adjoint of Conv2d(6 -> 4) with the same options: the same products,
    input elements x C_out / groups x k x k."""
    options = dict(kernel_size=3, stride=stride, dilation=dilation, padding=1, groups=groups)
    transposed = summary(ConvTranspose2d(4, 6, **options), (4, 7, 5), print_table=False).layers[0]
    adjoint = summary(Conv2d(6, 4, **options), transposed.output_shape[1:], print_table=False).layers[0]
    assert adjoint.output_shape[1:] == (4, 7, 5)
    assert transposed.macs == adjoint.macs == 4 * 7 * 5 * (6 // groups) * 9
