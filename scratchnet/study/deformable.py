"""Deformable convolution (Dai et al. 2017, Zhu et al. 2019): does a deformable net beat its regular twin on
objects that vary in scale, rotation and position, and where do its kernels look?

The task: Fashion-MNIST items scaled (x0.5 to x1.2), rotated (up to 30 degrees either way) and moved on a
larger black canvas (36x36 by default), each image's transform drawn from a seeded generator. The nets:
a small CIFAR-style ResNet (He et al. Sec. 4.2, one unit per stage, 8-16-32 filters, option A shortcuts)
and its twin with every 3x3 convolution of its last two stages deformable (DeformConv2dPack, v1; or
ModulatedDeformConv2dPack, v2), starting from the same weights: zero offsets, so at the first step the
deformable net computes the regular one (v1). Both train with the same batches in the same order, one
pair per seed; the offset branches learn at ``offset_lr_mult`` times the learning rate (the papers' beta:
1 in v1, 0.1 in v2).

What it measures, on the first seed's deformable net (the papers' analyses, at this scale):
  - sampling locations (DCNv1 Fig. 5, DCNv2 Fig. 1): for an output pixel of the last deformable layer,
    its 9 sampling points, each point's nearest pixel of the layer below and its 9 points, and so on
    through the last three deformable layers: 729 points, drawn over the image, beside the regular
    net's fixed grid traced the same way;
  - the effective dilation (DCNv1 Table 2): per deformable layer and output pixel, the mean distance
    between the sampling points of neighbouring taps (12 pairs of a 3x3 kernel; 1 for a regular
    convolution), averaged over the pixels on the object, by object scale (small, medium, large), and
    over the background pixels.

Coordinates: a point q on the grid of a map that is the canvas subsampled by ``jump`` lies at image
pixel q * jump (every stride-2 layer here is a 3x3 convolution with padding 1, or option A's x[::2],
whose output o is centred on input 2o).
"""
import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, no_grad
from ..data import load_mnist
from ..models.deformable import stage_convs
from ..models.resnet import CifarResNet
from ..nn import DeformConv2dPack
from ..optim import SGD
from ..optim.lr_scheduler import CosineAnnealingLR
from .common import DEFAULT_OUT, plt, save_figure, save_json

WIDTHS = (8, 16, 32)
DEFORMABLE_STAGES = (False, True, True)  # the last two stages: 2 + 2 deformable 3x3 convolutions
SCALES = (0.5, 1.2)  # object size range (x the 28-pixel item)
ROTATION = 30.0  # degrees, either way
SCALE_BINS = (("small", 0.5, 0.7), ("medium", 0.7, 0.95), ("large", 0.95, 1.2))
TRACED = 3  # deformable layers the sampling locations go through (the papers' figure: 3, 729 points)
OBJECT = 0.1  # a pixel belongs to the object where the warped item's intensity (0..1) exceeds this


# --------------------------------------------------------------------------- the task


def warp(items, scale, angle, shift, canvas):
    """Fashion-MNIST items (N, 28, 28, intensities 0..1) scaled, rotated by ``angle`` (radians) about their
    centre and placed with that centre at the canvas centre + ``shift`` (N, 2: rows, columns), by bilinear
    sampling (zero outside the item): (N, canvas, canvas) float32."""
    n, h, w = items.shape
    centre = (canvas - 1) / 2
    rows, cols = np.mgrid[0:canvas, 0:canvas].astype(np.float64)
    dy = rows[None] - centre - shift[:, 0, None, None]
    dx = cols[None] - centre - shift[:, 1, None, None]
    cos, sin, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None], scale[:, None, None]
    y = (cos * dy + sin * dx) / s + (h - 1) / 2  # the inverse map: canvas pixel -> item pixel
    x = (-sin * dy + cos * dx) / s + (w - 1) / 2
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    ly, lx = y - y0, x - x0
    out = np.zeros(y.shape)
    flat = items.reshape(n, -1)
    for cy, cx, weight in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx), (y0 + 1, x0, ly * (1 - lx)),
                           (y0 + 1, x0 + 1, ly * lx)):
        inside = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
        index = np.where(inside, cy * w + cx, 0).reshape(n, -1)
        out += np.where(inside, weight, 0) * np.take_along_axis(flat, index, axis=1).reshape(y.shape)
    return out.astype(np.float32)


