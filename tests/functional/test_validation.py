"""Argument rules (functional/validate.py), empty inputs and type promotion, each checked against PyTorch.

Bad arguments: where torch refuses a value, scratchnet must refuse it too, with a ValueError/TypeError
naming the argument and the value; where torch computes a result, scratchnet must compute the same one.
Where torch refuses, TORCH_SAYS records its exception type and message, and the test checks torch still says
so. A few rows are marked STRICTER: torch accepts them (the test checks it does) and scratchnet refuses them
on purpose, as the table in docs/ops.md (Argument rules) says.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as TF

import scratchnet as sn
from conftest import assert_close, compare_with_torch
from scratchnet import nn
from scratchnet import functional as F

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 4, 7, 7))
W = RNG.standard_normal((6, 4, 3, 3))
WT = RNG.standard_normal((4, 6, 3, 3))
LOGITS, LABELS = RNG.standard_normal((5, 3)), np.array([0, 2, 1, 1, 0])
STRICTER = "stricter"  # torch gives a result; scratchnet refuses (documented)


def sx():
    return sn.tensor(X)


def tx():
    return torch.tensor(X)


# (id, scratchnet call, torch call, argument name, bad value as written in the message, STRICTER or None)
FUNCTIONAL = [
    ("conv2d stride=0", lambda: F.conv2d(sx(), sn.tensor(W), stride=0), lambda: TF.conv2d(tx(), torch.tensor(W), stride=0), "stride", "0"),
    ("conv2d stride=-1", lambda: F.conv2d(sx(), sn.tensor(W), stride=-1), lambda: TF.conv2d(tx(), torch.tensor(W), stride=-1), "stride", "-1"),
    ("conv2d stride=(1, 0)", lambda: F.conv2d(sx(), sn.tensor(W), stride=(1, 0)), lambda: TF.conv2d(tx(), torch.tensor(W), stride=(1, 0)), "stride", "(1, 0)"),
    ("conv2d stride=1.5", lambda: F.conv2d(sx(), sn.tensor(W), stride=1.5), lambda: TF.conv2d(tx(), torch.tensor(W), stride=1.5), "stride", "1.5"),
    ("conv2d padding=-1", lambda: F.conv2d(sx(), sn.tensor(W), padding=-1), lambda: TF.conv2d(tx(), torch.tensor(W), padding=-1), "padding", "-1"),
    ("conv2d padding=full", lambda: F.conv2d(sx(), sn.tensor(W), padding="full"), lambda: TF.conv2d(tx(), torch.tensor(W), padding="full"), "padding", "'full'"),
    ("conv2d padding=(1,2,3)", lambda: F.conv2d(sx(), sn.tensor(W), padding=(1, 2, 3)), lambda: TF.conv2d(tx(), torch.tensor(W), padding=(1, 2, 3)), "padding", "(1, 2, 3)"),
    ("conv2d same+stride 2", lambda: F.conv2d(sx(), sn.tensor(W), stride=2, padding="same"), lambda: TF.conv2d(tx(), torch.tensor(W), stride=2, padding="same"), "stride", "(2, 2)"),
    ("conv2d dilation=0", lambda: F.conv2d(sx(), sn.tensor(W), dilation=0), lambda: TF.conv2d(tx(), torch.tensor(W), dilation=0), "dilation", "0"),
    ("conv2d dilation=-1", lambda: F.conv2d(sx(), sn.tensor(W), dilation=-1), lambda: TF.conv2d(tx(), torch.tensor(W), dilation=-1), "dilation", "-1"),
    ("conv2d groups=0", lambda: F.conv2d(sx(), sn.tensor(W), groups=0), lambda: TF.conv2d(tx(), torch.tensor(W), groups=0), "groups", "0"),
    ("conv2d groups=-2", lambda: F.conv2d(sx(), sn.tensor(W), groups=-2), lambda: TF.conv2d(tx(), torch.tensor(W), groups=-2), "groups", "-2"),
    ("conv2d groups=3", lambda: F.conv2d(sx(), sn.tensor(W), groups=3), lambda: TF.conv2d(tx(), torch.tensor(W), groups=3), "groups", "3"),
    # accepted like torch: a 1-tuple is repeated
    ("conv2d stride=(2,)", lambda: F.conv2d(sx(), sn.tensor(W), stride=(2,)), lambda: TF.conv2d(tx(), torch.tensor(W), stride=(2,)), None, None),
    ("conv_t stride=0", lambda: F.conv_transpose2d(sx(), sn.tensor(WT), stride=0), lambda: TF.conv_transpose2d(tx(), torch.tensor(WT), stride=0), "stride", "0"),
    ("conv_t padding=-1", lambda: F.conv_transpose2d(sx(), sn.tensor(WT), padding=-1), lambda: TF.conv_transpose2d(tx(), torch.tensor(WT), padding=-1), "padding", "-1"),
    ("conv_t dilation=0", lambda: F.conv_transpose2d(sx(), sn.tensor(WT), dilation=0), lambda: TF.conv_transpose2d(tx(), torch.tensor(WT), dilation=0), "dilation", "0"),
    ("conv_t groups=0", lambda: F.conv_transpose2d(sx(), sn.tensor(WT), groups=0), lambda: TF.conv_transpose2d(tx(), torch.tensor(WT), groups=0), "groups", "0"),
    ("conv_t output_padding=-1", lambda: F.conv_transpose2d(sx(), sn.tensor(WT), output_padding=-1), lambda: TF.conv_transpose2d(tx(), torch.tensor(WT), output_padding=-1), "output_padding", "-1"),
    ("conv_t output_padding=2 stride=2", lambda: F.conv_transpose2d(sx(), sn.tensor(WT), stride=2, output_padding=2), lambda: TF.conv_transpose2d(tx(), torch.tensor(WT), stride=2, output_padding=2), "output_padding", "(2, 2)"),
    ("conv_t output_padding=1 dilation=2", lambda: F.conv_transpose2d(sx(), sn.tensor(WT), dilation=2, output_padding=1), lambda: TF.conv_transpose2d(tx(), torch.tensor(WT), dilation=2, output_padding=1), None, None),
    ("max_pool kernel=-1", lambda: F.max_pool2d(sx(), -1), lambda: TF.max_pool2d(tx(), -1), "kernel_size", "-1"),
    ("max_pool kernel=0", lambda: F.max_pool2d(sx(), 0), lambda: TF.max_pool2d(tx(), 0), "kernel_size", "0"),
    ("max_pool stride=0", lambda: F.max_pool2d(sx(), 2, 0), lambda: TF.max_pool2d(tx(), 2, 0), "stride", "0"),
    ("max_pool stride=-2", lambda: F.max_pool2d(sx(), 2, -2), lambda: TF.max_pool2d(tx(), 2, -2), "stride", "-2"),
    ("max_pool padding=-1", lambda: F.max_pool2d(sx(), 2, padding=-1), lambda: TF.max_pool2d(tx(), 2, padding=-1), "padding", "-1"),
    ("max_pool padding>k/2", lambda: F.max_pool2d(sx(), 3, padding=2), lambda: TF.max_pool2d(tx(), 3, padding=2), "padding", "(2, 2)"),
    ("max_pool dilation=0", lambda: F.max_pool2d(sx(), 2, dilation=0), lambda: TF.max_pool2d(tx(), 2, dilation=0), "dilation", "0"),
    ("avg_pool kernel=0", lambda: F.avg_pool2d(sx(), 0), lambda: TF.avg_pool2d(tx(), 0), "kernel_size", "0"),
    ("avg_pool stride=-1", lambda: F.avg_pool2d(sx(), 2, -1), lambda: TF.avg_pool2d(tx(), 2, -1), "stride", "-1"),
    ("avg_pool padding>k/2", lambda: F.avg_pool2d(sx(), 2, padding=(0, 2)), lambda: TF.avg_pool2d(tx(), 2, padding=(0, 2)), "padding", "(0, 2)"),
    ("avg_pool divisor=0", lambda: F.avg_pool2d(sx(), 2, divisor_override=0), lambda: TF.avg_pool2d(tx(), 2, divisor_override=0), "divisor_override", "0"),
    ("avg_pool divisor=-3", lambda: F.avg_pool2d(sx(), 2, divisor_override=-3), lambda: TF.avg_pool2d(tx(), 2, divisor_override=-3), None, None),
    ("adaptive -1", lambda: F.adaptive_avg_pool2d(sx(), -1), lambda: TF.adaptive_avg_pool2d(tx(), -1), "output_size", "-1"),
    ("adaptive (2, -1)", lambda: F.adaptive_avg_pool2d(sx(), (2, -1)), lambda: TF.adaptive_avg_pool2d(tx(), (2, -1)), "output_size", "(2, -1)"),
    ("adaptive 0", lambda: F.adaptive_avg_pool2d(sx(), 0), lambda: TF.adaptive_avg_pool2d(tx(), 0), None, None),
    ("adaptive (0, 3)", lambda: F.adaptive_avg_pool2d(sx(), (0, 3)), lambda: TF.adaptive_avg_pool2d(tx(), (0, 3)), None, None),
    ("adaptive (None, 3)", lambda: F.adaptive_avg_pool2d(sx(), (None, 3)), lambda: TF.adaptive_avg_pool2d(tx(), (None, 3)), None, None),
    ("dropout p=-0.1", lambda: F.dropout(sx(), -0.1), lambda: TF.dropout(tx(), -0.1), "p", "-0.1"),
    ("dropout p=1.5", lambda: F.dropout(sx(), 1.5), lambda: TF.dropout(tx(), 1.5), "p", "1.5"),
    ("dropout p=nan", lambda: F.dropout(sx(), float("nan")), lambda: TF.dropout(tx(), float("nan")), "p", "nan"),
    ("dropout p=1", lambda: F.dropout(sx(), 1.0), lambda: TF.dropout(tx(), 1.0), None, None),
    ("lrn size=0", lambda: F.local_response_norm(sx(), 0), lambda: TF.local_response_norm(tx(), 0), "size", "0"),
    ("lrn size=-2", lambda: F.local_response_norm(sx(), -2), lambda: TF.local_response_norm(tx(), -2), "size", "-2"),
    ("lrn size=2.5", lambda: F.local_response_norm(sx(), 2.5), lambda: TF.local_response_norm(tx(), 2.5), "size", "2.5"),
    ("batch_norm eps=0 training", lambda: F.batch_norm(sx(), None, None, training=True, eps=0.0), lambda: TF.batch_norm(tx(), None, None, training=True, eps=0.0), "eps", "0.0"),
    ("batch_norm eps=-1 training", lambda: F.batch_norm(sx(), None, None, training=True, eps=-1.0), lambda: TF.batch_norm(tx(), None, None, training=True, eps=-1.0), "eps", "-1.0"),
    ("batch_norm eps=0 eval", lambda: F.batch_norm(sx(), sn.tensor(np.zeros(4)), sn.tensor(np.ones(4)), eps=0.0), lambda: TF.batch_norm(tx(), torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64), eps=0.0), None, None),
    ("batch_norm momentum=2", lambda: F.batch_norm(sx(), sn.tensor(np.zeros(4)), sn.tensor(np.ones(4)), training=True, momentum=2.0), lambda: TF.batch_norm(tx(), torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64), training=True, momentum=2.0), "momentum", "2.0", STRICTER),
    ("softmax dim=2", lambda: F.softmax(sn.tensor(LOGITS), 2), lambda: TF.softmax(torch.tensor(LOGITS), 2), "dim", "2"),
    ("softmax dim=-3", lambda: F.softmax(sn.tensor(LOGITS), -3), lambda: TF.softmax(torch.tensor(LOGITS), -3), "dim", "-3"),
    ("log_softmax dim=1.0", lambda: F.log_softmax(sn.tensor(LOGITS), 1.0), lambda: TF.log_softmax(torch.tensor(LOGITS), 1.0), "dim", "1.0"),
    ("log_softmax dim=-2", lambda: F.log_softmax(sn.tensor(LOGITS), -2), lambda: TF.log_softmax(torch.tensor(LOGITS), -2), None, None),
    ("cross_entropy reduction=avg", lambda: F.cross_entropy(sn.tensor(LOGITS), sn.tensor(LABELS), reduction="avg"), lambda: TF.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS), reduction="avg"), "reduction", "'avg'"),
    ("cross_entropy label_smoothing=1.5", lambda: F.cross_entropy(sn.tensor(LOGITS), sn.tensor(LABELS), label_smoothing=1.5), lambda: TF.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS), label_smoothing=1.5), "label_smoothing", "1.5"),
    ("cross_entropy label_smoothing=-0.1", lambda: F.cross_entropy(sn.tensor(LOGITS), sn.tensor(LABELS), label_smoothing=-0.1), lambda: TF.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS), label_smoothing=-0.1), "label_smoothing", "-0.1", STRICTER),
    ("cross_entropy ignore_index=1", lambda: F.cross_entropy(sn.tensor(LOGITS), sn.tensor(LABELS), ignore_index=1), lambda: TF.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS), ignore_index=1), None, None),
    ("cross_entropy ignore_index=0.5", lambda: F.cross_entropy(sn.tensor(LOGITS), sn.tensor(LABELS), ignore_index=0.5), lambda: TF.cross_entropy(torch.tensor(LOGITS), torch.tensor(LABELS), ignore_index=0.5), "ignore_index", "0.5"),
    ("nll_loss reduction=total", lambda: F.nll_loss(sn.tensor(LOGITS), sn.tensor(LABELS), reduction="total"), lambda: TF.nll_loss(torch.tensor(LOGITS), torch.tensor(LABELS), reduction="total"), "reduction", "'total'"),
    ("mse_loss reduction=max", lambda: F.mse_loss(sn.tensor(LOGITS), sn.tensor(LOGITS), reduction="max"), lambda: TF.mse_loss(torch.tensor(LOGITS), torch.tensor(LOGITS), reduction="max"), "reduction", "'max'"),
    ("leaky_relu slope=-1", lambda: F.leaky_relu(sx(), -1.0), lambda: TF.leaky_relu(tx(), -1.0), None, None),
    ("flatten 3, 1", lambda: F.flatten(sx(), 3, 1), lambda: torch.flatten(tx(), 3, 1), "start_dim, end_dim", "(3, 1)"),
    ("flatten 0, 4", lambda: F.flatten(sx(), 0, 4), lambda: torch.flatten(tx(), 0, 4), "dim", "4"),
    ("transpose 0, 5", lambda: F.transpose(sx(), 0, 5), lambda: torch.transpose(tx(), 0, 5), "dim", "5"),
    # these wrapped silently (dim % ndim) before: a wrong result, not an error
    ("sum dim=5", lambda: F.sum(sx(), 5), lambda: torch.sum(tx(), 5), "dim", "5"),
    ("sum dim=(1, -3)", lambda: F.sum(sx(), (1, -3)), lambda: torch.sum(tx(), (1, -3)), "dim", "(1, -3)"),
    ("mean dim=-5", lambda: F.mean(sx(), -5), lambda: torch.mean(tx(), -5), "dim", "-5"),
    ("max dim=4", lambda: F.max(sx(), 4), lambda: torch.amax(tx(), 4), "dim", "4"),
    ("permute 0,1,2,7", lambda: F.permute(sx(), 0, 1, 2, 7), lambda: tx().permute(0, 1, 2, 7), "dim", "7"),
    ("permute 0,0,1,2", lambda: F.permute(sx(), 0, 0, 1, 2), lambda: tx().permute(0, 0, 1, 2), "dim", "(0, 0, 1, 2)"),
    ("cat dim=4", lambda: F.cat([sx(), sx()], 4), lambda: torch.cat([tx(), tx()], 4), "dim", "4"),
    ("cat dim=-4", lambda: F.cat([sx(), sx()], -4), lambda: torch.cat([tx(), tx()], -4), None, None),
    ("stack dim=5", lambda: F.stack([sx(), sx()], 5), lambda: torch.stack([tx(), tx()], 5), "dim", "5"),
    ("stack dim=-5", lambda: F.stack([sx(), sx()], -5), lambda: torch.stack([tx(), tx()], -5), None, None),
    ("split size=0", lambda: F.split(sx(), 0, 1)[0], lambda: torch.split(tx(), 0, 1)[0], "split_size", "0"),
    ("split dim=4", lambda: F.split(sx(), 2, 4)[0], lambda: torch.split(tx(), 2, 4)[0], "dim", "4"),
]

# What torch raises for each row where it refuses, the rows above (lower-case ids) and LAYERS' below (named
# for their layer; what torch raises at construction or in the first forward): the exception type and a piece
# of its message, so a row whose torch call fails for another reason (a typo, an unrelated error) cannot pass
# as "torch refuses". Op by op, the functional's rows beside the layer's: a layer mostly refuses through its
# functional's check, in the same words.
TORCH_SAYS = {
    "conv2d stride=0": (RuntimeError, "non-positive stride is not supported"),
    "conv2d stride=-1": (RuntimeError, "non-positive stride is not supported"),
    "conv2d stride=(1, 0)": (RuntimeError, "non-positive stride is not supported"),
    "conv2d stride=1.5": (TypeError, "conv2d() received an invalid combination of arguments"),
    "Conv2d stride=0": (RuntimeError, "non-positive stride is not supported"),
    "conv2d padding=-1": (RuntimeError, "negative padding is not supported"),
    "Conv2d padding=-1": (RuntimeError, "negative padding is not supported"),
    "conv2d padding=full": (RuntimeError, "Invalid padding string: 'full'"),
    "Conv2d padding=full": (ValueError, "Invalid padding string 'full'"),
    "conv2d padding=(1,2,3)": (RuntimeError, "expected padding to be a single integer value or a list of 2 values"),
    "conv2d same+stride 2": (RuntimeError, "padding='same' is not supported for strided convolutions"),
    "Conv2d same+stride 2": (ValueError, "padding='same' is not supported for strided convolutions"),
    "conv2d dilation=0": (RuntimeError, "dilation should be greater than zero"),
    "conv2d dilation=-1": (RuntimeError, "dilation should be greater than zero"),
    "Conv2d dilation=0": (RuntimeError, "non-positive dilation is not supported"),
    # oneDNN, torch's CPU convolution, refuses the empty kernel (in its own words)
    "Conv2d kernel_size=0": (RuntimeError, "could not create a primitive descriptor"),
    "conv2d groups=0": (RuntimeError, "non-positive groups is not supported"),
    "conv2d groups=-2": (RuntimeError, "non-positive groups is not supported"),
    "Conv2d groups=0": (ValueError, "groups must be a positive integer"),
    "conv2d groups=3": (RuntimeError, "Given groups=3, weight of size [6, 4, 3, 3]"),
    "Conv2d groups=4": (ValueError, "out_channels must be divisible by groups"),
    "Conv2d out_channels=-1": (RuntimeError, "Trying to create tensor with negative dimension -1"),
    "conv_t stride=0": (RuntimeError, "non-positive stride is not supported"),
    "ConvTranspose2d stride=0": (RuntimeError, "non-positive stride is not supported"),
    "conv_t padding=-1": (RuntimeError, "negative padding is not supported"),
    "conv_t dilation=0": (RuntimeError, "dilation should be greater than zero"),
    "conv_t groups=0": (RuntimeError, "non-positive groups is not supported"),
    "ConvTranspose2d groups=-1": (ValueError, "groups must be a positive integer"),
    "conv_t output_padding=-1": (RuntimeError, "negative output_padding is not supported"),
    "conv_t output_padding=2 stride=2": (RuntimeError, "output padding must be smaller than either stride or dilation"),
    "ConvTranspose2d output_padding=1": (RuntimeError, "output padding must be smaller than either stride or dilation"),
    "Linear in_features=-1": (RuntimeError, "Trying to create tensor with negative dimension -1"),
    "max_pool kernel=-1": (RuntimeError, "kernel size should be greater than zero"),
    # a kernel of 0 is refused as a stride of 0: the stride defaults to the kernel
    "max_pool kernel=0": (RuntimeError, "stride should not be zero"),
    "MaxPool2d kernel_size=0": (RuntimeError, "stride should not be zero"),
    "max_pool stride=0": (RuntimeError, "stride should not be zero"),
    "MaxPool2d stride=0": (RuntimeError, "stride should not be zero"),
    "max_pool stride=-2": (RuntimeError, "stride should be greater than zero"),
    "max_pool padding=-1": (RuntimeError, "pad must be non-negative"),
    "max_pool padding>k/2": (RuntimeError, "pad should be at most half of effective kernel size"),
    "MaxPool2d padding=2": (RuntimeError, "pad should be at most half of effective kernel size"),
    "max_pool dilation=0": (RuntimeError, "dilation should be greater than zero"),
    "avg_pool kernel=0": (RuntimeError, "stride should not be zero"),
    "AvgPool2d kernel_size=-1": (RuntimeError, "kernel size should be greater than zero"),
    "avg_pool stride=-1": (RuntimeError, "stride should be greater than zero"),
    "avg_pool padding>k/2": (RuntimeError, "pad should be at most half of effective kernel size"),
    "avg_pool divisor=0": (RuntimeError, "divisor must be not zero"),
    "adaptive -1": (RuntimeError, "elements of output_size must be greater than or equal to 0"),
    "adaptive (2, -1)": (RuntimeError, "elements of output_size must be greater than or equal to 0"),
    "AdaptiveAvgPool2d -2": (RuntimeError, "elements of output_size must be greater than or equal to 0"),
    "dropout p=-0.1": (ValueError, "dropout probability has to be between 0 and 1, but got -0.1"),
    "dropout p=1.5": (ValueError, "dropout probability has to be between 0 and 1, but got 1.5"),
    "dropout p=nan": (RuntimeError, "dropout probability has to be between 0 and 1, but got nan"),
    "Dropout p=2": (ValueError, "dropout probability has to be between 0 and 1, but got 2"),
    "lrn size=0": (RuntimeError, "kernel size should be greater than zero"),
    "lrn size=-2": (RuntimeError, "pad should be at most half of effective kernel size"),  # its avg_pool3d refuses
    "lrn size=2.5": (TypeError, "argument 'pad' failed to unpack"),
    "LocalResponseNorm size=0": (RuntimeError, "kernel size should be greater than zero"),
    "batch_norm eps=0 training": (ValueError, "batch_norm eps must be positive during training, but got 0.0"),
    "batch_norm eps=-1 training": (ValueError, "batch_norm eps must be positive during training, but got -1.0"),
    "BatchNorm2d eps=0": (ValueError, "batch_norm eps must be positive during training, but got 0.0"),
    "BatchNorm2d num_features=-1": (RuntimeError, "Trying to create tensor with negative dimension -1"),
    "softmax dim=2": (IndexError, "Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    "softmax dim=-3": (IndexError, "Dimension out of range (expected to be in range of [-2, 1], but got -3)"),
    "log_softmax dim=1.0": (TypeError, "argument 'dim' (position 1) must be int, not float"),
    "Softmax dim=1.5": (TypeError, "argument 'dim' (position 1) must be int, not float"),
    "cross_entropy reduction=avg": (ValueError, "avg is not a valid value for reduction"),
    "CrossEntropyLoss reduction=avg": (ValueError, "avg is not a valid value for reduction"),
    "cross_entropy label_smoothing=1.5": (RuntimeError, "label_smoothing must be between 0.0 and 1.0. Got: 1.5"),
    "CrossEntropyLoss label_smoothing=2": (RuntimeError, "label_smoothing must be between 0.0 and 1.0. Got: 2"),
    "cross_entropy ignore_index=0.5": (TypeError, "argument 'ignore_index' (position 5) must be int, not float"),
    "NLLLoss ignore_index=None": (TypeError, "argument 'ignore_index' (position 5) must be int, not NoneType"),
    "nll_loss reduction=total": (ValueError, "total is not a valid value for reduction"),
    "mse_loss reduction=max": (ValueError, "max is not a valid value for reduction"),
    "MSELoss reduction=avg": (ValueError, "avg is not a valid value for reduction"),
    "flatten 3, 1": (RuntimeError, "start_dim cannot come after end_dim"),
    "Flatten 3, 1": (RuntimeError, "start_dim cannot come after end_dim"),
    "flatten 0, 4": (IndexError, "Dimension out of range (expected to be in range of [-4, 3], but got 4)"),
    "transpose 0, 5": (IndexError, "Dimension out of range (expected to be in range of [-4, 3], but got 5)"),
    "sum dim=5": (IndexError, "Dimension out of range (expected to be in range of [-4, 3], but got 5)"),
    "sum dim=(1, -3)": (RuntimeError, "dim 1 appears multiple times in the list of dims"),
    "mean dim=-5": (IndexError, "Dimension out of range (expected to be in range of [-4, 3], but got -5)"),
    "max dim=4": (IndexError, "Dimension out of range (expected to be in range of [-4, 3], but got 4)"),
    "permute 0,1,2,7": (IndexError, "Dimension out of range (expected to be in range of [-4, 3], but got 7)"),
    "permute 0,0,1,2": (RuntimeError, "permute(): duplicate dims are not allowed"),
    "cat dim=4": (IndexError, "Dimension out of range (expected to be in range of [-4, 3], but got 4)"),
    "stack dim=5": (IndexError, "Dimension out of range (expected to be in range of [-5, 4], but got 5)"),
    "split size=0": (RuntimeError, "split_size can only be 0 if dimension size is 0"),
    "split dim=4": (IndexError, "Dimension out of range (expected to be in range of [-4, 3], but got 4)"),
}


def check_torch_outcome(row_id, torch_error, stricter):
    """A STRICTER row: torch accepts the value. Any other row where torch refuses: it refuses as TORCH_SAYS
    records."""
    if stricter:
        assert torch_error is None, f"marked STRICTER but torch refuses too: {torch_error!r}"
        return
    if torch_error is None:
        assert row_id not in TORCH_SAYS, "torch accepts this value: its TORCH_SAYS entry is wrong"
        return
    assert row_id in TORCH_SAYS, f"torch refuses with {torch_error!r}: record it in TORCH_SAYS"
    kind, message = TORCH_SAYS[row_id]
    assert isinstance(torch_error, kind) and message in str(torch_error), (
        f"torch should refuse with {kind.__name__}: ...{message}..., it raised {torch_error!r}")


def _outcome(call):
    try:
        result = call()
        return (result.detach() if isinstance(result, torch.Tensor) else result), None
    except Exception as exc:  # noqa: BLE001 - the test compares what each framework does
        return None, exc


@pytest.mark.parametrize("row", FUNCTIONAL, ids=[row[0] for row in FUNCTIONAL])
def test_bad_functional_arguments_as_torch(row):
    row_id, ours, theirs, name, value = row[:5]
    stricter = len(row) > 5 and row[5] == STRICTER
    result, error = _outcome(ours)
    expected, torch_error = _outcome(theirs)
    check_torch_outcome(row_id, torch_error, stricter)
    if torch_error is None and not stricter:
        assert error is None, f"torch computes a result, scratchnet raised {error!r}"
        assert_close(result, expected)
        return
    assert isinstance(error, (ValueError, TypeError)), f"expected ValueError/TypeError, got {error!r}"
    message = str(error)
    assert f"{name}={value}" in message, message  # the argument and the value it got
    assert "valid: " in message or "must" in message or "should" in message, message  # and the valid range


def test_the_error_comes_before_any_work(monkeypatch):
    """A bad stride fails in the argument check: the convolution Function is never built."""
    from scratchnet.functional import conv
    monkeypatch.setattr(conv, "Conv2d", None)
    with pytest.raises(ValueError, match="non-positive stride"):
        F.conv2d(sx(), sn.tensor(W), stride=0)


# --------------------------------------------------------------------------- layer constructors

# (id, scratchnet constructor, torch constructor, a torch input for the forward, argument, value, STRICTER?)
LAYERS = [
    ("Conv2d stride=0", lambda: nn.Conv2d(4, 6, 3, stride=0), lambda: tnn.Conv2d(4, 6, 3, stride=0), "stride", "0"),
    ("Conv2d padding=-1", lambda: nn.Conv2d(4, 6, 3, padding=-1), lambda: tnn.Conv2d(4, 6, 3, padding=-1), "padding", "-1"),
    ("Conv2d padding=full", lambda: nn.Conv2d(4, 6, 3, padding="full"), lambda: tnn.Conv2d(4, 6, 3, padding="full"), "padding", "'full'"),
    ("Conv2d same+stride 2", lambda: nn.Conv2d(4, 6, 3, stride=2, padding="same"), lambda: tnn.Conv2d(4, 6, 3, stride=2, padding="same"), "stride", "(2, 2)"),
    ("Conv2d dilation=0", lambda: nn.Conv2d(4, 6, 3, dilation=0), lambda: tnn.Conv2d(4, 6, 3, dilation=0), "dilation", "0"),
    ("Conv2d kernel_size=0", lambda: nn.Conv2d(4, 6, 0), lambda: tnn.Conv2d(4, 6, 0), "kernel_size", "0"),
    ("Conv2d groups=0", lambda: nn.Conv2d(4, 6, 3, groups=0), lambda: tnn.Conv2d(4, 6, 3, groups=0), "groups", "0"),
    ("Conv2d groups=4", lambda: nn.Conv2d(4, 6, 3, groups=4), lambda: tnn.Conv2d(4, 6, 3, groups=4), "groups", "4"),
    ("Conv2d out_channels=-1", lambda: nn.Conv2d(4, -1, 3), lambda: tnn.Conv2d(4, -1, 3), "out_channels", "-1"),
    ("ConvTranspose2d stride=0", lambda: nn.ConvTranspose2d(4, 6, 3, stride=0), lambda: tnn.ConvTranspose2d(4, 6, 3, stride=0), "stride", "0"),
    ("ConvTranspose2d output_padding=1", lambda: nn.ConvTranspose2d(4, 6, 3, output_padding=1), lambda: tnn.ConvTranspose2d(4, 6, 3, output_padding=1), "output_padding", "(1, 1)"),
    ("ConvTranspose2d groups=-1", lambda: nn.ConvTranspose2d(4, 6, 3, groups=-1), lambda: tnn.ConvTranspose2d(4, 6, 3, groups=-1), "groups", "-1"),
    ("Linear in_features=-1", lambda: nn.Linear(-1, 3), lambda: tnn.Linear(-1, 3), "in_features", "-1"),
    ("MaxPool2d kernel_size=0", lambda: nn.MaxPool2d(0), lambda: tnn.MaxPool2d(0), "kernel_size", "0"),
    ("MaxPool2d stride=0", lambda: nn.MaxPool2d(2, 0), lambda: tnn.MaxPool2d(2, 0), "stride", "0"),
    ("MaxPool2d padding=2", lambda: nn.MaxPool2d(2, padding=2), lambda: tnn.MaxPool2d(2, padding=2), "padding", "(2, 2)"),
    ("AvgPool2d kernel_size=-1", lambda: nn.AvgPool2d(-1), lambda: tnn.AvgPool2d(-1), "kernel_size", "-1"),
    ("AdaptiveAvgPool2d -2", lambda: nn.AdaptiveAvgPool2d(-2), lambda: tnn.AdaptiveAvgPool2d(-2), "output_size", "-2"),
    ("BatchNorm2d num_features=-1", lambda: nn.BatchNorm2d(-1), lambda: tnn.BatchNorm2d(-1), "num_features", "-1"),
    ("BatchNorm2d eps=0", lambda: nn.BatchNorm2d(4, eps=0.0), lambda: tnn.BatchNorm2d(4, eps=0.0), "eps", "0.0"),
    ("BatchNorm1d momentum=1.5", lambda: nn.BatchNorm1d(4, momentum=1.5), lambda: tnn.BatchNorm1d(4, momentum=1.5), "momentum", "1.5", STRICTER),
    ("LocalResponseNorm size=0", lambda: nn.LocalResponseNorm(0), lambda: tnn.LocalResponseNorm(0), "size", "0"),
    ("Dropout p=2", lambda: nn.Dropout(2), lambda: tnn.Dropout(2), "p", "2"),
    ("Softmax dim=1.5", lambda: nn.Softmax(1.5), lambda: tnn.Softmax(1.5), "dim", "1.5"),
    ("Flatten 3, 1", lambda: nn.Flatten(3, 1), lambda: tnn.Flatten(3, 1), "start_dim, end_dim", "(3, 1)"),
    ("CrossEntropyLoss reduction=avg", lambda: nn.CrossEntropyLoss(reduction="avg"), lambda: tnn.CrossEntropyLoss(reduction="avg"), "reduction", "'avg'"),
    ("CrossEntropyLoss label_smoothing=2", lambda: nn.CrossEntropyLoss(label_smoothing=2.0), lambda: tnn.CrossEntropyLoss(label_smoothing=2.0), "label_smoothing", "2.0"),
    ("NLLLoss ignore_index=None", lambda: nn.NLLLoss(ignore_index=None), lambda: tnn.NLLLoss(ignore_index=None), "ignore_index", "None"),
    ("MSELoss reduction=avg", lambda: nn.MSELoss(reduction="avg"), lambda: tnn.MSELoss(reduction="avg"), "reduction", "'avg'"),
]


def _torch_layer_error(make):
    """What torch raises for a layer option at construction or, at the latest, in its first forward; None
    when it accepts it."""
    try:
        layer = make()
    except Exception as exc:  # noqa: BLE001 - the test compares what each framework does
        return exc
    try:
        if isinstance(layer, (tnn.CrossEntropyLoss, tnn.NLLLoss)):
            layer(torch.tensor(LOGITS), torch.tensor(LABELS))
        elif isinstance(layer, tnn.MSELoss):
            layer(torch.tensor(LOGITS), torch.tensor(LOGITS))
        elif isinstance(layer, tnn.BatchNorm1d):
            layer(torch.tensor(X[:, :, 0]).float())
        else:
            layer(torch.tensor(X).float())
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


@pytest.mark.parametrize("row", LAYERS, ids=[row[0] for row in LAYERS])
def test_bad_layer_options_fail_at_construction(row):
    row_id, ours, theirs, name, value = row[:5]
    stricter = len(row) > 5 and row[5] == STRICTER
    torch_error = _torch_layer_error(theirs)
    check_torch_outcome(row_id, torch_error, stricter)
    assert stricter or torch_error is not None, "torch accepts this option: the row is wrong"
    with pytest.raises((ValueError, TypeError)) as caught:
        ours()
    assert f"{name}={value}" in str(caught.value), str(caught.value)


def test_every_recorded_refusal_has_its_row():
    rows = {row[0] for row in FUNCTIONAL} | {row[0] for row in LAYERS}
    assert set(TORCH_SAYS) <= rows


def test_good_layer_options_still_build():
    nn.Conv2d(4, 6, 3, stride=(2,), padding=1, dilation=(1, 2), groups=2)
    nn.Conv2d(4, 6, 3, padding="same", dilation=2)
    nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1, dilation=1)
    nn.MaxPool2d(3, None, 1, ceil_mode=True)
    nn.AdaptiveAvgPool2d((None, 7))
    nn.BatchNorm2d(4, momentum=None)
    nn.Linear(0, 3)  # zero features, as torch (an empty weight, nothing to initialise)
    nn.Conv2d(0, 4, 3)


# --------------------------------------------------------------------------- empty inputs


def _empty_cases():
    x0 = np.zeros((0, 4, 7, 7))
    return [
        ("conv2d", lambda F_, x, t: F_.conv2d(x, t(W)), x0, (W,)),
        ("conv2d groups=2", lambda F_, x, t: F_.conv2d(x, t(W[:, :2]), groups=2), x0, ()),
        ("conv2d depthwise", lambda F_, x, t: F_.conv2d(x, t(W[:4, :1]), groups=4), x0, ()),
        ("conv_transpose2d", lambda F_, x, t: F_.conv_transpose2d(x, t(WT), stride=2), x0, ()),
        ("max_pool2d", lambda F_, x, t: F_.max_pool2d(x, 3, 2, 1), x0, ()),
        ("avg_pool2d", lambda F_, x, t: F_.avg_pool2d(x, 2), x0, ()),
        ("adaptive_avg_pool2d 3", lambda F_, x, t: F_.adaptive_avg_pool2d(x, 3), x0, ()),
        ("adaptive_avg_pool2d 1", lambda F_, x, t: F_.adaptive_avg_pool2d(x, 1), x0, ()),
        ("batch_norm train", lambda F_, x, t: F_.batch_norm(x, None, None, t(np.ones(4)), t(np.zeros(4)), True), x0, ()),
        ("batch_norm eval", lambda F_, x, t: F_.batch_norm(x, t(np.zeros(4)), t(np.ones(4)), None, None, False), x0, ()),
        ("local_response_norm", lambda F_, x, t: F_.local_response_norm(x, 3), x0, ()),
        ("relu", lambda F_, x, t: F_.relu(x), x0, ()),
        ("silu", lambda F_, x, t: F_.silu(x), x0, ()),
        ("softmax", lambda F_, x, t: F_.softmax(x, 1), x0, ()),
        ("log_softmax", lambda F_, x, t: F_.log_softmax(x, 1), x0, ()),
        ("linear", lambda F_, x, t: F_.linear(x, t(np.ones((3, 7)))), x0, ()),
        ("flatten", lambda F_, x, t: (F.flatten if F_ is F else torch.flatten)(x, 1), x0, ()),
        ("mse_loss", lambda F_, x, t: F_.mse_loss(x, x * 0), x0, ()),
        ("mean", lambda F_, x, t: x.mean(), x0, ()),
        ("sum dim 0", lambda F_, x, t: x.sum(0), x0, ()),
    ]


EMPTY = _empty_cases()


@pytest.mark.parametrize("name, call, data, _", EMPTY, ids=[c[0] for c in EMPTY])
def test_empty_inputs_as_torch(name, call, data, _):
    """Outputs (empty, NaN or zeros) and the (empty) input gradients equal torch's exactly, shapes and dtypes
    too, and silently, as torch (NumPy's "Mean of empty slice" and 0 / 0 warnings are errors here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        compare_with_torch(lambda x: call(F, x, sn.tensor), lambda x: call(TF, x, torch.tensor), [data],
                           tol=dict(rtol=0, atol=0))


