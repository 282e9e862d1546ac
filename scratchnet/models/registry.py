"""The model registry: ``get_model(name, num_classes=..., **options)``, ``list_models()`` and each
model's training recipe, ``get_recipe(name)``.

Each family file decorates its constructors with ``@register_model("name", ..., recipe=...)``: the
recipe (dataset, optimizer, schedule, augmentation) sits beside the model it trains, citing the paper.
"""
import os
from dataclasses import dataclass

from .pretrained import PretrainedError, load_pretrained, resolve

_MODELS = {}
_ALIASES = {}
_RECIPES = {}


@dataclass(frozen=True)
class Recipe:
    """What a bare ``python -m scratchnet.train MODEL`` does; each command-line option overrides its part.

    ``name`` labels the recipe (models that share one share the name); ``task`` is "classification" or
    "detection"; ``warmup`` counts epochs of linear warm-up from lr/10; ``augment`` is a subset of
    ("crop", "flip", "lighting")."""
    name: str
    dataset: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    optimizer: str
    schedule: str
    warmup: float
    augment: tuple
    task: str = "classification"


# the ImageNet-shaped nets, on CIFAR-10 upsampled to their input: SGD 0.01, step, wd 5e-4, crop + flip
IMAGENET_SHAPED = Recipe("imagenet", dataset="cifar10", epochs=90, batch_size=64, lr=0.01, momentum=0.9,
                         weight_decay=5e-4, optimizer="sgd", schedule="step", warmup=0.0, augment=("crop", "flip"))


def register_model(name, *aliases, recipe=None):
    """Register a constructor under a torchvision-style name (plus aliases), with its training ``recipe``."""
    def decorate(constructor):
        if name in _MODELS or name in _ALIASES:
            raise ValueError(f"model name {name!r} registered twice")
        _MODELS[name] = constructor
        _RECIPES[name] = recipe
        for alias in aliases:
            _ALIASES[alias] = name
        return constructor
    return decorate


def list_models():
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def _resolve(name):
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return key


WEIGHTS_FILE_SUFFIXES = (".npz", ".safetensors", ".pt", ".pth", ".bin")


def get_model(name, weights=None, **options):
    """Build a model by name, e.g. ``get_model("resnet50", num_classes=10)``.

    ``weights``: "DEFAULT" or a torchvision weight name ("IMAGENET1K_V1") for the ImageNet weights of
    the models that have them (``scratchnet.models.pretrained``; 1000 classes), or the path of a
    weights file (.npz, .safetensors, .pt/.pth) to load; None (default) keeps the initialisation."""
    key = _resolve(name)
    if weights is None:
        return _MODELS[key](**options)
    is_file = isinstance(weights, os.PathLike) or str(weights).endswith(WEIGHTS_FILE_SUFFIXES)
    if not is_file and options.get("num_classes", 1000) != 1000:
        raise PretrainedError(f"{name}: ImageNet weights have 1000 classes, not num_classes="
                              f"{options['num_classes']}; build with weights=... and 1000 classes, then replace "
                              f"the last layer to fine-tune")
    chosen = None if is_file else resolve(key, weights)  # before building: a wrong name fails at once
    if chosen is not None:
        options.setdefault("num_classes", 1000)
    model = _MODELS[key](**options)
    if chosen is None:
        model.load_state_dict(weights)
    else:
        load_pretrained(model, chosen)
    return model


def get_recipe(name):
    """The training recipe registered with a model (a ``Recipe``), e.g. ``get_recipe("resnet20").lr``."""
    key = _resolve(name)
    if _RECIPES[key] is None:
        raise ValueError(f"model {name!r} was registered without a training recipe; pass "
                         f"register_model(..., recipe=Recipe(...)) (scratchnet.models.registry)")
    return _RECIPES[key]
