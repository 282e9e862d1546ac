"""The deformable ResNets (models/deformable.py): parameter counts and state_dict keys against the same nets
assembled from torchvision's ops (tests/fixtures/deform_models.json, tools/make_deform_model_counts.py), the
start from the regular net (zero offsets), the placement options, and a float64 gradient check."""
import json

import numpy as np
import pytest

import scratchnet as sn
from conftest import FIXTURES, assert_close, gradcheck_model
from scratchnet.models import get_model
from scratchnet.models.deformable import dcn_resnet, stage_convs
from scratchnet.models.resnet import CifarResNet
from scratchnet.nn import DeformConv2dPack, ModulatedDeformConv2dPack

ASSEMBLED = json.loads((FIXTURES / "deform_models.json").read_text())["models"]
NAMES = ["resnet50_dcn", "resnet50_dcnv2", "resnet20_dcn", "resnet20_dcnv2"]


@pytest.mark.parametrize("name", NAMES)
def test_parameters_and_keys_equal_the_nets_built_from_torchvision_ops(name, skip_random_init):
    model = get_model(name)
    expected = ASSEMBLED[name]
    assert sum(p.data.size for p in model.parameters()) == expected["parameters"]
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == expected["state_dict"]


def test_deformable_layers_sit_where_the_papers_put_them(skip_random_init):
    """DCNv2: every 3x3 conv of conv3-conv5 (13 in ResNet-50), none in conv2 or the stem; the CIFAR net: its last
    stage's six."""
    model = get_model("resnet50_dcnv2")
    deformable = [n for n, m in model.named_modules() if isinstance(m, ModulatedDeformConv2dPack)]
    assert len(deformable) == 13 and all(n.endswith(".conv2") for n in deformable)
    assert {n.split(".")[0] for n in deformable} == {"layer2", "layer3", "layer4"}
    cifar = get_model("resnet20_dcn")
    deformable = [n for n, m in cifar.named_modules() if isinstance(m, DeformConv2dPack)]
    assert deformable == [f"layer3.{u}.conv{c}" for u in range(3) for c in (1, 2)]
    conv5_only = get_model("resnet50_dcn", deformable_stages=(False, False, False, True))
    assert sum(isinstance(m, DeformConv2dPack) for m in conv5_only.modules()) == 3  # DCNv1's count, in conv5
    assert conv5_only.layer4[0].conv2.stride == (2, 2)
    with pytest.raises(ValueError, match="deformable version must be one of"):
        dcn_resnet(50, "v3")
    with pytest.raises(ValueError, match="stage_conv3x3 needs one entry per stage"):
        get_model("resnet50_dcn", deformable_stages=(True, True))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_new_net_computes_its_regular_twin(version, rng):
    """Zero offsets: resnet20_dcn is resnet20 with the same weights; v2's modulation starts at 0.5, so resnet20_dcnv2 is
    resnet20 with its last stage's convolution weights halved."""
    sn.manual_seed(3)
    model = get_model("resnet20_dcn" if version == "v1" else "resnet20_dcnv2").eval()
    twin = get_model("resnet20").eval()
    state = {k: v for k, v in model.state_dict().items() if "conv_offset" not in k}
    if version == "v2":
        state = {k: v * 0.5 if k.startswith("layer3") and ".conv" in k else v for k, v in state.items()}
    twin.load_state_dict(state)
    x = sn.tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    assert_close(model(x), twin(x).numpy())


def test_the_offset_branch_learns_from_the_first_step(rng):
    """At zero offsets the gradient of the offset branch is not zero: training moves the samples."""
    model = get_model("resnet20_dcnv2")
    x = sn.tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    sn.nn.functional.cross_entropy(model(x), sn.tensor(np.array([1, 7]))).backward()
    for unit in model.layer3:
        assert np.abs(np.asarray(unit.conv1.conv_offset.weight.grad)).max() > 0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_tiny_deformable_resnet_gradcheck(version, rng):
    """float64, train mode, every parameter. The offset branches are given small random weights first: at zero
    offsets every sample sits on an integer position, a kink of bilinear interpolation, where a finite
    difference does not measure the one-sided derivative backward computes."""
    model = CifarResNet(1, num_classes=3, in_channels=1, widths=(2, 2, 3),
                        stage_conv3x3=stage_convs(version, (False, True, True))).to(dtype=np.float64)
    for module in model.modules():
        if isinstance(module, DeformConv2dPack):
            module.conv_offset.weight.data[...] = rng.normal(0, 0.3, module.conv_offset.weight.shape)
            module.conv_offset.bias.data[...] = rng.uniform(-0.5, 0.5, module.conv_offset.bias.shape)
    x = sn.tensor(rng.standard_normal((2, 1, 8, 8)), requires_grad=True)
    assert gradcheck_model(model, x, max_elements=0)
