"""DeconvNet (Zeiler & Fergus 2014): a layer's strongest activations projected back to pixels through
max-unpooling with the pooling switches, ReLU, and the transposed filters.

On a net trained here (Fashion-MNIST), or on an ImageNet-trained VGG (``--weights DEFAULT``) looking at
the sample photographs, which is the paper's setting (its Fig. 2 shows an ImageNet AlexNet/ZFNet)."""
import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..functional.conv import im2col
from ..functional.pool import pool_geometry
from ..nn import AvgPool2d, BatchNorm2d, Conv2d, Linear, LocalResponseNorm, MaxPool2d, ReLU
from .common import DEFAULT_OUT, image_grid, label, load_or_train, save_figure, save_json, study_batch


def feature_stack(model):
    """The model's leading convolutional layers as a flat list (Conv2d, ReLU, MaxPool2d, LRN, batch norm,
    avg pool).

    Works for models whose forward applies their children in registration
    order up to the first Linear (LeNet-5 modern, ZFNet/AlexNet and VGG ``features``).
    """
    source = model.features if hasattr(model, "features") else model
    stack = []
    for _, m in source.named_modules():
        if m is source or len(m._modules):
            continue
        if isinstance(m, Linear):
            break
        if isinstance(m, (Conv2d, ReLU, MaxPool2d, AvgPool2d, LocalResponseNorm, BatchNorm2d)):
            stack.append(m)
    # a shared activation module (LeNet's self.act) is applied after every conv
    if not any(isinstance(m, ReLU) for m in stack) and hasattr(model, "act"):
        with_act = []
        for m in stack:
            with_act.append(m)
            if isinstance(m, Conv2d):
                with_act.append(model.act)
        stack = with_act
    return stack


def max_pool_with_switches(x, pool):
    """Max pooling that also returns the switches (argmax within each window), on raw arrays."""
    k, s, p, _, out = pool_geometry("max_pool2d", x.shape, pool.kernel_size, pool.stride, pool.padding, 1,
                                    pool.ceil_mode)
    n, c = x.shape[:2]
    col = im2col(x, k, s, p, (1, 1), out_size=out, pad_value=-np.inf)  # (C, kh, kw, N, oh, ow)
    flat = col.reshape(c, k[0] * k[1], n, *out)
    switches = flat.argmax(axis=1)
    return np.take_along_axis(flat, switches[:, None], axis=1)[:, 0].transpose(1, 0, 2, 3), switches


def max_unpool(y, switches, pool, x_shape):
    """Put each pooled value back at its switch position, zeros elsewhere (torch's max_unpool2d:
    where overlapping windows share a maximum, it is placed once, not summed)."""
    (kh, kw), (sy, sx), (ph, pw), _, _ = pool_geometry("max_pool2d", x_shape, pool.kernel_size, pool.stride,
                                                       pool.padding, 1, pool.ceil_mode)
    c, n, oh, ow = switches.shape
    rows = np.arange(oh)[:, None] * sy - ph + switches // kw  # (C, N, oh, ow) input coordinates
    cols = np.arange(ow)[None, :] * sx - pw + switches % kw
    out = np.zeros(x_shape, dtype=y.dtype)
    channel, image = np.meshgrid(np.arange(c), np.arange(n), indexing="ij")
    out[image[..., None, None], channel[..., None, None], rows, cols] = y.transpose(1, 0, 2, 3)
    return out


