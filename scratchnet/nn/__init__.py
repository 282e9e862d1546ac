"""scratchnet.nn: Module, Parameter and the layers, by torch.nn's names."""
from . import functional, init
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d,
                     Dropout, Flatten, Identity, LeakyReLU, Linear, LocalResponseNorm, LogSoftmax, MaxPool2d,
                     ReLU, Sigmoid, SiLU, Softmax, Tanh)
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential, StateDictError