def test_empty_losses_and_layers():
    logits0, labels0 = np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
    for reduction in ("mean", "sum", "none"):
        ours = F.cross_entropy(sn.tensor(logits0), sn.tensor(labels0), reduction=reduction).numpy()
        theirs = TF.cross_entropy(torch.tensor(logits0), torch.tensor(labels0), reduction=reduction).numpy()
        np.testing.assert_array_equal(ours, theirs)  # nan for 'mean' (0 / 0), 0 for 'sum', () for 'none'
    x0 = sn.tensor(np.zeros((0, 4, 7, 7), dtype=np.float32))
    model = nn.Sequential(nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Dropout(0.5), nn.Flatten(), nn.Linear(6 * 2 * 2, 3))
    model.train()
    y = model(x0)
    assert y.shape == (0, 3)
    np.testing.assert_array_equal(model[1].running_mean.data, np.zeros(6))  # untouched, as torch
    np.testing.assert_array_equal(model[1].running_var.data, np.ones(6))
    model.eval()
    assert model(x0).shape == (0, 3)
    with pytest.raises(ValueError, match="max"):
        F.max(x0)  # torch: max() of an empty tensor needs a dim


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_an_empty_image_plane_is_refused_as_torch(op):
    x = np.zeros((2, 4, 0, 7))
    w = W if op == "conv2d" else WT
    with pytest.raises(RuntimeError, match="Only zero batch or zero channel inputs are supported"):
        getattr(TF, op)(torch.tensor(x), torch.tensor(w), padding=2)
    with pytest.raises(ValueError, match="Only zero batch or zero channel inputs are supported"):
        getattr(F, op)(sn.tensor(x), sn.tensor(w), padding=2)
    pad = 2 if op == "conv2d" else 0
    assert getattr(F, op)(sn.tensor(x[:0]), sn.tensor(w), padding=pad).shape == \
        tuple(getattr(TF, op)(torch.tensor(x[:0]), torch.tensor(w), padding=pad).shape)  # N = 0 too: fine


