"""Second and third derivatives of F.deform_conv2d (v1 and v2) with respect to all five inputs.

torchvision's deform_conv2d has no double backward, so the oracles are numeric (sn.gradgradcheck) and torch's
own autograd through the same sampling composed of torch ops (floor, gather, where, einsum), which torch
differentiates as often as asked. The first derivatives of the differentiable backward must also equal the
raw-array backward's on every case of the torchvision fixture (tests/functional/test_deform.py), on both routes.

Bilinear interpolation has kinks where a sample position crosses an integer (and the image's borders are
integers too), where no finite difference and no second derivative is meaningful: the offsets of the
derivative checks keep their fractional parts in [0.2, 0.8], and every tap's grid position is an integer, so
no sample sits on a kink or on a border.
"""
import json

import numpy as np
import pytest
import torch

import scratchnet as sn
import scratchnet.nn.functional as F
from conftest import FIXTURES, assert_close
from scratchnet.functional import conv_routes

REFERENCE = np.load(FIXTURES / "deform_reference.npz")
CASES = json.loads(str(REFERENCE["cases"]))
INPUTS = ("x", "offset", "weight", "mask", "bias")
GEOMETRY = dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1))  # per-axis, so no axis is mistaken for the other


def deform(x, offset, weight, mask=None, bias=None, **geometry):
    return F.deform_conv2d(x, offset, weight, bias, mask=mask, **geometry)


