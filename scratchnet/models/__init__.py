"""The model zoo: one file per family, each reading like its paper's architecture table."""
from . import alexnet, densenet, efficientnet, googlenet, lenet, mobilenet, preact_resnet, resnet  # noqa: F401
from . import senet, vgg, yolo  # noqa: F401
from .registry import Recipe, get_model, get_recipe, list_models, register_model

__all__ = ["Recipe", "get_model", "get_recipe", "list_models", "register_model"]
