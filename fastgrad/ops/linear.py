"""The linear layer as a differentiable op: ``linear`` (y = x W^T + b, PyTorch's
semantics: input (*, in_features)) and the fused ``linear_relu`` (product, bias and ReLU
in one pass over the output).

The kernels (``fastgrad.kernels.linear_*``) work on matrices: leading dimensions of the
input are flattened into rows here and restored on the way out.
"""
import math

import numpy as np

from .. import _config, kernels
from ..autograd import Function
from ._util import check_size, tensor_cls
from .activation import relu_mask


class Linear(Function):
    """out = x @ weight.T (+ bias) (then ReLU). Inputs: x, weight[, bias]."""

    fresh_grads = True  # every gradient below is a new np.empty array

    def forward(self, x, weight, bias=None, *, relu):
        in_features = weight.shape[1]
        lead = x.shape[:-1]
        self.rows = math.prod(lead)  # explicit: reshape(-1, 0) is ambiguous for empty arrays
        x2 = np.ascontiguousarray(x.reshape(self.rows, in_features))
        weight = np.ascontiguousarray(weight)
        if bias is not None:
            bias = np.ascontiguousarray(bias)
        out = np.empty((x2.shape[0], weight.shape[0]), dtype=x.dtype)
        kernels.linear_forward(x2, weight, bias, out, relu, _config.get_num_threads())
        needs = self.needs_input_grad
        # keep only what backward reads: x for the weight gradient, weight for the input's
        self.x2 = x2 if len(needs) > 1 and needs[1] else None
        self.weight = weight if needs and needs[0] else None
        self.x_shape, self.w_shape = x.shape, weight.shape
        self.has_bias, self.dtype = bias is not None, x.dtype
        self.out = out if relu else None
        return out.reshape(lead + (weight.shape[0],))

    def backward(self, grad):
        dtype = self.dtype
        out_features, in_features = self.w_shape
        grad = np.ascontiguousarray(grad, dtype=dtype).reshape(self.rows, out_features)
        n_threads = _config.get_num_threads()
        if self.out is not None:  # ReLU: gradient flows where the output is positive
            grad = relu_mask(self.out, grad, n_threads)
        needs = self.needs_input_grad
        gx = gw = gb = None
        if needs[0]:
            gx = np.empty((grad.shape[0], in_features), dtype=dtype)
            kernels.linear_backward_input(grad, self.weight, gx, n_threads)
            gx = gx.reshape(self.x_shape)
        if needs[1]:
            gw = np.empty(self.w_shape, dtype=dtype)
            kernels.linear_backward_weight(self.x2, grad, gw, n_threads)
        if not self.has_bias:
            return gx, gw
        if needs[2]:
            gb = np.empty(out_features, dtype=dtype)
            kernels.linear_backward_bias(grad, gb, n_threads)
        return gx, gw, gb


def _linear(fn, input, weight, bias, relu):
    Tensor = tensor_cls()
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a Tensor, got {type(t).__name__}")
        if t.dtype.kind != "f":
            raise TypeError(f"{fn}: {name} must be a float32 or float64 tensor, got dtype {t.dtype}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{fn}: bias must be a Tensor or None, got {type(bias).__name__}")
    if weight.ndim != 2:
        raise ValueError(f"{fn}: expected weight with 2 dimensions (out_features, in_features), "
                         f"got shape {tuple(weight.shape)}")
    if input.ndim < 1:
        raise ValueError(f"{fn}: expected input of shape (*, in_features), got a 0-d tensor")
    out_features, in_features = weight.shape
    if input.shape[-1] != in_features:
        raise ValueError(f"{fn}: input has {input.shape[-1]} features, weight expects {in_features} "
                         f"(input shape {tuple(input.shape)}, weight shape {tuple(weight.shape)})")
    if input.dtype != weight.dtype:
        raise TypeError(f"{fn}: input has dtype {input.dtype} but weight has {weight.dtype}; "
                        "convert one with .float() or .double()")
    # before anything is allocated: the input may be a broadcast view that the contiguous
    # copy expands, and the output has a row per input row
    check_size(fn, "input", input.shape, input.dtype)
    check_size(fn, "output", tuple(input.shape[:-1]) + (out_features,), input.dtype)
    if bias is None:
        return Linear.apply(input, weight, relu=relu)
    if bias.dtype != input.dtype:
        raise TypeError(f"{fn}: bias has dtype {bias.dtype} but input has {input.dtype}")
    if tuple(bias.shape) != (out_features,):
        raise ValueError(f"{fn}: expected bias of shape ({out_features},), got {tuple(bias.shape)}")
    return Linear.apply(input, weight, bias, relu=relu)


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias, as torch.nn.functional.linear: input (*, in_features),
    weight (out_features, in_features), bias (out_features,) or None -> (*, out_features)."""
    return _linear("linear", input, weight, bias, False)


def linear_relu(input, weight, bias=None):
    """relu(linear(input, weight, bias)) in one pass over the output: same arguments."""
    return _linear("linear_relu", input, weight, bias, True)
