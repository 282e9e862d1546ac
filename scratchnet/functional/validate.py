"""Argument rules of the public ops and layers: one place, torch's rules and (where torch has one) its wording.

Every functional op and every layer constructor calls these before doing any
work, so a bad value fails at once, and the same way from ``F.conv2d(...,
stride=0)`` and from ``nn.Conv2d(3, 8, 3, stride=0)``. A value of the wrong
kind is a ``TypeError``; a value out of range is a ``ValueError``. Each
message names the op, the argument, the value given and the valid range:

    conv2d: non-positive stride is not supported (got stride=0; valid: an int >= 1, or a pair of them)

The table of rules is in docs/ops.md (Argument rules).
"""
import numbers

REDUCTIONS = ("mean", "sum", "none")
PADDING_STRINGS = ("valid", "same")


def _fail(op, says, name, value, valid, error=ValueError):
    raise error(f"{op}: {says} (got {name}={value!r}; valid: {valid})")


def _is_int(value):
    return isinstance(value, numbers.Integral)  # Python and NumPy ints (and bools, as torch)


def _is_number(value):
    return isinstance(value, numbers.Real)


# --------------------------------------------------------------------------- ints and pairs of ints


def int_tuple(op, name, value, n=2):
    """An int or n ints as a tuple of n ints (a 1-tuple is repeated, as torch does)."""
    if type(value) is int:  # the common cases first, without the generic checks (every conv and pool call)
        return (value,) * n
    if type(value) is tuple and len(value) == n and all(type(v) is int for v in value):
        return value
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(items) == 1:
        items = items * n
    if len(items) != n or not all(_is_int(v) for v in items):
        _fail(op, f"{name} must be an int or a tuple of {n} ints", name, value, f"an int, or {n} ints",
              TypeError)
    return tuple(int(v) for v in items)


def at_least(op, name, value, minimum, says=None, n=2):
    """``int_tuple`` whose every entry is >= minimum."""
    items = int_tuple(op, name, value, n)
    if min(items) < minimum:
        says = says or f"{name} must be >= {minimum}"
        _fail(op, says, name, value, f"an int >= {minimum}, or {n} of them" if n > 1 else f"an int >= {minimum}")
    return items


def count(op, name, value, minimum=0):
    """A single int >= minimum (channels, features, sizes)."""
    if not _is_int(value):
        _fail(op, f"{name} must be an int", name, value, f"an int >= {minimum}", TypeError)
    if value < minimum:
        _fail(op, f"{name} must be >= {minimum}", name, value, f"an int >= {minimum}")
    return int(value)


def number(op, name, value):
    """A real number (a slope, alpha, beta, k)."""
    if not _is_number(value) or isinstance(value, bool):
        _fail(op, f"{name} must be a real number", name, value, "a float", TypeError)
    return value


# --------------------------------------------------------------------------- convolution


def groups(op, value, in_channels=None, out_channels=None):
    """groups >= 1, dividing the channel counts that are given."""
    if not _is_int(value):
        _fail(op, "groups must be an int", "groups", value, "a positive int dividing the channels", TypeError)
    if value < 1:
        _fail(op, "non-positive groups is not supported", "groups", value, "a positive int dividing the channels")
    for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
        if channels is not None and channels % value:
            _fail(op, f"{name} must be divisible by groups: groups={value} must divide {name}={channels}", "groups", value,
                  f"a divisor of {name}={channels}")
    return int(value)


def conv_padding(op, padding, stride):
    """padding: 'valid', 'same' (stride 1 only) or ints >= 0. Returns the string or a pair."""
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            _fail(op, f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}", "padding",
                  padding, "'valid', 'same', an int >= 0 or a pair of them")
        if padding == "same" and stride != (1, 1):
            _fail(op, "padding='same' is not supported for strided convolutions", "stride", stride,
                  "1 with padding='same'")
        return padding
    return at_least(op, "padding", padding, 0, "negative padding is not supported")


def conv2d_args(op, stride, padding, dilation, groups_):
    """(stride, padding, dilation, groups) of a convolution, checked (torch's rules)."""
    stride = at_least(op, "stride", stride, 1, "non-positive stride is not supported")
    dilation = at_least(op, "dilation", dilation, 1, "non-positive dilation is not supported")
    return stride, conv_padding(op, padding, stride), dilation, groups(op, groups_)


