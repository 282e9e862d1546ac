"""GoogLeNet / Inception v1 (Szegedy et al. 2014): counts from Table 1, torchvision's key layout
(with the true 5x5 branch), Table 1's sizes, forward against torch, aux heads, gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
from conftest import gradcheck_model, torchvision_reference, torchvision_twins
from scratchnet.models import get_model
from scratchnet.models.googlenet import GoogLeNetOutputs, NaiveInception
from scratchnet.nn import Dropout, LocalResponseNorm

REFERENCE = torchvision_reference()

# Table 1 of the paper, written out again: module -> (in, #1x1, #3x3red, #3x3, #5x5red, #5x5, pool proj)
TABLE_1 = {
    "3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}
TINY = {"width": 1 / 16, "num_classes": 5}


def conv(c_in, c_out, k):
    return c_out * c_in * k * k + c_out


def paper_count(aux):
    stem = conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
    inceptions = sum(conv(i, a, 1) + conv(i, b, 1) + conv(b, c, 3) + conv(i, d, 1) + conv(d, e, 5) + conv(i, f, 1)
                     for i, a, b, c, d, e, f in TABLE_1.values())
    head = 1024 * 1000 + 1000
    # Sec. 5: avg pool -> 4x4, 1x1 conv 128, FC 1024, FC 1000; on 4a (512 maps) and 4d (528 maps)
    aux_heads = sum(conv(c, 128, 1) + 128 * 16 * 1024 + 1024 + 1024 * 1000 + 1000 for c in (512, 528))
    return stem + inceptions + head + (aux_heads if aux else 0)


def test_counts_from_table_1(skip_random_init):
    assert get_model("googlenet", aux_logits=False).num_parameters() == paper_count(False) == 6_998_552
    assert get_model("googlenet").num_parameters() == paper_count(True) == 13_378_280


def test_state_dict_lines_up_with_torchvision_except_the_5x5_branch(skip_random_init):
    ours = {k: v.shape for k, v in get_model("googlenet").state_dict().items()}
    theirs = {k: tuple(shape) for k, shape in REFERENCE["googlenet"]["state_dict"]}
    for key, shape in theirs.items():
        if ".bn." in key:  # torchvision adds batch norm; the paper has conv biases instead
            assert key.replace(".bn.", ".conv.").rsplit(".", 1)[0] + ".bias" in ours
        elif "branch3.1.conv.weight" in key:  # torchvision's 3x3 where the paper has 5x5
            assert ours[key] == shape[:2] + (5, 5) and shape[2:] == (3, 3)
        else:
            assert ours[key] == shape, key
    extra = [k for k in ours if k not in theirs]
    assert extra and all(k.endswith(".conv.bias") for k in extra)


def test_table_1_widths_and_sizes(skip_random_init, rng):
    model = get_model("googlenet")
    widths = [getattr(model, f"inception{name}").out_channels for name in TABLE_1]
    assert widths == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    assert [(m.size, m.alpha, m.beta, m.k) for m in model.modules() if isinstance(m, LocalResponseNorm)] == \
        [(5, 1e-4, 0.75, 1.0)] * 2
    assert [m.p for m in model.modules() if isinstance(m, Dropout)] == [0.7, 0.7, 0.4]


def test_table_1_spatial_sizes(rng):
    model = get_model("googlenet", **TINY).eval()
    names = ["conv1", "maxpool1", "conv3", "maxpool2", "inception3b", "maxpool3", "inception4e", "maxpool4",
             "inception5b"]
    sizes = {}
    for name in names:
        getattr(model, name).register_forward_hook(lambda m, args, out, name=name: sizes.update({name: out.shape[-1]}))
    model(sn.tensor(rng.standard_normal((1, 3, 224, 224)).astype(np.float32)))
    assert [sizes[n] for n in names] == [112, 56, 56, 28, 28, 14, 14, 7, 7]


def torch_googlenet(model, x):
    """Inception v1 written with torch ops from the model's weights: (logits, aux1, aux2), no dropout."""
    s = {k: torch.tensor(v) for k, v in model.state_dict().items()}

    def basic(a, name, stride=1, padding=0):
        return TF.relu(TF.conv2d(a, s[name + ".conv.weight"], s[name + ".conv.bias"], stride, padding))

    def inception(a, name):
        return torch.cat([basic(a, name + ".branch1"),
                          basic(basic(a, name + ".branch2.0"), name + ".branch2.1", padding=1),
                          basic(basic(a, name + ".branch3.0"), name + ".branch3.1", padding=2),
                          basic(TF.max_pool2d(a, 3, 1, 1, ceil_mode=True), name + ".branch4.1")], 1)

    def aux(a, name):
        a = basic(TF.avg_pool2d(a, 5, 3), name + ".conv").flatten(1)
        return TF.linear(TF.relu(TF.linear(a, s[name + ".fc1.weight"], s[name + ".fc1.bias"])),
                         s[name + ".fc2.weight"], s[name + ".fc2.bias"])

    def pool(a):
        return TF.max_pool2d(a, 3, 2, ceil_mode=True)

    def lrn(a):
        return TF.local_response_norm(a, 5, 1e-4, 0.75, 1.0)

    a = lrn(pool(basic(torch.tensor(x), "conv1", 2, 3)))
    a = pool(lrn(basic(basic(a, "conv2"), "conv3", padding=1)))
    a = pool(inception(inception(a, "inception3a"), "inception3b"))
    a = inception(a, "inception4a")
    aux1 = aux(a, "aux1")
    for name in "bcd":
        a = inception(a, "inception4" + name)
    aux2 = aux(a, "aux2")
    a = pool(inception(a, "inception4e"))
    a = inception(inception(a, "inception5a"), "inception5b").mean((2, 3))
    return [t.numpy() for t in (TF.linear(a, s["fc.weight"], s["fc.bias"]), aux1, aux2)]