def test_one_value_per_channel_is_still_refused_when_training():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        F.batch_norm(sn.tensor(np.ones((1, 3))), None, None, training=True)


# --------------------------------------------------------------------------- type promotion

f32, f64, i32, i64 = np.float32, np.float64, np.int32, np.int64
TORCH_DTYPE = {np.dtype(f32): torch.float32, np.dtype(f64): torch.float64, np.dtype(i32): torch.int32,
               np.dtype(i64): torch.int64, np.dtype(np.float16): torch.float16, np.dtype(bool): torch.bool,
               np.dtype(np.uint8): torch.uint8}


def _operand(value, framework):
    if isinstance(value, np.ndarray):
        return sn.tensor(value) if framework == "sn" else torch.tensor(value)
    return value


PROMOTION = [
    ("0-d f64 * f32", "mul", np.array(2.0, f64), np.ones(3, f32)),
    ("f32 * 0-d f64", "mul", np.ones(3, f32), np.array(2.0, f64)),
    ("f32 + f64", "add", np.ones(3, f32), np.ones(3, f64)),
    ("0-d f32 + 0-d f64", "add", np.array(1.0, f32), np.array(1.0, f64)),
    ("int64 + 1.5", "add", np.ones(3, i64), 1.5),
    ("1.5 - int64", "sub", 1.5, np.ones(3, i64)),
    ("int32 * 2", "mul", np.ones(3, i32), 2),
    ("int32 + int64", "add", np.ones(3, i32), np.ones(3, i64)),
    ("int64 / 2", "div", np.ones(3, i64), 2),
    ("int64 / int64", "div", np.ones(3, i64), np.ones(3, i64)),
    ("int64 + 0-d f64", "add", np.ones(3, i64), np.array(1.0, f64)),
    ("int32 + 0-d int64", "add", np.ones(3, i32), np.array(1, i64)),
    ("f16 + 0-d f64", "add", np.ones(3, np.float16), np.array(1.0, f64)),
    ("f32 - 0-d int64", "sub", np.ones(3, f32), np.array(1, i64)),
    ("f32 + numpy float64 scalar", "add", np.ones(3, f32), np.float64(1.5)),
    ("bool + 1", "add", np.ones(3, bool), 1),
    ("bool + 1.5", "add", np.ones(3, bool), 1.5),
    ("uint8 + 0-d int64", "add", np.ones(3, np.uint8), np.array(300, i64)),
    ("int64 ** 0.5", "pow", np.arange(3, dtype=i64), 0.5),
    ("int64 ** 2", "pow", np.arange(3, dtype=i64), 2),
]
OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
       "pow": lambda a, b: a ** b}


