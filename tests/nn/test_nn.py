"""nn: Module bookkeeping (names, order, modes, devices, state_dict, hooks, repr) and every layer
against its torch.nn twin (parameter shapes, default init, forward and backward numbers)."""
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

import scratchnet as sn
from conftest import assert_close, compare_with_torch
from scratchnet import nn

# --------------------------------------------------------------------------- one tree, built in both frameworks


def build(lib):
    """The same small model tree in scratchnet.nn and torch.nn (lib is the nn module)."""

    class Block(lib.Module):
        def __init__(self):
            super().__init__()
            self.conv = lib.Conv2d(4, 6, 3, padding=1, bias=False)
            self.bn = lib.BatchNorm2d(6)
            self.act = lib.ReLU()
            self.shortcut = lib.Sequential(lib.Conv2d(4, 6, 1, stride=1), lib.BatchNorm2d(6))

        def forward(self, x):
            return self.act(self.bn(self.conv(x)) + self.shortcut(x))

    return lib.Sequential(OrderedDict([
        ("stem", lib.Conv2d(3, 4, 3, stride=2, padding=1)),
        ("pool", lib.MaxPool2d(2)),
        ("block", Block()),
        ("gap", lib.AdaptiveAvgPool2d(1)),
        ("flat", lib.Flatten()),
        ("head", lib.Sequential(lib.Linear(6, 5), lib.Dropout(0.5), lib.BatchNorm1d(5), lib.Linear(5, 2))),
    ]))


def copy_from_torch(model, tmodel):
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})


def test_state_dict_keys_shapes_and_order_equal_torch():
    model, tmodel = build(nn), build(torch.nn)
    ours, theirs = model.state_dict(), tmodel.state_dict()
    assert isinstance(ours, OrderedDict)
    assert list(ours) == list(theirs)
    for key in theirs:
        assert isinstance(ours[key], np.ndarray)
        assert ours[key].shape == tuple(theirs[key].shape), key
    assert ours["block.bn.num_batches_tracked"].dtype == np.int64
    assert ours["stem.weight"].dtype == np.float32


def test_named_parameters_children_modules_buffers_equal_torch():
    model, tmodel = build(nn), build(torch.nn)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tmodel.named_parameters()]
    assert [n for n, _ in model.named_children()] == [n for n, _ in tmodel.named_children()]
    assert [n for n, _ in model.named_modules()] == [n for n, _ in tmodel.named_modules()]
    assert [n for n, _ in model.named_buffers()] == [n for n, _ in tmodel.named_buffers()]
    assert [p.shape for p in model.parameters()] == [tuple(p.shape) for p in tmodel.parameters()]
    assert model.num_parameters() == sum(p.numel() for p in tmodel.parameters())


def test_parameter_order_is_deterministic():
    names = [[n for n, _ in build(nn).named_parameters()] for _ in range(3)]
    assert names[0] == names[1] == names[2]


def test_shared_module_counted_once_but_listed_under_each_name_in_state_dict():
    shared = nn.Linear(2, 2)
    model, tshared = nn.Sequential(shared, shared), torch.nn.Linear(2, 2)
    tmodel = torch.nn.Sequential(tshared, tshared)
    assert len(list(model.parameters())) == len(list(tmodel.parameters())) == 2
    assert list(model.state_dict()) == list(tmodel.state_dict())


def test_repr_equals_torch():
    assert repr(build(nn)) == repr(build(torch.nn))
    layers = [nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=2, groups=2, bias=False),
              nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
              nn.LeakyReLU(0.1), nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.Softmax(dim=1), nn.Identity(),
              nn.AvgPool2d(3, stride=2, padding=1), nn.LocalResponseNorm(5), nn.Dropout(0.2), nn.ReLU(inplace=True)]
    tlayers = [torch.nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=2, groups=2, bias=False),
               torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
               torch.nn.LeakyReLU(0.1), torch.nn.SiLU(), torch.nn.Sigmoid(), torch.nn.Tanh(), torch.nn.Softmax(dim=1),
               torch.nn.Identity(), torch.nn.AvgPool2d(3, stride=2, padding=1), torch.nn.LocalResponseNorm(5),
               torch.nn.Dropout(0.2), torch.nn.ReLU(inplace=True)]
    for ours, theirs in zip(layers, tlayers):
        assert repr(ours) == repr(theirs)


