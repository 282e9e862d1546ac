"""MobileNet v1: Table 1's layers, the paper's parameter and mult-add counts (Tables 6 and 7),
forward against torch, and a float64 gradient check at width 0.25 on a small input."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet.models import get_model
from scratchnet.nn import BatchNorm2d, Conv2d
from scratchnet.summary import summary
from conftest import torchvision_twins

# Table 1 of Howard et al. 2017, transcribed: the 13 depthwise separable layers as
# (depthwise stride, pointwise output channels); the stem is a 3x3/2 conv to 32 channels.
TABLE1 = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)] + [(1, 512)] * 5 + [(2, 1024), (1, 1024)]


def expected_params(alpha, classes=1000):
    """Weights without bias (BN follows every conv), 2 BN parameters per channel, FC with bias."""
    c = int(32 * alpha)
    total = 3 * 3 * 3 * c + 2 * c
    for _, out in TABLE1:
        out = int(out * alpha)
        total += 3 * 3 * c + 2 * c + c * out + 2 * out
        c = out
    return total + c * classes + classes


@pytest.mark.parametrize("alpha, paper_millions", [(1.0, 4.2), (0.75, 2.6), (0.5, 1.3), (0.25, 0.5)])
def test_parameter_counts_table6(alpha, paper_millions):
    count = get_model("mobilenet_v1", width_mult=alpha).num_parameters()
    assert count == expected_params(alpha)
    assert round(count / 1e6, 1) == paper_millions  # Table 6, "Million Parameters"


def test_exact_count_alpha_1():
    assert get_model("mobilenet_v1").num_parameters() == 4231976


@pytest.mark.parametrize("alpha, resolution, paper_mult_adds", [
    (1.0, 224, 569), (0.75, 224, 325), (0.5, 224, 149), (0.25, 224, 41),  # Table 6
    (1.0, 192, 418), (1.0, 160, 290), (1.0, 128, 186)])  # Table 7
def test_mult_adds_tables_6_and_7(alpha, resolution, paper_mult_adds):
    """Conv and FC multiply-adds, in millions: within one million of the paper (it prints 290 for
    the 160 model, whose count is 290.68M; every other entry is the rounded count)."""
    model = get_model("mobilenet_v1", width_mult=alpha, resolution=resolution)
    result = summary(model, print_table=False)
    assert abs(result.total_macs / 1e6 - paper_mult_adds) < 1.0
    if (alpha, resolution) == (1.0, 224):
        assert result.total_macs == 568740352
        assert result.layers[-1].output_shape == (1, 1000)
        last_map = [r for r in result.layers if r.type == "ReLU"][-1]
        assert last_map.output_shape == (1, 1024, 7, 7)  # Table 1: 7x7x1024 before the average pool
        # receptive field of the last conv layer: 315 pixels (Araujo et al. 2019, "Computing Receptive
        # Fields of Convolutional Neural Networks", Distill, Table 1: mobilenet_v1 315)
        assert last_map.receptive_field == (315, 315) and last_map.jump == (32, 32)


def test_layers_follow_table1():
    model = get_model("mobilenet_v1")
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    assert len(convs) == 27 and len([m for m in model.modules() if isinstance(m, BatchNorm2d)]) == 27
    assert all(c.bias is None for c in convs)
    depthwise, pointwise = convs[1::2], convs[2::2]
    assert [(d.stride[0], p.out_channels) for d, p in zip(depthwise, pointwise)] == TABLE1
    assert all(d.groups == d.in_channels == d.out_channels and d.weight.shape[1:] == (1, 3, 3) for d in depthwise)
    assert all(p.kernel_size == (1, 1) and p.groups == 1 for p in pointwise)
    assert model.input_size == (3, 224, 224)
    assert get_model("mobilenet_v1", resolution=160, in_channels=1).input_size == (1, 160, 160)


def test_bad_width_is_rejected():
    with pytest.raises(ValueError, match="width_mult"):
        get_model("mobilenet_v1", width_mult=0)


def torch_mobilenet(model, alpha, classes, separable=True):
    """Table 1 in torch with the same module names, loaded with our weights (``separable=False``: Table 4's
    full 3x3 convolutions)."""
    tnn = torch.nn

    def cbr(cin, cout, k, stride=1, groups=1):
        return tnn.Sequential(tnn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                              tnn.BatchNorm2d(cout), tnn.ReLU())
    c = int(32 * alpha)
    layers = [cbr(3, c, 3, 2)]
    for stride, out in TABLE1:
        out = int(out * alpha)
        if separable:
            layers.append(tnn.Sequential(OrderedDict(depthwise=cbr(c, c, 3, stride, c), pointwise=cbr(c, out, 1))))
        else:
            layers.append(tnn.Sequential(OrderedDict(conv=cbr(c, out, 3, stride))))
        c = out
    net = tnn.Sequential(OrderedDict(features=tnn.Sequential(*layers), avgpool=tnn.AdaptiveAvgPool2d(1),
                                     flatten=tnn.Flatten(1), fc=tnn.Linear(c, classes))).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return net


@pytest.mark.parametrize("training, separable", [(False, True), (True, True), (True, False)])
def test_forward_equals_torch(training, separable):
    model = get_model("mobilenet_v1", num_classes=10, width_mult=0.25, separable=separable).double()
    rng = np.random.default_rng(0)
    for m in model.modules():
        if isinstance(m, BatchNorm2d):
            m.running_mean.data = rng.standard_normal(m.num_features) * 0.1
            m.running_var.data = rng.uniform(0.5, 2.0, m.num_features)
    reference = torch_mobilenet(model, 0.25, 10, separable).train(training)
    model.train(training)
    x = rng.standard_normal((2, 3, 64, 64))
    np.testing.assert_allclose(model(sn.tensor(x)).numpy(), reference(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-9, atol=1e-11)
    if training:
        key = "features.13.pointwise.1.running_mean" if separable else "features.13.conv.1.running_mean"
        np.testing.assert_allclose(model.state_dict()[key], reference.state_dict()[key].numpy(), rtol=1e-10,
                                   atol=1e-13)


def test_tiny_gradcheck():
    """Width 0.25 on a 64x64 input (2x2 maps at the end), BN in training mode: directional check
    over the input and all 0.47M-less-FC parameters."""
    model = get_model("mobilenet_v1", num_classes=10, width_mult=0.25, resolution=64).double().train()
    x = sn.tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 64)), requires_grad=True)
    assert sn.gradcheck(lambda x: model(x), [x], params=list(model.parameters()))


def test_train_and_eval_behaviour():
    model = get_model("mobilenet_v1", num_classes=10, width_mult=0.25)
    x = sn.tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    model.train()
    model(x)
    bn = model.features[0][1]
    assert int(bn.num_batches_tracked.item()) == 1 and not np.allclose(bn.running_mean.numpy(), 0)
    model.eval()
    stats = bn.running_mean.numpy().copy()
    with sn.no_grad():
        a, b = model(x).numpy(), model(x[:1]).numpy()
    np.testing.assert_allclose(a[:1], b, rtol=1e-5, atol=1e-6)  # eval: samples independent of the batch
    np.testing.assert_array_equal(bn.running_mean.numpy(), stats)


# --------------------------------------------------------------------------- Table 4: full convolutions


def test_conv_mobilenet_table_4():
    """Table 4: Conv MobileNet 29.3M parameters and 4866M mult-adds against MobileNet's 4.2M and 569M; the same
    counts as the net assembled from torchvision's Conv2dNormActivation (tests/fixtures/torchvision_twins.json)."""
    twins = torchvision_twins()
    full, separable = get_model("mobilenet_v1", separable=False), get_model("mobilenet_v1")
    assert full.num_parameters() == twins["conv_mobilenet_v1"]["num_params"] == 29_294_088
    assert separable.num_parameters() == twins["mobilenet_v1"]["num_params"]
    assert round(full.num_parameters() / 1e6, 1) == 29.3
    # closed form: stem, 13 full 3x3 convs, 2 BN parameters per channel, the fc
    c, expected = 32, 3 * 3 * 3 * 32 + 2 * 32
    for _, out in TABLE1:
        expected += 9 * c * out + 2 * out
        c = out
    assert full.num_parameters() == expected + 1024 * 1000 + 1000
    macs = summary(full, print_table=False).total_macs
    # 3*3*M*N*DF^2 per layer; the paper prints 4866M, 1.3M (0.03%) under this count
    assert macs == 4_867_293_184 and abs(macs / 1e6 - 4866) < 1.5


def test_full_conv_blocks_replace_each_separable_pair(rng):
    model = get_model("mobilenet_v1", num_classes=10, width_mult=0.25, resolution=32, separable=False).double()
    convs = [m for m in model.features.modules() if isinstance(m, Conv2d)]
    assert len(convs) == 14 and all(m.groups == 1 and m.kernel_size == (3, 3) for m in convs)
    assert [m.stride[0] for m in convs[1:]] == [s for s, _ in TABLE1]
    assert "separable=False" in repr(model)
    x = sn.tensor(rng.standard_normal((2, 3, 32, 32)), requires_grad=True)
    assert sn.gradcheck(lambda v: model(v), [x], params=list(model.parameters()))
