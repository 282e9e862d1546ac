"""LeNet-5, classic (LeCun et al. 1998) and modern: counts, the C3 table, the trainable
subsampling, the RBF output and its loss, forward against torch, gradients."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
from scratchnet.models import get_model
from scratchnet.models.lenet import (EuclideanRBF, LeNet5, PartialConv2d, ScaledTanh, TrainableSubsampling,
                                     connection_table, digit_prototypes, rbf_loss)
from scratchnet.nn import Linear

# Sec. II.B of the paper: trainable parameters per layer of LeNet-5
PAPER_PARAMS = {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48120, "f6": 10164}


def layer_counts(model):
    counts = {}
    for name, p in model.named_parameters():
        layer = name.split(".")[0]
        counts[layer] = counts.get(layer, 0) + p.size
    return counts


def test_classic_parameter_counts_match_the_paper():
    model = get_model("lenet5_classic")
    assert layer_counts(model) == PAPER_PARAMS
    assert model.num_parameters() == sum(PAPER_PARAMS.values()) == 60000
    assert model.input_size == (1, 32, 32)


def test_modern_parameter_count_and_names():
    model = get_model("lenet")
    assert model.variant == "modern"
    # C1 6@5x5, C3 16@6x5x5 (full), C5 120@16x5x5, F6 120->84, output 84->10, each with biases
    expected = (6 * 25 + 6) + (16 * 6 * 25 + 16) + (120 * 16 * 25 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert model.num_parameters() == expected == 61706
    assert get_model("lenet5", variant="classic").variant == "classic"
    assert get_model("lenet5", num_classes=7, in_channels=3).output.weight.shape == (7, 84)


def test_connection_table_is_table_one():
    table = connection_table()  # [C3 map, S2 map]
    assert table.shape == (16, 6) and table.sum() == 60
    # Sec. II.B: the first six C3 maps take 3 contiguous S2 maps, the next six 4 contiguous,
    # the next three 4 discontinuous ones, the last all six
    for j in range(6):
        assert set(np.flatnonzero(table[j])) == {j % 6, (j + 1) % 6, (j + 2) % 6}
    for j in range(6, 12):
        assert set(np.flatnonzero(table[j])) == {(j - 6 + i) % 6 for i in range(4)}
    assert [set(np.flatnonzero(table[j])) for j in (12, 13, 14)] == [{0, 1, 3, 4}, {1, 2, 4, 5}, {0, 2, 3, 5}]
    assert table[15].all()


def test_partial_conv_matches_masked_dense_conv_in_torch(rng):
    table = connection_table()
    layer = PartialConv2d(table, 5).double()
    layer.weight.data = rng.standard_normal(layer.weight.shape)
    layer.bias.data = rng.standard_normal(16)
    x = rng.standard_normal((2, 6, 14, 14))
    # independent dense kernel: connection k of the row-major table gets weight[k]
    dense = np.zeros((16, 6, 5, 5))
    for k, (out_map, in_map) in enumerate(np.argwhere(table)):
        dense[out_map, in_map] = layer.weight.data[k]
    expected = TF.conv2d(torch.tensor(x), torch.tensor(dense), torch.tensor(layer.bias.data)).numpy()
    np.testing.assert_allclose(layer(sn.tensor(x)).numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(layer.dense_weight().numpy()[~table], 0.0)


def test_partial_conv_gradcheck(rng):
    layer = PartialConv2d(connection_table(), kernel_size=2).double()  # small kernel: every entry checked
    layer.weight.data = rng.standard_normal(layer.weight.shape)
    x = sn.tensor(rng.standard_normal((1, 6, 3, 3)), requires_grad=True)
    assert sn.gradcheck(layer, [x], params=list(layer.parameters()))


def test_trainable_subsampling_forward_and_gradcheck(rng):
    layer = TrainableSubsampling(3).double()
    layer.weight.data, layer.bias.data = rng.standard_normal(3), rng.standard_normal(3)
    x = rng.standard_normal((2, 3, 4, 6))
    sums = x.reshape(2, 3, 2, 2, 3, 2).sum(axis=(3, 5))
    expected = sums * layer.weight.data[None, :, None, None] + layer.bias.data[None, :, None, None]
    np.testing.assert_allclose(layer(sn.tensor(x)).numpy(), expected, rtol=1e-12)
    xt = sn.tensor(x, requires_grad=True)
    assert sn.gradcheck(layer, [xt], params=list(layer.parameters()))
    with pytest.raises(ValueError, match="even H and W"):
        layer(sn.tensor(rng.standard_normal((1, 3, 5, 4))))


def test_scaled_tanh_is_the_papers_squashing_function(rng):
    x = rng.standard_normal(7)
    np.testing.assert_allclose(ScaledTanh()(sn.tensor(x)).numpy(), 1.7159 * np.tanh(2 / 3 * x), rtol=1e-12)
    assert abs(1.7159 * np.tanh(2 / 3) - 1) < 1e-4  # f(1) = 1: the point of A and S


def test_rbf_codes_and_distances(rng):
    codes = digit_prototypes()
    assert codes.shape == (10, 84) and set(np.unique(codes)) == {-1.0, 1.0}
    assert len({row.tobytes() for row in codes}) == 10
    model = get_model("lenet5_classic").double()
    x = rng.standard_normal((3, 84))
    expected = ((x[:, None, :] - codes[None]) ** 2).sum(-1)
    np.testing.assert_allclose(model.output(sn.tensor(x)).numpy(), expected, rtol=1e-12)
    assert model.num_parameters() == 60000  # the codes are a buffer, not parameters
    assert model.state_dict()["output.prototypes"].shape == (10, 84)


@pytest.mark.parametrize("j", [None, 2.5])
def test_rbf_loss_is_equation_nine(rng, j):
    distances = rng.uniform(0, 5, (4, 10))
    target = np.array([0, 3, 9, 3])
    extra = 0.0 if j is None else np.exp(-j)
    expected = np.mean(distances[np.arange(4), target] + np.log(extra + np.exp(-distances).sum(1)))
    d = sn.tensor(distances, requires_grad=True)
    assert abs(rbf_loss(d, sn.tensor(target), j=j).item() - expected) < 1e-12
    assert sn.gradcheck(lambda d: rbf_loss(d, sn.tensor(target), j=j), [d])


def torch_classic_forward(model, x):
    """LeNet-5 classic written independently with torch ops from the model's weights."""
    p = {k: torch.tensor(v) for k, v in model.state_dict().items()}
    squash = lambda a: 1.7159 * torch.tanh(a * 2 / 3)  # noqa: E731

    def subsample(a, name):
        coefficient, bias = p[name + ".weight"].view(1, -1, 1, 1), p[name + ".bias"].view(1, -1, 1, 1)
        return squash(4 * TF.avg_pool2d(a, 2) * coefficient + bias)

    dense = torch.zeros(16, 6, 5, 5, dtype=torch.float64)
    dense[torch.tensor(connection_table())] = p["c3.weight"]
    a = subsample(squash(TF.conv2d(torch.tensor(x), p["c1.weight"], p["c1.bias"])), "s2")
    a = subsample(squash(TF.conv2d(a, dense, p["c3.bias"])), "s4")
    a = squash(TF.conv2d(a, p["c5.weight"], p["c5.bias"])).flatten(1)
    a = squash(TF.linear(a, p["f6.weight"], p["f6.bias"]))
    return ((a[:, None, :] - p["output.prototypes"][None]) ** 2).sum(-1).numpy()


