"""kernels/cpu_activation.py: sigmoid and SiLU in fused passes around NumPy's exp give the array code's
numbers bit for bit (so torch's, which tests/functional checks), on the values where the stable form
matters: large magnitudes, zeros, infinities and NaN."""
import numpy as np
import pytest

from scratchnet.functional.activation import _stable_sigmoid
from scratchnet.kernels import cpu


def _values(dtype, rng):
    x = (rng.standard_normal((2, 3, 17, 19)) * 30).astype(dtype)  # far into both saturated ends
    x.reshape(-1)[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30]
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_kernels_equal_the_array_code(dtype, rng):
    x, gy = _values(dtype, rng), rng.standard_normal((2, 3, 17, 19)).astype(dtype)
    s = _stable_sigmoid(x)
    np.testing.assert_array_equal(cpu.sigmoid_forward(x), s)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(cpu.sigmoid_backward(gy, s), gy * s * (1 - s))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_kernels_equal_the_array_code(dtype, rng):
    x, gy = _values(dtype, rng), rng.standard_normal((2, 3, 17, 19)).astype(dtype)
    s = _stable_sigmoid(x)
    y, s_kept = cpu.silu_forward(x)
    with np.errstate(invalid="ignore"):  # inf * 0 and NaN, in both
        np.testing.assert_array_equal(y, x * s)
        np.testing.assert_array_equal(s_kept, s)
        np.testing.assert_array_equal(cpu.silu_backward(gy, x, s), gy * s * (1 + x * (1 - s)))
    assert y.dtype == dtype and s_kept.dtype == dtype
