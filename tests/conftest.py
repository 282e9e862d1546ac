"""Shared fixtures: the devices to run on, seeded RNGs, the real-data folder and an environment that points
at it, a loopback HTTP server, torchvision's reference layouts, and the harness that checks an op against
PyTorch (compare_with_torch, the `compare` fixture, assert_close, TOL)."""
import functools
import http.server
import inspect
import json
import os
import pickle
import sys
import threading
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import backend

try:  # torch is the reference oracle; one thread keeps it fast and steady on a shared 2-core machine
    import torch
    import torch.nn.functional as TF
    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - dev extra not installed
    torch = TF = None

_GPU_REASON = backend.gpu_status()

REPO = Path(__file__).resolve().parents[1]  # the repository root
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # files the tests read (references, toy kernels)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (runs when CuPy finds one, skipped otherwise)")
    config.addinivalue_line("markers", "slow: longer tests (still run in CI)")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason=f"no GPU: {_GPU_REASON}")
    for item in items:
        if "gpu" in item.keywords and _GPU_REASON is not None:
            item.add_marker(skip_gpu)


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request):
    """Run a test on the CPU, and again on the GPU when one is present."""
    return request.param


@pytest.fixture
def xp(device):
    return backend.xp_for(device)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed():
    sn.manual_seed(0)


@pytest.fixture
def skip_random_init(monkeypatch):
    """Counting parameters needs shapes, not random draws (drawing 138M normals costs seconds)."""
    from scratchnet.nn import init
    monkeypatch.setattr(init, "uniform_", lambda tensor, a=0.0, b=1.0: tensor)
    monkeypatch.setattr(init, "normal_", lambda tensor, mean=0.0, std=1.0: tensor)


@functools.cache
def torchvision_reference():
    """tests/fixtures/torchvision_reference.json (tools/make_torchvision_reference.py): per torchvision model,
    its parameter count, state_dict keys and shapes in order, and published MACs."""
    return json.loads((FIXTURES / "torchvision_reference.json").read_text())


def torchvision_twins():
    """tests/fixtures/torchvision_twins.json (tools/make_torchvision_twins.py): nets torchvision has the parts of
    (CIFAR DenseNet-BC, SE blocks on GoogLeNet's modules, MobileNet and its full-convolution twin) assembled
    from its modules, and TenCrop's crops."""
    return json.loads((FIXTURES / "torchvision_twins.json").read_text())


def assert_torchvision_layout(model, name):
    """``model`` has torchvision's ``name``: the same parameter count and state_dict, key for key in order,
    shape for shape."""
    reference = torchvision_reference()[name]
    assert model.num_parameters() == reference["num_params"]
    assert [[key, list(value.shape)] for key, value in model.state_dict().items()] == reference["state_dict"]


