"""SENet: the squeeze-excitation block and SE-ResNets (Hu et al., "Squeeze-and-Excitation Networks").

Counts: the paper (Section 4, "Model and Computational Complexity") counts only the FC weights,
2/r * sum_s N_s C_s^2 (~2.5M for SE-ResNet-50); the FCs here have biases (timm / torch hub's
se_resnet50: 28,088,024 parameters), so each SE block adds C*C/r*2 + C/r + C.
"""
from functools import partial

import numpy as np
import pytest
from test_models_resnet import tiny_resnet

import scratchnet as sn
from scratchnet.models import get_model, list_models
from scratchnet.models.resnet import IMAGENET_DEPTHS, IMAGENET_WIDTHS, BasicBlock, Bottleneck, make_stage
from scratchnet.models.senet import SEBlock, SqueezeExcitation
from scratchnet.nn import SiLU
from conftest import t64, torch_resnet, torch_unit, torchvision_reference

REFERENCE = torchvision_reference()


def se_parameters(depth, reduction=16):
    """What the SE blocks add to ResNet-depth, from Table 1's stage widths and unit counts."""
    kind, layers = IMAGENET_DEPTHS[depth]
    expansion = 4 if kind == "bottleneck" else 1
    total = 0
    for units, width in zip(layers, IMAGENET_WIDTHS):
        c = width * expansion
        total += units * (2 * c * (c // reduction) + c // reduction + c)  # fc1, fc2 weights + biases
    return total


def test_se_resnet50_count():
    model = get_model("se_resnet50")
    # timm / torch hub se_resnet50 (FC biases included): 28,088,024 ("28.1M")
    assert model.num_parameters() == 28_088_024
    assert model.num_parameters() == REFERENCE["resnet50"]["num_params"] + se_parameters(50)
    # the paper's count of the added FC weights, 2/r * sum_s N_s C_s^2, is "~2.5 million"
    weights_only = 2 / 16 * sum(n * (w * 4) ** 2 for n, w in zip((3, 4, 6, 3), IMAGENET_WIDTHS))
    assert weights_only == 2_514_944
    state = model.state_dict()
    assert state["layer1.0.se.fc1.weight"].shape == (16, 256, 1, 1)
    assert state["layer1.0.se.fc1.bias"].shape == (16,)
    assert state["layer4.2.se.fc2.weight"].shape == (2048, 128, 1, 1)
    resnet_keys = [key for key, _ in REFERENCE["resnet50"]["state_dict"]]
    assert [key for key in state if ".se." not in key] == resnet_keys
    assert sum(1 for m in model.modules() if isinstance(m, SEBlock)) == 16  # one per bottleneck
    assert model.input_size == (3, 224, 224)


@pytest.mark.parametrize("depth", [18, 34, 101, 152])
def test_se_resnet_counts(depth):
    model = get_model(f"se_resnet{depth}")
    assert model.num_parameters() == REFERENCE[f"resnet{depth}"]["num_params"] + se_parameters(depth)


def test_registered_names():
    assert {f"se_resnet{d}" for d in (18, 34, 50, 101, 152)} <= set(list_models())


# --------------------------------------------------------------------------- the SE block


def test_se_block_matches_the_paper_formula(rng):
    block = SEBlock(8, reduction=4).double()
    x = rng.standard_normal((2, 8, 3, 5))
    w1, b1 = block.fc1.weight.numpy()[:, :, 0, 0], block.fc1.bias.numpy()
    w2, b2 = block.fc2.weight.numpy()[:, :, 0, 0], block.fc2.bias.numpy()
    z = x.mean(axis=(2, 3))                                         # squeeze, Eq. 2
    s = 1 / (1 + np.exp(-(np.maximum(z @ w1.T + b1, 0) @ w2.T + b2)))  # excitation, Eq. 3
    expected = x * s[:, :, None, None]                              # scale, Eq. 4
    np.testing.assert_allclose(block(sn.tensor(x)).numpy(), expected, rtol=1e-12, atol=1e-12)
    assert block.fc1.weight.shape == (2, 8, 1, 1) and block.num_parameters() == 8 * 2 + 2 + 2 * 8 + 8


def test_squeeze_excitation_general_signature(rng):
    block = SqueezeExcitation(6, 3, activation=SiLU).double()  # EfficientNet style: own width, swish
    x = rng.standard_normal((2, 6, 2, 2))
    z = x.mean(axis=(2, 3))
    h = z @ block.fc1.weight.numpy()[:, :, 0, 0].T + block.fc1.bias.numpy()
    h = h / (1 + np.exp(-h))
    s = 1 / (1 + np.exp(-(h @ block.fc2.weight.numpy()[:, :, 0, 0].T + block.fc2.bias.numpy())))
    np.testing.assert_allclose(block(sn.tensor(x)).numpy(), x * s[:, :, None, None], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="squeeze_channels"):
        SEBlock(8)  # 8 // 16 == 0


def test_se_block_gradcheck(rng):
    block = SEBlock(4, reduction=2).double()
    x = sn.tensor(rng.standard_normal((2, 4, 3, 3)), requires_grad=True)
    assert sn.gradcheck(lambda v: block(v), [x], params=list(block.parameters()))


# --------------------------------------------------------------------------- SE inside residual units


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_se_unit_matches_torch_and_gradchecks(kind, rng):
    block = BasicBlock if kind == "basic" else Bottleneck
    inplanes, planes = 3, 2
    unit = make_stage(block, inplanes, planes, 1, 2, se_layer=partial(SEBlock, reduction=2))[0][0].double()
    assert isinstance(unit.se, SEBlock)
    x = rng.standard_normal((2, inplanes, 4, 4))
    expected = torch_unit(unit.state_dict(), t64(x), kind, 2, True, has_projection=True, se=True).numpy()
    np.testing.assert_allclose(unit(sn.tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-10)
    xt = sn.tensor(x, requires_grad=True)
    assert sn.gradcheck(lambda v: unit(v), [xt], params=list(unit.parameters()))


def test_se_recalibrates_the_branch_before_the_addition(rng):
    """Fig. 3: closing every gate (s = 0) silences the residual branch, leaving relu(shortcut)."""
    unit = make_stage(Bottleneck, 4, 2, 1, 2, se_layer=partial(SEBlock, reduction=4))[0][0].double()
    unit.se.fc2.bias.data = np.full(8, -1e3)
    x = sn.tensor(rng.standard_normal((2, 4, 4, 4)))
    np.testing.assert_allclose(unit(x).numpy(), np.maximum(unit.shortcut(x).numpy(), 0), rtol=0, atol=1e-300)
    assert np.abs(unit.residual(x).numpy()).max() < 1e-300


def test_tiny_se_resnet_forward_and_gradcheck(device, rng):
    model = tiny_resnet("bottleneck", se_layer=partial(SEBlock, reduction=4)).double().to(device)
    x = rng.standard_normal((2, 3, 16, 16))
    expected = torch_resnet(model, t64(x), True, "bottleneck", se=True).numpy()
    np.testing.assert_allclose(model(sn.tensor(x, device=device)).numpy(), expected, rtol=1e-10, atol=1e-10)
    xt = sn.tensor(x, requires_grad=True, device=device)
    assert sn.gradcheck(lambda v: model(v), [xt], params=list(model.parameters()), max_elements=0)


def test_se_resnet_constructor_options(rng):
    model = get_model("se_resnet18", num_classes=5, widths=(16, 16, 32, 32), reduction=8, in_channels=1)
    assert model.layer1[0].se.fc1.out_channels == 2 and model.layer4[0].se.fc1.out_channels == 4
    assert model.input_size == (1, 224, 224)
    assert model.eval()(sn.tensor(np.zeros((1, 1, 32, 32), np.float32))).shape == (1, 5)


def test_cifar_se_resnets_add_exactly_the_se_parameters():
    """se_resnet20/56/110 = the CIFAR ResNet + per unit (C*s + s) + (s*C + C), s = C // 16 (biased 1x1 FCs)."""
    from scratchnet.models import get_model
    for depth, n in ((20, 3), (56, 9), (110, 18)):
        extra = sum(n * (2 * c * (c // 16) + c // 16 + c) for c in (16, 32, 64))
        assert get_model(f"se_resnet{depth}").num_parameters() == get_model(f"resnet{depth}").num_parameters() + extra
