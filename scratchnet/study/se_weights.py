"""SE excitations (Hu et al. 2018, Fig. 6): the mean channel gate of every squeeze-and-excitation block,
per class -- how class-specific each stage's channel use is. On an ImageNet-trained EfficientNet
(``--weights DEFAULT``) the classes are those predicted for the sample photographs."""
import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from ..models import efficientnet, senet
from .common import DEFAULT_OUT, label, load_or_train, plt, save_figure, study_batch

SE_BLOCKS = (senet.SqueezeExcitation, efficientnet.SqueezeExcitation)


def measure(model_name="se_resnet20", weights=None, steps=100, batch_size=32, images=500, data_dir=None, seed=0,
            **options):
    """{block name: (classes, channels) mean excitation}, over ``images`` test images."""
    model = load_or_train(model_name, weights, steps, batch_size, data_dir, seed, **options)
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, SE_BLOCKS)]
    if not blocks:
        raise ValueError(f"{label(model_name)} has no SE blocks; try se_resnet20 or an efficientnet")
    gates, handles = {}, []
    for name, block in blocks:
        handles.append(block.scale_activation.register_forward_hook(
            lambda m, i, o, name=name: gates.__setitem__(name, backend.to_numpy(o.data)[:, :, 0, 0])))
    x, y = study_batch(model, images, data_dir, seed)
    with no_grad():
        model(Tensor(x))
    for h in handles:
        h.remove()
    classes = np.unique(y)
    return {name: np.stack([gates[name][y == c].mean(axis=0) for c in classes]) for name, _ in blocks}


def class_spread(per_class):
    """Per block, the standard deviation across classes of each channel's gate, averaged over channels."""
    return {name: float(v.std(axis=0).mean()) for name, v in per_class.items()}


def plot(per_class):
    pyplot = plt()
    names = list(per_class)
    shown = [names[0], names[len(names) // 2], names[-1]]
    fig, axes = pyplot.subplots(len(shown), 1, figsize=(10, 2.6 * len(shown)), squeeze=False)
    for ax, name in zip(axes[:, 0], shown):
        image = ax.imshow(per_class[name], aspect="auto", cmap="magma", vmin=0, vmax=1)
        ax.set(title=f"{name}: mean excitation per class", xlabel="channel", ylabel="class",
               yticks=np.arange(len(per_class[name])))
        fig.colorbar(image, ax=ax)
    return fig


def print_table(per_class, spread):
    print(f"{'SE block':<32}{'channels':>9}{'mean gate':>11}{'spread across classes':>23}")
    for name, gates in per_class.items():
        print(f"{name:<32}{gates.shape[1]:>9}{gates.mean():>11.3f}{spread[name]:>23.4f}")


def se_weights(model_name="se_resnet20", weights=None, steps=100, batch_size=32, images=500, data_dir=None,
               out=DEFAULT_OUT, seed=0, **options):
    """Measure, write se_weights.png and se_weights.json to ``out``, print the table; returns the gates."""
    per_class = measure(model_name, weights, steps, batch_size, images, data_dir, seed, **options)
    spread = class_spread(per_class)
    save_figure(plot(per_class), out, "se_weights.png", "se_weights.json",
                dict(per_class={k: v.tolist() for k, v in per_class.items()}, class_spread=spread))
    print_table(per_class, spread)
    return per_class