def assert_same_weights(path, other):
    """Two weights files (.npz) hold the same keys in the same order and the same arrays, bit for bit (a
    resumed run against an uninterrupted one)."""
    a, b = sn.load(path), sn.load(other)
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def backward_without_recursion(output, frames=100):
    """``output.backward()`` with Python's recursion limit ``frames`` above the current depth: a backward
    that recursed once per level of a deep graph would fail."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + frames)
    try:
        output.backward()
    finally:
        sys.setrecursionlimit(limit)


def gradcheck_model(model, x, seed=3, **options):
    """Float64 gradient check of a whole model w.r.t. its input and every parameter, reseeding before
    each forward so dropout / stochastic depth draw the same masks at every evaluation."""
    def forward(inp):
        sn.manual_seed(seed)
        return model(inp)
    return sn.gradcheck(forward, [x], params=list(model.parameters()), **options)


# --------------------------------------------------------------------------- comparing an op with PyTorch
# Chainer's FunctionTestCase is the model: one harness runs an op forward and backward and checks both
# against a reference, with one tolerance per dtype. Here the reference is torch (and, on request, the
# numeric gradient). TOL is the one table for every comparison with torch; a test that provably needs
# more passes its own `tol` and says why beside it.
TOL = {np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12), np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6)}


def tol_for_sums(dtype, terms):
    """TOL for a result that sums `terms` products of order one (a weight or bias gradient). Rounding each
    partial sum costs up to half an ulp, so two frameworks that add in different orders can differ by about
    terms * eps / 2 of the terms' size where the sum cancels towards zero: in float32 that passes TOL's atol
    beyond ~16 terms (in float64, beyond ~9000). Never below TOL."""
    tol = TOL[np.dtype(dtype)]
    return dict(tol, atol=max(tol["atol"], terms * np.finfo(dtype).eps / 2))


def assert_close(ours, theirs, tol=None, what="result"):
    """`ours` (a Tensor, or an array on any device) equals `theirs` (a torch tensor or an array) in shape,
    dtype and value, within TOL for its dtype (integers exactly) or within `tol`."""
    ours = ours.numpy() if isinstance(ours, sn.Tensor) else backend.to_numpy(ours)
    theirs = theirs.detach().numpy() if torch is not None and isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, torch's {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype}, torch's {theirs.dtype}"
    np.testing.assert_allclose(ours, theirs, **(tol or TOL.get(ours.dtype, dict(rtol=0, atol=0))), err_msg=what)


def assert_within_scale(ours, theirs, relative, what="result"):
    """max |ours - theirs| <= relative * max |theirs|, shapes equal. For float32 against float64, or two float32
    computations that round differently (another summation order): their differences are rounding errors of the
    size of the whole result, which an entrywise rtol would misjudge on entries that cancel towards zero."""
    ours, theirs = backend.to_numpy(ours), backend.to_numpy(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, expected {theirs.shape}"
    error, scale = np.abs(ours.astype(np.float64) - theirs).max(initial=0), np.abs(theirs).max(initial=0)
    assert error <= relative * scale, f"{what}: max error {error:.3g} > {relative} x max |expected| {scale:.3g}"


# what compare_with_torch ran: the two outputs, and the two input lists (tensors where arrays were given)
Compared = namedtuple("Compared", "y y_ref ours theirs")


def compare_with_torch(op, torch_op, inputs, device="cpu", *, constants=(), tol=None, gradcheck=False, **options):
    """Run op(*inputs, **options) in scratchnet and torch_op(*inputs, **options) in torch and check

    1. the output: shape, dtype and values;
    2. the gradient of sum(y * r), r a fixed random cotangent, for every input that requires grad;
    3. with gradcheck=True, sn.gradcheck of op on the same inputs (they must be float64).

    `inputs`: NumPy arrays become a scratchnet tensor on `device` and a torch tensor; floating-point
    ones require grad, except those at the positions in `constants` (class weights, running statistics),
    integer ones (class targets) do not. Anything else (None, a number) goes to both as it is.
    Tolerances: TOL for each result's dtype, or `tol`. Returns what it ran, for further checks.
    """
    grads = [isinstance(a, np.ndarray) and a.dtype.kind == "f" and i not in constants for i, a in enumerate(inputs)]
    ours = [sn.tensor(a, requires_grad=g, device=device) if isinstance(a, np.ndarray) else a
            for a, g in zip(inputs, grads)]
    theirs = [torch.tensor(a, requires_grad=g) if isinstance(a, np.ndarray) else a for a, g in zip(inputs, grads)]
    y, y_ref = op(*ours, **options), torch_op(*theirs, **options)
    assert_close(y, y_ref, tol, "output")
    r = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
    (y * sn.tensor(r, device=device)).sum().backward()
    (y_ref * torch.tensor(r)).sum().backward()
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if grads[i]:
            assert_close(a.grad, b.grad, tol, f"gradient of input {i}")
    if gradcheck:
        assert sn.gradcheck(lambda *args: op(*args, **options), ours)
    return Compared(y, y_ref, ours, theirs)


@pytest.fixture
def compare(device):
    """compare_with_torch on this test's device (the test runs on the CPU, and on the GPU when one is present)."""
    def on_device(op, torch_op, inputs, **options):
        return compare_with_torch(op, torch_op, inputs, device, **options)
    return on_device


