"""Filters and feature maps: a net's first-layer filters and one image's maps after a conv layer (a net
trained here on Fashion-MNIST, or an ImageNet-trained one on a sample photograph)."""
from .. import backend
from ..autograd import Tensor, no_grad
from ..nn import Conv2d
from .common import (DEFAULT_OUT, class_name, image_grid, label, load_or_train, save_figure, save_json,
                     study_batch, weighted_layers)


def measure(model_name="lenet", weights=None, layer=1, image=0, steps=200, batch_size=32, data_dir=None, seed=0,
            **options):
    """dict(model, layer, filters (first conv's weights), input, target, maps (conv ``layer``'s output))."""
    model = load_or_train(model_name, weights, steps, batch_size, data_dir, seed, **options)
    convs = [m for _, m in weighted_layers(model) if isinstance(m, Conv2d)]
    if not 1 <= layer <= len(convs):
        raise ValueError(f"--layer must be between 1 and {len(convs)} (the conv layers of {label(model_name)})")
    captured = {}

    def keep(module, inputs, output):  # returns None: the output goes on unchanged
        # a copy: an in-place ReLU after the conv (AlexNet's, VGG's) writes over the conv's output array
        captured.setdefault("maps", output.data.copy())
    handle = convs[layer - 1].register_forward_hook(keep)
    x, y = study_batch(model, image + 1, data_dir, seed)
    if not 0 <= image < len(x):
        raise ValueError(f"image {image} does not exist: there are {len(x)} images to choose from")
    with no_grad():
        model(Tensor(x[image:image + 1]))
    handle.remove()
    return dict(model=label(model_name), layer=layer, filters=backend.to_numpy(convs[0].weight.data),
                input=x[image], target=class_name(model, int(y[image])), maps=backend.to_numpy(captured["maps"])[0])


def plot_filters(result):
    first = result["filters"]
    return image_grid([(f"filter {i}", f) for i, f in enumerate(first)], 8,
                      f"{result['model']}: first-layer filters {first.shape[1:]}", cmap="RdBu_r")


def plot_maps(result):
    tiles = [("input", result["input"], "gray")] + [(f"map {i}", m) for i, m in enumerate(result["maps"])]
    return image_grid(tiles, 8, f"{result['model']}: conv layer {result['layer']} feature maps "
                      f"(class {result['target']})", cmap="viridis")


def features(model_name="lenet", weights=None, layer=1, image=0, steps=200, batch_size=32, data_dir=None,
             out=DEFAULT_OUT, seed=0, **options):
    """Write filters.png, feature_maps.png and features.json to ``out``; returns the JSON's numbers."""
    result = measure(model_name, weights, layer, image, steps, batch_size, data_dir, seed, **options)
    save_figure(plot_filters(result), out, "filters.png")
    save_figure(plot_maps(result), out, "feature_maps.png")
    first, maps = result["filters"], result["maps"]
    stats = dict(filters=list(first.shape), maps=list(maps.shape), map_mean=[float(m.mean()) for m in maps])
    save_json(out / "features.json", stats)
    print(f"{result['model']}: {first.shape[0]} first-layer filters {first.shape[1:]}, conv{layer} gives "
          f"{maps.shape[0]} maps of {maps.shape[1:]}")
    return stats
