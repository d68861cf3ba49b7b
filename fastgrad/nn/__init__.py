"""fastgrad.nn: Module and Parameter, the layers, the losses as modules, ``init``,
``functional`` (as F) and ``utils``; names and arguments as in torch.nn."""
from . import functional, init, parallel, utils
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, BCEWithLogitsLoss, Conv2d,
                     CrossEntropyLoss, Dropout, Flatten, Identity, LeakyReLU, Linear, LogSoftmax, MaxPool2d,
                     ModuleList, MSELoss, NLLLoss, ReLU, Sequential, Sigmoid, Softmax, SyncBatchNorm, Tanh)
from .module import Module, Parameter
from .layers import (AvgPool1d, Conv1d, ConvTranspose2d, Dropout2d, ELU, Embedding, GELU, GroupNorm,  # noqa: E402
                     Hardswish, LayerNorm, MaxPool1d, ModuleDict, PReLU, SiLU, Unflatten)
