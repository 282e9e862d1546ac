"""nn.DeformConv2d (torchvision.ops.DeformConv2d's constructor, parameters, init and keys) and the blocks that
predict their own offsets (DeformConv2dPack, v1) and offsets and modulation (ModulatedDeformConv2dPack, v2)."""
import math

import numpy as np
import pytest

import scratchnet as sn
import scratchnet.nn.functional as F
from conftest import assert_close
from scratchnet import nn


def test_deform_conv2d_layer_is_torchvisions(rng):
    layer = nn.DeformConv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    # torchvision's repr and keys; the weight of a Conv2d with the same options
    assert repr(layer) == "DeformConv2d(4, 6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), " \
                          "groups=2)"
    assert {k: v.shape for k, v in layer.state_dict().items()} == {"weight": (6, 2, 3, 2), "bias": (6,)}
    assert repr(nn.DeformConv2d(3, 5, 3, bias=False)) == "DeformConv2d(3, 5, kernel_size=(3, 3), stride=(1, 1), " \
                                                         "bias=False)"
    x = sn.tensor(rng.standard_normal((2, 4, 7, 6)).astype(np.float32))  # layers are float32, as torch's
    offset = sn.tensor(rng.standard_normal((2, 2 * 2 * 6, 4, 6)).astype(np.float32))  # two offset groups
    mask = sn.tensor(rng.uniform(0, 1, (2, 2 * 6, 4, 6)).astype(np.float32))
    expected = F.deform_conv2d(x, offset, layer.weight, layer.bias, stride=(2, 1), padding=1, dilation=(1, 2),
                               mask=mask)
    assert_close(layer(x, offset, mask), expected.numpy())


def test_deform_conv2d_init_is_torchs_conv_init():
    """kaiming_uniform(a=sqrt(5)): weights in +-1/sqrt(fan_in), the bias likewise (torchvision's reset_parameters)."""
    sn.manual_seed(0)
    layer = nn.DeformConv2d(64, 64, 3)
    bound = 1 / math.sqrt(64 * 9)
    w, b = layer.weight.data, layer.bias.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound  # a uniform's standard deviation
    assert np.abs(b).max() <= bound


@pytest.mark.parametrize("block", [nn.DeformConv2dPack, nn.ModulatedDeformConv2dPack])
def test_blocks_start_as_the_regular_convolution(block, rng):
    """conv_offset starts at zero: offsets 0 and (v2) modulation sigmoid(0) = 0.5, the paper's initial values."""
    layer = block(4, 6, 3, stride=2, padding=1, offset_groups=2)
    taps, values = 9, 2 if block is nn.DeformConv2dPack else 3
    assert layer.conv_offset.weight.shape == (values * 2 * taps, 4, 3, 3)
    assert list(layer.state_dict()) == ["weight", "bias", "conv_offset.weight", "conv_offset.bias"]
    assert not np.asarray(layer.conv_offset.weight.data).any() and not np.asarray(layer.conv_offset.bias.data).any()
    x = sn.tensor(rng.standard_normal((2, 4, 9, 8)).astype(np.float32))
    regular = F.conv2d(x, layer.weight, None, stride=2, padding=1).numpy()
    scale = 1.0 if block is nn.DeformConv2dPack else 0.5
    assert_close(layer(x), scale * regular + layer.bias.data.reshape(1, -1, 1, 1))


def test_modulated_block_splits_offsets_and_mask(rng):
    """The first 2*G*kh*kw channels of conv_offset's output are the offsets, the rest the mask (through a sigmoid)."""
    layer = nn.ModulatedDeformConv2dPack(2, 3, 3, padding=1)
    layer.conv_offset.weight.data[...] = rng.normal(0, 0.2, layer.conv_offset.weight.shape)
    x = sn.tensor(rng.standard_normal((1, 2, 5, 5)).astype(np.float32))
    out = layer.conv_offset(x).numpy()
    expected = F.deform_conv2d(x, sn.tensor(out[:, :18]), layer.weight, layer.bias, padding=1,
                               mask=sn.tensor((1 / (1 + np.exp(-out[:, 18:]))).astype(np.float32)))
    assert_close(layer(x), expected.numpy())


@pytest.mark.parametrize("block", [nn.DeformConv2dPack, nn.ModulatedDeformConv2dPack])
def test_blocks_gradcheck(block, rng):
    """float64, every parameter; the offset branch is given random weights first, away from the integer sampling
    positions of zero offsets (kinks of bilinear interpolation)."""
    layer = block(2, 3, (3, 2), padding=(1, 0), offset_groups=2).to(dtype=np.float64)
    layer.conv_offset.weight.data[...] = rng.normal(0, 0.3, layer.conv_offset.weight.shape)
    layer.conv_offset.bias.data[...] = rng.uniform(0.2, 0.8, layer.conv_offset.bias.shape)
    x = sn.tensor(rng.standard_normal((2, 2, 5, 4)), requires_grad=True)
    assert sn.gradcheck(layer, [x], params=dict(layer.named_parameters()))


def test_offset_groups_must_divide_the_channels():
    with pytest.raises(ValueError, match="DeformConv2dPack: offset_groups=3 must divide in_channels=4"):
        nn.DeformConv2dPack(4, 4, 3, offset_groups=3)
    with pytest.raises(ValueError, match="ModulatedDeformConv2dPack: offset_groups must be >= 1"):
        nn.ModulatedDeformConv2dPack(4, 4, 3, offset_groups=0)
    with pytest.raises(ValueError, match="DeformConv2d: non-positive stride is not supported"):
        nn.DeformConv2d(4, 4, 3, stride=0)
