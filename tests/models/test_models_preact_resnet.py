"""Pre-activation ResNet (He et al. 2016, "Identity Mappings"): counts against Table 3 and a closed form,
forward values against a twin written with torch.nn, float64 gradient checks at a tiny configuration."""
import numpy as np
import pytest
import torch
from torch import nn as tnn

import scratchnet as sn
from scratchnet.models import get_model
from scratchnet.models.preact_resnet import PreActBasicBlock, PreActBottleneck, preact_resnet
from conftest import gradcheck_model


def closed_form_count(depth, block, widths=(16, 32, 64), in_channels=3, num_classes=10):
    """Parameters from the architecture table: convs (no bias), BN scale + shift before every conv and
    at the end, option-A (basic) or projection (bottleneck) shortcuts, the fc."""
    expansion, layers = (1, 2) if block == "basic" else (4, 3)
    n = (depth - 2) // (3 * layers)
    total, inplanes = 9 * in_channels * widths[0], widths[0]
    for stage, planes in enumerate(widths):
        out = planes * expansion
        for position in range(n):
            if block == "basic":
                total += 2 * inplanes + 9 * inplanes * planes + 2 * planes + 9 * planes * planes
            else:
                total += (2 * inplanes + inplanes * planes + 2 * planes + 9 * planes * planes + 2 * planes
                          + planes * out)
                if position == 0:
                    total += inplanes * out  # the 1x1 projection shortcut
            inplanes = out
    return total + 2 * inplanes + inplanes * num_classes + num_classes


@pytest.mark.parametrize("name, depth, block, paper_millions", [
    ("preact_resnet20", 20, "basic", None), ("preact_resnet56", 56, "basic", None),
    ("preact_resnet110", 110, "basic", 1.7), ("preact_resnet164", 164, "bottleneck", 1.7),
    ("preact_resnet1001", 1001, "bottleneck", 10.2)])
def test_counts_equal_the_closed_form_and_table_3(name, depth, block, paper_millions, skip_random_init):
    model = get_model(name)
    count = model.num_parameters()
    assert count == closed_form_count(depth, block)
    if paper_millions is not None:
        # Table 3 rounds to 0.1M; ResNet-1001's 10.2M counts the weights without BN's scale and shift
        bn = sum(p.size for k, p in model.named_parameters() if ".bn" in k or k.startswith("bn."))
        counted = count - bn if depth == 1001 else count
        assert round(counted / 1e6, 1) == paper_millions
    assert model.input_size == (3, 32, 32)


def test_exact_numbers_and_same_convolutions_as_the_post_activation_nets():
    assert get_model("preact_resnet110").num_parameters() == 1_727_962
    assert get_model("preact_resnet164").num_parameters() == 1_703_258
    for depth in (20, 56):  # option A, same convs: only where the BNs sit differs, and they count the same
        assert get_model(f"preact_resnet{depth}").num_parameters() == get_model(f"resnet{depth}").num_parameters()


def test_bad_depths_and_options_raise():
    with pytest.raises(ValueError, match="6n\\+2"):
        preact_resnet(21, "basic")
    with pytest.raises(ValueError, match="9n\\+2"):
        preact_resnet(112, "bottleneck")
    with pytest.raises(ValueError, match="shortcut"):
        preact_resnet(20, "basic", shortcut="C")
    with pytest.raises(ValueError, match="block"):
        preact_resnet(20, "wide")


# --------------------------------------------------------------------------- the torch twin