def transformed_fashion(train, count, canvas, rng, data_dir=None):
    """``count`` Fashion-MNIST images (drawn by ``rng``) each scaled, rotated and shifted at random:
    (images (count, 1, canvas, canvas) in 0..1, labels, scales)."""
    data = load_mnist("fashion-mnist", train=train, data_dir=data_dir, progress=False)
    pick = rng.choice(len(data), size=count, replace=count > len(data))
    items, labels = data.get_batch(pick)
    items = items[:, 0].astype(np.float64) / 255
    scale = rng.uniform(*SCALES, count)
    angle = np.radians(rng.uniform(-ROTATION, ROTATION, count))
    room = np.maximum(0.0, (canvas - 28 * scale) / 2)[:, None]  # the upright item stays on the canvas
    shift = rng.uniform(-1, 1, (count, 2)) * room
    images = np.concatenate([warp(items[i:i + 1000], scale[i:i + 1000], angle[i:i + 1000], shift[i:i + 1000],
                                  canvas) for i in range(0, count, 1000)])
    return images[:, None], np.asarray(labels), scale


def build_net(deformable, version="v1"):
    """The regular net, or its twin with the last two stages' 3x3 convolutions deformable."""
    stages = stage_convs(version, DEFORMABLE_STAGES) if deformable else None
    return CifarResNet(1, num_classes=10, in_channels=1, widths=WIDTHS, stage_conv3x3=stages)