def test_train_eval_propagate_to_every_submodule():
    model = build(nn)
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_to_dtype_casts_parameters_buffers_and_grads_but_not_num_batches_tracked():
    model = build(nn)
    next(model.parameters()).grad = sn.tensor(np.ones((4, 3, 3, 3), dtype=np.float32))
    model.to(dtype=np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert next(model.parameters()).grad.dtype == np.float64
    for name, b in model.named_buffers():
        assert b.dtype == (np.int64 if name.endswith("num_batches_tracked") else np.float64), name
    with pytest.raises(TypeError, match="floating point"):
        model.to(dtype=np.int32)


@pytest.mark.gpu
def test_to_gpu_moves_parameters_and_buffers():
    model = build(nn).to("gpu")
    assert all(t.device == "gpu" for t in list(model.parameters()) + list(model.buffers()))
    assert model.state_dict()["stem.weight"].__class__ is np.ndarray  # state_dict is always on the host


def test_load_state_dict_roundtrip_and_returns_incompatible_keys():
    model, other = build(nn), build(nn)
    result = other.load_state_dict(model.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_load_state_dict_strict_names_every_problem_and_changes_nothing():
    model = build(nn)
    before = model.state_dict()
    state = build(nn).state_dict()
    del state["stem.bias"], state["block.bn.running_var"]
    state["head.9.weight"] = np.zeros(3)
    state["block.conv.weight"] = np.zeros((6, 4, 5, 5), dtype=np.float32)
    state["head.0.bias"] = np.zeros(7, dtype=np.float32)
    with pytest.raises(nn.StateDictError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    for key in ("stem.bias", "block.bn.running_var", "head.9.weight", "block.conv.weight", "head.0.bias"):
        assert key in message
    assert "(6, 4, 5, 5)" in message and "(6, 4, 3, 3)" in message
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_load_state_dict_non_strict_reports_but_loads_the_rest():
    model = build(nn)
    state = build(nn).state_dict()
    del state["stem.bias"]
    state["extra"] = np.zeros(1)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["stem.bias"] and unexpected == ["extra"]
    np.testing.assert_array_equal(model.state_dict()["stem.weight"], state["stem.weight"])


def test_load_state_dict_keeps_dtype_and_copies():
    model = nn.Linear(3, 2)
    weight = np.ones((2, 3), dtype=np.float64)
    model.load_state_dict({"weight": weight, "bias": np.zeros(2)})
    assert model.weight.dtype == np.float32
    weight[0, 0] = 5.0
    assert model.weight.data[0, 0] == 1.0


def test_forward_hooks_and_pre_hooks():
    layer = nn.Linear(3, 2)
    seen = []
    handle = layer.register_forward_hook(lambda m, args, out: seen.append((m, args[0].shape, out.shape)))
    pre = layer.register_forward_pre_hook(lambda m, args: (args[0] * 0.0,))
    x = sn.tensor(np.ones((4, 3), dtype=np.float32))
    out = layer(x)
    assert seen == [(layer, (4, 3), (4, 2))]
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(layer.bias.numpy(), (4, 2)))
    handle.remove()
    pre.remove()
    layer(x)
    assert len(seen) == 1
    replaced = layer.register_forward_hook(lambda m, args, out: out * 2.0)
    np.testing.assert_allclose(layer(x).numpy(), 2 * (x.numpy() @ layer.weight.numpy().T + layer.bias.numpy()),
                               rtol=1e-6)
    replaced.remove()


def test_zero_grad_and_requires_grad_():
    model = nn.Linear(2, 2)
    for p in model.parameters():
        p.grad = sn.tensor(np.ones(p.shape, dtype=p.dtype))
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())


def test_module_errors_are_clear():
    class Forgot(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match=r"must call super\(\).__init__\(\)"):
        Forgot()
    with pytest.raises(AttributeError, match="'Linear' has no attribute 'wieght'"):
        nn.Linear(1, 1).wieght
    with pytest.raises(TypeError, match="Parameter must be floating point"):
        nn.Parameter(np.arange(3))


# --------------------------------------------------------------------------- default init, statistically


def _kaiming_bound(fan_in):
    return 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)): gain sqrt(1/3) * sqrt(3) / sqrt(fan_in)


