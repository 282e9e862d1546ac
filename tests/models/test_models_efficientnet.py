"""EfficientNet B0-B7: torchvision's counts and state_dict keys, the compound-scaling table, MBConv/SE/
stochastic depth against torch, and float64 gradient checks of a tiny configuration."""
import functools
from collections import OrderedDict

import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet.models import get_model
from scratchnet.models.efficientnet import (B0_STAGES, TINY_STAGES, VARIANTS, MBConv, StochasticDepth,
                                           _make_divisible, compound_scaling, scale_stages)
from scratchnet.nn import BatchNorm2d, Dropout
from conftest import assert_torchvision_layout



@functools.lru_cache(maxsize=1)
def built(name):
    return get_model(name)


def tiny(**options):
    options = dict(num_classes=10, stages=TINY_STAGES, width_mult=1.0, depth_mult=1.0, resolution=16, **options)
    return get_model("efficientnet_b0", **options)


# --------------------------------------------------------------------------- counts and keys vs torchvision


@pytest.mark.parametrize("name, resolution, dropout, eps, momentum", [
    ("efficientnet_b0", 224, 0.2, 1e-5, 0.1), ("efficientnet_b1", 240, 0.2, 1e-5, 0.1),
    ("efficientnet_b2", 260, 0.3, 1e-5, 0.1), ("efficientnet_b3", 300, 0.3, 1e-5, 0.1),
    ("efficientnet_b4", 380, 0.4, 1e-5, 0.1), ("efficientnet_b5", 456, 0.4, 1e-3, 0.01),
    ("efficientnet_b6", 528, 0.5, 1e-3, 0.01), ("efficientnet_b7", 600, 0.5, 1e-3, 0.01)])
def test_variants_equal_torchvision(name, resolution, dropout, eps, momentum):
    """Parameter count and state_dict keys/shapes are torchvision's; so are each variant's resolution
    and dropout; B5-B7 use TF's BN (eps 1e-3, momentum 0.01) as torchvision builds them."""
    model = get_model(name)
    assert_torchvision_layout(model, name)
    assert model.input_size == (3, resolution, resolution)
    assert [m.p for m in model.modules() if isinstance(m, Dropout)] == [dropout]
    norms = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in norms} == {(eps, momentum)}


def test_b0_table_and_stochastic_depth_schedule():
    """Table 1: 16 MBConv blocks (1, 2, 2, 3, 3, 4, 1); drop probability 0.2 * k / 16 for block k."""
    model = built("efficientnet_b0")
    stages = [len(model.features[i]) for i in range(1, 8)]
    assert stages == [1, 2, 2, 3, 3, 4, 1]
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    assert [b.stochastic_depth.p for b in blocks] == [0.2 * k / 16 for k in range(16)]
    # residual exactly where stride 1 and in == out: every block but each stage's first
    assert [b.use_res_connect for b in blocks] == [False, False, True, False, True, False, True, True,
                                                   False, True, True, False, True, True, True, False]
    assert model.features[8][0].out_channels == 1280


def test_make_divisible():
    assert [_make_divisible(c * 1.1) for c in (32, 16, 24, 40, 80, 112, 192, 320)] == [
        32, 16, 24, 48, 88, 120, 208, 352]
    assert _make_divisible(3) == 8 and _make_divisible(11.5) == 16  # never below 8; never 10% under


# --------------------------------------------------------------------------- StochasticDepth


def test_stochastic_depth_row_mode(device):
    sd = StochasticDepth(0.25, "row")
    xp = sn.backend.xp_for(device)
    x = sn.Tensor(xp.ones((4000, 2, 3), dtype=np.float64))
    y = sd(x).numpy()
    per_row = y.reshape(4000, -1)
    kept = per_row[:, 0] != 0
    assert np.all(per_row == per_row[:, :1])  # one coin per sample
    np.testing.assert_allclose(per_row[kept], 1 / 0.75)  # survivors rescaled: expectation unchanged
    assert abs(kept.mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 4000)


def test_stochastic_depth_batch_mode_eval_and_edges():
    x = sn.tensor(np.ones((50, 3)))
    for seed in range(5):
        sn.manual_seed(seed)
        y = StochasticDepth(0.5, "batch")(x).numpy()
        assert np.all(y == 0) or np.all(y == 2)
    sd = StochasticDepth(0.5).eval()
    assert sd(x) is x  # identity in eval
    assert StochasticDepth(0.0)(x) is x
    np.testing.assert_array_equal(StochasticDepth(1.0)(x).numpy(), 0)  # all dropped, no division by 0
    with pytest.raises(ValueError, match="probability"):
        StochasticDepth(1.5)
    with pytest.raises(ValueError, match="mode"):
        StochasticDepth(0.1, "col")