def test_forward_matches_torch_in_train_and_eval(rng, device):
    model = get_model("googlenet", **TINY).double()
    x = rng.standard_normal((2, 3, 224, 224))
    logits, aux1, aux2 = torch_googlenet(model, x)
    model.to(device).train()
    for m in model.modules():  # dropout off, aux heads on
        if isinstance(m, Dropout):
            m.eval()
    out = model(sn.tensor(x, device=device))
    assert isinstance(out, GoogLeNetOutputs)
    for ours, expected in zip(out, (logits, aux1, aux2)):
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10, atol=1e-12)
    model.eval()
    out = model(sn.tensor(x, device=device))
    assert isinstance(out, sn.Tensor)  # eval: the main logits only
    np.testing.assert_allclose(out.numpy(), logits, rtol=1e-10, atol=1e-12)


def test_aux_heads_only_in_training(rng):
    x = sn.tensor(rng.standard_normal((1, 3, 224, 224)).astype(np.float32))
    model = get_model("googlenet", **TINY)
    out = model.train()(x)
    assert isinstance(out, tuple) and [o.shape for o in out] == [(1, 5)] * 3
    assert model.scores(out) is out.logits
    assert model.eval()(x).shape == (1, 5)
    no_aux = get_model("googlenet", aux_logits=False, **TINY)
    assert no_aux.train()(x).shape == (1, 5) and not hasattr(no_aux, "aux1")


def test_loss_adds_aux_losses_with_weight_0_3(rng):
    model = get_model("googlenet", **TINY).double()
    x = sn.tensor(rng.standard_normal((2, 3, 224, 224)))
    target = np.array([1, 4])
    sn.manual_seed(0)
    out = model.train()(x)
    ce = [TF.cross_entropy(torch.tensor(o.numpy()), torch.tensor(target)).item() for o in out]
    assert abs(model.loss(out, sn.tensor(target)).item() - (ce[0] + 0.3 * (ce[1] + ce[2]))) < 1e-12
    logits = model.eval()(x)
    expected = TF.cross_entropy(torch.tensor(logits.numpy()), torch.tensor(target)).item()
    assert abs(model.loss(logits, sn.tensor(target)).item() - expected) < 1e-12


@pytest.mark.parametrize("options,training", [({}, True), ({}, False), ({"naive": True, "width": 1 / 32}, True)])
def test_gradcheck_tiny(rng, options, training):
    model = get_model("googlenet", **{**TINY, **options}).double().train(training)
    x = sn.tensor(rng.standard_normal((1, 3, 224, 224)), requires_grad=True)

    assert gradcheck_model(model, x, max_elements=0)