@pytest.mark.parametrize("make, tmake, fan_in", [
    (lambda: nn.Linear(300, 200), lambda: torch.nn.Linear(300, 200), 300),
    (lambda: nn.Conv2d(32, 64, 3), lambda: torch.nn.Conv2d(32, 64, 3), 32 * 9),
    (lambda: nn.Conv2d(32, 64, 3, groups=4), lambda: torch.nn.Conv2d(32, 64, 3, groups=4), 8 * 9),
    (lambda: nn.ConvTranspose2d(32, 64, 3), lambda: torch.nn.ConvTranspose2d(32, 64, 3), 64 * 9),
])
def test_default_init_is_torchs_distribution(make, tmake, fan_in):
    layer, tlayer = make(), tmake()
    bound = _kaiming_bound(fan_in)
    for name, tparam in tlayer.named_parameters():
        ours = getattr(layer, name).numpy().astype(np.float64).ravel()
        theirs = tparam.detach().numpy().astype(np.float64).ravel()
        assert ours.shape == theirs.shape
        # U(-bound, bound): inside the bound, reaching near it, mean 0 and std bound/sqrt(3)
        for values in (ours, theirs):
            assert np.abs(values).max() <= bound * (1 + 1e-6)
            assert np.abs(values).max() > bound * 0.9
            n = values.size
            assert abs(values.mean()) < 5 * bound / math.sqrt(3 * n)
            assert values.std() == pytest.approx(bound / math.sqrt(3), rel=6 / math.sqrt(n) + 0.02)
        # and the two frameworks agree on the spread
        assert ours.std() == pytest.approx(theirs.std(), rel=10 / math.sqrt(ours.size) + 0.03)


def test_init_is_seeded():
    sn.manual_seed(3)
    a = nn.Conv2d(3, 4, 3).weight.numpy()
    sn.manual_seed(3)
    b = nn.Conv2d(3, 4, 3).weight.numpy()
    np.testing.assert_array_equal(a, b)


def test_batchnorm_init_and_buffers():
    bn = nn.BatchNorm2d(5)
    np.testing.assert_array_equal(bn.weight.numpy(), np.ones(5))
    np.testing.assert_array_equal(bn.bias.numpy(), np.zeros(5))
    np.testing.assert_array_equal(bn.running_mean.numpy(), np.zeros(5))
    np.testing.assert_array_equal(bn.running_var.numpy(), np.ones(5))
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()


# --------------------------------------------------------------------------- every layer vs its torch twin


