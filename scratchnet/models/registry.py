"""The model registry: ``get_model(name, num_classes=..., **options)``, ``list_models()`` and each
model's training recipe, ``get_recipe(name)``.

Each family file decorates its constructors with ``@register_model("name", ..., recipe=...)``: the
recipe (dataset, optimizer, schedule, augmentation) sits beside the model it trains, citing the paper.
"""
import functools
import inspect
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
        checked = _checking_sizes(constructor)
        _MODELS[name] = checked
        _RECIPES[name] = recipe
        for alias in aliases:
            _ALIASES[alias] = name
        return checked
    return decorate


# The sizes every constructor may take, checked before anything is built: a network needs at least one
# class and one input channel (0 would fail deep inside, in an initialiser's 1/sqrt(fan)).
SIZES = ("num_classes", "in_channels")


def _checking_sizes(constructor):
    """``constructor``, refusing a size in ``SIZES`` that is not a positive int, in one sentence."""
    signature = inspect.signature(constructor)

    @functools.wraps(constructor)
    def build(*args, **options):
        try:
            given = dict(signature.bind_partial(*args, **options).arguments)
        except TypeError:
            given = {}  # a wrong call: the constructor itself says what is wrong with it
        for parameter in signature.parameters.values():  # what **options collected, by name
            if parameter.kind is parameter.VAR_KEYWORD:
                given.update(given.pop(parameter.name, {}))
        for size in SIZES:
            value = given.get(size)
            if value is None:
                continue
            if isinstance(value, bool) or not hasattr(value, "__index__"):  # int or a NumPy int
                raise TypeError(f"{constructor.__name__}: {size} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{constructor.__name__}: {size} must be a positive int, got {value}")
        return constructor(*args, **options)
    return build


def list_models():
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def _resolve(name):
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return key


def model_name(name):
    """The registered name of a model name or alias, in any case (``"LeNet"`` -> ``"lenet5"``)."""
    return _resolve(name)


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