def tiny_inputs(rng, mask, x_shape=(1, 4, 4, 5), c_out=4, kernel=(2, 2), groups=2, offset_groups=2):
    """Inputs for deform(..., **GEOMETRY) in INPUTS order (no mask for v1), offsets away from the kinks."""
    n, c, h, w = x_shape
    out = tuple((x_shape[2 + a] + 2 * GEOMETRY["padding"][a] - GEOMETRY["dilation"][a] * (kernel[a] - 1) - 1)
                // GEOMETRY["stride"][a] + 1 for a in range(2))
    taps = kernel[0] * kernel[1]
    offset_shape = (n, 2 * offset_groups * taps) + out
    offset = rng.integers(-2, 2, offset_shape) + rng.uniform(0.2, 0.8, offset_shape)  # fractional parts off 0 and 1
    arrays = [rng.standard_normal(x_shape), offset, rng.standard_normal((c_out, c // groups) + kernel)]
    if mask:
        arrays.append(rng.uniform(0, 1, (n, offset_groups * taps) + out))
    return arrays + [rng.standard_normal(c_out)]


def v1(x, offset, weight, bias):
    return deform(x, offset, weight, bias=bias, **GEOMETRY)


def v2(x, offset, weight, mask, bias):
    return deform(x, offset, weight, mask, bias, **GEOMETRY)


def torch_deform_conv2d(x, offset, weight, mask=None, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """torchvision's forward from torch ops: the floors held constant, the four neighbours gathered, 0 outside the
    image and outside -1 < y < H, -1 < x < W. Away from the kinks its derivatives of every order are torch's."""
    n, c, h, w = x.shape
    c_out, c_group, kh, kw = weight.shape
    oh, ow = offset.shape[2:]
    taps, offset_groups, groups = kh * kw, offset.shape[1] // (2 * kh * kw), c // c_group
    pairs = offset.reshape(n, offset_groups, taps, 2, oh, ow)
    tap = torch.arange(taps)
    grid_y = (tap // kw * dilation[0])[:, None, None] + (torch.arange(oh) * stride[0] - padding[0])[:, None]
    grid_x = (tap % kw * dilation[1])[:, None, None] + torch.arange(ow) * stride[1] - padding[1]
    y, x_pos = grid_y + pairs[:, :, :, 0], grid_x + pairs[:, :, :, 1]  # (N, offset groups, taps, oh, ow)
    y0, x0 = y.detach().floor(), x_pos.detach().floor()
    ly, lx = y - y0, x_pos - x0
    inside = (y > -1) & (y < h) & (x_pos > -1) & (x_pos < w)
    planes = x.reshape(n, offset_groups, c // offset_groups, h * w)
    sample = 0
    for cy, cx, bilinear in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                             (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        valid = inside & (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
        index = torch.where(valid, cy * w + cx, 0).long().reshape(n, offset_groups, 1, taps * oh * ow)
        value = torch.gather(planes, 3, index.expand(-1, -1, c // offset_groups, -1)).reshape(
            n, offset_groups, c // offset_groups, taps, oh, ow)
        sample = sample + torch.where(valid[:, :, None], bilinear[:, :, None] * value, 0)
    if mask is not None:
        sample = sample * mask.reshape(n, offset_groups, 1, taps, oh, ow)
    columns = sample.reshape(n, groups, c_group * taps, oh * ow)
    out = torch.einsum("gok,ngkp->ngop", weight.reshape(groups, c_out // groups, -1), columns)
    out = out.reshape(n, c_out, oh, ow)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


# --------------------------------------------------------------------------- first derivatives: raw = differentiable


@pytest.mark.parametrize("algo", ["reference", "auto"])  # the NumPy sampling; the Numba kernels
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_the_differentiable_backward_equals_the_raw_backward(case, algo):
    """Every fixture case (offset groups, groups, per-axis stride/padding/dilation, with and without mask and
    bias, samples outside the image, on integers and exactly on the borders -1 and H, an empty batch)."""
    name = case["name"]
    tensors = [sn.tensor(REFERENCE[f"{name}__{k}"], requires_grad=True) for k in INPUTS if f"{name}__{k}" in REFERENCE]
    keys = [k for k in INPUTS if f"{name}__{k}" in REFERENCE]
    given = dict(zip(keys, tensors))
    previous = conv_routes.get_conv_algo()
    conv_routes.set_conv_algo(algo)
    try:
        y = deform(given["x"], given["offset"], given["weight"], given.get("mask"), given.get("bias"),
                   stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    finally:
        conv_routes.set_conv_algo(previous)
    gy = sn.tensor(REFERENCE[f"{name}__gy"], requires_grad=True)  # so that every gradient carries a graph
    raw = sn.autograd.grad(y, tensors, gy, retain_graph=True)
    differentiable = sn.autograd.grad(y, tensors, gy, create_graph=True)
    for key, a, b in zip(keys, raw, differentiable):
        assert b.requires_grad, f"the gradient of {key} carries no graph"
        assert_close(b, a.numpy(), what=f"gradient of {key}")  # float64: TOL, 1e-12
        assert_close(b, REFERENCE[f"{name}__grad_{key}"], what=f"gradient of {key} against torchvision")


def test_only_the_gradients_asked_for_are_built(rng):
    x, offset, weight, mask, bias = tiny_inputs(rng, mask=True)
    x, weight = sn.tensor(x, requires_grad=True), sn.tensor(weight, requires_grad=True)
    y = v2(x, sn.tensor(offset), weight, sn.tensor(mask), sn.tensor(bias))
    fn = y.creator
    grads = fn.differentiable_backward(sn.tensor(rng.standard_normal(y.shape)))
    assert [g is not None for g in grads] == [True, False, True, False, False]


# --------------------------------------------------------------------------- second and third derivatives


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_deform_conv2d_gradgradcheck(version, rng):
    arrays = tiny_inputs(rng, mask=version == "v2")
    assert sn.gradgradcheck({"v1": v1, "v2": v2}[version], [sn.tensor(a, requires_grad=True) for a in arrays])


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("order", [2, 3])
def test_deform_conv2d_derivatives_equal_torch_autograd_of_the_composition(version, order, compare_double_backward,
                                                                           rng):
    def torch_v1(x, offset, weight, bias):
        return torch_deform_conv2d(x, offset, weight, None, bias, **GEOMETRY)

    def torch_v2(x, offset, weight, mask, bias):
        return torch_deform_conv2d(x, offset, weight, mask, bias, **GEOMETRY)
    ours, theirs = {"v1": (v1, torch_v1), "v2": (v2, torch_v2)}[version]
    compare_double_backward(ours, theirs, tiny_inputs(rng, mask=version == "v2"), order=order, gradgradcheck=False)


def test_the_torch_composition_is_torchvisions_forward():
    """The oracle above is worth its name: on the fixture's cases it gives torchvision's output to 1e-12."""
    for case in CASES:
        name = case["name"]
        given = {k: torch.tensor(REFERENCE[f"{name}__{k}"]) for k in INPUTS if f"{name}__{k}" in REFERENCE}
        y = torch_deform_conv2d(given["x"], given["offset"], given["weight"], given.get("mask"), given.get("bias"),
                                tuple(case["stride"]), tuple(case["padding"]), tuple(case["dilation"]))
        assert_close(y.numpy(), REFERENCE[f"{name}__y"], what=f"{name}: output")


@pytest.mark.parametrize("block", ["DeformConv2dPack", "ModulatedDeformConv2dPack"])
def test_the_deformable_blocks_gradgradcheck(block, rng):
    """The blocks whose offsets (and mask, through a sigmoid) a convolution predicts from the input: second
    derivatives with respect to the input and every parameter (a gradient penalty's path). The offset branch
    starts at zero, which puts every sample on an integer: its weights are set small and its bias to 0.5, so
    the offsets stay near 0.5, away from the kinks."""
    sn.manual_seed(0)
    layer = getattr(sn.nn, block)(2, 3, 3, padding=1).double()
    with sn.no_grad():
        layer.conv_offset.weight.copy_(sn.tensor(rng.uniform(-0.02, 0.02, layer.conv_offset.weight.shape)))
        layer.conv_offset.bias.fill_(0.5)
    x = sn.tensor(rng.standard_normal((1, 2, 4, 4)), requires_grad=True)
    assert sn.gradgradcheck(layer, [x], params=list(layer.parameters()))


def test_an_in_place_change_of_a_kept_input_is_caught(rng):
    x = sn.tensor(rng.standard_normal((1, 2, 4, 4)), requires_grad=True)
    offset = sn.tensor(rng.standard_normal((1, 18, 2, 2)) * 0.3, requires_grad=True)
    w = sn.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    y = (F.deform_conv2d(x, offset, w) ** 2).sum()
    with sn.no_grad():
        x.add_(1.0)
    for create_graph in (False, True):
        with pytest.raises(RuntimeError, match="input 0 of DeformConv2d.*is at version 1; expected version 0"):
            sn.autograd.grad(y, [x, offset, w], retain_graph=True, create_graph=create_graph)