def test_naive_module_widths_grow(rng):
    block = NaiveInception(192, 64, 128, 32).double()
    assert block.out_channels == 192 + 64 + 128 + 32  # the pool branch keeps all 192 input maps
    model = get_model("googlenet", naive=True, aux_logits=False, **TINY)
    widths = [getattr(model, f"inception{name}").out_channels for name in TABLE_1]
    assert all(b > a for a, b in zip(widths, widths[1:]))  # Fig. 2(a): the width only ever grows
    x = sn.tensor(rng.standard_normal((1, 192, 5, 5)), requires_grad=True)
    small = NaiveInception(3, 2, 2, 1).double()
    small_x = sn.tensor(rng.standard_normal((1, 3, 5, 5)), requires_grad=True)
    assert small(small_x).shape == (1, 8, 5, 5) and block(x).shape == (1, 416, 5, 5)
    assert sn.gradcheck(small, [small_x], params=list(small.parameters()))


def test_inception_blocks_elementwise_gradcheck(rng):
    """Every entry of the concatenated branches' and the aux head's gradients, at tiny sizes."""
    from scratchnet.models.googlenet import Inception, InceptionAux
    block = Inception(2, 1, 1, 2, 1, 1, 1).double()
    x = sn.tensor(rng.standard_normal((1, 2, 4, 4)), requires_grad=True)
    assert block(x).shape == (1, 5, 4, 4)
    assert sn.gradcheck(block, [x], params=list(block.parameters()))
    head = InceptionAux(1, 3, conv_channels=1, hidden=4, dropout=0.7).double().eval()
    x = sn.tensor(rng.standard_normal((1, 1, 14, 14)), requires_grad=True)  # pool 5x5/3 -> 4x4
    assert head(x).shape == (1, 3)
    assert sn.gradcheck(head, [x], params=list(head.parameters()))


# --------------------------------------------------------------------------- smaller inputs, SE-Inception

TWINS = torchvision_twins()


@pytest.mark.parametrize("image_size, pooled", [(224, 4), (160, 2), (96, 1), (80, 1)])
def test_aux_heads_size_their_fc_from_the_image_size(image_size, pooled, rng):
    """Stage 4's maps are 14x14 at 224 (the aux pool 5x5/3 -> 4x4); smaller inputs pool to fewer cells."""
    model = get_model("googlenet", image_size=image_size, **TINY)
    assert model.input_size == (3, image_size, image_size)
    assert model.aux1.fc1.in_features == model.aux1.conv.conv.out_channels * pooled ** 2
    out = model.train()(sn.tensor(rng.standard_normal((2, 3, image_size, image_size)).astype(np.float32)))
    assert [o.shape for o in out] == [(2, 5)] * 3
    with pytest.raises(ValueError, match="image_size"):
        get_model("googlenet", image_size=64, **TINY)
    assert get_model("googlenet", image_size=64, aux_logits=False, **TINY).input_size == (3, 64, 64)


def test_se_googlenet_count_equals_googlenet_plus_torchvision_se_blocks(skip_random_init):
    """SENet Fig. 2's SE-Inception module on each of the nine modules: what torchvision's SqueezeExcitation(C, C/16)
    adds, per module (the fixture assembled it), and the closed form 2 C^2/16 + C/16 + C."""
    twin = TWINS["se_inception_v1"]
    plain, se = get_model("googlenet", aux_logits=False), get_model("se_googlenet", aux_logits=False)
    widths = [getattr(plain, f"inception{name}").out_channels for name in TABLE_1]
    assert widths == twin["module_channels"]
    per_module = [sum(p.size for p in getattr(se, f"inception{name}").se.parameters()) for name in TABLE_1]
    assert per_module == twin["se_params"] == [2 * c * (c // 16) + c // 16 + c for c in widths]
    assert se.num_parameters() == plain.num_parameters() + sum(per_module) == 7_478_655


def test_se_inception_module_scales_the_concatenation(rng):
    from scratchnet.models.googlenet import Inception
    from scratchnet.models.senet import SEBlock
    block = Inception(4, 2, 2, 4, 1, 2, 2, se_layer=lambda c: SEBlock(c, reduction=2)).double()
    x = sn.tensor(rng.standard_normal((2, 4, 5, 5)), requires_grad=True)
    concat = sn.cat([block.branch1(x), block.branch2(x), block.branch3(x), block.branch4(x)], 1)
    np.testing.assert_allclose(block(x).numpy(), (concat * block.se.scale(concat)).numpy(), rtol=1e-14)
    assert sn.gradcheck(block, [x], params=list(block.parameters()))


def test_se_googlenet_gradcheck_tiny(rng):
    model = get_model("se_googlenet", reduction=4, image_size=96, **TINY).double().train()
    x = sn.tensor(rng.standard_normal((1, 3, 96, 96)), requires_grad=True)
    assert gradcheck_model(model, x, max_elements=0)
