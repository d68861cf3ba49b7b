"""Layer normalization (over the trailing ``normalized_shape`` dimensions of each sample)
and group normalization (over groups of channels of each sample), with optional affine
weight and bias; the statistics are those of the sample itself, in training and eval
alike. The kernels (``group_norm`` family) see the input as (R, K) and (N, C, S)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .. import kernels
from .._config import get_num_threads
from ..autograd import Function
from ._util import check_float, tensor_cls

if TYPE_CHECKING:
    from ..tensor import Tensor


def _c(a):
    return np.ascontiguousarray(a)


class LayerNorm(Function):
    def forward(self, x, *affine, n_dims, has_weight, has_bias, eps):
        shape = x.shape
        k = math.prod(shape[len(shape) - n_dims :])
        x2 = _c(x).reshape(-1, k) if k else np.empty((math.prod(shape[: len(shape) - n_dims]), 0), x.dtype)
        weight = _c(affine[0]).reshape(k) if has_weight else None
        bias = _c(affine[-1]).reshape(k) if has_bias else None
        out = np.empty(x2.shape, x2.dtype)
        mean, rstd = np.empty(x2.shape[0], x2.dtype), np.empty(x2.shape[0], x2.dtype)
        kernels.layer_norm_forward(x2, weight, bias, eps, out, mean, rstd, get_num_threads())
        self.x2, self.weight, self.mean, self.rstd, self.shape = x2, weight, mean, rstd, shape
        self.has_weight, self.has_bias, self.affine_shape = has_weight, has_bias, shape[len(shape) - n_dims :]
        return out.reshape(shape)

    def backward(self, grad):
        x2, k = self.x2, self.x2.shape[1]
        needs = self.needs_input_grad
        gi = np.empty(x2.shape, x2.dtype)
        gw = np.empty(k, x2.dtype) if self.has_weight and needs[1] else None
        gb = np.empty(k, x2.dtype) if self.has_bias and needs[-1] else None
        kernels.layer_norm_backward(
            x2,
            np.ascontiguousarray(grad, x2.dtype).reshape(x2.shape),
            self.weight,
            self.mean,
            self.rstd,
            gi,
            gw,
            gb,
            get_num_threads(),
        )
        grads = [gi.reshape(self.shape)]
        if self.has_weight:
            grads.append(None if gw is None else gw.reshape(self.affine_shape))
        if self.has_bias:
            grads.append(None if gb is None else gb.reshape(self.affine_shape))
        return tuple(grads)


def _affine(op, weight, bias, shape, dtype):
    Tensor = tensor_cls()
    tensors = []
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(t).__name__}")
        if tuple(t.shape) != tuple(shape):
            raise RuntimeError(f"{op}: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if t.dtype != dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype}, the input {dtype}")
        tensors.append(t)
    return tensors


def layer_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """As torch.nn.functional.layer_norm: normalize over the last len(normalized_shape) dims."""
    Tensor = tensor_cls()
    if not isinstance(input, Tensor):
        raise TypeError(f"layer_norm: expected a Tensor, got {type(input).__name__}")
    check_float("layer_norm", input)
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    n = len(normalized_shape)
    if n == 0 or tuple(input.shape[input.ndim - n :]) != normalized_shape or input.ndim < n:
        raise RuntimeError(
            f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
            f"[*, {', '.join(map(str, normalized_shape))}], but got input of size "
            f"{list(input.shape)}"
        )
    affine = _affine("layer_norm", weight, bias, normalized_shape, input.dtype)
    return LayerNorm.apply(input, *affine, n_dims=n, has_weight=weight is not None, has_bias=bias is not None, eps=eps)


class GroupNorm(Function):
    def forward(self, x, *affine, num_groups, has_weight, has_bias, eps):
        shape = x.shape
        x3 = _c(x).reshape(shape[0], shape[1], math.prod(shape[2:]))
        weight = _c(affine[0]) if has_weight else None
        bias = _c(affine[-1]) if has_bias else None
        out = np.empty(x3.shape, x3.dtype)
        mean = np.empty((shape[0], num_groups), x3.dtype)
        rstd = np.empty((shape[0], num_groups), x3.dtype)
        kernels.group_norm_forward(x3, weight, bias, num_groups, eps, out, mean, rstd, get_num_threads())
        self.x3, self.weight, self.mean, self.rstd, self.shape = x3, weight, mean, rstd, shape
        self.num_groups, self.has_weight, self.has_bias = num_groups, has_weight, has_bias
        return out.reshape(shape)

    def backward(self, grad):
        x3, c = self.x3, self.x3.shape[1]
        needs = self.needs_input_grad
        gi = np.empty(x3.shape, x3.dtype)
        gw = np.empty(c, x3.dtype) if self.has_weight and needs[1] else None
        gb = np.empty(c, x3.dtype) if self.has_bias and needs[-1] else None
        kernels.group_norm_backward(
            x3,
            np.ascontiguousarray(grad, x3.dtype).reshape(x3.shape),
            self.weight,
            self.mean,
            self.rstd,
            self.num_groups,
            gi,
            gw,
            gb,
            get_num_threads(),
        )
        grads = [gi.reshape(self.shape)]
        if self.has_weight:
            grads.append(gw)
        if self.has_bias:
            grads.append(gb)
        return tuple(grads)


def group_norm(
    input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """As torch.nn.functional.group_norm: input (N, C, *), C divisible by num_groups."""
    Tensor = tensor_cls()
    if not isinstance(input, Tensor):
        raise TypeError(f"group_norm: expected a Tensor, got {type(input).__name__}")
    check_float("group_norm", input)
    if input.ndim < 2:
        raise RuntimeError(
            f"group_norm: expected an input with at least 2 dimensions (N, C, *), got shape {tuple(input.shape)}"
        )
    c = input.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or c % num_groups:
        raise RuntimeError(
            f"Expected number of channels in input to be divisible by num_groups, but got input "
            f"of shape {list(input.shape)} and num_groups={num_groups}"
        )
    affine = _affine("group_norm", weight, bias, (c,), input.dtype)
    return GroupNorm.apply(
        input, *affine, num_groups=num_groups, has_weight=weight is not None, has_bias=bias is not None, eps=eps
    )
