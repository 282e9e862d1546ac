"""F.deform_conv2d against torchvision.ops.deform_conv2d (a stored float64 reference), the numeric gradient
check, float32 against float64, identities with conv2d, and the argument checks.

torch 2.13 in the test environment has no working torchvision, so torchvision's numbers come from
tests/fixtures/deform_reference.npz, written by tools/make_deform_reference.py (run with a Python that
has torchvision): thirteen cases over stride, padding and dilation differing per axis, groups 1 and 2,
offset groups 1, 2 and 4, with and without mask and bias, non-square inputs and kernels, offsets
pushing samples outside the image, onto exact integer positions and exactly onto torchvision's borders
(-1, H, ...), and an empty batch; the file holds the inputs, the output and all five gradients.
"""
import json
from contextlib import contextmanager

import numpy as np
import pytest

import scratchnet as sn
import scratchnet.nn.functional as F
from conftest import FIXTURES, assert_close, assert_within_scale
from scratchnet.functional import conv_routes

REFERENCE = np.load(FIXTURES / "deform_reference.npz")
CASES = json.loads(str(REFERENCE["cases"]))
ROUTES = ["reference", "im2col"]  # the NumPy sampling; the Numba kernels (kernels/cpu_deform.py)
INPUTS = ("x", "offset", "weight", "mask", "bias")


@contextmanager
def conv_algo(algo):
    """deform_conv2d takes the reference route under set_conv_algo('reference'), the kernels otherwise."""
    previous = conv_routes.get_conv_algo()
    conv_routes.set_conv_algo(algo)
    try:
        yield
    finally:
        conv_routes.set_conv_algo(previous)


def run(arrays, case, device="cpu", algo="auto", gy=None):
    """deform_conv2d of the case's arrays (dict by INPUTS name, mask and bias optional): (y, route, grads)."""
    tensors = {k: sn.tensor(v, requires_grad=True, device=device) for k, v in arrays.items() if v is not None}
    with conv_algo(algo):
        y = F.deform_conv2d(tensors["x"], tensors["offset"], tensors["weight"], tensors.get("bias"),
                            stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                            mask=tensors.get("mask"))
        route = y.creator.route
        if gy is not None:
            y.backward(sn.tensor(gy, device=device))
    return y, route, {k: t.grad for k, t in tensors.items()}


def stored(case):
    return {k: REFERENCE[f"{case['name']}__{k}"] if f"{case['name']}__{k}" in REFERENCE else None for k in INPUTS}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_deform_conv2d_equals_torchvision(case, route, device):
    name = case["name"]
    y, taken, grads = run(stored(case), case, device, "reference" if route == "reference" else "auto",
                          gy=REFERENCE[f"{name}__gy"])
    assert taken == route
    assert_close(y, REFERENCE[f"{name}__y"], what="output")  # float64: TOL, 1e-12
    for key, grad in grads.items():
        assert_close(grad, REFERENCE[f"{name}__grad_{key}"], what=f"gradient of {key}")


def test_the_reference_sweep_covers_the_issue():
    """The fixture holds what the issue asks for, so a regenerated file cannot quietly shrink the sweep."""
    assert {c["groups"] for c in CASES} >= {1, 2} and {c["offset_groups"] for c in CASES} >= {1, 2, 4}
    assert {c["mask"] for c in CASES} == {True, False} and {c["bias"] for c in CASES} == {True, False}
    assert {c["offsets"] for c in CASES} >= {"normal", "integer", "edges"}
    assert any(c["stride"][0] != c["stride"][1] and c["padding"][0] != c["padding"][1]
               and c["dilation"][0] != c["dilation"][1] for c in CASES)
    shapes = [REFERENCE[f"{c['name']}__x"].shape for c in CASES]
    kernels = [REFERENCE[f"{c['name']}__weight"].shape[2:] for c in CASES]
    assert any(h != w for _, _, h, w in shapes) and any(kh != kw for kh, kw in kernels)
    assert any(shape[0] == 0 for shape in shapes)
    edges = REFERENCE["edges__offset"]  # some samples exactly on torchvision's borders (-1 and H)
    assert np.isin(edges, np.round(edges)).mean() > 0.3


