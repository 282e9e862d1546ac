"""VGG-11/13/16/19 (+BN): torchvision's counts and state dicts, a torch twin built from Table 1
that loads our weights and agrees, gradients, and batch-norm/dropout train/eval behaviour."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import scratchnet as sn
from conftest import assert_torchvision_layout, gradcheck_model
from scratchnet.models import get_model
from scratchnet.nn import BatchNorm2d, Conv2d, Dropout, Linear

NAMES = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]

# Table 1 of Simonyan & Zisserman, written out again here: conv widths, "M" for each 2x2 pool
TABLE_1 = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
    "16c": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M", 512, 512, (512, 1), "M"],
}
TINY = {"width": 1 / 32, "hidden": 8, "num_classes": 5}  # 2-4-8-16-16 maps


@pytest.mark.parametrize("name", NAMES)
def test_counts_and_state_dict_equal_torchvision(skip_random_init, name):
    model = get_model(name)
    assert_torchvision_layout(model, name)
    assert model.input_size == (3, 224, 224)


def test_vgg16_is_138_million(skip_random_init):
    assert get_model("vgg16").num_parameters() == 138_357_544  # torchvision's documented count


def torch_vgg(depth, batch_norm, width, hidden, num_classes):
    """torchvision's VGG layout, written with torch.nn from Table 1."""
    layers, c_in = [], 3
    for entry in TABLE_1[depth]:
        if entry == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
            continue
        entry, kernel = entry if isinstance(entry, tuple) else (entry, 3)  # configuration C's conv1 layers
        c_out = max(1, int(entry * width))
        layers.append(torch.nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2))
        layers += [torch.nn.BatchNorm2d(c_out)] if batch_norm else []
        layers.append(torch.nn.ReLU())
        c_in = c_out
    return torch.nn.Sequential(OrderedDict([
        ("features", torch.nn.Sequential(*layers)),
        ("avgpool", torch.nn.AdaptiveAvgPool2d((7, 7))),
        ("flatten", torch.nn.Flatten()),
        ("classifier", torch.nn.Sequential(torch.nn.Linear(c_in * 49, hidden), torch.nn.ReLU(), torch.nn.Dropout(),
                                           torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Dropout(),
                                           torch.nn.Linear(hidden, num_classes))),
    ])).double()


@pytest.mark.parametrize("depth,batch_norm", [(11, True), (16, False), (19, True), ("16c", False), ("16c", True)])
def test_forward_matches_torch_twin(rng, device, depth, batch_norm):
    name = f"vgg{depth}".replace("16c", "16_c") + ("_bn" if batch_norm else "")
    model = get_model(name, **TINY).double()
    twin = torch_vgg(depth, batch_norm, **TINY)
    twin.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()}, strict=True)
    x = rng.standard_normal((2, 3, 64, 64))  # 2x2 maps at the end: the adaptive pool resamples to 7x7
    model.to(device)
    for training in (True, False):  # BN on batch statistics, then on running statistics
        model.train(training)
        twin.train(training)
        for m in list(model.modules()) + list(twin.modules()):  # dropout off on both sides
            if isinstance(m, (Dropout, torch.nn.Dropout)):
                m.train(False)
        out = model(sn.tensor(x, device=device)).numpy()
        np.testing.assert_allclose(out, twin(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
    if batch_norm:  # running statistics were updated the same way
        ours = model.state_dict()
        for key, value in twin.state_dict().items():
            np.testing.assert_allclose(ours[key], value.numpy(), rtol=1e-10, atol=1e-14)


def test_configuration_c_has_three_1x1_convs(skip_random_init):
    """Table 1's C: D with the third conv of blocks 3-5 a 1x1 (Sec. 2.3); Table 2: 134M parameters."""
    c, d = get_model("vgg16_c"), get_model("vgg16")
    kernels = [m.kernel_size for m in c.features if isinstance(m, Conv2d)]
    assert len(kernels) == 13 and [i for i, k in enumerate(kernels) if k == (1, 1)] == [6, 9, 12]
    assert all(m.padding == (0, 0) for m in c.features if isinstance(m, Conv2d) and m.kernel_size == (1, 1))
    # three 3x3 -> 1x1 (256->256 once, 512->512 twice): 8 weights fewer per input-output pair
    assert c.num_parameters() == d.num_parameters() - 8 * (256 * 256 + 2 * 512 * 512) == 133_638_952
    assert round(c.num_parameters() / 1e6) == 134
    assert [[k, list(v.shape)][0] for k, v in c.state_dict().items()] == list(d.state_dict())  # same key layout
    assert get_model("vgg16_c_bn").num_parameters() == c.num_parameters() + 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)


def test_features_shape_at_native_input(rng):
    model = get_model("vgg16", **TINY)
    features = model.features(sn.tensor(rng.standard_normal((1, 3, 224, 224)).astype(np.float32)))
    assert features.shape == (1, 16, 7, 7)  # five 2x2 pools: 224 -> 7, where avgpool is the identity


def test_module_tree_is_torchvisions():
    model = get_model("vgg11_bn", **TINY)
    kinds = [type(m).__name__ for m in model.features]
    assert kinds[:8] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) and m.stride == (1, 1)
               for m in model.features if isinstance(m, Conv2d))
    assert model.avgpool.output_size == (7, 7)
    assert [type(m).__name__ for m in model.classifier] == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert [m.p for m in model.classifier if isinstance(m, Dropout)] == [0.5, 0.5]