def deconv_project(stack, x, layer_index, top=9):
    """Zeiler & Fergus's DeconvNet: for the ``top`` strongest activations of layer ``layer_index``,
    keep only that activation and map it back to pixels through (unpool with switches, ReLU,
    transposed conv with the same filters), layer by layer. Returns (projections, (image, channel)).
    """
    acts, switches = [x], []
    with no_grad():
        for m in stack[:layer_index + 1]:
            if isinstance(m, MaxPool2d):
                y, sw = max_pool_with_switches(acts[-1], m)
                switches.append(sw)
            else:
                y = m(Tensor(acts[-1])).data
                switches.append(None)
            acts.append(y)
    fmap = acts[-1]  # (N, C, h, w)
    strongest = fmap.reshape(fmap.shape[0], fmap.shape[1], -1).max(axis=2)  # (N, C)
    order = np.dstack(np.unravel_index(np.argsort(-strongest, axis=None)[:top], strongest.shape))[0]
    projections = []
    for image, channel in order:
        r = np.zeros_like(fmap[image:image + 1])
        spot = np.unravel_index(fmap[image, channel].argmax(), fmap.shape[2:])
        r[0, channel][spot] = fmap[image, channel][spot]
        for depth in range(layer_index, -1, -1):
            m, below = stack[depth], acts[depth][image:image + 1]
            if isinstance(m, MaxPool2d):
                r = max_unpool(r, switches[depth][:, image:image + 1], m, below.shape)
            elif isinstance(m, ReLU):
                r = np.maximum(r, 0)
            elif isinstance(m, Conv2d):  # the transposed filters, no bias (Sec. 2.1)
                full = F.conv_transpose2d(Tensor(r), m.weight.detach(), None, m.stride, m.padding,
                                          groups=m.groups, dilation=m.dilation).data
                r = full[:, :, :below.shape[2], :below.shape[3]]
                if r.shape[2:] != below.shape[2:]:  # stride remainder: pad back to the input size
                    r = np.pad(r, ((0, 0), (0, 0), (0, below.shape[2] - r.shape[2]),
                                   (0, below.shape[3] - r.shape[3])))
            # LRN (and batch norm, which the paper predates) are skipped on the way down, as in the paper
        projections.append(r[0])
    return np.stack(projections), [tuple(int(v) for v in o) for o in order]


def measure(model_name="lenet", weights=None, layer=None, steps=200, batch_size=32, images=64, top=9,
            data_dir=None, seed=0, **options):
    """dict(model, layer, images, projections, activations): the projections of conv layer ``layer``'s
    (1-based) ``top`` strongest activations over ``images`` test images."""
    model = load_or_train(model_name, weights, steps, batch_size, data_dir, seed, **options)
    stack = feature_stack(model)
    conv_indices = [i for i, m in enumerate(stack) if isinstance(m, Conv2d)]
    layer = min(2, len(conv_indices)) if layer is None else layer
    if not 1 <= layer <= len(conv_indices):
        raise ValueError(f"--layer must be between 1 and {len(conv_indices)} (the conv layers of {label(model_name)})")
    # project from the layer's rectified (and pooled, if a pool follows) output
    index = conv_indices[layer - 1]
    while index + 1 < len(stack) and isinstance(stack[index + 1], (ReLU, MaxPool2d, BatchNorm2d)):
        index += 1
    x, _ = study_batch(model, images, data_dir, seed)
    projections, order = deconv_project(stack, x, index, top)
    return dict(model=label(model_name), layer=layer, images=x, projections=projections, activations=order)


def plot(result):
    tiles = []
    for (image, channel), projection in zip(result["activations"], result["projections"]):
        tiles += [(f"img {image}", result["images"][image], "gray"), (f"ch {channel} proj", projection)]
    return image_grid(tiles, 6, f"{result['model']}: DeconvNet projections of conv layer {result['layer']}'s "
                      f"top-{len(result['activations'])} activations", cmap="RdBu_r")


def deconv(model_name="lenet", weights=None, layer=None, steps=200, batch_size=32, images=64, top=9,
           data_dir=None, out=DEFAULT_OUT, seed=0, **options):
    """Project, write deconv.png and deconv.json to ``out``; returns (projections, (image, channel) list)."""
    result = measure(model_name, weights, layer, steps, batch_size, images, top, data_dir, seed, **options)
    projections, order = result["projections"], result["activations"]
    save_figure(plot(result), out, "deconv.png")
    save_json(out / "deconv.json", dict(model=result["model"], layer=result["layer"], activations=order,
                                        projection_abs_sum=[float(np.abs(p).sum()) for p in projections]))
    print(f"{result['model']} conv{result['layer']}: projected {len(order)} activations (image, channel): {order}")
    return projections, order