def compare_double_backward_with_torch(op, torch_op, inputs, device="cpu", *, constants=(), tol=None,
                                       gradgradcheck=True, order=2, **options):
    """Second (or higher) derivatives of op(*inputs, **options) against torch's, for float64 inputs:

    1. the first derivatives g = u . dy/d(inputs), taken with create_graph=True for a random cotangent u
       that requires grad, equal torch's;
    2. the gradient of sum_i(v_i . g_i) (random v_i) w.r.t. every input and u equals torch's (a None on
       one side must be zeros, or None, on the other); with order=3 that gradient is taken with
       create_graph=True too and differentiated once more the same way, and so on;
    3. with gradgradcheck=True, sn.gradgradcheck of op (directional checks) passes.

    `inputs` and `constants` as in compare_with_torch. Tolerances: TOL for the dtype, or `tol`. Returns
    the last derivatives (ours, torch's).
    """
    grads = [isinstance(a, np.ndarray) and a.dtype.kind == "f" and i not in constants for i, a in enumerate(inputs)]
    ours = [sn.tensor(a, requires_grad=g, device=device) if isinstance(a, np.ndarray) else a
            for a, g in zip(inputs, grads)]
    theirs = [torch.tensor(a, requires_grad=g) if isinstance(a, np.ndarray) else a for a, g in zip(inputs, grads)]
    y, y_ref = op(*ours, **options), torch_op(*theirs, **options)
    outs = [o for o in (y if isinstance(y, (tuple, list)) else (y,)) if o.dtype.kind == "f"]
    outs_ref = [o for o in (y_ref if isinstance(y_ref, (tuple, list)) else (y_ref,)) if o.dtype.is_floating_point]
    for i, (o, o_ref) in enumerate(zip(outs, outs_ref)):
        assert_close(o, o_ref, tol, f"output {i}")
    rng = np.random.default_rng(2)
    u = [rng.standard_normal(o.shape) for o in outs]
    u_ours = [sn.tensor(a, requires_grad=True, device=device) for a in u]
    u_theirs = [torch.tensor(a, requires_grad=True) for a in u]
    x_ours = [t for t, g in zip(ours, grads) if g]
    x_theirs = [t for t, g in zip(theirs, grads) if g]
    derivative = sn.autograd.grad(outs, x_ours, u_ours, create_graph=True, allow_unused=True)
    derivative_ref = torch.autograd.grad(outs_ref, x_theirs, u_theirs, create_graph=True, allow_unused=True)
    for i, (g, g_ref) in enumerate(zip(derivative, derivative_ref)):
        _assert_same_or_zero(g, g_ref, tol, f"first derivative {i}")
    for k in range(2, order + 1):
        v = [rng.standard_normal(t.shape) for t in (x_ours if k == 2 else x_ours + u_ours)]
        total = [(g * sn.tensor(w, device=device)).sum() for g, w in zip(derivative, v)
                 if g is not None and g.requires_grad]
        total_ref = [(g * torch.tensor(w)).sum() for g, w in zip(derivative_ref, v)
                     if g is not None and g.requires_grad]
        assert total and len(total) == len(total_ref), f"derivative {k - 1} carries no graph"
        derivative = sn.autograd.grad(sum(total[1:], total[0]), x_ours + u_ours, create_graph=k < order,
                                      allow_unused=True)
        derivative_ref = torch.autograd.grad(sum(total_ref[1:], total_ref[0]), x_theirs + u_theirs,
                                             create_graph=k < order, allow_unused=True)
        for i, (g, g_ref) in enumerate(zip(derivative, derivative_ref)):
            what = f"input {i}" if i < len(x_theirs) else f"the cotangent {i - len(x_theirs)}"
            _assert_same_or_zero(g, g_ref, tol, f"derivative {k} w.r.t. {what}")
    if gradgradcheck:
        assert sn.gradgradcheck(lambda *args: op(*args, **options), ours, max_elements=0)
    return derivative, derivative_ref


def _assert_same_or_zero(ours, theirs, tol, what):
    if theirs is not None and theirs._is_zerotensor():  # torch's symbolic zeros (abs'' = 0, say)
        theirs = torch.zeros(theirs.shape, dtype=theirs.dtype)
    if ours is None and theirs is None:
        return
    if ours is None or theirs is None:
        present = ours.numpy() if ours is not None else theirs.detach().numpy()
        assert not present.any(), f"{what}: {'ours' if ours is None else 'torch'}'s is None, the other's is not zero"
        return
    assert_close(ours, theirs, tol, what)


@pytest.fixture
def compare_double_backward(device):
    """compare_double_backward_with_torch on this test's device (the CPU, and the GPU when one is present)."""
    def on_device(op, torch_op, inputs, **options):
        return compare_double_backward_with_torch(op, torch_op, inputs, device, **options)
    return on_device


def torch_conv2d(x, w, stride=1, padding=0, dilation=1, groups=1, extra=(0, 0)):
    """The kernel tests' reference (raw arrays in and out): torch's conv2d of x and w as (y, grads), where
    grads(gy) gives (gx, gw). `extra`: rows and columns of zeros added at the bottom and right only (the
    output of padding='same' with an even kernel)."""
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    padded = torch.nn.functional.pad(xt, (0, extra[1], 0, extra[0]))
    yt = torch.nn.functional.conv2d(padded, wt, stride=stride, padding=padding, dilation=dilation, groups=groups)

    def grads(gy):
        yt.backward(torch.tensor(gy))
        return xt.grad.numpy(), wt.grad.numpy()
    return yt.detach().numpy(), grads


# --------------------------------------------------------------------------- case tables shared by the op tests
# (tests/functional checks each case's forward and gradients, tests/autograd its second derivatives)

