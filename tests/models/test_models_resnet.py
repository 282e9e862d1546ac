"""ResNet (ImageNet, Table 1), the plain twins and the CIFAR family (Section 4.2, Table 6).

Forward values are checked against torch.nn.functional applied to the same weights (an
independent re-implementation of each unit), counts and state_dict keys against torchvision's
(tests/fixtures/torchvision_reference.json), gradients numerically in float64.
"""

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.models import get_model, list_models
from scratchnet.models.resnet import (BasicBlock, Bottleneck, CifarResNet, ResidualUnit, ResNet, ZeroPadShortcut,
                                      cifar_resnet, make_stage)
from conftest import assert_torchvision_layout, backward_without_recursion, torchvision_reference
from conftest import t64, torch_resnet, torch_unit

REFERENCE = torchvision_reference()
IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
PLAIN = ["plain18", "plain34", "plain50", "plain101", "plain152"]
CIFAR_DEPTHS = [20, 32, 44, 56, 110, 1202]

def tiny_resnet(kind, **options):
    """Two stages of one unit each: an identity-shortcut unit and a projection unit."""
    block = BasicBlock if kind == "basic" else Bottleneck
    return ResNet(block, (1, 1), num_classes=3, widths=(4, 8), **options)


# --------------------------------------------------------------------------- counts and keys


@pytest.mark.parametrize("residual, plain", list(zip(IMAGENET, PLAIN)))
def test_imagenet_resnet_and_plain_twin_counts_and_keys(residual, plain):
    """Counts and state_dict (keys, order, shapes) equal torchvision's; the plain twin is the same
    net without its projection shortcuts. Each model is built once here (resnet152 takes seconds)."""
    resnet, reference = get_model(residual), REFERENCE[residual]
    assert_torchvision_layout(resnet, residual)
    assert resnet.input_size == (3, 224, 224)
    projection = sum(p.size for k, p in resnet.named_parameters() if ".downsample." in k)
    without_shortcut = [(k, v.shape) for k, v in resnet.state_dict().items() if ".downsample." not in k]
    del resnet
    twin = get_model(plain)
    assert projection > 0
    assert twin.num_parameters() == reference["num_params"] - projection
    assert [(k, v.shape) for k, v in twin.state_dict().items()] == without_shortcut
    assert not any(unit.use_shortcut for unit in twin.modules() if isinstance(unit, ResidualUnit))
    assert twin.input_size == (3, 224, 224)


def test_counts_by_hand():
    # torchvision's published resnet50 count (also in the reference file)
    assert REFERENCE["resnet50"]["num_params"] == 25_557_032
    # layer2/3/4 projections: (64*128 + 2*128) + (128*256 + 2*256) + (256*512 + 2*512) = 173,824
    assert get_model("plain18").num_parameters() == 11_689_512 - 173_824 == 11_515_688


def cifar_count(n, num_classes=10, in_channels=3, projection=False):
    """Section 4.2 counted by hand: 3x3 stem (16), 3 stages of n two-conv units (16/32/64), fc."""
    total = in_channels * 16 * 9 + 2 * 16
    inplanes = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += inplanes * width * 9 + width * width * 9 + 2 * (2 * width)
            if projection and inplanes != width:
                total += inplanes * width + 2 * width
            inplanes = width
    return total + 64 * num_classes + num_classes


# Table 6 of the paper, "# params": 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M
TABLE6 = {20: (0.27e6, 0.005e6), 32: (0.46e6, 0.005e6), 44: (0.66e6, 0.005e6), 56: (0.85e6, 0.005e6),
          110: (1.7e6, 0.05e6), 1202: (19.4e6, 0.05e6)}


@pytest.mark.parametrize("depth", CIFAR_DEPTHS)
def test_cifar_resnet_counts_table6(depth):
    n = (depth - 2) // 6
    model = get_model(f"resnet{depth}")
    count = model.num_parameters()
    assert count == cifar_count(n)
    paper, rounding = TABLE6[depth]
    assert abs(count - paper) <= rounding
    assert model.input_size == (3, 32, 32)
    assert not any(isinstance(m, (sn.nn.MaxPool2d,)) for m in model.modules())


