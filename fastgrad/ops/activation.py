"""Activations: relu, leaky_relu, sigmoid, tanh, softmax, log_softmax.

Each op validates its input, then calls ``fastgrad.kernels`` (compiled or pure Python).
relu, sigmoid and tanh keep their forward output for backward (the derivative is a
function of it); leaky_relu keeps its input, since a negative slope flips signs.
softmax and log_softmax move ``dim`` to the last axis, run the row kernels on a
(rows, cols) view, and move it back.

``inplace=True`` is accepted for PyTorch compatibility but computes out of place: the
input is left unchanged and the result is returned, which is what callers use.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .. import kernels
from .._config import get_num_threads
from ..autograd import Function
from . import buffer_pool
from ._util import check_float, check_size, normalize_dims, tensor_cls

if TYPE_CHECKING:
    from ..tensor import Tensor


def contiguous(a, dtype=None):
    """``a`` (an array or numpy scalar) as a C-contiguous array of ``dtype``; 0-d stays 0-d."""
    a = np.asarray(a)
    if a.flags.c_contiguous and (dtype is None or a.dtype == dtype):
        return a
    return np.ascontiguousarray(a, dtype=dtype).reshape(a.shape)


# --------------------------------------------------------------------------- elementwise


class _SavesOutput(Function):
    """An elementwise op whose derivative is a function of its output."""

    forward_kernel = backward_kernel = None
    replays_kernels = True

    def forward(self, x):
        x = contiguous(x)
        out = buffer_pool.empty(x.shape, x.dtype)
        getattr(kernels, self.forward_kernel)(x, out, get_num_threads())
        self.out = out
        return out

    def backward(self, grad):
        out = self.out
        grad_input = buffer_pool.empty(out.shape, out.dtype)
        getattr(kernels, self.backward_kernel)(out, contiguous(grad, out.dtype), grad_input, get_num_threads())
        return (grad_input,)


class ReLU(_SavesOutput):
    forward_kernel, backward_kernel = "relu_forward", "relu_backward"


class AddReLU(Function):
    """relu(a + b) of two arrays of one shape and float dtype in one pass: the residual
    join a compiled plan makes of an Add whose output only a ReLU reads
    (fastgrad/compile/fuse.py). The same bits as elementwise.Add then ReLU, forward and
    backward: the ReLU's gradient goes to both inputs, as Add hands its gradient on."""

    replays_kernels = True

    def forward(self, a, b):
        a, b = contiguous(a), contiguous(b)
        out = buffer_pool.empty(a.shape, a.dtype)
        kernels.add_relu_forward(a, b, out, get_num_threads())
        self.out = out
        return out

    def backward(self, grad):
        out = self.out
        grad_input = buffer_pool.empty(out.shape, out.dtype)
        kernels.relu_backward(out, contiguous(grad, out.dtype), grad_input, get_num_threads())
        needs = self.needs_input_grad
        return (grad_input if needs[0] else None, grad_input if needs[1] else None)


def relu_backward_step(out, grad, n_threads):
    """``grad`` where ``out`` (a ReLU's output) is positive, else 0, in a new array: the
    ReLU backward that the convolution's, linear layer's and max pooling's Steps share."""
    masked = buffer_pool.empty(out.shape, out.dtype)
    kernels.relu_backward(out, grad, masked, n_threads)
    return masked


class Sigmoid(_SavesOutput):
    forward_kernel, backward_kernel = "sigmoid_forward", "sigmoid_backward"


class Tanh(_SavesOutput):
    forward_kernel, backward_kernel = "tanh_forward", "tanh_backward"


class LeakyReLU(Function):
    def forward(self, x, negative_slope):
        x = contiguous(x)
        out = buffer_pool.empty(x.shape, x.dtype)
        kernels.leaky_relu_forward(x, out, negative_slope, get_num_threads())
        self.x, self.negative_slope = x, negative_slope
        return out

    def backward(self, grad):
        x = self.x
        grad_input = buffer_pool.empty(x.shape, x.dtype)
        kernels.leaky_relu_backward(x, contiguous(grad, x.dtype), grad_input, self.negative_slope, get_num_threads())
        return (grad_input,)


