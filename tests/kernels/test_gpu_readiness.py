"""The GPU route's Python code, proven on the CPU where it can be: the one-sentence reasons
`--device gpu` fails (CuPy monkeypatched to lack the runtime, the driver, NVRTC or a new
enough GPU), and the GPU random state a checkpoint stores (a fake CuPy generator on the
CPU; the real one under the gpu marker). tools/gpu_check.sh runs this file's gpu tests
in its smoke mode.
"""
from types import SimpleNamespace

import numpy as np
import pytest

import scratchnet as sn
import scratchnet.functional as F
from scratchnet import backend, train


class FakeGenerator:
    """A stand-in for CuPy's Generator: its state is an array (as CuPy's cuRAND states are) that
    every draw reads and advances."""

    def __init__(self, seed=0):
        self.bit_generator = SimpleNamespace(_state=np.full(12, seed, dtype=np.int64))

    def random(self, shape):
        self.bit_generator._state += 1
        return np.random.default_rng(self.bit_generator._state).random(shape)


def fake_cupy(count=1, error=None, runtime=12080, capability="90", nvrtc_error=None):
    """Just what backend.gpu_status and the random-state code touch."""
    def device_count():
        if error is not None:
            raise error
        return count

    def nvrtc_version():
        if nvrtc_error is not None:
            raise nvrtc_error
        return (12, 8)
    runtime_api = SimpleNamespace(getDeviceCount=device_count, runtimeGetVersion=lambda: runtime)
    cuda = SimpleNamespace(runtime=runtime_api, nvrtc=SimpleNamespace(getVersion=nvrtc_version),
                           Device=lambda *_: SimpleNamespace(compute_capability=capability))
    return SimpleNamespace(cuda=cuda, random=SimpleNamespace(default_rng=FakeGenerator), asnumpy=np.array,
                           asarray=np.asarray, ndarray=type("FakeArray", (), {}))


@pytest.fixture
def with_cupy(monkeypatch):
    """Install a fake CuPy in the backend (backend/gpu.py, read by every backend module; undone after the test)."""
    def install(**options):
        monkeypatch.setattr(backend.gpu, "cp", None if options.get("missing") else fake_cupy(
            **{k: v for k, v in options.items() if k not in ("missing", "import_error")}))
        monkeypatch.setattr(backend.gpu, "_CUPY_IMPORT_ERROR", options.get("import_error"))
        monkeypatch.setattr(backend.gpu, "_checked", None)
        monkeypatch.setattr(backend.generators, "_generators", {})
    return install


class CUDARuntimeError(RuntimeError):
    """Named as CuPy's; its message starts with the CUDA error's name, as CuPy's does."""


# (how the machine is broken, words the one sentence must hold)
BROKEN = [
    (dict(missing=True, import_error=ModuleNotFoundError("No module named 'cupy'", name="cupy")),
     ["needs CuPy, which is not installed", "pip install"]),
    (dict(missing=True, import_error=ImportError("libcudart.so.12: cannot open shared object file")),
     ["installed but does not load", "libcudart.so.12", "cupy-cuda13x"]),
    (dict(error=CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA "
                                 "runtime version")),
     ["needs an NVIDIA driver", "none is loaded or it is too old", "nvidia-smi"]),
    (dict(error=CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")),
     ["needs a CUDA device", "reports none"]),
    (dict(error=RuntimeError("CuPy failed to load libcudart.so.12: OSError: libcudart.so.12: cannot open")),
     ["CUDA runtime library (libcudart)", "nvidia-cuda-runtime-cu12"]),
    (dict(error=OSError("libcuda.so.1: cannot open shared object file")),
     ["NVIDIA driver library (libcuda.so)"]),
    (dict(count=0), ["found none"]),
    (dict(nvrtc_error=RuntimeError("CuPy failed to load libnvrtc.so.12")),
     ["needs NVRTC (libnvrtc)", "libnvrtc.so.12", "nvidia-cuda-nvrtc-cu12"]),
    (dict(capability="61", runtime=12080), ["compute capability 7.0 (sm_70) or newer", "under CUDA 12",
                                            "this one is 6.1"]),
    (dict(capability="70", runtime=13000), ["compute capability 7.5 (sm_75) or newer", "under CUDA 13",
                                            "this one is 7.0"]),
]


