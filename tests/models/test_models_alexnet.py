"""AlexNet (Krizhevsky et al. 2012) and ZFNet (Zeiler & Fergus 2013): exact counts, the two-GPU
split as groups=2, LRN constants, sizes per layer, forward against torch, gradients, dropout."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import scratchnet as sn
from conftest import gradcheck_model
from scratchnet.models import get_model
from scratchnet.nn import Conv2d, Dropout, LocalResponseNorm, MaxPool2d

TINY = {"channels": (4, 4, 6, 6, 4), "hidden": 8, "num_classes": 5}  # even widths: groups=2 still splits


def conv_params(c_in, c_out, k, groups=1):
    return c_out * (c_in // groups) * k * k + c_out


def fc_params(n_in, n_out):
    return n_in * n_out + n_out


def alexnet_count(groups):
    """Sec. 3.5 / Fig. 2, layer by layer: conv2, conv4, conv5 read only their own GPU's half."""
    return (conv_params(3, 96, 11) + conv_params(96, 256, 5, groups) + conv_params(256, 384, 3)
            + conv_params(384, 384, 3, groups) + conv_params(384, 256, 3, groups)
            + fc_params(256 * 6 * 6, 4096) + fc_params(4096, 4096) + fc_params(4096, 1000))


def zfnet_count(c3, c4, c5):
    """Fig. 3 (and Table 1's wider layers 3-5)."""
    return (conv_params(3, 96, 7) + conv_params(96, 256, 5) + conv_params(256, c3, 3) + conv_params(c3, c4, 3)
            + conv_params(c4, c5, 3) + fc_params(c5 * 6 * 6, 4096) + fc_params(4096, 4096) + fc_params(4096, 1000))


def test_alexnet_counts(skip_random_init):
    two_gpu = get_model("alexnet")
    assert two_gpu.num_parameters() == alexnet_count(2) == 60_965_224  # the paper's "60 million"
    assert get_model("alexnet", groups=1).num_parameters() == alexnet_count(1) == 62_378_344
    shapes = {k: v.shape for k, v in two_gpu.state_dict().items() if v.ndim == 4}
    assert list(shapes.values()) == [(96, 3, 11, 11), (256, 48, 5, 5), (384, 256, 3, 3), (384, 192, 3, 3),
                                     (256, 192, 3, 3)]
    assert two_gpu.input_size == (3, 227, 227)


def test_zfnet_counts(skip_random_init):
    assert get_model("zfnet").num_parameters() == zfnet_count(384, 384, 256) == 62_357_608
    assert get_model("zfnet", wide=True).num_parameters() == zfnet_count(512, 1024, 512) == 107_627_624
    assert get_model("zfnet").input_size == (3, 224, 224)


def test_alexnet_layers_and_lrn_constants():
    model = get_model("alexnet", **TINY)
    lrns = [m for m in model.features if isinstance(m, LocalResponseNorm)]
    # paper: k=2, n=5, alpha=1e-4, beta=0.75; torch's alpha is divided by the size
    assert [(m.size, m.alpha, m.beta, m.k) for m in lrns] == [(5, 5e-4, 0.75, 2.0)] * 2
    pools = [m for m in model.features if isinstance(m, MaxPool2d)]
    assert [(m.kernel_size, m.stride) for m in pools] == [(3, 2)] * 3  # overlapping pooling (Sec. 3.4)
    assert [m.groups for m in model.features if isinstance(m, Conv2d)] == [1, 2, 1, 2, 2]
    assert [m.p for m in model.classifier if isinstance(m, Dropout)] == [0.5, 0.5]


@pytest.mark.parametrize("name,sizes", [("alexnet", [55, 27, 27, 13, 13, 13, 13, 6]),
                                        ("zfnet", [110, 55, 26, 13, 13, 13, 13, 6])])
def test_feature_map_sizes_at_native_input(rng, name, sizes):
    model = get_model(name, **TINY)
    seen = []
    for m in model.features:
        if isinstance(m, (Conv2d, MaxPool2d)):
            m.register_forward_hook(lambda module, args, out: seen.append(out.shape[-1]))
    out = model(sn.tensor(rng.standard_normal((1,) + model.input_size).astype(np.float32)))
    assert seen == sizes and out.shape == (1, 5)


def torch_forward(model, x, paper_order, strides, paddings, groups, ceil, pool=3):
    """The same five conv + three FC layers written with torch ops from the model's weights (eval)."""
    p = [torch.tensor(v) for v in model.state_dict().values()]
    convs, fcs = [(p[i], p[i + 1]) for i in range(0, 10, 2)], [(p[i], p[i + 1]) for i in range(10, 16, 2)]
    a = torch.tensor(x)
    for i, (w, b) in enumerate(convs):
        a = TF.relu(TF.conv2d(a, w, b, strides[i], paddings[i], groups=groups[i]))
        for op in paper_order[i]:
            a = (TF.local_response_norm(a, 5, alpha=5e-4, beta=0.75, k=2.0) if op == "lrn"
                 else TF.max_pool2d(a, pool, 2, ceil_mode=ceil))
    a = a.flatten(1)
    a = TF.relu(TF.linear(a, *fcs[0]))
    a = TF.relu(TF.linear(a, *fcs[1]))
    return TF.linear(a, *fcs[2]).numpy()