LAYERS = [
    ("Linear", lambda L: L.Linear(5, 3), (4, 5)),
    ("Linear-nobias-3d", lambda L: L.Linear(5, 3, bias=False), (2, 4, 5)),
    ("Conv2d", lambda L: L.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 7)),
    ("Conv2d-groups-dilation", lambda L: L.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias=False),
     (2, 4, 6, 5)),
    ("Conv2d-depthwise", lambda L: L.Conv2d(4, 4, 3, padding=1, groups=4), (2, 4, 5, 5)),
    ("Conv2d-same", lambda L: L.Conv2d(2, 3, 3, padding="same"), (1, 2, 5, 6)),
    ("ConvTranspose2d", lambda L: L.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1), (2, 4, 3, 3)),
    ("MaxPool2d", lambda L: L.MaxPool2d(3, stride=2, padding=1), (2, 3, 7, 7)),
    ("MaxPool2d-ceil", lambda L: L.MaxPool2d(2, ceil_mode=True), (1, 2, 5, 5)),
    ("AvgPool2d", lambda L: L.AvgPool2d(3, stride=2, padding=1), (2, 3, 6, 6)),
    ("AvgPool2d-exclude-pad", lambda L: L.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 2, 5, 5)),
    ("AdaptiveAvgPool2d", lambda L: L.AdaptiveAvgPool2d((2, 3)), (2, 3, 5, 7)),
    ("ReLU", lambda L: L.ReLU(), (3, 4)),
    ("LeakyReLU", lambda L: L.LeakyReLU(0.1), (3, 4)),
    ("Sigmoid", lambda L: L.Sigmoid(), (3, 4)),
    ("Tanh", lambda L: L.Tanh(), (3, 4)),
    ("SiLU", lambda L: L.SiLU(), (3, 4)),
    ("Softmax", lambda L: L.Softmax(dim=1), (3, 4)),
    ("LogSoftmax", lambda L: L.LogSoftmax(dim=1), (3, 4)),
    ("LocalResponseNorm", lambda L: L.LocalResponseNorm(3, alpha=0.1, beta=0.75, k=2.0), (2, 5, 3, 3)),
    ("Flatten", lambda L: L.Flatten(), (2, 3, 2, 2)),
    ("Identity", lambda L: L.Identity(), (2, 3)),
    ("Dropout-eval", lambda L: L.Dropout(0.3).eval(), (3, 4)),
    ("BatchNorm1d-train", lambda L: L.BatchNorm1d(4), (6, 4)),
    ("BatchNorm1d-3d-eval", lambda L: L.BatchNorm1d(4).eval(), (3, 4, 5)),
    ("BatchNorm2d-train", lambda L: L.BatchNorm2d(3), (4, 3, 2, 2)),
    ("BatchNorm2d-eval", lambda L: L.BatchNorm2d(3).eval(), (4, 3, 2, 2)),
    ("BatchNorm2d-no-affine-no-stats", lambda L: L.BatchNorm2d(3, affine=False, track_running_stats=False),
     (4, 3, 2, 2)),
]


@pytest.mark.parametrize("name, make, shape", LAYERS, ids=[entry[0] for entry in LAYERS])
def test_layer_matches_torch(name, make, shape):
    rng = np.random.default_rng(0)
    tlayer = make(torch.nn).double()
    layer = make(nn).double()
    with torch.no_grad():  # non-trivial weights and running stats, so eval mode is tested for real
        for key, value in tlayer.state_dict().items():
            if value.dtype.is_floating_point:
                value.copy_(torch.tensor(rng.uniform(0.5, 1.5, tuple(value.shape))))
    assert [(k, v.shape) for k, v in layer.state_dict().items()] == \
           [(k, tuple(v.shape)) for k, v in tlayer.state_dict().items()]
    copy_from_torch(layer, tlayer)
    compare_with_torch(layer, tlayer, [rng.standard_normal(shape)])
    for (key, p), (_, tp) in zip(layer.named_parameters(), tlayer.named_parameters()):
        assert_close(p.grad, tp.grad, what=key)
    for (key, b), (_, tb) in zip(layer.named_buffers(), tlayer.named_buffers()):  # BatchNorm running stats
        assert_close(b, tb, dict(rtol=1e-12, atol=0), what=key)


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Linear(3, 2), (2, 3)),
    (lambda: nn.Conv2d(2, 2, 3, stride=2, padding=1, groups=2), (1, 2, 4, 4)),
    (lambda: nn.BatchNorm2d(2), (3, 2, 2, 2)),
])
def test_layer_gradcheck(make, shape):
    layer = make().double()
    x = sn.tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)
    assert sn.gradcheck(layer, [x], params=layer.named_parameters())


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batchnorm_running_stats_after_several_steps_equal_torch(momentum):
    rng = np.random.default_rng(0)
    bn, tbn = nn.BatchNorm2d(3, momentum=momentum).double(), torch.nn.BatchNorm2d(3, momentum=momentum).double()
    for _ in range(5):
        x = rng.standard_normal((4, 3, 3, 3)) * 2 + 1
        bn(sn.tensor(x))
        tbn(torch.tensor(x))
    for key, value in tbn.state_dict().items():
        assert_close(bn.state_dict()[key], value, dict(rtol=1e-12, atol=0), what=key)
    assert bn.state_dict()["num_batches_tracked"] == 5
    bn.eval(), tbn.eval()
    x = rng.standard_normal((2, 3, 3, 3))
    with sn.no_grad():
        out = bn(sn.tensor(x))
    assert_close(out, tbn(torch.tensor(x)), dict(rtol=1e-12, atol=0))
    before = bn.state_dict()
    bn(sn.tensor(x))  # eval mode: statistics frozen
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_dropout_train_zeroes_and_rescales():
    drop = nn.Dropout(0.25)
    x = sn.tensor(np.ones((200, 100)))
    y = drop(x).numpy()
    kept = y != 0
    assert 0.72 < kept.mean() < 0.78
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