def deformable_layers(model):
    """(name, DeformConv2dPack) in forward order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, DeformConv2dPack)]


# --------------------------------------------------------------------------- training


def train(model, images, labels, steps, batch_size, lr, offset_lr_mult, seed, normalise):
    """SGD (momentum 0.9, weight decay 5e-4, cosine decay over ``steps``) on batches drawn in a seeded
    order; the offset branches at ``offset_lr_mult`` x lr. Returns the per-step losses."""
    named = list(model.named_parameters())
    offsets = [p for n, p in named if "conv_offset" in n]
    groups = [{"params": [p for n, p in named if "conv_offset" not in n]}]
    if offsets:
        groups.append({"params": offsets, "lr": lr * offset_lr_mult})
    optimizer = SGD(groups, lr=lr, momentum=0.9, weight_decay=5e-4)
    schedule = CosineAnnealingLR(optimizer, T_max=steps)
    order = np.random.default_rng(seed).permutation(len(images))
    model.train()
    losses = []
    for step in range(steps):
        batch = order[(step * batch_size + np.arange(batch_size)) % len(images)]
        loss = F.cross_entropy(model(Tensor(normalise(images[batch]))), Tensor(labels[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.item()))
    return losses


def accuracy(model, images, labels, normalise, batch_size=250):
    model.eval()
    right = 0
    with no_grad():
        for start in range(0, len(images), batch_size):
            out = model(Tensor(normalise(images[start:start + batch_size])))
            right += int((backend.to_numpy(out.data).argmax(1) == labels[start:start + batch_size]).sum())
    return right / len(images)


# --------------------------------------------------------------------------- where the kernels look


def offset_fields(model, images, normalise):
    """{layer name: offsets (N, 2*taps, oh, ow)} of every deformable layer for ``images`` (eval mode)."""
    fields, handles = {}, []
    for name, layer in deformable_layers(model):
        def keep(module, inputs, output, name=name, layer=layer):
            taps = layer.kernel_size[0] * layer.kernel_size[1]
            fields[name] = backend.to_numpy(output.data)[:, :2 * layer.offset_groups * taps]
        handles.append(layer.conv_offset.register_forward_hook(keep))
    model.eval()
    try:
        with no_grad():
            model(Tensor(normalise(images)))
    finally:
        for handle in handles:
            handle.remove()
    return fields


def sampling_points(layer, offsets, pixels):
    """Where ``layer``'s taps sample for output ``pixels`` (P, 2: row, column) of one image: (P, taps, 2) in the
    layer's input grid. ``offsets`` (2*taps, oh, ow) from offset_fields (one offset group)."""
    (kh, kw), (sy, sx), (ph, pw), (dy, dx) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    taps = np.arange(kh * kw)
    grid = np.stack([taps // kw * dy - ph, taps % kw * dx - pw], axis=1)  # (taps, 2)
    rows, cols = pixels[:, 0], pixels[:, 1]
    pairs = offsets.reshape(kh * kw, 2, *offsets.shape[1:])[:, :, rows, cols].transpose(2, 0, 1)  # (P, taps, 2)
    return pixels[:, None, :] * np.array([sy, sx]) + grid[None] + pairs


def trace(layers, offsets, pixel):
    """The sampling points of output ``pixel`` of the last of ``layers`` (stacked deformable layers, each fed by
    the previous one's output at the same grid), through all of them: (9**len(layers), 2) points in the first
    layer's input grid. A point between pixels goes on through the nearest pixel of the layer below."""
    points = np.array([pixel], dtype=np.float64)
    for index in range(len(layers) - 1, -1, -1):
        layer, field = layers[index], offsets[index]
        pixels = np.rint(points).astype(np.int64)
        pixels = np.clip(pixels, 0, np.array(field.shape[1:]) - 1)
        points = sampling_points(layer, field, pixels).reshape(-1, 2)
    return points


def effective_dilation(layer, offsets):
    """Per image and output pixel, the mean distance between the sampling points of neighbouring taps (the 12
    horizontal and vertical pairs of a 3x3 kernel), in the layer's input pixels: (N, oh, ow); 1 for a regular 3x3
    convolution (DCNv1 Sec. 5.1)."""
    (kh, kw) = layer.kernel_size
    n, _, oh, ow = offsets.shape
    rows, cols = np.mgrid[0:oh, 0:ow]
    pixels = np.stack([rows.ravel(), cols.ravel()], axis=1)
    result = np.empty((n, oh * ow))
    for b in range(n):
        points = sampling_points(layer, offsets[b], pixels).reshape(-1, kh, kw, 2)
        gaps = [np.linalg.norm(points[:, 1:] - points[:, :-1], axis=-1).reshape(len(pixels), -1),
                np.linalg.norm(points[:, :, 1:] - points[:, :, :-1], axis=-1).reshape(len(pixels), -1)]
        result[b] = np.concatenate(gaps, axis=1).mean(axis=1)
    return result.reshape(n, oh, ow)


def dilation_by_scale(model, images, scales, normalise, canvas):
    """{layer: {bin: (mean, sd, pixels)}} of the effective dilation over object pixels by object scale, and
    over background pixels ("background")."""
    fields = offset_fields(model, images, normalise)
    stats = {}
    for name, layer in deformable_layers(model):
        dilation = effective_dilation(layer, fields[name])
        jump = canvas // dilation.shape[1]  # the output grid's pixel spacing in the image
        on_object = images[:, 0, ::jump, ::jump][:, :dilation.shape[1], :dilation.shape[2]] > OBJECT
        stats[name] = {}
        for label, low, high in SCALE_BINS:
            pick = ((scales >= low) & (scales < high))[:, None, None] & on_object
            values = dilation[pick]
            stats[name][label] = (float(values.mean()), float(values.std()), int(values.size)) if values.size \
                else (float("nan"), float("nan"), 0)
        values = dilation[~on_object]
        stats[name]["background"] = (float(values.mean()), float(values.std()), int(values.size))
    return stats


def sampling_figure_data(model, images, scales, normalise, canvas):
    """For one image per scale bin: the image, the traced output pixel (at the item's centre) in image pixels,
    and the 729 points of the learned and of the regular (zero-offset) sampling, in image pixels."""
    layers = [m for _, m in deformable_layers(model)][-TRACED:]
    names = [n for n, _ in deformable_layers(model)][-TRACED:]
    picks = []
    for label, low, high in SCALE_BINS:
        index = np.flatnonzero((scales >= low) & (scales < high))
        if index.size:
            picks.append((label, int(index[0])))
    fields = offset_fields(model, images[[i for _, i in picks]], normalise)
    out = []
    for row, (label, i) in enumerate(picks):
        offsets = [fields[n][row] for n in names]
        last = offsets[-1].shape[1:]
        # image pixels between neighbours of the last layer's output grid and of the first traced layer's input grid
        jump_out, jump_in = canvas // last[0], canvas // offsets[0].shape[1] // layers[0].stride[0]
        mass = images[i, 0] > OBJECT  # the traced pixel: the output pixel nearest the item's centre of mass
        centre = np.argwhere(mass).mean(axis=0) if mass.any() else np.array([canvas / 2, canvas / 2])
        pixel = np.clip(np.rint(centre / jump_out).astype(np.int64), 0, np.array(last) - 1)
        learned = trace(layers, offsets, pixel) * jump_in
        regular = trace(layers, [np.zeros_like(f) for f in offsets], pixel) * jump_in
        out.append(dict(scale_bin=label, scale=float(scales[i]), image=images[i, 0].tolist(),
                        pixel=(pixel * jump_out).tolist(), learned=learned.tolist(), regular=regular.tolist()))
    return out


# --------------------------------------------------------------------------- the study


def measure(seeds=3, steps=300, batch_size=64, lr=0.05, train_images=19200, test_images=2000, stats_images=500,
            canvas=36, version="v1", offset_lr_mult=None, data_dir=None, seed=0):
    """Train the regular and the deformable net once per seed; measure where the first seed's deformable net
    samples. Returns the JSON-ready dict the runner writes."""
    _check(seeds, steps, batch_size, lr, train_images, test_images, stats_images, canvas, version, offset_lr_mult)
    if offset_lr_mult is None:
        offset_lr_mult = 1.0 if version == "v1" else 0.1  # the papers' beta
    test_x, test_y, test_scales = transformed_fashion(False, test_images, canvas, np.random.default_rng(10**6),
                                                      data_dir)
    runs, deformable_net = [], None
    for run_seed in range(seed, seed + seeds):
        images, labels, _ = transformed_fashion(True, train_images, canvas, np.random.default_rng(run_seed), data_dir)
        mean, std = float(images.mean()), float(images.std())

        def normalise(x, mean=mean, std=std):
            return ((x - mean) / std).astype(np.float32)
        result = dict(seed=run_seed)
        backend.manual_seed(run_seed)
        regular = build_net(False)
        backend.manual_seed(run_seed)
        deformable = build_net(True, version)
        state = {k: v for k, v in deformable.state_dict().items() if "conv_offset" not in k}
        regular.load_state_dict(state)  # the same starting weights: at step 0 the two nets agree (v1)
        for name, model in (("regular", regular), ("deformable", deformable)):
            losses = train(model, images, labels, steps, batch_size, lr, offset_lr_mult, run_seed, normalise)
            result[name] = dict(accuracy=accuracy(model, test_x, test_y, normalise), final_loss=losses[-1])
        print(f"seed {run_seed}: test accuracy regular {100 * result['regular']['accuracy']:.2f}%, deformable "
              f"{100 * result['deformable']['accuracy']:.2f}%", flush=True)
        runs.append(result)
        if deformable_net is None:
            deformable_net, first_normalise = deformable, normalise
    stats_x, stats_scales = test_x[:stats_images], test_scales[:stats_images]
    return dict(
        settings=dict(seeds=seeds, steps=steps, batch_size=batch_size, lr=lr, train_images=train_images,
                      test_images=test_images, stats_images=stats_images, canvas=canvas, version=version,
                      offset_lr_mult=offset_lr_mult, widths=WIDTHS, scales=SCALES, rotation=ROTATION, seed=seed),
        runs=runs, summary=verdict(runs),
        dilation=dilation_by_scale(deformable_net, stats_x, stats_scales, first_normalise, canvas),
        sampling=sampling_figure_data(deformable_net, stats_x, stats_scales, first_normalise, canvas))


def verdict(runs):
    """Mean and sample standard deviation over seeds of each net's accuracy, the paired differences, and the
    verdict: 'deformable better' when its mean exceeds the regular one's by more than the seeds' spread (the
    larger of the two standard deviations), 'regular better' in the mirror case, else 'within the spread'."""
    acc = {k: np.array([r[k]["accuracy"] for r in runs]) for k in ("regular", "deformable")}
    sd = {k: float(v.std(ddof=1)) if len(v) > 1 else float("nan") for k, v in acc.items()}
    gap = float(acc["deformable"].mean() - acc["regular"].mean())
    spread = max(sd.values())
    if not np.isfinite(spread):
        call = "one seed: no spread to compare with"
    elif gap > spread:
        call = "deformable better"
    elif gap < -spread:
        call = "regular better"
    else:
        call = "within the spread"
    return dict(regular_mean=float(acc["regular"].mean()), regular_sd=sd["regular"],
                deformable_mean=float(acc["deformable"].mean()), deformable_sd=sd["deformable"], gap=gap,
                spread=spread, paired_differences=(acc["deformable"] - acc["regular"]).tolist(), verdict=call)


def _check(seeds, steps, batch_size, lr, train_images, test_images, stats_images, canvas, version, offset_lr_mult):
    for name, value, minimum in (("seeds", seeds, 1), ("steps", steps, 1), ("batch_size", batch_size, 1),
                                 ("train_images", train_images, 1), ("test_images", test_images, 1),
                                 ("stats_images", stats_images, 1), ("canvas", canvas, 28)):
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if canvas % 4:
        raise ValueError(f"canvas must be a multiple of 4 (the net halves it twice), got {canvas}")
    if not lr > 0 or (offset_lr_mult is not None and not offset_lr_mult >= 0):
        raise ValueError(f"lr must be > 0 and offset_lr_mult >= 0, got {lr} and {offset_lr_mult}")
    if stats_images > test_images:
        raise ValueError(f"stats_images ({stats_images}) must not exceed test_images ({test_images})")
    if version not in ("v1", "v2"):
        raise ValueError(f"version must be v1 or v2, got {version!r}")


# --------------------------------------------------------------------------- pictures and table


def plot_sampling(data):
    """Per scale bin, the image with the 729 traced sampling points: the regular grid above, the learned below."""
    pyplot = plt()
    cases = data["sampling"]
    fig, axes = pyplot.subplots(2, len(cases), figsize=(3.2 * len(cases), 6.6), squeeze=False)
    for column, case in enumerate(cases):
        for row, (key, title) in enumerate((("regular", "regular grid"), ("learned", "deformable"))):
            ax = axes[row, column]
            ax.imshow(np.array(case["image"]), cmap="gray", vmin=0, vmax=1)
            points = np.array(case[key])
            ax.scatter(points[:, 1], points[:, 0], s=3, c="red", alpha=0.35, linewidths=0)
            ax.scatter([case["pixel"][1]], [case["pixel"][0]], s=40, c="lime", marker="+")
            size = len(case["image"])
            ax.set(xlim=(-0.5, size - 0.5), ylim=(size - 0.5, -0.5), xticks=[], yticks=[])
            ax.set_title(f"{title}, {case['scale_bin']} item (x{case['scale']:.2f})", fontsize=8)
    fig.suptitle(f"sampling locations of one output pixel through the last {TRACED} deformable layers "
                 f"({9 ** TRACED} points)", fontsize=9)
    return fig


def plot_statistics(data):
    """Accuracy per seed (mean and sd) and the effective dilation by layer and object scale."""
    pyplot = plt()
    fig, (left, right) = pyplot.subplots(1, 2, figsize=(11, 3.8), gridspec_kw=dict(width_ratios=(1, 2.2)))
    for x, key in enumerate(("regular", "deformable")):
        values = [100 * r[key]["accuracy"] for r in data["runs"]]
        left.scatter([x] * len(values), values, color="gray", s=14)
        mean, sd = 100 * data["summary"][f"{key}_mean"], 100 * data["summary"][f"{key}_sd"]
        left.errorbar([x + 0.15], [mean], yerr=[0 if np.isnan(sd) else sd], fmt="o", color="C0" if x == 0 else "C1",
                      capsize=4)
    left.set(xticks=[0, 1], xticklabels=["regular", "deformable"], xlim=(-0.5, 1.6), ylabel="test accuracy (%)",
             title=f"{len(data['runs'])} seeds: {data['summary']['verdict']}")
    layers, bins = list(data["dilation"]), [b for b, _, _ in SCALE_BINS] + ["background"]
    width = 0.8 / len(bins)
    for k, label in enumerate(bins):
        means = [data["dilation"][layer][label][0] for layer in layers]
        sds = [data["dilation"][layer][label][1] for layer in layers]
        right.bar(np.arange(len(layers)) + (k - (len(bins) - 1) / 2) * width, means, width, yerr=sds, capsize=2,
                  label=label)
    right.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    right.set(xticks=np.arange(len(layers)), xticklabels=layers, ylabel="effective dilation (input pixels)",
              title="effective dilation of the deformable layers, by object scale")
    right.legend(fontsize=8)
    return fig


def print_table(data):
    s = data["summary"]
    print(f"{'seed':>6} {'regular':>10} {'deformable':>11}")
    for r in data["runs"]:
        print(f"{r['seed']:>6} {100 * r['regular']['accuracy']:>9.2f}% {100 * r['deformable']['accuracy']:>10.2f}%")
    print(f"{'mean':>6} {100 * s['regular_mean']:>9.2f}% {100 * s['deformable_mean']:>10.2f}%")
    print(f"{'sd':>6} {100 * s['regular_sd']:>9.2f}  {100 * s['deformable_sd']:>10.2f}")
    print(f"deformable - regular: {100 * s['gap']:+.2f} points; seeds' spread {100 * s['spread']:.2f}: {s['verdict']}")
    print(f"\n{'effective dilation':<22}" + "".join(f"{b:>18}" for b, _, _ in SCALE_BINS) + f"{'background':>18}")
    for layer, bins in data["dilation"].items():
        print(f"{layer:<22}" + "".join(f"{m:>9.3f} ± {sd:<6.3f}" for m, sd, _ in bins.values()))


def deformable(seeds=3, steps=300, batch_size=64, lr=0.05, train_images=19200, test_images=2000, stats_images=500,
               canvas=36, version="v1", offset_lr_mult=None, data_dir=None, out=DEFAULT_OUT, seed=0):
    """Run the study; writes deformable.json, deformable_sampling.png and deformable_statistics.png to ``out``
    and prints the table. Returns the data."""
    data = measure(seeds, steps, batch_size, lr, train_images, test_images, stats_images, canvas, version,
                   offset_lr_mult, data_dir, seed)
    save_json(out / "deformable.json", data)
    save_figure(plot_sampling(data), out, "deformable_sampling.png")
    save_figure(plot_statistics(data), out, "deformable_statistics.png")
    print_table(data)
    return data
