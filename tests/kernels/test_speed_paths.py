"""The CPU fast paths of issue 9 give the numbers of the array code they stand in for.

ReLU and SGD run as one Numba pass each on the CPU (kernels/cpu.py); elsewhere (other dtypes,
non-contiguous arrays, the GPU) the NumPy/CuPy lines run. Both must agree with torch, and the
fused SGD step must equal the array code bit for bit.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet import functional as F
from scratchnet import nn, optim
from scratchnet.functional import activation
from scratchnet.kernels import cpu
from scratchnet.optim import sgd
from conftest import SGD_CONFIGS

SPECIAL = [-np.inf, -2.5, -1e-30, -0.0, 0.0, 1e-30, 3.0, np.inf, np.nan]


@pytest.mark.parametrize("path", ["kernel", "array code"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_relu_matches_torch_on_special_values(dtype, path, rng, monkeypatch):
    """NaN stays NaN, -inf becomes 0, and the gradient flows where the input was > 0 or NaN (torch's rule),
    on the Numba kernel and on the array code (the GPU's, and float16's)."""
    if path == "array code":
        monkeypatch.setattr(activation.kernels, "supports", lambda *arrays: False)
    x = np.concatenate([np.array(SPECIAL), rng.standard_normal(23)]).astype(dtype).reshape(4, 8)
    y = F.relu(sn.tensor(x))
    expected = torch.relu(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(y.numpy(), expected)
    if dtype == np.float16:
        return
    t, tt = sn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    gy = rng.standard_normal(x.shape).astype(dtype)
    F.relu(t).backward(gy)
    torch.relu(tt).backward(torch.tensor(gy))
    np.testing.assert_array_equal(t.grad, tt.grad.numpy())


def test_relu_kernel_takes_non_contiguous_input(rng):
    x = rng.standard_normal((6, 5, 4)).astype(np.float32).transpose(2, 0, 1)
    y, mask = cpu.relu_forward(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(mask, ~(x <= 0))
    gy = rng.standard_normal(x.shape).astype(np.float32).transpose(0, 2, 1).copy().transpose(0, 2, 1)
    np.testing.assert_array_equal(cpu.relu_backward(gy, mask), np.where(x > 0, gy, 0))



def _sgd_run(config, dtype, fused, monkeypatch, steps=5):
    """Parameters after `steps` SGD steps with the same gradients, on the kernel or on the array code."""
    monkeypatch.setattr(sgd, "_fused", sgd._fused if fused else (lambda *arrays: False))
    rng = np.random.default_rng(0)
    params = [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in [(3, 4), (7,), (2, 1, 5)]]
    opt = optim.SGD(params, **config)
    for _ in range(steps):
        for p in params:
            p.grad = sn.tensor(rng.standard_normal(p.shape).astype(dtype))
        opt.step()
    return [p.numpy() for p in params], [opt.state[p].get("momentum_buffer") for p in params]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_fused_sgd_step_is_the_array_code_bit_for_bit(config, dtype, monkeypatch):
    fused, fused_buffers = _sgd_run(config, dtype, True, monkeypatch)
    plain, plain_buffers = _sgd_run(config, dtype, False, monkeypatch)
    for a, b in zip(fused + fused_buffers, plain + plain_buffers):
        if a is None or b is None:
            assert a is None and b is None
            continue
        assert a.dtype == b.dtype == dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_fused_sgd_matches_torch_in_float32(config, monkeypatch):
    ours, _ = _sgd_run(config, np.float32, True, monkeypatch)
    rng = np.random.default_rng(0)
    params = [torch.nn.Parameter(torch.tensor(rng.standard_normal(s).astype(np.float32))) for s in
              [(3, 4), (7,), (2, 1, 5)]]
    opt = torch.optim.SGD(params, **config)
    for _ in range(5):
        for p in params:
            p.grad = torch.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32))
        opt.step()
    for a, p in zip(ours, params):
        np.testing.assert_allclose(a, p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_sgd_takes_the_kernel_only_where_it_applies(rng):
    p32 = np.ones(3, np.float32)
    assert sgd._fused(p32, np.ones(3, np.float32), None)
    assert not sgd._fused(p32, np.ones(3), None)  # a float64 gradient: the array code keeps p float32
    assert not sgd._fused(p32.astype(np.float16), np.ones(3, np.float16), None)
    assert not sgd._fused(np.ones((3, 4), np.float32).T, np.ones((4, 3), np.float32), None)  # not contiguous



WARM_UP_CHECK = """
import sys
import numpy as np
from numba.core.registry import CPUDispatcher
import scratchnet as sn
from scratchnet import optim
from scratchnet.kernels import cpu, cpu_depthwise, cpu_norm

def signatures():
    return {f"{m.__name__}.{name}": tuple(f.signatures) for m in (cpu, cpu_depthwise, cpu_norm)
            for name, f in vars(m).items() if isinstance(f, CPUDispatcher)}

dtype = np.dtype(sys.argv[1])
cpu.warm_up(dtype)
before = signatures()
model = sn.models.get_model("lenet").to(dtype=dtype)
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
x = sn.tensor(np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(dtype))
loss = model.loss(model(x), np.arange(4))
opt.zero_grad()
loss.backward()
opt.step()
with sn.no_grad():
    model.eval()(x)
bn = sn.nn.BatchNorm2d(3).to(dtype=dtype)  # batch norm's kernels, training and evaluation
images = sn.tensor(np.ones((2, 3, 4, 4), dtype), requires_grad=True)
for mode in (bn.train, bn.eval):
    mode()
    bn(images).sum().backward()
after = signatures()
print({name: after[name][len(before[name]):] for name in after if after[name] != before[name]})
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_warm_up_loads_every_kernel_a_training_step_uses(dtype):
    """After cpu.warm_up (the training CLI runs it while the data loads), a LeNet training step, an
    evaluation and batch norm need no kernel compiled or loaded: Numba's start-up is out of the first
    step. In a fresh process, where no other test has run a kernel yet."""
    done = subprocess.run([sys.executable, "-c", WARM_UP_CHECK, dtype], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{}", f"kernels a step still had to load: {done.stdout}"