@pytest.mark.parametrize("name, op, a, b", PROMOTION, ids=[p[0] for p in PROMOTION])
def test_type_promotion_as_torch(name, op, a, b):
    ours = OPS[op](_operand(a, "sn"), _operand(b, "sn"))
    theirs = OPS[op](_operand(a, "torch"), _operand(b, "torch"))
    assert TORCH_DTYPE[np.dtype(ours.dtype)] == theirs.dtype
    np.testing.assert_allclose(ours.numpy().astype(np.float64), theirs.double().numpy(), rtol=1e-6)
    assert F.result_type(_operand(a, "sn"), _operand(b, "sn")) == ours.dtype or op in ("div", "pow")


def test_promotion_keeps_each_gradient_in_its_own_dtype():
    a = sn.tensor(np.array(3.0, f64), requires_grad=True)
    b = sn.tensor(np.arange(3, dtype=f32), requires_grad=True)
    y = a * b
    assert y.dtype == f32
    y.sum().backward()
    assert a.grad.dtype == f64 and b.grad.dtype == f32
    np.testing.assert_allclose(a.grad, 3.0)
    np.testing.assert_allclose(b.grad, [3.0, 3.0, 3.0])


def test_state_dict_value_of_the_wrong_type_names_the_key():
    layer = nn.Linear(2, 3)
    weight = layer.weight.data.copy()
    for bad, kind in (("abc", "str"), (None, "NoneType"), (np.array([["x"] * 2] * 3), "dtype <U1")):
        with pytest.raises(TypeError, match=f"'weight' is a .*{kind}"):
            layer.load_state_dict({"weight": bad, "bias": np.zeros(3)})
    np.testing.assert_array_equal(layer.weight.data, weight)  # nothing loaded
