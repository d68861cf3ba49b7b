"""Batch normalization: each channel (dimension 1) is normalized over every other
dimension, by the batch's statistics while training (which also updates the running
statistics in place) or by the running statistics otherwise; then scaled by ``weight``
and shifted by ``bias``. The kernels see the input as (N, C, S), S = the product of the
dimensions after the channels."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .. import _config, kernels
from ..autograd import Function
from . import buffer_pool
from ._util import check_float, check_size, tensor_cls

if TYPE_CHECKING:
    from ..tensor import Tensor


class BatchNorm(Function):
    """out = batch normalization of x (then ReLU, ``relu=True``: the fused BatchNorm + ReLU
    a compiled plan makes of a BatchNorm whose output only a ReLU reads, one pass over
    the output forward and the ReLU's mask applied inside the backward kernel).
    Inputs: x[, weight][, bias]."""

    replays_kernels = True

    def forward(
        self, x, *affine, has_weight, has_bias, running_mean, running_var, use_batch_stats, momentum, eps, relu=False
    ):
        shape = x.shape
        n, c = shape[0], shape[1]
        x3 = np.ascontiguousarray(x).reshape(n, c, math.prod(shape[2:]))
        weight = np.ascontiguousarray(affine[0]) if has_weight else None
        bias = np.ascontiguousarray(affine[-1]) if has_bias else None
        out = buffer_pool.empty(x3.shape, x3.dtype)
        save_invstd = buffer_pool.empty(c, x.dtype)
        threads = _config.get_num_threads()
        if use_batch_stats and x3.size == 0:
            # an empty batch: nothing to normalize, no statistics (the running ones stay);
            # numpy fills these (save_mean made by numpy keeps a trace from replaying it)
            save_mean = np.zeros(c, dtype=x.dtype)
            save_invstd.fill(0)
        elif use_batch_stats:
            save_mean = buffer_pool.empty(c, x.dtype)
            kernels.batch_norm_forward_train(
                x3, weight, bias, running_mean, running_var, momentum, eps, out, save_mean, save_invstd, threads, relu
            )
        else:
            save_mean = buffer_pool.copy(running_mean)  # the buffer may change before backward runs
            kernels.batch_norm_forward_eval(
                x3, weight, bias, running_mean, running_var, eps, out, save_invstd, threads, relu
            )
        self.x3, self.weight, self.shape = x3, weight, shape
        self.save_mean, self.save_invstd, self.use_batch_stats = save_mean, save_invstd, use_batch_stats
        self.has_weight, self.has_bias = has_weight, has_bias
        self.relu_out = out if relu else None  # the mask of the fused ReLU's backward
        return out.reshape(shape)

    def backward(self, grad):
        x3, c = self.x3, self.x3.shape[1]
        needs = self.needs_input_grad
        want_weight = self.has_weight and needs[1]
        want_bias = self.has_bias and needs[-1]
        grad_input = buffer_pool.empty(x3.shape, x3.dtype) if needs[0] else None
        grad_weight = buffer_pool.empty(c, x3.dtype) if want_weight else None
        grad_bias = buffer_pool.empty(c, x3.dtype) if want_bias else None
        g3 = np.ascontiguousarray(grad, dtype=x3.dtype).reshape(x3.shape)
        kernels.batch_norm_backward(
            g3,
            x3,
            self.weight,
            self.save_mean,
            self.save_invstd,
            self.use_batch_stats,
            grad_input,
            grad_weight,
            grad_bias,
            _config.get_num_threads(),
            self.relu_out,
        )
        grads = [grad_input.reshape(self.shape) if grad_input is not None else None]
        if self.has_weight:
            grads.append(grad_weight)
        if self.has_bias:
            grads.append(grad_bias)
        return tuple(grads)


def _channel_array(name, t, channels, dtype, writable):
    """A (C,) tensor's array, checked; a running statistic must be updatable in place."""
    if not isinstance(t, tensor_cls()):
        raise TypeError(f"batch_norm: {name} must be a Tensor or None, got {type(t).__name__}")
    if t.shape != (channels,):
        raise ValueError(
            f"batch_norm: {name} has shape {tuple(t.shape)}, expected ({channels},) "
            "(one value per channel, dimension 1 of the input)"
        )
    if t.dtype != dtype:
        raise TypeError(f"batch_norm: {name} has dtype {t.dtype}, but the input has {dtype}")
    data = t.data
    if not data.flags.c_contiguous or (writable and not data.flags.writeable):
        data = np.array(data)
        if writable:
            t.data = data  # the kernel updates this copy; keep it as the buffer
    return data


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """As torch.nn.functional.batch_norm: input (N, C, *); running_mean/running_var (C,)
    Tensors or None (needed when not training; updated in place when training);
    weight/bias (C,) Tensors or None."""
    Tensor = tensor_cls()
    if not isinstance(input, Tensor):
        raise TypeError(f"batch_norm: expected input to be a Tensor, got {type(input).__name__}")
    check_float("batch_norm", input)
    shape = tuple(input.shape)
    if len(shape) < 2:
        raise ValueError(f"batch_norm: expected input with at least 2 dimensions (N, C, *), got shape {shape}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must both be given or both be None")
    if not training and running_mean is None:
        raise ValueError("batch_norm: running_mean and running_var must be defined in evaluation mode")
    channels, dtype = shape[1], input.dtype
    check_size("batch_norm", "input", shape, dtype)  # before a broadcast view is copied
    values_per_channel = shape[0] * math.prod(shape[2:])
    if training and channels and values_per_channel == 1:  # PyTorch accepts an empty batch
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when training, got input of shape {shape}"
        )
    try:
        momentum, eps = float(momentum), float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"batch_norm: momentum and eps must be numbers, got {momentum!r} and {eps!r}") from None
    for name, value in (("momentum", momentum), ("eps", eps)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"batch_norm: {name} must be a finite number >= 0, got {value!r}")
    if training and eps == 0:  # as PyTorch: a constant channel would divide 0 by 0
        raise ValueError(f"batch_norm: eps must be positive when training, got {eps!r}")
    rm = rv = None
    if running_mean is not None:
        rm = _channel_array("running_mean", running_mean, channels, dtype, training)
        rv = _channel_array("running_var", running_var, channels, dtype, training)
    tensors = [input]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _channel_array(name, t, channels, dtype, False)
            tensors.append(t)
    return BatchNorm.apply(
        *tensors,
        has_weight=weight is not None,
        has_bias=bias is not None,
        running_mean=rm,
        running_var=rv,
        use_batch_stats=bool(training),
        momentum=momentum,
        eps=eps,
    )