def random_inputs(rng, x_shape, c_out, kernel, groups, offset_groups, mask=True, bias=True, dtype=np.float64,
                  stride=(1, 1), padding=(1, 1), dilation=(1, 1), offsets_away_from_kinks=False):
    n, c, h, w = x_shape
    out = tuple((x_shape[2 + a] + 2 * padding[a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1
                for a in range(2))
    taps = kernel[0] * kernel[1]
    offset = rng.uniform(-2, 2, (n, 2 * offset_groups * taps) + out)
    if offsets_away_from_kinks:  # fractional parts in [0.2, 0.8]: the finite differences cross no kink
        offset = np.floor(offset) + rng.uniform(0.2, 0.8, offset.shape)
    arrays = dict(x=rng.standard_normal(x_shape), offset=offset,
                  weight=rng.standard_normal((c_out, c // groups) + tuple(kernel)),
                  mask=rng.uniform(0, 1, (n, offset_groups * taps) + out) if mask else None,
                  bias=rng.standard_normal(c_out) if bias else None)
    case = dict(stride=stride, padding=padding, dilation=dilation)
    return {k: None if v is None else v.astype(dtype) for k, v in arrays.items()}, case


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("mask", [True, False])
def test_deform_conv2d_gradcheck(route, mask, rng):
    """Bilinear interpolation has kinks at integer sampling positions (and at the image's borders, also
    integers): the offsets keep their fractional parts in [0.2, 0.8], so the finite differences of
    gradcheck stay on one smooth piece."""
    arrays, case = random_inputs(rng, (2, 4, 5, 6), 4, (3, 2), groups=2, offset_groups=2, mask=mask,
                                 stride=(1, 2), padding=(1, 0), dilation=(2, 1), offsets_away_from_kinks=True)
    tensors = [sn.tensor(arrays[k], requires_grad=True) if arrays[k] is not None else None for k in INPUTS]

    def fn(x, offset, weight, mask, bias):
        return F.deform_conv2d(x, offset, weight, bias, stride=case["stride"], padding=case["padding"],
                               dilation=case["dilation"], mask=mask)
    with conv_algo("reference" if route == "reference" else "auto"):
        assert sn.gradcheck(fn, tensors)


@pytest.mark.parametrize("route", ROUTES)
def test_float32_is_within_1e_5_of_float64(route, rng):
    arrays, case = random_inputs(rng, (3, 8, 7, 9), 6, (3, 3), groups=2, offset_groups=4, stride=(2, 1),
                                 padding=(1, 2), dilation=(1, 2))
    gy = rng.standard_normal((3, 6, 4, 9))
    algo = "reference" if route == "reference" else "auto"
    y64, _, grads64 = run(arrays, case, algo=algo, gy=gy)
    y32, taken, grads32 = run({k: None if v is None else v.astype(np.float32) for k, v in arrays.items()}, case,
                              algo=algo, gy=gy.astype(np.float32))
    assert taken == route and y32.dtype == np.float32
    for what, a, b in [("output", y32.numpy(), y64.numpy())] + [(k, grads32[k], grads64[k]) for k in grads64]:
        assert np.asarray(a).dtype == np.float32
        assert_within_scale(a, b, 1e-5, what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernels_equal_the_reference_on_non_contiguous_inputs(dtype, rng):
    arrays, case = random_inputs(rng, (2, 6, 8, 7), 4, (2, 3), groups=1, offset_groups=3, dtype=dtype,
                                 padding=(0, 1))
    arrays = {k: None if v is None else np.asfortranarray(v) for k, v in arrays.items()}  # every input strided
    gy = rng.standard_normal((2, 4, 7, 7)).astype(dtype)
    y_ref, _, grads_ref = run(arrays, case, algo="reference", gy=gy)
    y, route, grads = run(arrays, case, gy=gy)
    assert route == "im2col"
    check = assert_close if dtype == np.float64 else lambda a, b, what: assert_within_scale(a, b, 1e-5, what)
    check(y.numpy(), y_ref.numpy(), what="output")
    for key in grads:
        check(grads[key], grads_ref[key], what=key)


@pytest.mark.parametrize("route", ROUTES)
def test_zero_offsets_are_conv2d_and_a_mask_of_ones_is_no_mask(route, rng):
    """With zero offsets the sampling grid is conv2d's (padding reads zeros either way), for any stride,
    padding, dilation and groups; a mask of ones changes nothing."""
    arrays, case = random_inputs(rng, (2, 4, 7, 8), 6, (3, 2), groups=2, offset_groups=2, stride=(2, 1),
                                 padding=(2, 1), dilation=(1, 3))
    arrays["offset"] = np.zeros_like(arrays["offset"])
    arrays["mask"] = np.ones_like(arrays["mask"])
    with conv_algo("reference" if route == "reference" else "auto"):
        expected = F.conv2d(sn.tensor(arrays["x"]), sn.tensor(arrays["weight"]), sn.tensor(arrays["bias"]),
                            stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=2)
    y, _, _ = run(arrays, case, algo="reference" if route == "reference" else "auto")
    assert_close(y, expected.numpy())
    y_no_mask, _, _ = run(dict(arrays, mask=None), case, algo="reference" if route == "reference" else "auto")
    assert_close(y_no_mask, expected.numpy())


def test_float16_takes_the_reference_route(rng):
    arrays, case = random_inputs(rng, (1, 2, 5, 5), 2, (3, 3), groups=1, offset_groups=1)
    y16, route, _ = run({k: v.astype(np.float16) for k, v in arrays.items()}, case)
    y64, _, _ = run(arrays, case)
    assert route == "reference" and y16.dtype == np.float16
    assert np.abs(y16.numpy() - y64.numpy()).max() <= 1e-2 * np.abs(y64.numpy()).max()


def test_only_the_gradients_asked_for_are_computed(rng):
    arrays, case = random_inputs(rng, (1, 2, 5, 5), 2, (3, 3), groups=1, offset_groups=1)
    x = sn.tensor(arrays["x"], requires_grad=True)
    offset, weight, mask = (sn.tensor(arrays[k]) for k in ("offset", "weight", "mask"))
    F.deform_conv2d(x, offset, weight, mask=mask, padding=1).sum().backward()
    assert x.grad is not None and offset.grad is None and weight.grad is None and mask.grad is None


# ---------------------------------------------------------------- bad input: one sentence naming the expected shape

def _bad(rng, **change):
    arrays, _ = random_inputs(rng, (2, 4, 6, 6), 4, (3, 3), groups=2, offset_groups=2)
    arrays.update(change)
    return {k: None if v is None else sn.tensor(v) for k, v in arrays.items()}


BAD = [
    ("offset", lambda r: r.standard_normal((2, 20, 6, 6)), "offset must have shape (N, 2*offset_groups*kh*kw, "
     "out_h, out_w) = (2, 18*offset_groups, 6, 6) with offset_groups dividing the input's 4 channels, "
     "got (2, 20, 6, 6)"),
    ("offset", lambda r: r.standard_normal((2, 54, 6, 6)), "with offset_groups dividing the input's 4 channels"),
    ("offset", lambda r: r.standard_normal((2, 36, 5, 6)), "offset must have shape (N, 2*offset_groups*kh*kw, out_h, "
     "out_w) = (2, 36, 6, 6), got (2, 36, 5, 6)"),
    ("offset", lambda r: r.standard_normal((1, 36, 6, 6)), "= (2, 36, 6, 6), got (1, 36, 6, 6)"),
    ("offset", lambda r: r.standard_normal((36, 6, 6)), "got (36, 6, 6)"),
    ("mask", lambda r: r.standard_normal((2, 9, 6, 6)), "mask must have shape (N, offset_groups*kh*kw, out_h, out_w) "
     "= (2, 18, 6, 6), got (2, 9, 6, 6)"),
    ("weight", lambda r: r.standard_normal((4, 3, 3, 3)), "weight must have shape (C_out, C_in/groups, kh, kw) with "
     "groups dividing C_in = 4 and C_out, got (4, 3, 3, 3)"),
    ("weight", lambda r: r.standard_normal((3, 2, 3, 3)), "got (3, 2, 3, 3)"),
    ("bias", lambda r: r.standard_normal(3), "bias must have shape (C_out,) = (4,), got (3,)"),
    ("x", lambda r: r.standard_normal((2, 4, 6)), "expects input of shape (N, C_in, H, W), got (2, 4, 6)"),
]


@pytest.mark.parametrize("name,make,says", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_shapes_name_the_expected_shape(name, make, says, rng):
    t = _bad(rng, **{name: make(rng)})
    with pytest.raises(ValueError) as info:
        F.deform_conv2d(t["x"], t["offset"], t["weight"], t["bias"], padding=1, mask=t["mask"])
    assert says in str(info.value) and str(info.value).startswith("deform_conv2d")


def test_bad_options_dtypes_and_sizes(rng):
    t = _bad(rng)
    call = dict(padding=1, mask=t["mask"])
    with pytest.raises(TypeError, match="deform_conv2d: mask is float32 but the input is float64"):
        F.deform_conv2d(t["x"], t["offset"], t["weight"], padding=1, mask=t["mask"].float())
    with pytest.raises(TypeError, match="needs floating-point tensors"):
        F.deform_conv2d(sn.tensor(np.ones((2, 4, 6, 6), np.int64)), t["offset"], t["weight"], **call)
    with pytest.raises(ValueError, match="non-positive stride is not supported"):
        F.deform_conv2d(t["x"], t["offset"], t["weight"], stride=0, **call)
    with pytest.raises(ValueError, match="negative padding is not supported"):
        F.deform_conv2d(t["x"], t["offset"], t["weight"], padding=-1)
    with pytest.raises(ValueError, match=r"smaller than the dilated kernel \(3, 3\)"):
        F.deform_conv2d(t["x"], t["offset"], t["weight"], dilation=4)


@pytest.mark.gpu
def test_mixed_devices_are_refused(rng):
    t = _bad(rng)
    with pytest.raises(ValueError, match="deform_conv2d: offset is on the gpu but the input on the cpu"):
        F.deform_conv2d(t["x"], t["offset"].to("gpu"), t["weight"], padding=1)