def test_stochastic_depth_gradcheck():
    sd = StochasticDepth(0.5)
    x = sn.tensor(np.random.default_rng(0).standard_normal((6, 2, 2, 2)), requires_grad=True)

    def fn(x):
        sn.manual_seed(3)  # the same mask on every evaluation
        return sd(x)
    sn.manual_seed(3)
    mask = sd(x).numpy().reshape(6, -1)[:, 0] / x.numpy().reshape(6, -1)[:, 0]
    assert 0 < (mask == 0).sum() < 6  # this seed drops some samples and keeps others
    assert sn.gradcheck(fn, [x])


# --------------------------------------------------------------------------- forward against torch (float64)


def torch_tiny(model):
    """The same network written in torch (torchvision's MBConv), loaded with our weights."""
    tnn = torch.nn

    def cna(cin, cout, k, s=1, groups=1, act=True):
        layers = [tnn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False), tnn.BatchNorm2d(cout)]
        return tnn.Sequential(*(layers + [tnn.SiLU()] if act else layers))

    class SE(tnn.Module):
        def __init__(self, c, squeeze):
            super().__init__()
            self.fc1, self.fc2 = tnn.Conv2d(c, squeeze, 1), tnn.Conv2d(squeeze, c, 1)

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            return torch.sigmoid(self.fc2(torch.nn.functional.silu(self.fc1(s)))) * x

    class Block(tnn.Module):
        def __init__(self, e, k, s, cin, cout):
            super().__init__()
            layers = [cna(cin, cin * e, 1)] if e != 1 else []
            layers += [cna(cin * e, cin * e, k, s, cin * e), SE(cin * e, cin // 4), cna(cin * e, cout, 1, act=False)]
            self.block, self.res = tnn.Sequential(*layers), s == 1 and cin == cout

        def forward(self, x):
            return self.block(x) + x if self.res else self.block(x)

    features = [cna(3, 8, 3, 2)]
    for e, k, s, cin, cout, n in TINY_STAGES:
        features.append(tnn.Sequential(*[Block(e, k, s if i == 0 else 1, cin if i == 0 else cout, cout)
                                         for i in range(n)]))
    features.append(cna(16, 64, 1))
    net = tnn.Sequential(OrderedDict(features=tnn.Sequential(*features), avgpool=tnn.AdaptiveAvgPool2d(1),
                                     flatten=tnn.Flatten(1),
                                     classifier=tnn.Sequential(tnn.Dropout(0.0), tnn.Linear(64, 10)))).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return net


@pytest.mark.parametrize("training", [False, True])
def test_tiny_forward_equals_torch(training):
    model = tiny(stochastic_depth_prob=0.0, dropout=0.0).double()
    rng = np.random.default_rng(1)
    for m in model.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, BatchNorm2d):
            m.running_mean.data = rng.standard_normal(m.num_features) * 0.1
            m.running_var.data = rng.uniform(0.5, 2.0, m.num_features)
            m.weight.data = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data = rng.standard_normal(m.num_features) * 0.1
    reference = torch_tiny(model).train(training)
    model.train(training)
    x = rng.standard_normal((3, 3, 16, 16))
    ours = model(sn.tensor(x)).numpy()
    theirs = reference(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    if training:  # running statistics updated the same way
        np.testing.assert_allclose(model.state_dict()["features.2.1.block.0.1.running_var"],
                                   reference.state_dict()["features.2.1.block.0.1.running_var"].numpy(), rtol=1e-12)


def test_b0_forward_shape_at_reduced_input():
    model = built("efficientnet_b0").eval()
    with sn.no_grad():
        out = model(sn.tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)))
    assert out.shape == (2, 1000) and out.dtype == np.float32 and np.isfinite(out.numpy()).all()


# --------------------------------------------------------------------------- gradient check and train/eval


def test_tiny_config_covers_every_block_kind():
    model = tiny(stochastic_depth_prob=0.8)
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    kinds = {(len(b.block) == 4, b.block[-3][0].kernel_size[0], b.block[-3][0].stride[0], b.use_res_connect,
              b.stochastic_depth.p > 0) for b in blocks}
    assert any(not expand for expand, *_ in kinds) and any(expand for expand, *_ in kinds)  # with/without expand
    assert {k for _, k, *_ in kinds} == {3, 5} and {s for _, _, s, *_ in kinds} == {1, 2}
    assert any(res and drop for *_, res, drop in kinds)  # a residual through active stochastic depth