CONV_CASES = [
    # (N, C_in, H, W), (C_out, kh, kw), options
    ((2, 3, 7, 6), (4, 3, 3), dict()),
    ((2, 3, 7, 6), (4, 3, 3), dict(stride=2, padding=1)),
    ((1, 2, 8, 9), (3, 2, 3), dict(stride=(2, 1), padding=(1, 0))),  # non-square kernel, pairs
    ((1, 2, 7, 7), (3, 3, 3), dict(dilation=2, padding=2)),
    ((1, 2, 9, 8), (2, 3, 2), dict(dilation=(2, 1), stride=(1, 3))),
    ((2, 4, 6, 6), (6, 3, 3), dict(groups=2, padding=1)),  # AlexNet-style two-tower split
    ((2, 4, 6, 6), (4, 3, 3), dict(groups=4, padding=1)),  # depthwise
    ((2, 3, 6, 6), (6, 3, 3), dict(groups=3, stride=2)),  # depthwise with channel multiplier 2
    ((2, 3, 5, 5), (4, 1, 1), dict()),  # pointwise 1x1
    ((1, 2, 6, 5), (3, 3, 3), dict(padding="same")),
    ((1, 2, 7, 5), (3, 5, 3), dict(padding="same", dilation=(1, 2))),
    ((1, 2, 6, 5), (3, 2, 4), dict(padding="same")),  # even kernels: the odd pixel is padded bottom/right
    ((1, 2, 1, 5), (3, 2, 3), dict(padding="same", dilation=(1, 2))),
    ((1, 2, 6, 5), (3, 3, 2), dict(padding="valid")),
    ((1, 3, 11, 11), (4, 11, 11), dict(stride=4)),  # AlexNet conv1 geometry, shrunk
]