@pytest.mark.parametrize("make, tmake, target", [
    (lambda: nn.CrossEntropyLoss(), lambda: torch.nn.CrossEntropyLoss(), "class"),
    (lambda: nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1),
     lambda: torch.nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1), "class"),
    (lambda: nn.NLLLoss(ignore_index=1), lambda: torch.nn.NLLLoss(ignore_index=1), "class"),
    (lambda: nn.MSELoss(), lambda: torch.nn.MSELoss(), "value"),
])
def test_loss_modules_match_torch(make, tmake, target):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5) if target == "class" else rng.standard_normal((5, 4))
    compare_with_torch(make(), tmake(), [x, y], constants=(1,), tol=dict(rtol=1e-12, atol=0))  # tighter than TOL


def test_layer_input_errors_are_clear():
    with pytest.raises(ValueError, match=r"BatchNorm2d expects \(N, C, H, W\) input, got shape \(2, 3\)"):
        nn.BatchNorm2d(3)(sn.tensor(np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\) got input with 4 channels"):
        nn.BatchNorm2d(3)(sn.tensor(np.ones((2, 4, 2, 2))))
    with pytest.raises(ValueError, match="linear: input of shape"):
        nn.Linear(3, 2)(sn.tensor(np.ones((2, 4), dtype=np.float32)))
    with pytest.raises(TypeError, match="conv2d needs floating-point tensors, got dtype int64"):
        nn.Conv2d(1, 1, 1)(sn.tensor(np.ones((1, 1, 2, 2), dtype=np.int64)))
    with pytest.raises(ValueError, match="groups=3 must divide"):
        nn.Conv2d(4, 6, 3, groups=3)


def test_assigning_a_plain_tensor_over_a_parameter_is_refused():
    layer = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"cannot assign a Tensor as parameter 'weight'.*\.weight\.data"):
        layer.weight = sn.tensor(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="as child module '0'"):
        setattr(nn.Sequential(nn.ReLU()), "0", 3)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    layer.bias = None  # allowed, as in torch
    assert [n for n, _ in layer.named_parameters()] == ["weight"]


def test_init_functions_follow_torchs_formulas():
    for name in ("linear", "conv2d", "sigmoid", "tanh", "relu", "selu", "leaky_relu"):
        assert nn.init.calculate_gain(name) == torch.nn.init.calculate_gain(name)
    assert nn.init.calculate_gain("leaky_relu", 0.2) == torch.nn.init.calculate_gain("leaky_relu", 0.2)
    w = nn.Parameter(np.zeros((256, 64, 3, 3)))
    fan_in, fan_out = 64 * 9, 256 * 9
    nn.init.xavier_uniform_(w)
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(w.numpy()).max() <= bound and np.abs(w.numpy()).max() > 0.99 * bound
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert w.numpy().std() == pytest.approx(math.sqrt(2 / fan_out), rel=0.01)
    nn.init.trunc_normal_(w, std=0.02, a=-0.04, b=0.04)
    assert np.abs(w.numpy()).max() <= 0.04
    assert w.dtype == np.float64
