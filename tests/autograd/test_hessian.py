"""Whole models differentiated twice: a Hessian-vector product of resnet20 against torch's, and the numeric
second-derivative check of a small CNN that has one of each layer kind."""
import numpy as np
import torch

import scratchnet as sn
import scratchnet.nn.functional as F
from conftest import assert_close, torch_resnet
from scratchnet import nn
from scratchnet.models import get_model


def hessian_vector_product(loss, params, vectors):
    """H v by Pearlmutter's trick: the gradient of (grad . v), the gradient taken with create_graph=True."""
    grads = sn.autograd.grad(loss, params, create_graph=True)
    return grads, sn.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vectors)), params)


def test_resnet20_hessian_vector_product_matches_torch(rng):
    model = get_model("resnet20", num_classes=4).double()  # training mode: batch statistics in every BN
    x, target = rng.standard_normal((2, 3, 8, 8)), np.array([1, 3])
    names = [name for name, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    vectors = [rng.standard_normal(p.shape) for p in params]
    state = model.state_dict()
    twin = {k: torch.tensor(v, requires_grad=k in names) for k, v in state.items()}

    loss = F.cross_entropy(model(sn.tensor(x)), sn.tensor(target))
    grads, hv = hessian_vector_product(loss, params, [sn.tensor(v) for v in vectors])
    twin_loss = torch.nn.functional.cross_entropy(
        torch_resnet(model, torch.tensor(x), True, "basic", shortcut="A", cifar=True, sd=twin), torch.tensor(target))
    twin_params = [twin[name] for name in names]
    twin_grads = torch.autograd.grad(twin_loss, twin_params, create_graph=True)
    twin_hv = torch.autograd.grad(sum((g * torch.tensor(v)).sum() for g, v in zip(twin_grads, vectors)),
                                  twin_params)

    assert_close(loss, twin_loss, what="loss")
    # an entry of H v sums products over the whole network: entries of ~0.4 among ones of ~200 differ from torch's
    # by 1.4e-12 (one of 432 in conv1.weight beyond TOL's 1e-12), so the 1e-10
    tol = dict(rtol=1e-10, atol=1e-10)
    for name, g, g_ref, h, h_ref in zip(names, grads, twin_grads, hv, twin_hv):
        assert_close(g, g_ref, tol, f"gradient of {name}")
        assert_close(h, h_ref, tol, f"H v for {name}")
    assert max(float(np.abs(h.numpy()).max()) for h in hv) > 1e-3  # a product that is not trivially zero


def test_a_small_cnn_passes_gradgradcheck(rng):
    """One of each kind: conv (grouped), batch norm in training, ReLU, max and average pooling, LRN, linear,
    SiLU, dropout (reseeded per call), cross-entropy: second derivatives w.r.t. the input and every weight."""
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, groups=2), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.LocalResponseNorm(3), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(4, 3), nn.SiLU(), nn.Dropout(0.2)).double()
    x = sn.tensor(rng.standard_normal((3, 2, 4, 4)), requires_grad=True)
    target = sn.tensor(np.array([0, 2, 1]))

    def loss(x):
        sn.manual_seed(1)
        return F.cross_entropy(model(x), target)
    assert sn.gradgradcheck(loss, [x], params=model.named_parameters(), max_elements=0)
