"""The model zoo: one file per family, each reading like its paper's architecture table."""
from . import alexnet, densenet, efficientnet, googlenet, lenet, mobilenet, resnet, senet, vgg, yolo  # noqa: F401
from .registry import get_model, list_models, register_model

__all__ = ["get_model", "list_models", "register_model"]
