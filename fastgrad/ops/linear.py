"""The linear layer as a differentiable op: ``linear`` (y = x W^T + b, PyTorch's
semantics: input (*, in_features)) and the fused ``linear_relu`` (product, bias and ReLU
in one pass over the output).

The kernels (``fastgrad.kernels.linear_*``) work on matrices: leading dimensions of the
input are flattened into rows here and restored on the way out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .. import _config, kernels
from ..autograd import Function
from . import buffer_pool
from ._util import check_size, remembered, shared_step, tensor_cls
from .activation import relu_backward_step

if TYPE_CHECKING:
    from ..tensor import Tensor

# Batches up to this many rows take all three gradients in one pass over the weight
# (linear_backward): at a few rows the products are memory-bound, and one pass touches
# the weight and its gradient once. Larger batches use the three blocked products.
FUSED_BACKWARD_MAX_ROWS = 4


class LinearStep:
    """x @ weight.T (+ bias) (then ReLU) over the last dimension, forward and backward;
    weights: (weight[, bias]). The arithmetic of the Linear op, one per geometry (see
    ConvStep)."""

    def __init__(self, x_shape, w_shape, has_bias, relu, n_threads):
        self.rows = math.prod(x_shape[:-1])
        self.x_shape, self.w_shape = x_shape, w_shape
        self.rows_shape = (self.rows, w_shape[1])
        self.out_rows_shape = (self.rows, w_shape[0])
        self.out_shape = tuple(x_shape[:-1]) + (w_shape[0],)
        self.relu, self.n_threads = relu, n_threads
        self.n_weights = 2 if has_bias else 1
        self.fused_backward = self.rows <= FUSED_BACKWARD_MAX_ROWS

    def forward(self, x, weights, keep):
        x2 = x.reshape(self.rows_shape)
        bias = weights[1] if self.n_weights == 2 else None
        out = buffer_pool.empty(self.out_rows_shape, x.dtype)
        kernels.linear_forward(x2, weights[0], bias, out, self.relu, self.n_threads)
        return out.reshape(self.out_shape), ((x2, out) if keep else None)

    def backward(self, grad, weights, saved, need_x, need_weights):
        x2, out = saved
        dtype, n_threads = x2.dtype, self.n_threads
        grad = grad.reshape(self.out_rows_shape)
        gx = buffer_pool.empty(self.rows_shape, dtype) if need_x else None
        grads = [None] * self.n_weights
        if need_weights[0]:
            grads[0] = buffer_pool.empty(self.w_shape, dtype)
        if self.n_weights == 2 and need_weights[1]:
            grads[1] = buffer_pool.empty(self.w_shape[0], dtype)
        gw, gb = grads[0], grads[1] if self.n_weights == 2 else None
        if self.fused_backward:  # the ReLU's mask and all three products in one pass
            kernels.linear_backward(x2, grad, out if self.relu else None, weights[0], gx, gw, gb, n_threads)
        else:
            if self.relu:
                grad = relu_backward_step(out, grad, n_threads)
            if gx is not None:
                kernels.linear_backward_input(grad, weights[0], gx, n_threads)
            if gw is not None:
                kernels.linear_backward_weight(x2, grad, gw, n_threads)
            if gb is not None:
                kernels.linear_backward_bias(grad, gb, n_threads)
        return (None if gx is None else gx.reshape(self.x_shape)), grads


class Linear(Function):
    """out = x @ weight.T (+ bias) (then ReLU), one LinearStep. Inputs: x, weight[, bias]."""

    fresh_grads = True  # LinearStep's weight gradients are new arrays (x's is copied: a view)
    takes_step = True
    replays_kernels = True

    def forward(self, x, weight, bias=None, *, relu, step=None):
        # step: as for Conv2d.forward, the LinearStep a replayed plan already has
        x = np.ascontiguousarray(x)
        weights = [np.ascontiguousarray(weight)] + ([] if bias is None else [np.ascontiguousarray(bias)])
        if step is None:
            step = shared_step(
                LinearStep, None, x.shape, weight.shape, bias is not None, relu, _config.get_num_threads()
            )
        out, self.saved = step.forward(x, weights, True in self.needs_input_grad)
        self.step, self.weights = step, weights
        return out

    def backward(self, grad):
        needs = self.needs_input_grad
        grad = np.ascontiguousarray(grad, dtype=self.weights[0].dtype)
        gx, grads = self.step.backward(grad, self.weights, self.saved, needs[0], needs[1:])
        return (gx, *grads)


def _linear(fn, input, weight, bias, relu):
    Tensor = tensor_cls()
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a Tensor, got {type(t).__name__}")
        if t.dtype.kind != "f":
            raise TypeError(f"{fn}: {name} must be a float32 or float64 tensor, got dtype {t.dtype}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{fn}: bias must be a Tensor or None, got {type(bias).__name__}")
    b = None if bias is None else (bias._data.shape, bias._data.dtype)
    _check_shapes(fn, input._data.shape, input._data.dtype, weight._data.shape, weight._data.dtype, b)
    if bias is None:
        return Linear.apply(input, weight, relu=relu)
    return Linear.apply(input, weight, bias, relu=relu)


@remembered
def _check_shapes(fn, in_shape, in_dtype, w_shape, w_dtype, bias):
    """Raise for a linear of these shapes and dtypes that cannot run. Remembered when it
    passes (a training loop asks the same few questions every step); an error is raised
    anew each time."""
    input = _Shaped(in_shape, in_dtype)
    weight = _Shaped(w_shape, w_dtype)
    if weight.ndim != 2:
        raise ValueError(
            f"{fn}: expected weight with 2 dimensions (out_features, in_features), got shape {tuple(weight.shape)}"
        )
    if input.ndim < 1:
        raise ValueError(f"{fn}: expected input of shape (*, in_features), got a 0-d tensor")
    out_features, in_features = weight.shape
    if input.shape[-1] != in_features:
        raise ValueError(
            f"{fn}: input has {input.shape[-1]} features, weight expects {in_features} "
            f"(input shape {tuple(input.shape)}, weight shape {tuple(weight.shape)})"
        )
    if input.dtype != weight.dtype:
        raise TypeError(
            f"{fn}: input has dtype {input.dtype} but weight has {weight.dtype}; convert one with .float() or .double()"
        )
    # before anything is allocated: the input may be a broadcast view that the contiguous
    # copy expands, and the output has a row per input row
    check_size(fn, "input", input.shape, input.dtype)
    check_size(fn, "output", tuple(input.shape[:-1]) + (out_features,), input.dtype)
    if bias is None:
        return
    bias = _Shaped(*bias)
    if bias.dtype != input.dtype:
        raise TypeError(f"{fn}: bias has dtype {bias.dtype} but input has {input.dtype}")
    if tuple(bias.shape) != (out_features,):
        raise ValueError(f"{fn}: expected bias of shape ({out_features},), got {tuple(bias.shape)}")


class _Shaped:
    """A shape and dtype read as a tensor's (what _check_shapes looks at)."""

    __slots__ = ("shape", "dtype", "ndim")

    def __init__(self, shape, dtype):
        self.shape, self.dtype, self.ndim = shape, dtype, len(shape)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = input @ weight.T + bias, as torch.nn.functional.linear: input (*, in_features),
    weight (out_features, in_features), bias (out_features,) or None -> (*, out_features)."""
    return _linear("linear", input, weight, bias, False)


def linear_relu(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """relu(linear(input, weight, bias)) in one pass over the output: same arguments."""
    return _linear("linear_relu", input, weight, bias, True)