def _check_input(op, input):
    if not isinstance(input, tensor_cls()):
        raise TypeError(f"{op}: expected a Tensor as input, got {type(input).__name__}")
    check_float(op, input)
    check_size(op, "input", input.shape, input.dtype)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(input, 0). ``inplace=True`` computes out of place (see the module docstring)."""
    _check_input("relu", input)
    return ReLU.apply(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """input where input > 0, else negative_slope * input. ``inplace`` as for relu."""
    _check_input("leaky_relu", input)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise TypeError(f"leaky_relu: negative_slope must be a real number, got {negative_slope!r}")
    return LeakyReLU.apply(input, negative_slope=float(negative_slope))


def sigmoid(input: Tensor) -> Tensor:
    _check_input("sigmoid", input)
    return Sigmoid.apply(input)


def tanh(input: Tensor) -> Tensor:
    _check_input("tanh", input)
    return Tanh.apply(input)


# --------------------------------------------------------------------------- softmax


class _RowsLayout:
    """How an array maps onto (rows, cols) with ``dim`` as the columns, and back."""

    def __init__(self, shape, dim):
        self.shape, self.dim = shape, dim
        self.last = len(shape) == 0 or dim == len(shape) - 1
        cols = shape[dim] if shape else 1
        self.moved_shape = shape[:dim] + shape[dim + 1 :] + (cols,)
        self.rows_shape = (math.prod(self.moved_shape[:-1]), cols)

    def to_rows(self, a, dtype):
        if not self.last:  # a copy with dim last; the kernels need rows contiguous
            a = np.moveaxis(a, self.dim, -1)
        return contiguous(a, dtype).reshape(self.rows_shape)

    def from_rows(self, rows):
        if self.last:
            return rows.reshape(self.shape)
        return np.ascontiguousarray(np.moveaxis(rows.reshape(self.moved_shape), -1, self.dim))


class Softmax(Function):
    forward_kernel, backward_kernel = "softmax_forward", "softmax_backward"
    replays_kernels = True  # the copies numpy makes to move dim last are untraceable: run as the op

    def forward(self, x, dim):
        layout = _RowsLayout(x.shape, dim)
        rows = layout.to_rows(x, x.dtype)
        out = buffer_pool.empty(rows.shape, x.dtype)
        getattr(kernels, self.forward_kernel)(rows, out, get_num_threads())
        self.out, self.layout = out, layout
        return layout.from_rows(out)

    def backward(self, grad):
        out, layout = self.out, self.layout
        grad_rows = layout.to_rows(grad, out.dtype)
        grad_input = buffer_pool.empty(out.shape, out.dtype)
        getattr(kernels, self.backward_kernel)(out, grad_rows, grad_input, get_num_threads())
        return (layout.from_rows(grad_input),)


class LogSoftmax(Softmax):
    forward_kernel, backward_kernel = "log_softmax_forward", "log_softmax_backward"


def _softmax_dim(op, input, dim):
    if dim is None:
        # PyTorch's legacy implicit choice, with its warning
        warnings.warn(
            f"{op}: implicit dimension choice has been deprecated; pass dim=X "
            f"(using dim={0 if input.ndim in (0, 1, 3) else 1})",
            UserWarning,
            stacklevel=3,
        )
        dim = 0 if input.ndim in (0, 1, 3) else 1
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}: dim must be an integer, got {dim!r}")
    (d,) = normalize_dims(op, dim, input.ndim)
    return d


def _softmax_input(op, input, dtype):
    _check_input(op, input)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind != "f" or dtype.itemsize not in (4, 8):
            raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype}")
        check_size(op, "input", input.shape, dtype)  # before the cast copies it
        input = input.to(dtype)
    return input


def softmax(input: Tensor, dim: int | None = None, dtype: npt.DTypeLike | None = None) -> Tensor:
    """exp(input) / sum(exp(input)) along ``dim``, stable for logits of any magnitude.
    ``dtype`` casts the input first (as in PyTorch)."""
    input = _softmax_input("softmax", input, dtype)
    return Softmax.apply(input, dim=_softmax_dim("softmax", input, dim))


def log_softmax(input: Tensor, dim: int | None = None, dtype: npt.DTypeLike | None = None) -> Tensor:
    """input - log(sum(exp(input))) along ``dim``, stable for logits of any magnitude."""
    input = _softmax_input("log_softmax", input, dtype)
    return LogSoftmax.apply(input, dim=_softmax_dim("log_softmax", input, dim))
