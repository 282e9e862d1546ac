"""DenseNet-BC (Huang et al., "Densely Connected Convolutional Networks", Table 1).

Counts and state_dict keys against torchvision's (tests/fixtures/torchvision_reference.json), forward
values against the same weights run through torch.nn.functional, gradients numerically in float64.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
from scratchnet.models import get_model, list_models
from scratchnet.models.densenet import DenseNet, _DenseBlock, _Transition, cifar_densenet_bc
from conftest import (assert_torchvision_layout, backward_without_recursion, torchvision_reference,
                      torchvision_twins)

REFERENCE = torchvision_reference()
TWINS = torchvision_twins()


def t64(array):
    return torch.from_numpy(np.array(array, dtype=np.float64))


def torch_densenet(sd, x, block_config, training, stem="imagenet"):
    """DenseNet-BC written with torch ops from a state dict (taken before the model's forward)."""
    def bn(y, key):
        return TF.batch_norm(y, t64(sd[key + ".running_mean"]), t64(sd[key + ".running_var"]),
                             t64(sd[key + ".weight"]), t64(sd[key + ".bias"]), training=training)

    def conv(y, key, stride=1, padding=0):
        return TF.conv2d(y, t64(sd[key + ".weight"]), None, stride, padding)

    if stem == "imagenet":
        y = TF.max_pool2d(TF.relu(bn(conv(x, "features.conv0", 2, 3), "features.norm0")), 3, 2, 1)
    else:  # the CIFAR nets: one 3x3 conv
        y = conv(x, "features.conv0", 1, 1)
    for b, num_layers in enumerate(block_config, 1):
        for i in range(1, num_layers + 1):
            key = f"features.denseblock{b}.denselayer{i}"
            new = conv(TF.relu(bn(conv(TF.relu(bn(y, key + ".norm1")), key + ".conv1"), key + ".norm2")),
                       key + ".conv2", 1, 1)
            y = torch.cat([y, new], 1)  # x_l = H_l([x_0, ..., x_{l-1}])
        if b < len(block_config):
            key = f"features.transition{b}"
            y = TF.avg_pool2d(conv(TF.relu(bn(y, key + ".norm")), key + ".conv"), 2, 2)
    y = TF.relu(bn(y, "features.norm5")).mean((2, 3))
    return TF.linear(y, t64(sd["classifier.weight"]), t64(sd["classifier.bias"]))


TINY = dict(growth_rate=2, block_config=(2, 2), num_init_features=4, bn_size=2, num_classes=3)


# --------------------------------------------------------------------------- counts and keys


@pytest.mark.parametrize("name", ["densenet121", "densenet169", "densenet201"])
def test_counts_and_state_dict_match_torchvision(name):
    model = get_model(name)
    assert_torchvision_layout(model, name)
    assert model.input_size == (3, 224, 224)


def test_densenet121_and_161_by_number():
    # torchvision's published counts: densenet121 7,978,856; densenet161 28,681,000 (not in the file)
    assert REFERENCE["densenet121"]["num_params"] == 7_978_856
    model = get_model("densenet161")
    assert model.num_parameters() == 28_681_000
    assert model.features.conv0.weight.shape == (96, 3, 7, 7)  # stem 2k = 96 for k = 48
    assert {"densenet121", "densenet161", "densenet169", "densenet201"} <= set(list_models())


def test_densenet121_channel_arithmetic_and_init():
    """Table 1 with k = 32, theta = 0.5: 64 + 6k = 256 -> 128, + 12k = 512 -> 256, + 24k = 1024 -> 512,
    + 16k = 1024 features into the classifier."""
    model = get_model("densenet121")
    f = model.features
    assert [f.transition1.conv.out_channels, f.transition2.conv.out_channels,
            f.transition3.conv.out_channels] == [128, 256, 512]
    assert f.norm5.num_features == 1024 and model.classifier.in_features == 1024
    assert f.denseblock3.denselayer24.conv1.weight.shape == (128, 256 + 23 * 32, 1, 1)  # 1x1 to 4k
    assert f.denseblock3.denselayer24.conv2.weight.shape == (32, 128, 3, 3)            # 3x3 to k
    weight = f.denseblock4.denselayer16.conv1.weight.numpy()  # He normal, fan_in (torchvision)
    assert abs(weight.std() / np.sqrt(2.0 / weight.shape[1]) - 1) < 0.02
    assert np.all(model.classifier.bias.numpy() == 0)
    assert np.all(f.norm5.weight.numpy() == 1) and np.all(f.norm5.bias.numpy() == 0)


# --------------------------------------------------------------------------- forward values


@pytest.mark.parametrize("training", [True, False])
def test_tiny_densenet_matches_torch(training, device, rng):
    model = DenseNet(**TINY).double().to(device)
    x = rng.standard_normal((2, 3, 16, 16))
    model.train()
    model(sn.tensor(x, device=device))  # move the running statistics away from 0/1
    assert int(model.features.norm5.num_batches_tracked.data) == 1
    model.train(training)
    expected = torch_densenet(model.state_dict(), t64(x), TINY["block_config"], training).numpy()
    np.testing.assert_allclose(model(sn.tensor(x, device=device)).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_dense_block_concatenates(rng):
    block = _DenseBlock(3, num_input_features=4, growth_rate=2, bn_size=2).double()
    x = rng.standard_normal((2, 4, 5, 5))
    out = block(sn.tensor(x)).numpy()
    assert out.shape == (2, 4 + 3 * 2, 5, 5)
    np.testing.assert_array_equal(out[:, :4], x)  # x_0 passes through every layer untouched
    first = block.denselayer1(sn.tensor(x)).numpy()
    np.testing.assert_allclose(out[:, 4:6], first, rtol=1e-12, atol=1e-12)
    assert block.denselayer3.norm1.num_features == 4 + 2 * 2


def test_transition_compresses_and_pools(rng):
    transition = _Transition(6, 3).double().eval()
    out = transition(sn.tensor(rng.standard_normal((1, 6, 5, 5))))
    assert out.shape == (1, 3, 2, 2)
    assert DenseNet(**TINY, compression=1.0).features.transition1.conv.out_channels == 4 + 2 * 2
    with pytest.raises(ValueError, match="compression"):
        DenseNet(**TINY, compression=0)


def test_dropout_only_in_training(rng):
    model = DenseNet(**TINY, drop_rate=0.5).double()
    reference = DenseNet(**TINY).double()
    reference.load_state_dict(model.state_dict())
    x = sn.tensor(rng.standard_normal((2, 3, 16, 16)))
    model.eval(), reference.eval()
    np.testing.assert_array_equal(model(x).numpy(), reference(x).numpy())
    model.train(), reference.train()
    assert not np.allclose(model(x).numpy(), reference(x).numpy())


# --------------------------------------------------------------------------- gradients


def test_dense_block_and_transition_gradcheck(rng):
    block = _DenseBlock(2, num_input_features=3, growth_rate=2, bn_size=2).double()
    transition = _Transition(7, 3).double()
    params = list(block.parameters()) + list(transition.parameters())
    x = sn.tensor(rng.standard_normal((2, 3, 4, 4)), requires_grad=True)
    assert sn.gradcheck(lambda v: transition(block(v)), [x], params=params)


def test_tiny_densenet_gradcheck(rng):
    model = DenseNet(**TINY).double()
    x = sn.tensor(rng.standard_normal((2, 3, 16, 16)), requires_grad=True)
    assert sn.gradcheck(lambda v: model(v), [x], params=list(model.parameters()), max_elements=0)


def test_densenet201_backward_without_recursion(rng):
    """The full 201-layer graph at a small input (32x32, batch 1): every parameter gets a gradient,
    with Python's recursion limit set 100 frames above the current depth (the graph is ~700 deep)."""
    model = get_model("densenet201").eval()  # eval: batch 1 reaches 1x1 maps in block 4
    x = sn.tensor(rng.standard_normal((1, 3, 32, 32)).astype(np.float32), requires_grad=True)
    out = model(x)
    assert out.shape == (1, 1000) and out.creator.generation > 600
    backward_without_recursion(out.sum())
    assert x.grad.shape == (1, 3, 32, 32) and np.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


# --------------------------------------------------------------------------- CIFAR DenseNet-BC (Table 2)


@pytest.mark.parametrize("name, paper_millions", [("densenet_bc_100", 0.8), ("densenet_bc_250", 15.3),
                                                  ("densenet_bc_190", 25.6)])
def test_cifar_densenet_bc_counts_equal_the_torchvision_twin_and_table_2(name, paper_millions, skip_random_init):
    """The fixture assembles each net from torchvision's own _DenseBlock and _Transition with a 3x3 stem."""
    model, twin = get_model(name), TWINS[name]
    assert model.num_parameters() == twin["num_params"]
    assert round(model.num_parameters() / 1e6, 1) == paper_millions
    assert model.input_size == (3, 32, 32)
    if "state_dict" in twin:
        assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == twin["state_dict"]


def test_cifar_densenet_bc_100_structure(skip_random_init):
    model = get_model("densenet_bc_100")
    assert model.num_parameters() == 769_162
    f = model.features
    assert [len(getattr(f, f"denseblock{i}")) for i in (1, 2, 3)] == [16, 16, 16]  # (L - 4) / 6 = 16
    assert f.conv0.weight.shape == (24, 3, 3, 3)  # 2k maps
    # 24 + 16*12 = 216 -> 108 -> 108 + 192 = 300 -> 150 -> 150 + 192 = 342
    assert f.transition1.conv.weight.shape[:2] == (108, 216) and f.transition2.conv.weight.shape[:2] == (150, 300)
    assert model.classifier.weight.shape == (10, 342)
    with pytest.raises(ValueError, match=r"6n\+4"):
        cifar_densenet_bc(101)
    with pytest.raises(ValueError, match="stem"):
        DenseNet(stem="mnist")


@pytest.mark.parametrize("training", [True, False])
def test_tiny_cifar_densenet_matches_torch(training, rng):
    model = cifar_densenet_bc(16, num_classes=3, growth_rate=2, in_channels=2).double()  # two layers per block
    x = rng.standard_normal((2, 2, 8, 8))
    model.train()
    model(sn.tensor(x))  # move the running statistics away from 0/1
    model.train(training)
    expected = torch_densenet(model.state_dict(), t64(x), (2, 2, 2), training, stem="cifar").numpy()
    np.testing.assert_allclose(model(sn.tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_tiny_cifar_densenet_gradcheck(rng):
    model = cifar_densenet_bc(10, num_classes=3, growth_rate=2, in_channels=1).double()
    x = sn.tensor(rng.standard_normal((2, 1, 8, 8)), requires_grad=True)
    assert sn.gradcheck(lambda v: model(v), [x], params=list(model.parameters()), max_elements=0)
