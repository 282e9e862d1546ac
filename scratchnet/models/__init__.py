"""The model zoo: one file per family, each reading like its paper's architecture table."""
from . import alexnet, deformable, densenet, efficientnet, googlenet, lenet, mobilenet  # noqa: F401
from . import preact_resnet, resnet, senet, vgg, yolo  # noqa: F401
from .pretrained import PretrainedError
from .registry import Recipe, get_model, get_recipe, list_models, register_model

__all__ = ["PretrainedError", "Recipe", "get_model", "get_recipe", "list_models", "register_model"]