class TwinUnit(tnn.Module):
    def __init__(self, inplanes, planes, stride, block, shortcut, first):
        super().__init__()
        expansion = 1 if block == "basic" else 4
        out = planes * expansion
        self.bn1 = tnn.BatchNorm2d(inplanes)
        if block == "basic":
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn2, self.conv2 = tnn.BatchNorm2d(planes), tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        else:
            self.conv1 = tnn.Conv2d(inplanes, planes, 1, stride, bias=False)
            self.bn2, self.conv2 = tnn.BatchNorm2d(planes), tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn3, self.conv3 = tnn.BatchNorm2d(planes), tnn.Conv2d(planes, out, 1, bias=False)
        self.block, self.stride, self.out = block, stride, out
        self.changes = stride != 1 or inplanes != out
        if self.changes and shortcut == "B":
            self.downsample = tnn.Conv2d(inplanes, out, 1, stride, bias=False)
        self.shortcut, self.reads_pre = shortcut, self.changes or first

    def forward(self, x):
        pre = torch.relu(self.bn1(x))
        skip = pre if self.reads_pre else x
        if self.changes:
            if self.shortcut == "B":
                skip = self.downsample(skip)
            else:
                skip = skip[:, :, ::self.stride, ::self.stride]
                skip = torch.nn.functional.pad(skip, (0, 0, 0, 0, 0, self.out - skip.shape[1]))
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.bn2(out)))
        if self.block == "bottleneck":
            out = self.conv3(torch.relu(self.bn3(out)))
        return out + skip


class Twin(tnn.Module):
    """The network of Fig. 1(b) / Appendix written with torch.nn, module names as ours."""

    def __init__(self, n, block, widths, in_channels, num_classes, shortcut):
        super().__init__()
        expansion = 1 if block == "basic" else 4
        self.conv1 = tnn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        inplanes = widths[0]
        for s, width in enumerate(widths):
            units = []
            for i in range(n):
                units.append(TwinUnit(inplanes, width, 2 if s and not i else 1, block, shortcut, not s and not i))
                inplanes = width * expansion
            setattr(self, f"layer{s + 1}", tnn.Sequential(*units))
        self.bn, self.fc = tnn.BatchNorm2d(inplanes), tnn.Linear(inplanes, num_classes)
        self.n_stages = len(widths)

    def forward(self, x):
        x = self.conv1(x)
        for s in range(self.n_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.relu(self.bn(x)).mean((2, 3)))


@pytest.mark.parametrize("block, shortcut", [("basic", "A"), ("basic", "B"), ("bottleneck", "B"),
                                             ("bottleneck", "A")])
@pytest.mark.parametrize("training", [True, False])
def test_forward_matches_a_torch_nn_twin(block, shortcut, training, rng):
    widths = (2, 4, 4) if block == "basic" else (1, 2, 3)
    model = preact_resnet(14 if block == "basic" else 20, block, num_classes=3, in_channels=2, widths=widths,
                          shortcut=shortcut).double()  # two units per stage: a shape-changing one, an identity one
    twin = Twin(2, block, widths, 2, 3, shortcut).double()
    ours = model.state_dict()
    theirs = twin.state_dict()
    assert [k for k in ours if not k.endswith("num_batches_tracked")] == \
        [k for k in theirs if not k.endswith("num_batches_tracked")]
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.items()})
    assert sum(p.numel() for p in twin.parameters()) == model.num_parameters()
    x = rng.standard_normal((3, 2, 12, 12))
    model.train(training), twin.train(training)
    expected = twin(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(model(sn.tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_no_activation_after_the_addition(rng):
    """x_{l+1} = x_l + F(x_l): with the branch's last conv zeroed, an identity unit is the identity."""
    for unit in (PreActBasicBlock(4, 4), PreActBottleneck(8, 2)):
        unit = unit.double()
        last = unit.conv3 if isinstance(unit, PreActBottleneck) else unit.conv2
        last.weight.data[...] = 0
        x = rng.standard_normal((2, unit.bn1.num_features, 5, 5))
        np.testing.assert_array_equal(unit(sn.tensor(x)).numpy(), x)  # negative values pass untouched


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_tiny_net_gradcheck(block, rng):
    model = preact_resnet(14 if block == "basic" else 20, block, num_classes=3, in_channels=1,
                          widths=(1, 2, 2) if block == "basic" else (1, 1, 2)).double()
    x = sn.tensor(rng.standard_normal((2, 1, 8, 8)), requires_grad=True)
    assert gradcheck_model(model, x, max_elements=0)