def test_tiny_gradcheck_train_mode_with_stochastic_depth_and_se():
    model = tiny(stochastic_depth_prob=0.8, dropout=0.3).double().train()
    x = sn.tensor(np.random.default_rng(0).standard_normal((4, 3, 16, 16)), requires_grad=True)

    def fn(x):
        sn.manual_seed(7)  # the same stochastic-depth masks and dropout on every evaluation
        return model(x)
    kept = []
    hooks = [m.register_forward_hook(lambda m, i, out: kept.append((out.numpy().reshape(4, -1) != 0).any(1)))
             for m in model.modules() if isinstance(m, StochasticDepth) and m.p > 0]
    fn(x)
    for hook in hooks:
        hook.remove()
    assert all(0 < k.sum() < 4 for k in kept)  # with this seed every active branch drops some samples
    assert sn.gradcheck(fn, [x], params=list(model.parameters()))


def test_train_and_eval_behaviour():
    model = tiny(stochastic_depth_prob=0.8).double()
    x = sn.tensor(np.random.default_rng(0).standard_normal((4, 3, 16, 16)))
    model.eval()
    first, second = model(x).numpy(), model(x).numpy()
    np.testing.assert_array_equal(first, second)  # no dropout, no stochastic depth, running stats
    model.train()
    sn.manual_seed(0)
    a = model(x).numpy()
    sn.manual_seed(1)
    b = model(x).numpy()
    assert not np.allclose(a, b)  # dropout / stochastic depth are live in training
    bn = model.features[0][1]
    assert int(bn.num_batches_tracked.item()) == 2


def test_bad_stride_is_rejected():
    with pytest.raises(ValueError, match="stride"):
        MBConv(6, 3, 3, 16, 16, 0.0)


# --------------------------------------------------------------------------- compound scaling from phi


def stage_table(model):
    """(channels, layers) of each MBConv stage, read off a built net."""
    return [(model.features[i][0].out_channels, len(model.features[i])) for i in range(1, 8)]


def test_compound_scaling_is_equation_3():
    assert compound_scaling(0) == (1.0, 1.0, 224)
    width, depth, resolution = compound_scaling(7)
    assert (width, depth) == (1.1 ** 7, 1.2 ** 7) and resolution == round(224 * 1.15 ** 7) == 596
    assert abs(1.2 * 1.1 ** 2 * 1.15 ** 2 - 1.92) < 1e-3  # alpha beta^2 gamma^2 ~ 2: FLOPs ~ 2^phi


def test_phi_builds_b0_scaled_by_equation_3():
    """round_filters (multiples of 8, never 10% under) and round_repeats (ceil) of the reference code."""
    assert get_model("efficientnet_b0", phi=0).num_parameters() == 5_288_548
    model = get_model("efficientnet_b0", phi=3, num_classes=10)
    width, depth, resolution = compound_scaling(3)
    assert model.input_size == (3, resolution, resolution) == (3, 341, 341)
    expected = [(_make_divisible(c_out * width), int(np.ceil(n * depth))) for *_, c_out, n in B0_STAGES]
    assert stage_table(model) == expected == [(c, n) for *_, c, n in scale_stages(B0_STAGES, width, depth)]
    assert model.features[0][0].out_channels == _make_divisible(32 * width)
    with pytest.raises(ValueError, match="phi"):
        get_model("efficientnet_b0", phi=1, width_mult=1.1)


def test_published_b1_b7_are_not_the_formula():
    """The registry keeps the published coefficients (torchvision's, the TF code's); Eq. 3 with phi = 1, 2
    rounds to B2's and B3's stage tables (tensorflow/tpu#390), and from phi = 3 on the two part."""
    for phi in (1, 2):
        width, depth, _ = compound_scaling(phi)
        published = VARIANTS[f"b{phi + 1}"]
        assert scale_stages(B0_STAGES, width, depth) == scale_stages(B0_STAGES, published[0], published[1])
    width, depth, _ = compound_scaling(7)
    assert scale_stages(B0_STAGES, width, depth) != scale_stages(B0_STAGES, *VARIANTS["b7"][:2])
    assert [n for *_, n in scale_stages(B0_STAGES, width, depth)] == [4, 8, 8, 11, 11, 15, 4]
    assert [n for *_, n in scale_stages(B0_STAGES, *VARIANTS["b7"][:2])] == [4, 7, 7, 10, 10, 13, 4]