def test_alexnet_forward_matches_torch(rng, device):
    model = get_model("alexnet", **TINY).double().eval()
    x = rng.standard_normal((2, 3, 227, 227))
    expected = torch_forward(model, x, [("lrn", "pool"), ("lrn", "pool"), (), (), ("pool",)],
                             [4, 1, 1, 1, 1], [0, 2, 1, 1, 1], [1, 2, 1, 2, 2], ceil=False)
    out = model.to(device)(sn.tensor(x, device=device)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


def test_zfnet_forward_matches_torch(rng):
    model = get_model("zfnet", **TINY).double().eval()
    x = rng.standard_normal((1, 3, 224, 224))
    expected = torch_forward(model, x, [("pool", "lrn"), ("pool", "lrn"), (), (), ("pool",)],
                             [2, 2, 1, 1, 1], [1, 0, 1, 1, 1], [1] * 5, ceil=True)
    np.testing.assert_allclose(model(sn.tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,options,training", [("alexnet", {}, True), ("alexnet", {"groups": 1}, False),
                                                   ("zfnet", {}, True)])
def test_gradcheck_tiny(rng, name, options, training):
    model = get_model(name, **TINY, **options).double().train(training)
    x = sn.tensor(rng.standard_normal((2,) + model.input_size), requires_grad=True)

    assert gradcheck_model(model, x, max_elements=0)


def test_dropout_only_in_training(rng):
    model = get_model("alexnet", **TINY).double()
    x = sn.tensor(rng.standard_normal((2, 3, 227, 227)))
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    model.train()
    sn.manual_seed(1)
    first = model(x).numpy()
    sn.manual_seed(2)
    assert not np.allclose(first, model(x).numpy())


def test_paper_initialisation():
    model = get_model("alexnet", channels=(8, 8, 8, 8, 8), hidden=16)
    biases = [m.bias.numpy() for m in list(model.features) + list(model.classifier) if hasattr(m, "bias")]
    # Sec. 5: biases 1 in conv2, conv4, conv5 and the hidden FC layers, 0 elsewhere
    assert [float(b.mean()) for b in biases] == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert abs(float(model.classifier[0].weight.numpy().std()) - 0.01) < 0.002
    with pytest.raises(ValueError, match="init_weights"):
        get_model("alexnet", init_weights="he")


# --------------------------------------------------------------------------- the Sec. 3.3-3.4 switches


@pytest.mark.parametrize("lrn, overlapping", [(True, False), (False, True), (False, False)])
def test_lrn_and_overlapping_pool_switches(rng, lrn, overlapping):
    """Sec. 3.4: s = z = 2 "produces output of equivalent dimensions" (55 -> 27 -> 13 -> 6); no parameter
    changes; the forward equals the same layers in torch."""
    model = get_model("alexnet", lrn=lrn, overlapping_pool=overlapping, **TINY).double().eval()
    assert model.num_parameters() == get_model("alexnet", **TINY).num_parameters()
    assert sum(isinstance(m, LocalResponseNorm) for m in model.features) == (2 if lrn else 0)
    pools = [m for m in model.features if isinstance(m, MaxPool2d)]
    assert {(m.kernel_size, m.stride) for m in pools} == {(3 if overlapping else 2, 2)}
    x = rng.standard_normal((2, 3, 227, 227))
    order = [("lrn", "pool"), ("lrn", "pool"), (), (), ("pool",)]
    if not lrn:
        order = [tuple(op for op in ops if op != "lrn") for ops in order]
    expected = torch_forward(model, x, order, [4, 1, 1, 1, 1], [0, 2, 1, 1, 1], [1, 2, 1, 2, 2], ceil=False,
                             pool=3 if overlapping else 2)
    np.testing.assert_allclose(model(sn.tensor(x)).numpy(), expected, rtol=1e-10, atol=1e-12)
    seen = []
    for m in pools:
        m.register_forward_hook(lambda module, args, out: seen.append(out.shape[-1]))
    model(sn.tensor(x))
    assert seen == [27, 13, 6]


def test_switched_off_gradcheck(rng):
    model = get_model("alexnet", lrn=False, overlapping_pool=False, **TINY).double().train()
    x = sn.tensor(rng.standard_normal((2,) + model.input_size), requires_grad=True)
    assert gradcheck_model(model, x, max_elements=0)
