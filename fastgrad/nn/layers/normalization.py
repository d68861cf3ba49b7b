"""BatchNorm1d and BatchNorm2d: normalize each channel by the batch's statistics while
training (and fold them into running statistics), by the running statistics in eval."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ..._typing import DeviceLike
from ...ops._util import check_size
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..module import Module, Parameter
from .linear import _float_dtype


class _BatchNorm(Module):
    """As torch.nn's batch norms (``bias=False`` keeps a weight without a bias)."""

    _expected = ""  # the accepted input shapes, for error messages

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: DeviceLike | None = None,
        dtype: npt.DTypeLike | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features < 1:
            raise ValueError(f"{type(self).__name__}: num_features must be a positive integer, got {num_features!r}")
        name = type(self).__name__
        for setting, value in (("momentum", momentum), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                if setting == "momentum" and value is None:
                    continue
                raise TypeError(f"{name}: {setting} must be a number, got {value!r}")
        if momentum is not None and not 0 <= momentum <= 1:  # NaN fails the comparison too
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum!r}")
        if not (0 < eps < math.inf):  # refuses NaN and inf as well
            raise ValueError(f"{name}: eps must be a finite positive number, got {eps!r}")
        dtype = _float_dtype(name, dtype)
        check_size(name, "each per-channel array", (num_features,), dtype)  # before allocating
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=dtype))
            if bias:
                self.bias = Parameter(np.zeros(num_features, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features, dtype=dtype)))
            self.register_buffer("running_var", Tensor(np.ones(num_features, dtype=dtype)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input(self, shape: tuple[int, ...]) -> None:
        if len(shape) not in self._ndims or shape[1] != self.num_features:
            raise self._input_error(shape, self._expected.format(C=self.num_features))

    def forward(self, input: Tensor) -> Tensor:
        self._check_input(input.shape)
        # PyTorch's rule: momentum None means a cumulative average over the batches seen
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.data)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L) inputs; statistics per channel C."""

    _ndims = (2, 3)
    _expected = "(N, {C}) or (N, {C}, L)"


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W) inputs; statistics per channel C."""

    _ndims = (4,)
    _expected = "(N, {C}, H, W)"
