"""Losses: cross_entropy (fused log_softmax + nll), nll_loss, mse_loss — torch's numbers and reductions.

Class-index targets are integers of shape (N,) for input (N, C), or
(N, d1, ...) for input (N, C, d1, ...) (a class per pixel). torch's weighted
mean divides by the summed weights of the counted targets, not by their
number; entries equal to ``ignore_index`` count for nothing (all ignored
gives nan, as torch).

cross_entropy's backward is the fused ``softmax - onehot`` (scaled by the
class weights and the label smoothing), never a trip through log and exp.
Each differentiable backward writes the same gradient with Tensor ops: the
targets and weights are constants, the softmax a function of the logits again.
"""
import numpy as np

from .. import backend
from ..autograd import Function, Tensor, as_tensor
from . import validate
from .activation import Softmax
from .math import check_float


def _class_rows(op, x, target, weight, ignore_index):
    """Validate the target against input (N, C, d1, ...) or (C,).

    Returns the flat target (M,), the output shape for reduction='none', and
    the raw weight (or None).
    """
    if not isinstance(target, Tensor):
        target = as_tensor(target)
    if backend.is_floating(target.dtype):
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {target.dtype}; "
                        f"convert labels with .long() (class-probability targets are not supported)")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {target.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{op}: input must be (N, C, d1, ...) or (C,) class scores, got a 0-d tensor")
    if x.ndim == 1:  # unbatched: input (C,), target ()
        if target.ndim != 0:
            raise ValueError(f"{op}: unbatched input {x.shape} needs a 0-d target, got {target.shape}")
        t, out_shape, c = target.data.reshape(1), (), x.shape[0]
    else:
        if target.shape != (x.shape[0],) + x.shape[2:]:
            raise ValueError(f"{op}: input {x.shape} (N, C, d1, ...) needs target of shape "
                             f"{(x.shape[0],) + x.shape[2:]} (N, d1, ...), got {target.shape}")
        t, out_shape, c = target.data.reshape(-1), target.shape, x.shape[1]
    w = None
    if weight is not None:
        if tuple(weight.shape) != (c,):
            raise ValueError(f"{op}: weight must have shape ({c},) (one per class), got {tuple(weight.shape)}")
        w = backend.to_device(weight.data, x.device)
    t = backend.to_device(t, x.device)  # labels often arrive on the host: follow the input
    bad = (t != ignore_index) & ((t < 0) | (t >= c))
    if bool(bad.any()):
        first = int(t[bad][0])
        raise ValueError(f"{op}: target holds class {first}, outside [0, {c}) for input with {c} classes "
                         f"(ignore_index={ignore_index})")
    return t, out_shape, w


class _ClassLoss(Function):
    """Shared by NLL and cross-entropy: per-row losses on (M, C) rows, then torch's reduction."""

    def __init__(self, target, weight, ignore_index, reduction, out_shape, x_shape):
        self.target, self.weight, self.ignore_index = target, weight, ignore_index
        self.reduction, self.out_shape, self.x_shape = reduction, out_shape, x_shape

    def _setup(self, rows):
        xp = backend.get_array_module(rows)
        self.keep = self.target != self.ignore_index
        self.safe_target = xp.where(self.keep, self.target, 0)  # a valid index even where ignored
        self.row_index = xp.arange(rows.shape[0])
        self.n_classes = rows.shape[1]
        w_t = xp.ones(rows.shape[0], dtype=rows.dtype) if self.weight is None else \
            self.weight.astype(rows.dtype)[self.safe_target]
        self.w_t = w_t * self.keep  # each row's weight; 0 for ignored rows
        self.denominator = self.w_t.sum()

    def _reduce(self, losses):
        if self.reduction == "none":
            return losses.reshape(self.out_shape)
        total = losses.sum()
        if self.reduction == "sum":
            return total
        with np.errstate(invalid="ignore"):  # every target ignored: 0 / 0 = nan, silently, as torch
            return total / self.denominator

    def _row_grad_scale(self, gy):
        """dL/d(row loss) for every row, as a column (M, 1)."""
        xp = backend.get_array_module(gy)
        if self.reduction == "none":
            return gy.reshape(-1, 1)
        g = gy / self.denominator if self.reduction == "mean" else gy
        return xp.broadcast_to(g, (self.target.shape[0], 1))

    def _unrows(self, g_rows):
        """Put (M, C) row gradients back in the input's (N, C, d1, ...) layout."""
        xp = backend.get_array_module(g_rows)
        if len(self.x_shape) == 1:
            return g_rows.reshape(self.x_shape)
        n, c, rest = self.x_shape[0], self.x_shape[1], self.x_shape[2:]
        return xp.ascontiguousarray(xp.moveaxis(g_rows.reshape((n,) + rest + (c,)), -1, 1))

    # the same two steps on Tensors, for the differentiable backwards
    def _row_grad_scale_tensor(self, gy):
        if self.reduction == "none":
            return gy.reshape(-1, 1)
        g = gy / Tensor(self.denominator) if self.reduction == "mean" else gy
        return g.reshape(1, 1).broadcast_to((self.target.shape[0], 1))

    def _unrows_tensor(self, g_rows):
        if len(self.x_shape) == 1:
            return g_rows.reshape(self.x_shape)
        n, c, rest = self.x_shape[0], self.x_shape[1], self.x_shape[2:]
        g = g_rows.reshape((n,) + rest + (c,))
        return g.permute((0, g.ndim - 1) + tuple(range(1, g.ndim - 1)))

    def _target_pattern(self, values, dtype):
        """(M, C) zeros with ``values`` at each row's target class."""
        xp = backend.get_array_module(self.w_t)
        pattern = xp.zeros((self.target.shape[0], self.n_classes), dtype=dtype)
        pattern[self.row_index, self.safe_target] = values
        return Tensor(pattern)


class NLLLoss(_ClassLoss):
    def forward(self, log_probs):
        rows = _to_rows(log_probs)
        self._setup(rows)
        return self._reduce(-self.w_t * rows[self.row_index, self.safe_target])

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        g_rows = xp.zeros((self.target.shape[0], self.n_classes), dtype=gy.dtype)
        g_rows[self.row_index, self.safe_target] = -self.w_t * self._row_grad_scale(gy)[:, 0]
        return (self._unrows(g_rows),)

    def differentiable_backward(self, gy):  # linear in gy; nothing of the input
        return (self._unrows_tensor(self._target_pattern(-self.w_t, gy.dtype) * self._row_grad_scale_tensor(gy)),)


class CrossEntropy(_ClassLoss):
    """(1 - eps) * w_t * -log p_t + eps / C * sum_c w_c * -log p_c per row (eps: label smoothing).

    Keeps the softmax p for its fused backward, and the logits for the differentiable one.
    """

    saved_inputs = {"x": 0}

    def __init__(self, label_smoothing, *args):
        super().__init__(*args)
        self.label_smoothing = label_smoothing

    def forward(self, logits):
        xp = backend.get_array_module(logits)
        self.x = logits
        rows = _to_rows(logits)
        self._setup(rows)
        shifted = rows - rows.max(axis=1, keepdims=True)
        log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        self.p = xp.exp(log_p)
        eps, c = self.label_smoothing, rows.shape[1]
        losses = -(1 - eps) * self.w_t * log_p[self.row_index, self.safe_target]
        if eps:
            w = xp.ones(c, dtype=rows.dtype) if self.weight is None else self.weight.astype(rows.dtype)
            losses = losses - (eps / c) * (log_p * w).sum(axis=1) * self.keep
        return self._reduce(losses)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        eps, c = self.label_smoothing, self.p.shape[1]
        # d(-log p_j)/dz = p - onehot_j, so row grad = (1-eps) w_t (p - e_t) + eps/C (W p - w)
        g_rows = (1 - eps) * self.w_t[:, None] * self.p
        g_rows[self.row_index, self.safe_target] -= (1 - eps) * self.w_t
        if eps:
            w = xp.ones(c, dtype=self.p.dtype) if self.weight is None else self.weight.astype(self.p.dtype)
            g_rows += (eps / c) * self.keep[:, None] * (w.sum() * self.p - w)
        return (self._unrows(g_rows * self._row_grad_scale(gy)),)

    def differentiable_backward(self, gy):
        xp = backend.get_array_module(gy.data)
        eps, c, x = self.label_smoothing, self.n_classes, self.saved_input(0)
        rows = x.reshape(1, -1) if x.ndim == 1 else x.permute((0,) + tuple(range(2, x.ndim)) + (1,)).reshape(-1, c)
        p = Softmax(1)(rows)  # the softmax as a function of the logits
        g_rows = p * Tensor((1 - eps) * self.w_t[:, None]) - self._target_pattern((1 - eps) * self.w_t, gy.dtype)
        if eps:
            w = xp.ones(c, dtype=gy.dtype) if self.weight is None else self.weight.astype(gy.dtype)
            g_rows = g_rows + (p * w.sum() - Tensor(w)) * Tensor(((eps / c) * self.keep[:, None]).astype(gy.dtype))
        return (self._unrows_tensor(g_rows * self._row_grad_scale_tensor(gy)),)


def _to_rows(x):
    xp = backend.get_array_module(x)
    return x.reshape(1, -1) if x.ndim == 1 else xp.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def nll_loss(log_probs, target, weight=None, reduction="mean", ignore_index=-100):
    """Negative log-likelihood of class-index targets, as torch.nn.functional.nll_loss."""
    check_float("nll_loss", log_probs, weight)
    validate.reduction("nll_loss", reduction)
    ignore_index = validate.ignore_index("nll_loss", ignore_index)
    t, out_shape, w = _class_rows("nll_loss", log_probs, target, weight, ignore_index)
    return NLLLoss(t, w, ignore_index, reduction, out_shape, log_probs.shape)(log_probs)


def cross_entropy(input, target, weight=None, reduction="mean", ignore_index=-100,  # noqa: A002 - torch's name
                  label_smoothing=0.0):
    """log_softmax over the class axis (1) + nll_loss, fused; as torch.nn.functional.cross_entropy."""
    check_float("cross_entropy", input, weight)
    validate.reduction("cross_entropy", reduction)
    ignore_index = validate.ignore_index("cross_entropy", ignore_index)
    label_smoothing = validate.label_smoothing("cross_entropy", label_smoothing)
    t, out_shape, w = _class_rows("cross_entropy", input, target, weight, ignore_index)
    return CrossEntropy(label_smoothing, t, w, ignore_index, reduction, out_shape, input.shape)(input)


class MSELoss(Function):
    """Keeps its two inputs (as torch does) and takes their difference again in backward."""

    saved_inputs = {"x": 0, "target": 1}

    def __init__(self, reduction):
        self.reduction = reduction

    def forward(self, x, target):
        self.x, self.target = x, target
        diff = x - target
        squared = diff * diff
        if self.reduction == "none":
            return squared
        if self.reduction == "mean" and squared.size == 0:  # NaN, silently, as torch (NumPy warns)
            return backend.get_array_module(squared).full((), np.nan, dtype=squared.dtype)
        return squared.mean() if self.reduction == "mean" else squared.sum()

    def backward(self, gy):
        diff = self.x - self.target
        g = 2 * diff * gy
        if self.reduction == "mean":
            g = g / diff.size
        return g if self.needs_input_grad[0] else None, -g if self.needs_input_grad[1] else None

    def differentiable_backward(self, gy):
        diff = self.saved_input(0) - self.saved_input(1)
        g = 2 * diff * gy
        if self.reduction == "mean":
            g = g / diff.size
        return g if self.needs_input_grad[0] else None, -g if self.needs_input_grad[1] else None


def mse_loss(input, target, reduction="mean"):  # noqa: A002 - torch's name
    """Mean squared error, as torch.nn.functional.mse_loss (shapes must match: torch only warns)."""
    check_float("mse_loss", input, target)
    validate.reduction("mse_loss", reduction)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input {input.shape} and target {target.shape} must have the same shape "
                         f"(torch would broadcast with a warning; reshape the target explicitly)")
    return MSELoss(reduction)(input, target)
