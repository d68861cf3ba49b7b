"""Linear (y = x W^T + b over the last dimension) and Identity."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ... import creation
from ..._typing import DeviceLike
from ...ops._util import check_size
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..module import Module, Parameter


def _float_dtype(layer: str, dtype: npt.DTypeLike | None) -> np.dtype:
    """The parameters' dtype: float32 (the default) or float64."""
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{layer}: expected dtype float32 or float64, got {dtype}")
    return dtype


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments, as PyTorch's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:
        return input


class Linear(Module):
    """As torch.nn.Linear: input (*, in_features) -> (*, out_features); weight
    (out_features, in_features) and bias start as PyTorch's defaults."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: DeviceLike | None = None,
        dtype: npt.DTypeLike | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"Linear: {name} must be a non-negative integer, got {value!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        dtype = _float_dtype("Linear", dtype)
        check_size("Linear", "weight", (out_features, in_features), dtype)  # before allocating it
        self.weight = Parameter(creation.empty(out_features, in_features, dtype=dtype))
        if bias:
            self.bias = Parameter(creation.empty(out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        shape = input.shape
        if len(shape) == 2 and shape[1] == self.in_features:
            return F.linear(input, self.weight, self.bias)
        if not shape or shape[-1] != self.in_features:
            raise self._input_error(shape, f"(*, {self.in_features})")
        # (*, in) -> (prod(*), in) -> (*, out): the op works on matrices
        # explicit row count: reshape(-1, 0) is ambiguous when there are no input features
        out = F.linear(input.reshape(math.prod(shape[:-1]), self.in_features), self.weight, self.bias)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
