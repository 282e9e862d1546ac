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
    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - dev extra not installed
    torch = None

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
