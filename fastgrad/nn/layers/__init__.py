"""The layers of fastgrad.nn, one family per file."""

from .activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .channel_dropout import Dropout2d
from .container import ModuleList, Sequential
from .conv import Conv2d
from .conv_variants import Conv1d, ConvTranspose2d
from .dropout import Dropout
from .embedding import Embedding
from .flatten import Flatten
from .linear import Identity, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .module_dict import ModuleDict
from .normalization import BatchNorm1d, BatchNorm2d
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .pooling1d import AvgPool1d, MaxPool1d
from .sample_norm import GroupNorm, LayerNorm
from .smooth_activation import ELU, GELU, Hardswish, PReLU, SiLU
from .sync_batchnorm import SyncBatchNorm
from .unflatten import Unflatten