@pytest.mark.parametrize("broken, words", BROKEN, ids=["no-cupy", "cupy-no-runtime", "old-driver", "no-device",
                                                       "no-libcudart", "no-libcuda", "zero-devices", "no-nvrtc",
                                                       "pascal-cuda12", "volta-cuda13"])
def test_gpu_failures_name_what_is_missing_in_one_sentence(with_cupy, broken, words, tmp_path, capsys):
    with_cupy(**broken)
    reason = backend.gpu_status()
    assert reason is not None and "\n" not in reason
    assert reason.startswith("device 'gpu' needs") and reason.endswith("use device='cpu'")
    for word in words:
        assert word in reason
    with pytest.raises(backend.DeviceError, match="device 'gpu' needs"):
        backend.check_device("gpu")
    # the CLI: exit 2, that sentence on one line, before any data is read
    code = train.main(["lenet", "--device", "gpu", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "x"])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: {reason}\n"


def test_a_usable_gpu_passes_every_check_once(with_cupy):
    with_cupy(capability="90", runtime=13000)
    assert backend.gpu_status() is None
    backend.gpu.cp.cuda.runtime.getDeviceCount = None  # checked once per process: not asked again
    assert backend.gpu_status() is None and backend.check_device("cuda") == "gpu"


def test_cpu_random_state_round_trip():
    sn.manual_seed(5)
    state = backend.get_rng_state("cpu")
    first = backend.rng("cpu").random(8)
    backend.set_rng_state(state, "cpu")
    np.testing.assert_array_equal(backend.rng("cpu").random(8), first)


def test_gpu_random_state_round_trip_with_a_fake_cupy(with_cupy):
    """The GPU branch of get/set_rng_state: the pending seed before any draw, then the generator's
    state array, restored into a fresh generator so the next draws repeat."""
    with_cupy()
    sn.manual_seed(7)
    assert backend.get_rng_state("gpu") == {"seed": 7}
    backend.set_rng_state({"seed": 7}, "gpu")
    backend.rng("gpu").random(3)
    state = backend.get_rng_state("gpu")
    assert set(state) == {"curand_states"} and isinstance(state["curand_states"], np.ndarray)
    expected = backend.rng("gpu").random(4)
    backend.set_rng_state(state, "gpu")
    np.testing.assert_array_equal(backend.rng("gpu").random(4), expected)
    with pytest.raises(ValueError, match="resume with the CuPy version that wrote it"):
        backend.set_rng_state({"curand_states": np.zeros(5, np.int64)}, "gpu")


def test_checkpoint_carries_the_gpu_random_state(with_cupy, tmp_path):
    """scratchnet.train's checkpoint: the GPU state goes through save_checkpoint/load_checkpoint intact."""
    with_cupy()
    sn.manual_seed(1)
    backend.rng("gpu").random(2)
    state = {"gpu_rng": backend.get_rng_state("gpu"), "config": {"model": "lenet"}}
    train.save_checkpoint(tmp_path / "checkpoint.npz", state)
    loaded = train.load_checkpoint(tmp_path / "checkpoint.npz")
    np.testing.assert_array_equal(loaded["gpu_rng"]["curand_states"], state["gpu_rng"]["curand_states"])


@pytest.mark.gpu
def test_dropout_masks_repeat_after_restoring_the_gpu_state():
    sn.manual_seed(3)
    x = sn.tensor(np.ones((64, 256), np.float32), device="gpu")
    F.dropout(x, 0.5, True)  # the generator exists and has drawn
    state = backend.get_rng_state("gpu")
    first = F.dropout(x, 0.5, True).numpy()
    backend.set_rng_state(state, "gpu")
    np.testing.assert_array_equal(F.dropout(x, 0.5, True).numpy(), first)
    assert 0.3 < (first == 0).mean() < 0.7