def test_classic_forward_matches_torch(rng, device):
    model = get_model("lenet5_classic").double()
    x = rng.standard_normal((2, 1, 32, 32))
    expected = torch_classic_forward(model, x)
    out = model.to(device)(sn.tensor(x, device=device))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-10)
    scores = model.scores(out)
    np.testing.assert_array_equal(scores.argmax(1).numpy(), expected.argmin(1))


@pytest.mark.parametrize("variant,options", [("classic", {}), ("modern", {}),
                                             ("modern", {"activation": "tanh", "pool": "avg"})])
def test_gradcheck_whole_net(rng, variant, options):
    model = LeNet5(10, variant=variant, **options).double()
    x = sn.tensor(rng.standard_normal((2, 1, 32, 32)), requires_grad=True)
    target = sn.tensor(np.array([1, 7]))
    assert sn.gradcheck(lambda x: model(x), [x], params=list(model.parameters()), max_elements=0)
    assert sn.gradcheck(lambda x: model.loss(model(x), target), [x], params=list(model.parameters()),
                        max_elements=0)


def test_modern_loss_is_cross_entropy(rng):
    model = get_model("lenet5").double()
    x = rng.standard_normal((3, 1, 32, 32))
    logits = model(sn.tensor(x))
    target = np.array([0, 4, 9])
    expected = TF.cross_entropy(torch.tensor(logits.numpy()), torch.tensor(target)).item()
    assert abs(model.loss(logits, sn.tensor(target)).item() - expected) < 1e-12
    assert model.scores(logits) is logits