@pytest.mark.parametrize("name,training", [("vgg11_bn", True), ("vgg11_bn", False), ("vgg13", True),
                                           ("vgg16_c_bn", True)])
def test_gradcheck_tiny(rng, name, training):
    model = get_model(name, **TINY).double().train(training)
    x = sn.tensor(rng.standard_normal((2, 3, 32, 32)), requires_grad=True)

    assert gradcheck_model(model, x, max_elements=0)


def test_train_eval_behaviour(rng):
    model = get_model("vgg11_bn", **TINY).double()
    x = sn.tensor(rng.standard_normal((2, 3, 32, 32)))
    bn = next(m for m in model.modules() if isinstance(m, BatchNorm2d))
    model.eval()
    before = bn.running_mean.numpy().copy()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())  # no dropout, fixed statistics
    np.testing.assert_array_equal(bn.running_mean.numpy(), before)
    model.train()
    sn.manual_seed(1)
    first = model(x).numpy()
    assert not np.array_equal(bn.running_mean.numpy(), before) and int(bn.num_batches_tracked.numpy()) == 1
    sn.manual_seed(2)
    assert not np.allclose(first, model(x).numpy())  # dropout is on


def assert_normal(w, std, what, z=5):
    """``w`` looks like N(0, std^2) draws: its mean, standard deviation and excess kurtosis within ``z``
    standard errors of those of n = w.size normal draws (std / sqrt(n), std / sqrt(2n), sqrt(24 / n)).
    Returns the relative tolerance on the standard deviation."""
    w = w.astype(np.float64).ravel()
    n, mean, sample_std = w.size, w.mean(), w.std()
    tolerance = z / np.sqrt(2 * n)
    assert abs(mean) < z * std / np.sqrt(n), f"{what}: mean {mean:.3g}"
    assert abs(sample_std / std - 1) < tolerance, f"{what}: std {sample_std:.5g}, expected {std:.5g}"
    kurtosis = ((w - mean) ** 4).mean() / sample_std ** 4 - 3  # 0 for a normal, -1.2 for a uniform
    assert abs(kurtosis) < z * np.sqrt(24 / n), f"{what}: excess kurtosis {kurtosis:.3g}, not a normal's"
    return tolerance


def test_torchvision_initialisation_tells_the_schemes_apart():
    """Convs: He normal with fan_out (torchvision's VGG), not fan_in, not Glorot, not torch's default
    U(+-1/sqrt(fan_in)); linears N(0, 0.01); biases 0. Each tolerance comes from the tensor's size, and is
    checked to be tight enough to reject every other scheme's standard deviation."""
    model = get_model("vgg11", width=1 / 4, hidden=512, num_classes=10)
    convs = [m for m in model.features if isinstance(m, Conv2d)]
    assert len(convs) == 8
    rejected = set()  # the other schemes some conv's tolerance rules out
    for i, conv in enumerate(convs):
        fan_in, fan_out = conv.in_channels * 9, conv.out_channels * 9
        std = np.sqrt(2 / fan_out)
        tolerance = assert_normal(conv.weight.numpy(), std, f"conv {i}")
        others = {"kaiming fan_in": np.sqrt(2 / fan_in), "xavier": np.sqrt(2 / (fan_in + fan_out)),
                  "torch default": 1 / np.sqrt(3 * fan_in)}
        rejected |= {scheme for scheme, other in others.items() if abs(other / std - 1) > 2 * tolerance}
    assert rejected == {"kaiming fan_in", "xavier", "torch default"}
    linears = [m for m in model.classifier if isinstance(m, Linear)]
    for i, linear in enumerate(linears):
        assert_normal(linear.weight.numpy(), 0.01, f"linear {i}")
    assert all(not m.bias.numpy().any() for m in convs + linears)
