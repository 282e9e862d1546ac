"""Shared fixtures: the devices to run on, seeded RNGs, and the real-data folder."""
import os
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


def gradcheck_model(model, x, seed=3, **options):
    """Float64 gradient check of a whole model w.r.t. its input and every parameter, reseeding before
    each forward so dropout / stochastic depth draw the same masks at every evaluation."""
    def forward(inp):
        sn.manual_seed(seed)
        return model(inp)
    return sn.gradcheck(forward, [x], params=list(model.parameters()), **options)


@pytest.fixture(scope="session")
def data_dir():
    """The real datasets (../shared/data beside the repo, or $SCRATCHNET_DATA)."""
    root = Path(os.environ.get("SCRATCHNET_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not root.is_dir():
        pytest.fail(f"real data folder {root} not found: set SCRATCHNET_DATA to the shared data folder")
    return root