def test_classic_paper_initialisation():
    model = get_model("lenet5_classic")
    assert np.abs(model.c1.weight.numpy()).max() <= 2.4 / 25
    assert np.abs(model.f6.weight.numpy()).max() <= 2.4 / 120
    fan_in = connection_table().sum(1) * 25  # 75, 100 or 150 per C3 map
    bound = np.repeat(2.4 / fan_in, connection_table().sum(1))
    assert (np.abs(model.c3.weight.numpy()).max(axis=(1, 2)) <= bound + 1e-7).all()
    assert np.abs(model.c3.weight.numpy()[:18]).max() > 2.4 / 150  # 3-input maps: wider bound than the full map


def test_summary_counts_only_the_connected_c3_kernels():
    from scratchnet.summary import summary
    result = summary(get_model("lenet5_classic"), print_table=False)
    # C1 28x28x6x25, C3 10x10x(60 connections x 25), C5 120x400, F6 84x120, RBF 10x84
    assert result.total_macs == 117_600 + 150_000 + 48_000 + 10_080 + 840


def test_state_dict_round_trip(rng):
    source, target = get_model("lenet5_classic"), get_model("lenet5_classic")
    target.load_state_dict(source.state_dict())
    x = sn.tensor(rng.standard_normal((2, 1, 32, 32)).astype(np.float32))
    np.testing.assert_array_equal(source(x).numpy(), target(x).numpy())
    assert "c3.kernel_index" not in source.state_dict()  # the table is structure, not state


def test_bad_input_and_options_fail_clearly(rng):
    with pytest.raises(ValueError, match="pad 28x28"):
        get_model("lenet5")(sn.tensor(rng.standard_normal((1, 1, 28, 28))))
    with pytest.raises(ValueError, match="variant"):
        get_model("lenet5", variant="1989")
    with pytest.raises(ValueError, match="num_classes=11"):
        get_model("lenet5_classic", num_classes=11)


# --------------------------------------------------------------------------- the output switch: RBF or softmax


def test_output_switch_counts_and_layers():
    classic_linear, modern_rbf = get_model("lenet5_classic", output="linear"), get_model("lenet5", output="rbf")
    assert classic_linear.num_parameters() == 60_000 + 84 * 10 + 10 == 60_850
    assert modern_rbf.num_parameters() == 61_706 - (84 * 10 + 10) == 60_856
    assert isinstance(classic_linear.output, Linear) and isinstance(modern_rbf.output, EuclideanRBF)
    assert np.abs(classic_linear.output.weight.numpy()).max() <= 2.4 / 84  # the paper's init, fan-in 84
    assert "output='linear'" in repr(classic_linear) and "output='rbf'" in repr(modern_rbf)
    assert "output=" not in repr(get_model("lenet5_classic"))
    with pytest.raises(ValueError, match="output"):
        get_model("lenet5", output="softmax")
    with pytest.raises(ValueError, match="num_classes=12"):
        get_model("lenet5", output="rbf", num_classes=12)


def test_output_switch_sets_loss_and_scores(rng):
    """The linear head trains with cross-entropy and scores with its logits; the RBF head with Eq. (9) and
    negated distances, whatever the body."""
    x = sn.tensor(rng.standard_normal((3, 1, 32, 32)))
    target = np.array([0, 4, 9])
    for model in (get_model("lenet5_classic", output="linear").double(), get_model("lenet5").double()):
        logits = model(x)
        expected = TF.cross_entropy(torch.tensor(logits.numpy()), torch.tensor(target)).item()
        assert abs(model.loss(logits, sn.tensor(target)).item() - expected) < 1e-12
        assert model.scores(logits) is logits
    model = get_model("lenet5", output="rbf", activation="tanh").double()
    distances = model(x)
    assert abs(model.loss(distances, sn.tensor(target)).item() - rbf_loss(distances, sn.tensor(target)).item()) == 0
    np.testing.assert_array_equal(model.scores(distances).numpy(), -distances.numpy())


@pytest.mark.parametrize("variant, output", [("classic", "linear"), ("modern", "rbf")])
def test_output_switch_gradcheck(rng, variant, output):
    model = LeNet5(10, variant=variant, output=output).double()
    x = sn.tensor(rng.standard_normal((2, 1, 32, 32)), requires_grad=True)
    target = sn.tensor(np.array([1, 7]))
    assert sn.gradcheck(lambda x: model.loss(model(x), target), [x], params=list(model.parameters()),
                        max_elements=0)
