"""scratchnet: a deep-learning framework written from scratch on NumPy (CPU) and CuPy (GPU).

    import scratchnet as sn
    x = sn.tensor([[1.0, 2.0]], requires_grad=True)

This file only re-exports; nothing inside the package imports it.
"""
from . import backend  # first: its thread policy must reach BLAS before NumPy loads it
from . import autograd, functional, models, nn, optim  # sn.autograd.grad, as torch.autograd.grad
from .autograd import (Function, FunctionHook, Tensor, backward, enable_grad, is_grad_enabled, no_grad,
                       set_grad_enabled, tensor)
from .backend import (DeviceError, get_default_dtype, get_num_threads, gpu_available, manual_seed,
                      set_default_dtype, set_num_threads)
from .functional.shape import cat, split, stack
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .nn.serialization import WeightsFileError, load, save
from .summary import summary
from . import viz  # sn.viz.draw_graph: the autograd graph with its gradients (graphviz loads on first draw)
from . import onnx  # sn.onnx.export: ONNX files (the onnx package loads on first export)

__version__ = "0.1.0"
