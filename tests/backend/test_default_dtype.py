"""sn.set_default_dtype / sn.get_default_dtype against torch's: which tensors and layers take the default, which
keep their own dtype, and the refusal of a non-floating default."""
import numpy as np
import pytest
import torch

import scratchnet as sn
from scratchnet import nn

TORCH = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
         np.dtype(np.float64): torch.float64, np.dtype(np.int64): torch.int64, np.dtype(bool): torch.bool}


@pytest.fixture(autouse=True)
def _default_dtype_restored():
    yield
    sn.set_default_dtype(np.float32)
    torch.set_default_dtype(torch.float32)


def made_by(fw, layers):
    """The dtypes of what a fresh default gives: tensors from Python numbers and lists, and new layers'
    parameters and buffers."""
    dtypes = [fw.tensor([1.0, 2.0]).dtype, fw.tensor(1.5).dtype, fw.tensor([1, 2]).dtype, fw.tensor([True]).dtype,
              fw.tensor(np.ones(2, np.float32)).dtype, fw.tensor(np.ones(2, np.float64)).dtype,
              (fw.tensor([1, 2]) * 2.5).dtype, (fw.tensor([1, 2]) / 2).dtype]
    linear, conv, bn = layers.Linear(2, 3), layers.Conv2d(1, 2, 3), layers.BatchNorm2d(3)
    dtypes += [linear.weight.dtype, linear.bias.dtype, conv.weight.dtype, bn.weight.dtype, bn.running_mean.dtype,
               bn.running_var.dtype, bn.num_batches_tracked.dtype]
    return [TORCH[np.dtype(d)] if fw is sn else d for d in dtypes]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_the_default_reaches_what_torchs_reaches(dtype):
    sn.set_default_dtype(dtype)
    torch.set_default_dtype(TORCH[np.dtype(dtype)])
    assert sn.get_default_dtype() == np.dtype(dtype)
    assert made_by(sn, nn) == made_by(torch, torch.nn)


def test_the_default_is_float32_and_a_layer_keeps_the_dtype_it_was_made_with():
    assert sn.get_default_dtype() == np.float32 and torch.get_default_dtype() == torch.float32
    layer = nn.Linear(2, 3)
    sn.set_default_dtype(np.float64)
    assert layer.weight.dtype == np.float32 and nn.Linear(2, 3).weight.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool])
def test_a_non_floating_default_is_refused_and_changes_nothing(dtype):
    with pytest.raises(TypeError, match="only floating-point types are supported as the default type"):
        torch.set_default_dtype(TORCH.get(np.dtype(dtype), torch.int32))
    with pytest.raises(TypeError, match=f"default dtype must be a floating type, got {np.dtype(dtype)}"):
        sn.set_default_dtype(dtype)
    assert sn.get_default_dtype() == np.float32 and sn.tensor([1.0]).dtype == np.float32