def test_cifar_exact_numbers():
    # option A is parameter-free: 269,722; option B adds 2 projections (16->32, 32->64) + BN: 272,474
    assert get_model("resnet20").num_parameters() == 269_722
    assert get_model("resnet20", shortcut="B").num_parameters() == 272_474 == cifar_count(3, projection=True)
    assert get_model("resnet110").num_parameters() == 1_727_962


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_plain_twin_has_the_same_count_as_option_a(depth):
    plain, resnet = get_model(f"plain{depth}"), get_model(f"resnet{depth}")
    assert plain.num_parameters() == resnet.num_parameters() == cifar_count((depth - 2) // 6)
    assert list(plain.state_dict()) == list(resnet.state_dict())


def test_every_family_name_is_registered():
    names = set(list_models())
    expected = set(IMAGENET + PLAIN) | {f"resnet{d}" for d in CIFAR_DEPTHS} | {f"plain{d}" for d in CIFAR_DEPTHS[:-1]}
    assert expected <= names


def test_in_channels_and_fashion_mnist_input():
    model = get_model("resnet20", in_channels=1)
    assert model.input_size == (1, 32, 32)
    assert model.conv1.weight.shape == (16, 1, 3, 3)
    assert model.num_parameters() == cifar_count(3, in_channels=1)
    assert model(sn.tensor(np.zeros((2, 1, 32, 32), np.float32))).shape == (2, 10)
    assert get_model("resnet18", in_channels=1, num_classes=10).input_size == (1, 224, 224)


# --------------------------------------------------------------------------- structure and options


def test_bottleneck_stride_placement():
    v15 = Bottleneck(64, 32, stride=2)
    assert v15.conv1.stride == (1, 1) and v15.conv2.stride == (2, 2)  # torchvision / v1.5
    paper = Bottleneck(64, 32, stride=2, stride_in_1x1=True)
    assert paper.conv1.stride == (2, 2) and paper.conv2.stride == (1, 1)  # the paper's placement
    assert v15.num_parameters() == paper.num_parameters()


def test_shortcut_option_a_is_subsample_and_zero_pad(rng):
    x = rng.standard_normal((2, 3, 5, 5))
    out = ZeroPadShortcut(3, 7, 2)(sn.tensor(x)).numpy()
    assert out.shape == (2, 7, 3, 3)
    np.testing.assert_array_equal(out[:, :3], x[:, :, ::2, ::2])
    np.testing.assert_array_equal(out[:, 3:], 0)
    assert ZeroPadShortcut(3, 7, 2).num_parameters() == 0


def test_bad_options_raise():
    with pytest.raises(ValueError, match="shortcut"):
        make_stage(BasicBlock, 4, 8, 1, 2, shortcut="C")
    with pytest.raises(ValueError, match="plain"):
        get_model("plain18", zero_init_residual=True)
    with pytest.raises(ValueError, match="no shortcuts"):
        get_model("plain20", shortcut="A")
    with pytest.raises(ValueError, match="widths"):
        ResNet(BasicBlock, (1, 1), widths=(4, 8, 16))
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet(21)


def test_init_is_torchvision_he_normal_fan_out():
    model = get_model("resnet18")
    weight = model.layer4[1].conv2.weight.numpy()  # (512, 512, 3, 3), 2.4M samples
    fan_out = 512 * 9
    assert abs(weight.std() / np.sqrt(2.0 / fan_out) - 1) < 0.01
    assert abs(weight.mean()) < 1e-4
    bn = model.layer1[0].bn1
    assert np.all(bn.weight.numpy() == 1) and np.all(bn.bias.numpy() == 0)
    bound = 1 / np.sqrt(512)  # fc keeps Linear's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) bias
    assert np.abs(model.fc.bias.numpy()).max() <= bound


def test_zero_init_residual_makes_every_unit_start_as_its_shortcut(rng):
    model = tiny_resnet("bottleneck", zero_init_residual=True).double().eval()
    for unit in model.modules():
        if isinstance(unit, ResidualUnit):
            assert np.all(unit.last_bn().weight.numpy() == 0)
    x = sn.tensor(rng.standard_normal((2, 4, 6, 6)))
    unit = model.layer1[0]  # 4 -> 16 channels: a projection shortcut
    np.testing.assert_allclose(unit(x).numpy(), np.maximum(unit.shortcut(x).numpy(), 0), rtol=0, atol=0)


# --------------------------------------------------------------------------- forward values vs torch


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
@pytest.mark.parametrize("training", [True, False])
def test_tiny_resnet_forward_matches_torch(kind, training, device, rng):
    model = tiny_resnet(kind).double().to(device)
    x = rng.standard_normal((2, 3, 20, 20))
    model.train()
    model(sn.tensor(x, device=device))  # move the running statistics away from 0/1
    model.train(training)
    expected = torch_resnet(model, t64(x), training, kind).numpy()
    np.testing.assert_allclose(model(sn.tensor(x, device=device)).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_paper_stride_placement_matches_torch(rng):
    unit = make_stage(Bottleneck, 4, 2, 1, 2, stride_in_1x1=True)[0][0].double()
    x = rng.standard_normal((2, 4, 7, 7))
    expected = torch_unit(unit.state_dict(), t64(x), "bottleneck", 2, True, has_projection=True,
                          stride_in_1x1=True).numpy()
    np.testing.assert_allclose(unit(sn.tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shortcut", ["A", "B", None])
def test_cifar_resnet_forward_matches_torch(shortcut, rng):
    model = CifarResNet(1, num_classes=4, shortcut=shortcut, widths=(2, 4, 6)).double()
    x = rng.standard_normal((2, 3, 12, 12))
    expected = torch_resnet(model, t64(x), True, "basic", shortcut=shortcut, cifar=True).numpy()
    np.testing.assert_allclose(model(sn.tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shortcut", ["A", None])
def test_imagenet_option_a_and_plain_forward_match_torch(shortcut, rng):
    model = tiny_resnet("bottleneck", shortcut=shortcut).double()
    x = rng.standard_normal((2, 3, 16, 16))
    expected = torch_resnet(model, t64(x), True, "bottleneck", shortcut=shortcut).numpy()
    np.testing.assert_allclose(model(sn.tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_full_size_forward_shapes():
    # resnet18 at a reduced input (64x64, batch 1) and resnet20 at its native 32x32
    assert get_model("resnet18").eval()(sn.tensor(np.zeros((1, 3, 64, 64), np.float32))).shape == (1, 1000)
    assert get_model("resnet20")(sn.tensor(np.zeros((2, 3, 32, 32), np.float32))).shape == (2, 10)


# --------------------------------------------------------------------------- batch norm modes


def test_train_and_eval_batch_norm(rng):
    model = tiny_resnet("basic").double()
    x = sn.tensor(rng.standard_normal((4, 3, 16, 16)))
    model.train()
    model(x)
    assert int(model.bn1.num_batches_tracked.data) == 1
    assert not np.allclose(model.bn1.running_mean.numpy(), 0)
    model.eval()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    full = model(x).numpy()
    alone = model(sn.tensor(x.numpy()[:1])).numpy()  # eval: a sample's output ignores its batch mates
    np.testing.assert_allclose(alone, full[:1], rtol=1e-12, atol=1e-12)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    model.train()
    assert not np.allclose(model(sn.tensor(x.numpy()[:2])).numpy(), full[:2])


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
@pytest.mark.parametrize("stride, inplanes", [(1, None), (2, 3)])
def test_unit_gradcheck(kind, stride, inplanes, rng):
    block = BasicBlock if kind == "basic" else Bottleneck
    planes = 2
    inplanes = inplanes or planes * block.expansion  # identity shortcut, or a strided projection
    stage, _ = make_stage(block, inplanes, planes, 1, stride)
    unit = stage[0].double()
    x = sn.tensor(rng.standard_normal((2, inplanes, 4, 4)), requires_grad=True)
    assert sn.gradcheck(lambda v: unit(v), [x], params=list(unit.parameters()))


@pytest.mark.parametrize("shortcut", ["A", None])
def test_cifar_unit_gradcheck(shortcut, rng):
    stage, _ = make_stage(BasicBlock, 2, 4, 1, 2, shortcut=shortcut)
    unit = stage[0].double()
    x = sn.tensor(rng.standard_normal((2, 2, 4, 4)), requires_grad=True)
    assert sn.gradcheck(lambda v: unit(v), [x], params=list(unit.parameters()))


@pytest.mark.parametrize("kind, shortcut", [("basic", "B"), ("bottleneck", "B"), ("basic", None)])
def test_tiny_resnet_gradcheck(kind, shortcut, rng):
    model = tiny_resnet(kind, shortcut=shortcut).double()
    x = sn.tensor(rng.standard_normal((2, 3, 16, 16)), requires_grad=True)
    assert sn.gradcheck(lambda v: model(v), [x], params=list(model.parameters()), max_elements=0)


def test_tiny_cifar_resnet_gradcheck(rng):
    model = CifarResNet(1, num_classes=3, widths=(2, 4, 4)).double()
    x = sn.tensor(rng.standard_normal((2, 3, 8, 8)), requires_grad=True)
    assert sn.gradcheck(lambda v: model(v), [x], params=list(model.parameters()), max_elements=0)


# --------------------------------------------------------------------------- the residual join


def test_unit_is_relu_of_branch_plus_shortcut_and_a_plain_unit_has_no_shortcut(rng):
    """The join itself; how its gradient splits by path is the joins study's (tests/study/test_study_joins.py)."""
    for stride, inplanes, shortcut in ((1, 2, "B"), (2, 3, "B"), (2, 1, "A"), (1, 2, None)):
        unit = make_stage(BasicBlock, inplanes, 2, 1, stride, shortcut=shortcut)[0][0].double()
        x = sn.tensor(rng.standard_normal((2, inplanes, 4, 4)))
        skip = unit.shortcut(x)
        assert (skip is None) == (shortcut is None)
        expected = unit.residual(x).numpy() + (0 if skip is None else skip.numpy())
        np.testing.assert_array_equal(unit(x).numpy(), np.maximum(expected, 0))
    assert not hasattr(unit, "register_join_hook")  # models hold architecture only


# --------------------------------------------------------------------------- deep graphs


def test_resnet110_backward_does_not_recurse(rng):
    """A recursive walk would need a frame per graph level (~380 here); we allow only 100."""
    model = get_model("resnet110", widths=(2, 2, 2)).double()
    x = sn.tensor(rng.standard_normal((2, 3, 8, 8)), requires_grad=True)
    out = model(x).sum()
    assert out.creator.generation > 300
    backward_without_recursion(out)
    assert x.grad is not None and all(p.grad is not None for p in model.parameters())
