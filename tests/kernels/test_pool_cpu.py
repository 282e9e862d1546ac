"""kernels/cpu.py's general max-pool kernel on planes large enough that most windows take its inner path
(taps as vectorised passes, over column phases at a stride > 1) and a few its edge path: torch's
maxima and argmax, bit for bit, with ties (the first maximum wins) and NaNs (the last NaN wins)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from scratchnet.functional.conv import conv_output_size
from scratchnet.kernels import cpu

# (kernel, stride, padding, dilation, ceil_mode)
GEOMETRIES = [
    ((3, 3), (1, 1), (1, 1), (1, 1), True),   # Inception's pool branch
    ((3, 3), (2, 2), (1, 1), (1, 1), False),  # ResNet's stem
    ((3, 3), (2, 2), (0, 0), (1, 1), True),   # AlexNet's and GoogLeNet's overlapping pools
    ((2, 3), (3, 2), (1, 0), (2, 3), False),  # every option differing per axis
    ((5, 4), (2, 3), (2, 1), (1, 1), True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("values", ["normal", "ties", "nan"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"k{g[0]}s{g[1]}p{g[2]}d{g[3]}")
def test_general_max_pool_kernel_matches_torch(geometry, values, dtype, rng):
    kernel, stride, padding, dilation, ceil_mode = geometry
    shape = (2, 3, 23, 29)
    x = (rng.integers(0, 3, shape) if values == "ties" else rng.standard_normal(shape)).astype(dtype)
    if values == "nan":
        x[rng.random(shape) < 0.05] = np.nan
    out = tuple(conv_output_size(shape[2 + a], kernel[a], stride[a], padding[a], dilation[a], ceil_mode)
                for a in range(2))
    y, argmax = np.empty(shape[:2] + out, dtype), np.empty(shape[:2] + out, np.int64)
    cpu._max_pool2d_forward(x, y, argmax, *kernel, *stride, *padding, *dilation)
    y_ref, index_ref = TF.max_pool2d(torch.tensor(x), kernel, stride, padding, dilation, ceil_mode=ceil_mode,
                                     return_indices=True)
    np.testing.assert_array_equal(y, y_ref.numpy())
    np.testing.assert_array_equal(argmax, index_ref.numpy())