def conv_inputs(rng, x_shape, w_shape, options, dtype=np.float64, with_bias=True, transposed=False):
    """Random x, weight and bias (or None) for a case: the weight is (C_out, C_in / groups, kh, kw), or
    (C_in, C_out / groups, kh, kw) for conv_transpose2d."""
    groups = options.get("groups", 1)
    c_in, (c_out, kh, kw) = x_shape[1], w_shape
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((c_in, c_out // groups, kh, kw) if transposed else (c_out, c_in // groups, kh, kw))
    b = rng.standard_normal(c_out).astype(dtype) if with_bias else None
    return [x, w.astype(dtype), b]


TRANSPOSE_CASES = [
    # (N, C_in, H, W), (C_out, kh, kw), options
    ((2, 3, 4, 5), (2, 3, 3), dict()),
    ((2, 3, 4, 5), (2, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ((1, 4, 3, 4), (6, 3, 2), dict(stride=(2, 3), groups=2, output_padding=(1, 2))),
    ((1, 2, 3, 3), (2, 3, 3), dict(dilation=2, padding=1, output_padding=1)),  # output_padding < dilation
    ((1, 3, 4, 4), (3, 4, 4), dict(stride=2, padding=1, groups=3)),  # depthwise upsampling (DCGAN-like)
    ((2, 2, 3, 3), (3, 1, 1), dict()),
]

POOL_CASES = [
    dict(kernel_size=2),  # VGG's 2x2/2
    dict(kernel_size=3, stride=2),  # AlexNet's overlapping 3x3/2
    dict(kernel_size=3, stride=2, ceil_mode=True),  # GoogLeNet's, a window hangs off the edge
    dict(kernel_size=3, stride=1, padding=1),  # Inception's pool branch
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1)),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=3, padding=1, ceil_mode=True),  # the extra window would start in padding
]


# --------------------------------------------------------------------------- torch twins of the ResNet units
# (tests/models checks ResNet and SENet forwards with them, tests/autograd a Hessian-vector product)


def t64(array):
    """A float64 torch tensor of an array; a torch tensor (a parameter that requires grad) as it is."""
    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(np.array(array, dtype=np.float64))


def torch_bn(x, sd, prefix, training):
    return TF.batch_norm(x, t64(sd[prefix + ".running_mean"]), t64(sd[prefix + ".running_var"]),
                         t64(sd[prefix + ".weight"]), t64(sd[prefix + ".bias"]), training=training)


def torch_conv(x, sd, prefix, stride=1, padding=0):
    bias = sd.get(prefix + ".bias")
    return TF.conv2d(x, t64(sd[prefix + ".weight"]), None if bias is None else t64(bias), stride, padding)


def torch_unit(sd, x, kind, stride, training, shortcut="B", has_projection=False, se=False, pad_to=None,
               stride_in_1x1=False):
    """One residual unit written with torch ops from its state dict ``sd`` (keys relative to the unit)."""
    bn = lambda y, name: torch_bn(y, sd, name, training)  # noqa: E731
    if kind == "bottleneck":
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        out = TF.relu(bn(torch_conv(x, sd, "conv1", s1), "bn1"))
        out = TF.relu(bn(torch_conv(out, sd, "conv2", s3, 1), "bn2"))
        out = bn(torch_conv(out, sd, "conv3"), "bn3")
    else:
        out = TF.relu(bn(torch_conv(x, sd, "conv1", stride, 1), "bn1"))
        out = bn(torch_conv(out, sd, "conv2", 1, 1), "bn2")
    if se:  # squeeze, excite, scale (SENet Eq. 2-4)
        gates = torch.sigmoid(torch_conv(TF.relu(torch_conv(out.mean((2, 3), keepdim=True), sd, "se.fc1")),
                                         sd, "se.fc2"))
        out = out * gates
    if shortcut is None:
        return TF.relu(out)
    if has_projection:
        skip = bn(torch_conv(x, sd, "downsample.0", stride), "downsample.1")
    elif pad_to is not None:  # option A: subsample, append zero channels
        skip = x[:, :, ::stride, ::stride]
        skip = TF.pad(skip, (0, 0, 0, 0, 0, pad_to - skip.shape[1]))
    else:
        skip = x
    return TF.relu(out + skip)


def sub_state(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def torch_resnet(model, x, training, kind, shortcut="B", cifar=False, se=False, sd=None):
    """The whole network in torch ops, from the model's state dict (taken before its forward), or from ``sd``
    (the same keys, torch tensors: parameters that require grad)."""
    sd = model.state_dict() if sd is None else sd
    if cifar:
        y = TF.relu(torch_bn(torch_conv(x, sd, "conv1", 1, 1), sd, "bn1", training))
    else:
        y = TF.relu(torch_bn(torch_conv(x, sd, "conv1", 2, 3), sd, "bn1", training))
        y = TF.max_pool2d(y, 3, 2, 1)
    for s, stage in enumerate(model.stages()):
        for j, _ in enumerate(stage):
            prefix = f"layer{s + 1}.{j}."
            unit_sd = sub_state(sd, prefix)
            stride = 2 if s > 0 and j == 0 else 1
            width = unit_sd["conv1.weight"].shape[0] * (4 if kind == "bottleneck" else 1)
            changes = stride != 1 or y.shape[1] != width
            y = torch_unit(unit_sd, y, kind, stride, training, shortcut,
                           has_projection="downsample.0.weight" in unit_sd, se=se,
                           pad_to=width if shortcut == "A" and changes else None)
    return TF.linear(y.mean((2, 3)), t64(sd["fc.weight"]), t64(sd["fc.bias"]))


@pytest.fixture(scope="session")
def data_dir():
    """The real datasets (../shared/data beside the repo, or $SCRATCHNET_DATA)."""
    root = Path(os.environ.get("SCRATCHNET_DATA", REPO.parent / "shared" / "data"))
    if not root.is_dir():
        pytest.fail(f"real data folder {root} not found: set SCRATCHNET_DATA to the shared data folder")
    return root


def write_cifar(folder, sizes, seed=0):
    """Write CIFAR-10-format batches (pickled dicts of bytes keys) into ``folder`` and return their contents:
    ``sizes`` images in data_batch_1 ... data_batch_5 and test_batch."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for name, n in zip(names, sizes):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f, protocol=2)
        written[name] = (data, labels)
    return written


@pytest.fixture
def data_env(data_dir, tmp_path, monkeypatch):
    """For code that finds its data itself (the CLIs, the studies, the docs' examples): $SCRATCHNET_DATA at
    the real data, a download cache of this test's own, and a headless matplotlib."""
    monkeypatch.setenv("SCRATCHNET_DATA", str(data_dir))
    monkeypatch.setenv("SCRATCHNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


# torch.optim.SGD's options, each rule exercised (the optimizer tests and the fused SGD kernel's tests)
SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.9, weight_decay=5e-4),
    dict(lr=0.05, momentum=0.8, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.8, weight_decay=1e-2, nesterov=True, maximize=True),
]


# --------------------------------------------------------------------------- a loopback HTTP server


class LoopbackServer:
    """A loopback HTTP server: path -> bytes, '/drop/...' sends half and hangs up, anything else 404."""

    def __init__(self, files):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.split("/")[-1]
                if name not in files:
                    self.send_error(404)
                    return
                body = files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path.startswith("/drop/"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
