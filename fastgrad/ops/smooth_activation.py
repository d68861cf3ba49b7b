"""Smooth activations: gelu, silu, elu, hardswish, and prelu (a learned slope per channel).

Each keeps its INPUT for backward (the derivative is a function of x) and calls the
``smooth_activation`` kernels through ``fastgrad.kernels``. ``inplace=True`` is accepted
for PyTorch compatibility but computes out of place, as fastgrad's other activations do.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import numpy as np

from .. import kernels
from .._config import get_num_threads
from ..autograd import Function
from ._util import check_float, tensor_cls

if TYPE_CHECKING:
    from ..tensor import Tensor


def _contiguous(a, dtype=None):
    a = np.asarray(a)
    if a.flags.c_contiguous and (dtype is None or a.dtype == dtype):
        return a
    return np.ascontiguousarray(a, dtype=dtype).reshape(a.shape)


class _SavesInput(Function):
    """An elementwise op whose derivative is a function of its input; ``args`` are the
    kernels' extra arguments after the arrays (approximate, alpha)."""

    name_ = None

    def forward(self, x, args):
        x = _contiguous(x)
        out = np.empty(x.shape, x.dtype)
        getattr(kernels, self.name_ + "_forward")(x, out, *args, n_threads=get_num_threads())
        self.x, self.args = x, args
        return out

    def backward(self, grad):
        x = self.x
        grad_input = np.empty(x.shape, x.dtype)
        getattr(kernels, self.name_ + "_backward")(
            x, _contiguous(grad, x.dtype), grad_input, *self.args, n_threads=get_num_threads()
        )
        return (grad_input,)


class GELU(_SavesInput):
    name_ = "gelu"


class SiLU(_SavesInput):
    name_ = "silu"


class ELU(_SavesInput):
    name_ = "elu"


class Hardswish(_SavesInput):
    name_ = "hardswish"


def _input(op, input):
    if not isinstance(input, tensor_cls()):
        raise TypeError(f"{op}: expected a Tensor, got {type(input).__name__}")
    check_float(op, input)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x); ``approximate="tanh"`` uses the tanh approximation, as torch.nn.functional.gelu."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")
    _input("gelu", input)
    return GELU.apply(input, args=(approximate == "tanh",))


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x) (the swish function)."""
    _input("silu", input)
    return SiLU.apply(input, args=())


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"elu: alpha must be a real number, got {alpha!r}")
    _input("elu", input)
    return ELU.apply(input, args=(float(alpha),))


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """x * relu6(x + 3) / 6."""
    _input("hardswish", input)
    return Hardswish.apply(input, args=())


# --------------------------------------------------------------------------- PReLU


class PReLU(Function):
    """x if x > 0 else weight[c] * x, with c the channel (dimension 1), or one shared slope."""

    def forward(self, x, weight):
        shape = x.shape
        c = weight.size
        if c == 1:
            x3 = _contiguous(x).reshape(1, 1, x.size)
        else:
            x3 = _contiguous(x).reshape(shape[0], c, math.prod(shape[2:]))
        w = _contiguous(weight).reshape(c)
        out = np.empty(x3.shape, x3.dtype)
        kernels.prelu_forward(x3, w, out, n_threads=get_num_threads())
        self.x3, self.w, self.shape, self.weight_shape = x3, w, shape, weight.shape
        return out.reshape(shape)

    def backward(self, grad):
        x3, w = self.x3, self.w
        gi, gw = np.empty(x3.shape, x3.dtype), np.empty(w.shape, w.dtype)
        kernels.prelu_backward(
            x3, w, _contiguous(grad, x3.dtype).reshape(x3.shape), gi, gw, n_threads=get_num_threads()
        )
        return gi.reshape(self.shape), gw.reshape(self.weight_shape)


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """PReLU with ``weight`` of one element (shared) or one per channel of ``input``'s dim 1."""
    Tensor = tensor_cls()
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError("prelu: input and weight must be Tensors")
    check_float("prelu", input)
    if weight.dtype != input.dtype:
        raise TypeError(f"prelu: weight has dtype {weight.dtype}, input {input.dtype}")
    if weight.ndim > 1:
        raise ValueError(f"prelu: weight must be 1-D, got shape {tuple(weight.shape)}")
    c = weight._data.size
    if c != 1 and (input.ndim < 2 or input.shape[1] != c):
        raise ValueError(
            f"Mismatch of parameter numbers and input channel size. Found parameter numbers = {c} "
            f"and channel size = {input.shape[1] if input.ndim >= 2 else 1}."
        )
    return PReLU.apply(input, weight)