def conv_transpose2d_args(op, stride, padding, output_padding, dilation, groups_):
    """As conv2d_args (no padding strings), plus 0 <= output_padding < max(stride, dilation) per axis."""
    stride = at_least(op, "stride", stride, 1, "non-positive stride is not supported")
    dilation = at_least(op, "dilation", dilation, 1, "non-positive dilation is not supported")
    padding = at_least(op, "padding", padding, 0, "negative padding is not supported")
    output_padding = at_least(op, "output_padding", output_padding, 0, "negative output_padding is not supported")
    if any(o >= max(s, d) for o, s, d in zip(output_padding, stride, dilation)):
        _fail(op, "output padding must be smaller than either stride or dilation", "output_padding",
              output_padding, f"each < max(stride, dilation) = {tuple(max(s, d) for s, d in zip(stride, dilation))}")
    return stride, padding, output_padding, dilation, groups(op, groups_)


def conv_input(op, shape):
    """An empty batch (N = 0) is fine; an empty image plane of a real batch is not (torch's rule).

    torch also takes C_in = 0 but answers with 0 output channels whatever the weight says; scratchnet refuses.
    """
    if len(shape) != 4:
        return
    if shape[1] == 0:
        raise ValueError(f"{op}: the input has no channels (shape {tuple(shape)}): nothing to convolve")
    if shape[0] and not (shape[2] and shape[3]):
        raise ValueError(f"{op}: Only zero batch or zero channel inputs are supported, but got input shape: "
                         f"{tuple(shape)} (H and W must be >= 1)")


def conv_kernel(op, weight_shape):
    """A weight's kernel has at least one tap each way (torch's "kernel size should be greater than zero")."""
    if len(weight_shape) == 4 and not (weight_shape[2] and weight_shape[3]):
        raise ValueError(f"{op}: kernel size should be greater than zero, but the weight {tuple(weight_shape)} "
                         f"has a {weight_shape[2]}x{weight_shape[3]} kernel")


def conv_layer(op, in_channels, out_channels, kernel_size, groups_):
    """A conv layer's sizes: channels >= 0 divisible by groups, kernel_size >= 1."""
    in_channels = count(op, "in_channels", in_channels)
    out_channels = count(op, "out_channels", out_channels)
    kernel = at_least(op, "kernel_size", kernel_size, 1, "kernel size should be greater than zero")
    return in_channels, out_channels, kernel, groups(op, groups_, in_channels, out_channels)


# --------------------------------------------------------------------------- pooling


def pool2d_args(op, kernel_size, stride, padding, dilation=1):
    """(kernel, stride, padding, dilation) of max/avg pooling; stride None (or []) means kernel_size."""
    kernel = at_least(op, "kernel_size", kernel_size, 1, "kernel size should be greater than zero")
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    stride = at_least(op, "stride", stride, 1, "stride should be greater than zero")
    padding = at_least(op, "padding", padding, 0, "pad must be non-negative")
    dilation = at_least(op, "dilation", dilation, 1, "dilation should be greater than zero")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        _fail(op, "pad should be at most half of effective kernel size", "padding", padding,
              f"each <= kernel_size // 2 = {tuple(k // 2 for k in kernel)}")
    return kernel, stride, padding, dilation


def divisor_override(op, value):
    if value is None:
        return None
    if not _is_int(value):
        _fail(op, "divisor_override must be an int", "divisor_override", value, "None or a non-zero int", TypeError)
    if value == 0:
        _fail(op, "divisor must be not zero", "divisor_override", value, "None or a non-zero int")
    return int(value)


def adaptive_output_size(op, output_size):
    """An int >= 0 or a pair of (int >= 0 or None); None keeps that input size."""
    items = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(items) != 2 or not all(v is None or _is_int(v) for v in items):
        _fail(op, "output_size must be an int or a pair of ints (or None)", "output_size", output_size,
              "an int >= 0, or a pair of ints >= 0 / None", TypeError)
    if any(v is not None and v < 0 for v in items):
        _fail(op, "elements of output_size must be greater than or equal to 0", "output_size", output_size,
              "an int >= 0, or a pair of ints >= 0 / None")
    return tuple(None if v is None else int(v) for v in items)


# --------------------------------------------------------------------------- dropout and normalisation


def probability(op, p):
    if not _is_number(p) or isinstance(p, bool):
        _fail(op, "dropout probability must be a number", "p", p, "a float in [0, 1]", TypeError)
    if not 0 <= p <= 1:  # also NaN
        _fail(op, f"dropout probability has to be between 0 and 1, but got {p}", "p", p, "a float in [0, 1]")
    return p


