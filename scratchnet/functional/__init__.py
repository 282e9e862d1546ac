"""Differentiable ops on tensors (``scratchnet.nn.functional``, imported as F).

One file per family, forward and backward side by side in each Function.
"""
from .activation import leaky_relu, log_softmax, relu, relu_, sigmoid, silu, softmax, tanh
from .conv import conv2d, conv_transpose2d
from .deform import deform_conv2d
from .dropout import dropout
from .linear import linear
from .loss import cross_entropy, mse_loss, nll_loss
from .math import (abs, add, clamp, div, exp, log, matmul, max, mean, mul, neg, pow, result_type, sqrt, sub, sum,
                   sum_to_size, where)
from .shape import broadcast_to, cat, flatten, getitem, permute, reshape, split, stack, transpose
from . import tensor_methods  # noqa: F401 (attaches + - * / @, .sum, .reshape ... to Tensor)
from .norm import batch_norm, local_response_norm
from .pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = [
    "abs", "adaptive_avg_pool2d", "add", "avg_pool2d", "batch_norm", "broadcast_to", "cat", "clamp", "conv2d",
    "conv_transpose2d", "cross_entropy", "deform_conv2d", "div", "dropout", "exp", "flatten", "getitem", "leaky_relu",
    "linear", "local_response_norm", "log", "log_softmax", "matmul", "max", "max_pool2d", "mean", "mse_loss", "mul",
    "neg", "nll_loss", "permute", "pow", "relu", "relu_", "reshape", "result_type", "sigmoid", "silu", "softmax",
    "split", "sqrt", "stack", "sub", "sum", "sum_to_size", "tanh", "transpose", "where",
]
