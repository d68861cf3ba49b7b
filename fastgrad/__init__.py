"""fastgrad: a small gradient engine with compiled kernels for training small CNNs on the
CPU, behind a PyTorch-shaped API (``import fastgrad as torch`` runs small scripts)."""

__version__ = "0.1.0"

import numpy as _np

# Subpackages that `import torch` also brings in (torch.nn, torch.optim).
# ...and those a ported script reaches for: torch.utils.data, torch.cuda, torch.backends,
# torch.accelerator; torch.save / torch.load. (fastgrad.vision, torchvision's counterpart,
# is imported by name, as torchvision is.)
from . import accelerator, autograd, backends, cuda, data, kernels, nn, optim, utils  # noqa: E402  # noqa: E402
from ._config import (
    are_deterministic_algorithms_enabled,
    get_num_threads,
    manual_seed,
    set_flush_denormal,
    set_num_threads,
    show_config,
    use_deterministic_algorithms,
)
from ._device import device
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .compile import compile  # noqa: E402
from .creation import (
    arange,
    as_tensor,
    empty,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from .data.generator import Generator
from .ops.activation import log_softmax, relu, sigmoid, softmax, tanh
from .ops.elementwise import abs, clamp, exp, log, sqrt
from .ops.linalg import matmul
from .ops.reduce import argmax, argmin, max, mean, min, sum
from .ops.select import where
from .ops.shape import cat, flatten, permute, reshape, squeeze, stack, transpose, unsqueeze
from .ops.split import chunk, split
from .serialization import load, save  # noqa: E402
from .tensor import Tensor
from .tensor_utils import allclose, eye, inference_mode, is_tensor

float32 = float = _np.dtype(_np.float32)
float64 = double = _np.dtype(_np.float64)
int64 = long = _np.dtype(_np.int64)
int32 = int = _np.dtype(_np.int32)
uint8 = _np.dtype(_np.uint8)
bool = _np.dtype(_np.bool_)
