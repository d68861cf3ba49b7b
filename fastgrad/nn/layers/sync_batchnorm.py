"""SyncBatchNorm: batch normalization whose training statistics are those of the global
batch, summed over every rank of the process group (as torch.nn.SyncBatchNorm).

Forward sums, per channel, the count, the sum and the sum of squares of this rank's
input (in float64), allreduces them in one call, and normalizes by the global mean and
(biased) variance; the running statistics follow them (unbiased variance), the same on
every rank. Backward allreduces the per-channel sums of the incoming gradient g and of
g * x_hat, so the input gradient is that of the sum of all ranks' losses, exactly as one
process would compute on the whole batch: dx = w / sigma (g - sum(g) / N - x_hat sum(g x_hat) / N).
The weight and bias gradients stay this rank's own sums (DistributedDataParallel averages
them). Outside training, or without a process group of more than one rank, it is
BatchNorm. ``SyncBatchNorm.convert_sync_batchnorm(model)`` swaps a model's BatchNorm layers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ... import distributed as dist
from ..._typing import DeviceLike
from ...autograd import Function
from ...tensor import Tensor
from ..module import Module
from .normalization import _BatchNorm


def _sum_over_ranks(array: np.ndarray) -> np.ndarray:
    t = Tensor._from_op(array, None)
    dist.all_reduce(t)
    return t.data


class SyncBatchNormFunction(Function):
    def forward(
        self,
        x: np.ndarray,
        *affine: np.ndarray,
        has_weight: bool,
        has_bias: bool,
        running_mean: np.ndarray | None,
        running_var: np.ndarray | None,
        momentum: float,
        eps: float,
    ) -> np.ndarray:
        shape, c = x.shape, x.shape[1]
        x3 = np.ascontiguousarray(x).reshape(shape[0], c, math.prod(shape[2:]))
        local_count = x3.shape[0] * x3.shape[2]
        stats = np.concatenate(
            [
                x3.sum(axis=(0, 2), dtype=np.float64),
                np.einsum("ncs,ncs->c", x3, x3, dtype=np.float64),
                [float(local_count)],
            ]
        )
        stats = _sum_over_ranks(stats)
        count = stats[-1]
        if count < 1:
            raise ValueError("SyncBatchNorm: the global batch is empty")
        mean = stats[:c] / count
        var = np.maximum(stats[c : 2 * c] / count - mean * mean, 0.0)
        invstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
        xhat = (x3 - mean.astype(x.dtype)[:, None]) * invstd[:, None]
        weight = affine[0] if has_weight else None
        out = xhat * weight[:, None] if has_weight else xhat.copy()
        if has_bias:
            out += affine[-1][:, None]
        if running_mean is not None:
            unbiased = var * (count / (count - 1)) if count > 1 else var
            running_mean *= 1 - momentum
            running_mean += (momentum * mean).astype(running_mean.dtype)
            running_var *= 1 - momentum
            running_var += (momentum * unbiased).astype(running_var.dtype)
        self.xhat, self.invstd, self.weight, self.count, self.shape = xhat, invstd, weight, count, shape
        self.has_weight, self.has_bias = has_weight, has_bias
        return out.reshape(shape)

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray | None, ...]:
        xhat, c = self.xhat, self.xhat.shape[1]
        g3 = np.ascontiguousarray(grad, dtype=xhat.dtype).reshape(xhat.shape)
        local = np.concatenate(
            [g3.sum(axis=(0, 2), dtype=np.float64), np.einsum("ncs,ncs->c", g3, xhat, dtype=np.float64)]
        )
        grads = []
        if self.needs_input_grad[0]:
            total = _sum_over_ranks(local.copy())
            mean_g = (total[:c] / self.count).astype(xhat.dtype)
            mean_gx = (total[c:] / self.count).astype(xhat.dtype)
            scale = self.invstd * (self.weight if self.has_weight else 1)
            grad_input = (g3 - mean_g[:, None] - xhat * mean_gx[:, None]) * scale[:, None]
            grads.append(grad_input.reshape(self.shape))
        else:
            grads.append(None)
        if self.has_weight:
            grads.append(local[c:].astype(xhat.dtype))
        if self.has_bias:
            grads.append(local[:c].astype(xhat.dtype))
        return tuple(grads)


class SyncBatchNorm(_BatchNorm):
    """Over (N, C, ...) inputs; statistics per channel C, over the whole process group."""

    _ndims = (2, 3, 4, 5)
    _expected = "(N, {C}, ...)"
    # its forward branches on the process group's state, which no plan guard sees: a
    # Sequential holding it runs its layers one by one (nn/layers/container.py)
    _eager_only = True

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any = None,
        device: DeviceLike | None = None,
        dtype: npt.DTypeLike | None = None,
    ) -> None:
        if process_group is not None:
            raise ValueError("SyncBatchNorm: only the default process group (process_group=None) is supported")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input(input.shape)
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        like = self.weight if self.weight is not None else self.running_mean
        if like is not None and input.dtype != like.dtype:
            raise TypeError(f"SyncBatchNorm: input dtype {input.dtype} differs from the layer's {like.dtype}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.data)
        tensors = [input] + [p for p in (self.weight, self.bias) if p is not None]
        track = self.track_running_stats and self.running_mean is not None
        return SyncBatchNormFunction.apply(
            *tensors,
            has_weight=self.weight is not None,
            has_bias=self.bias is not None,
            running_mean=self.running_mean.data if track else None,
            running_var=self.running_var.data if track else None,
            momentum=factor,
            eps=self.eps,
        )

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group: Any = None) -> Module:
        """``module`` with every BatchNorm layer replaced by a SyncBatchNorm holding the
        same parameters and buffers (the arrays are shared, not copied)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            like = module.weight if module.weight is not None else module.running_mean
            sync = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                process_group,
                dtype=None if like is None else like.dtype,
            )
            for name in ("weight", "bias"):
                if getattr(module, name, None) is not None:
                    setattr(sync, name, getattr(module, name))
                elif name in sync._parameters:
                    sync.register_parameter(name, None)
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                if getattr(module, name, None) is not None:
                    sync.register_buffer(name, getattr(module, name))
            sync.train(module.training)
            return sync
        for name, child in list(module.named_children()):
            converted = cls.convert_sync_batchnorm(child, process_group)
            if converted is not child:
                setattr(module, name, converted)
        return module
