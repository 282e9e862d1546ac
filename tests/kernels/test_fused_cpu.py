"""kernels/cpu_activation.py (sigmoid, SiLU), cpu.py's ReLU (in place too), LeakyReLU and cpu_norm.py's local
response norm:
fused passes (around NumPy's exp and power) give the array code's numbers bit for bit (so torch's,
which tests/functional checks); the activations on the values where the stable form matters: large magnitudes, zeros,
infinities and NaN."""
import numpy as np
import pytest

from scratchnet.functional.activation import _stable_sigmoid
from scratchnet.functional.norm import LocalResponseNorm
from scratchnet.kernels import cpu, dispatch


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_relu_kernels_in_place_and_not_equal_the_array_code(layout, dtype, rng):
    """relu_forward: the array code's y and mask, into a new array or into x itself (its own kernel when x is
    contiguous, through a copy when it is strided)."""
    x = _values(dtype, rng)
    x = x if layout == "contiguous" else x.transpose(3, 1, 0, 2)
    mask = ~(x <= 0)
    expected = np.where(mask, x, dtype(0))
    y, m = cpu.relu_forward(x)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(m, mask)
    before = x.copy()
    y, m = cpu.relu_forward(x, inplace=True)
    assert y is x and not np.shares_memory(before, x)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(m, mask)
    assert not np.signbit(x[~np.isnan(x)]).any()  # -0.0 and -inf became +0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [0.1, 0.01, 0.0, -0.5, 3.0])
def test_leaky_relu_kernels_equal_the_array_code(slope, dtype, rng):
    """kernels/cpu.py's LeakyReLU: the array code's numbers (the slope at 0 and on NaN, as torch), any slope,
    and a non-contiguous input."""
    x, gy = _values(dtype, rng).transpose(3, 1, 0, 2), rng.standard_normal((19, 3, 2, 17)).astype(dtype)
    y, mask = cpu.leaky_relu_forward(x, slope)
    np.testing.assert_array_equal(mask, x > 0)
    with np.errstate(invalid="ignore"):  # inf * 0, in both
        np.testing.assert_array_equal(y, np.where(x > 0, x, x * dtype(slope)))
    np.testing.assert_array_equal(cpu.leaky_relu_backward(gy, mask, slope), np.where(mask, gy, gy * dtype(slope)))
    assert y.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_over_blocks_equal_the_array_code(dtype, rng):
    """An array of several BLOCKs goes to the threads block by block (kernels/cpu_rows.py), NumPy's exp too, and
    the last block is a few elements longer than the others: still the array code's numbers, element for
    element, special values at both ends of a block included."""
    from scratchnet.kernels.cpu_rows import BLOCK
    size = 3 * BLOCK + 5
    x, gy = (rng.standard_normal(size) * 30).astype(dtype), rng.standard_normal(size).astype(dtype)
    for at in (0, BLOCK - 3, BLOCK, 2 * BLOCK + 1, size - 6):
        x[at:at + 6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30]
    s = _stable_sigmoid(x)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(cpu.sigmoid_forward(x), s)
        np.testing.assert_array_equal(cpu.sigmoid_backward(gy, s), gy * s * (1 - s))
        y, s_kept = cpu.silu_forward(x)
        np.testing.assert_array_equal(y, x * s)
        np.testing.assert_array_equal(s_kept, s)
        np.testing.assert_array_equal(cpu.silu_backward(gy, x, s), gy * s * (1 + x * (1 - s)))
        y, mask = cpu.leaky_relu_forward(x, 0.1)
        np.testing.assert_array_equal(y, np.where(x > 0, x, x * dtype(0.1)))
        np.testing.assert_array_equal(cpu.leaky_relu_backward(gy, mask, 0.1), np.where(mask, gy, gy * dtype(0.1)))
    y, mask = cpu.relu_forward(x)
    np.testing.assert_array_equal(mask, ~(x <= 0))
    np.testing.assert_array_equal(y, np.where(mask, x, dtype(0)))
    np.testing.assert_array_equal(cpu.relu_backward(gy, mask), np.where(mask, gy, dtype(0)))
    in_place = x.copy()
    cpu.relu_forward(in_place, inplace=True)
    np.testing.assert_array_equal(in_place, y)


def _lrn(x, gy, size):
    """(y, gx) of the LocalResponseNorm Function (AlexNet's constants), forward and backward on raw arrays."""
    fn = LocalResponseNorm(size, 5e-4, 0.75, 2.0)
    y = fn.forward(x)
    return y, fn.backward(gy)[0], fn.kernels is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 2, 5, 6])
def test_local_response_norm_kernels_equal_the_array_code(size, dtype, rng):
    """kernels/cpu_norm.py's LRN: the array code's numbers bit for bit (its window sums add the channels in
    the same order), odd and even windows, fewer channels than the window, 3-d and 4-d inputs."""
    for shape in [(2, 7, 5, 6), (3, 4, 9), (1, 3, 2, 2)]:
        x, gy = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
        y, gx, on_kernels = _lrn(x, gy, size)
        with dispatch.reference_only():  # the array code
            y_ref, gx_ref, on_kernels_ref = _lrn(x, gy, size)
        assert on_kernels and not on_kernels_ref
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(gx, gx_ref)
