"""scratchnet.nn: Module, Parameter and the layers, by torch.nn's names; save/load of weights."""
from . import functional, init
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d,
                     CrossEntropyLoss, DeformConv2d, DeformConv2dPack, Dropout, Flatten, Identity, LeakyReLU, Linear,
                     LocalResponseNorm, LogSoftmax, MaxPool2d, ModulatedDeformConv2dPack, MSELoss, NLLLoss, ReLU,
                     Sigmoid, SiLU, Softmax, Tanh)
from .module import (IncompatibleKeys, Module, ModuleCallHook, ModuleDict, ModuleList, Parameter, Sequential,
                     StateDictError)
from .serialization import WeightsFileError, load, save