def lrn_size(op, size):
    if not _is_int(size):
        _fail(op, "size must be an int", "size", size, "an int >= 1", TypeError)
    if size < 1:
        _fail(op, "size (the number of neighbouring channels) must be a positive int", "size", size, "an int >= 1")
    return int(size)


def batch_norm_args(op, eps, momentum, training=True):
    """eps > 0 (torch checks it when training; a module always trains, so its constructor always does);
    momentum None or in [0, 1] (torch accepts any number; outside [0, 1] the running mean is no average)."""
    number(op, "eps", eps)
    if training and not eps > 0:
        _fail(op, f"batch_norm eps must be positive during training, but got {eps}", "eps", eps, "a float > 0")
    if momentum is not None:
        number(op, "momentum", momentum)
        if not 0 <= momentum <= 1:
            _fail(op, "momentum must be in [0, 1] (the running statistics' weight of the new batch)", "momentum",
                  momentum, "None or a float in [0, 1]")
    return eps, momentum


# --------------------------------------------------------------------------- dims and losses


def dim(op, value, ndim):
    """A dimension index in [-ndim, ndim - 1], returned non-negative."""
    if not _is_int(value):
        _fail(op, "dim must be an int", "dim", value, f"an int in [{-ndim}, {ndim - 1}]", TypeError)
    low, high = (-ndim, ndim - 1) if ndim else (-1, 0)
    if not low <= value <= high:
        _fail(op, f"Dimension out of range (expected to be in range of [{low}, {high}], but got {value})", "dim",
              value, f"an int in [{low}, {high}]")
    return value % max(ndim, 1)


def dims(op, value, ndim):
    """None (every dim), a dim, or a tuple of distinct dims, each in range (reductions, permute)."""
    if value is None:
        return None
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    wrapped = [dim(op, v, ndim) for v in items]
    if len(set(wrapped)) != len(wrapped):
        repeated = next(v for v in items if wrapped.count(dim(op, v, ndim)) > 1)
        _fail(op, f"dim {repeated} appears multiple times in the list of dims", "dim", value, "distinct dims")
    return value


def split_size(op, value, length):
    if not _is_int(value):
        _fail(op, "split_size must be an int (or a list of ints)", "split_size", value, "an int >= 1", TypeError)
    if value < 1 and not (value == 0 and length == 0):
        _fail(op, "split_size can only be 0 if dimension size is 0", "split_size", value, "an int >= 1")
    return int(value)


def optional_dim(op, value):
    """A layer's dim before it has seen a tensor: None or an int."""
    if value is not None and not _is_int(value):
        _fail(op, "dim must be an int", "dim", value, "None or an int", TypeError)
    return value


def flatten_dims(op, start_dim, end_dim, ndim):
    start, end = dim(op, start_dim, max(ndim, 1)), dim(op, end_dim, max(ndim, 1))
    if start > end:
        _fail(op, "flatten() has invalid args: start_dim cannot come after end_dim", "start_dim, end_dim",
              (start_dim, end_dim), f"start_dim <= end_dim (after wrapping negatives over {ndim} dims)")
    return start, end


def flatten_layer(op, start_dim, end_dim):
    """A Flatten layer's dims: ints, in order when both count from the same end (else only an input tells)."""
    for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
        if not _is_int(value):
            _fail(op, f"{name} must be an int", name, value, "an int", TypeError)
    if (start_dim >= 0) == (end_dim >= 0):
        flatten_dims(op, start_dim, end_dim, max(abs(start_dim), abs(end_dim)) + 1)
    return start_dim, end_dim


def reduction(op, value):
    if value not in REDUCTIONS:
        _fail(op, f"{value} is not a valid value for reduction", "reduction", value, "'mean', 'sum' or 'none'")
    return value


def label_smoothing(op, value):
    if not _is_number(value) or isinstance(value, bool):
        _fail(op, "label_smoothing must be a number", "label_smoothing", value, "a float in [0, 1]", TypeError)
    if not 0.0 <= value <= 1.0:
        _fail(op, f"label_smoothing must be between 0.0 and 1.0. Got: {value}", "label_smoothing", value,
              "a float in [0, 1]")
    return float(value)


def ignore_index(op, value):
    if not _is_int(value):
        _fail(op, "ignore_index must be an int", "ignore_index", value, "an int (default -100)", TypeError)
    return int(value)
