"""Conv2d: a 2-d convolution layer over (N, C, H, W) inputs (or unbatched (C, H, W))."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ... import creation
from ..._typing import DeviceLike
from ...ops._util import check_size
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..module import Module, Parameter


def _pair(name: str, value: int | tuple[int, int], minimum: int) -> tuple[int, int]:
    """``value`` as a pair of ints >= ``minimum`` (an int means the same for H and W)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"Conv2d: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"Conv2d: {name} must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in pair)


def _float_dtype(dtype: npt.DTypeLike | None) -> np.dtype:
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"Conv2d: expected dtype float32 or float64, got {dtype}")
    return dtype


class Conv2d(Module):
    """As torch.nn.Conv2d; ``padding`` may be ints or "valid"/"same"; ``padding_mode`` is
    "zeros" only. Weight (out, in/groups, kH, kW) and bias start as PyTorch's defaults."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: DeviceLike | None = None,
        dtype: npt.DTypeLike | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Conv2d: {name} must be a positive integer, got {value!r}")
        # PyTorch's messages, naming the layer and the values
        if in_channels % groups:
            raise ValueError(
                f"Conv2d: in_channels must be divisible by groups (in_channels={in_channels}, groups={groups})"
            )
        if out_channels % groups:
            raise ValueError(
                f"Conv2d: out_channels must be divisible by groups (out_channels={out_channels}, groups={groups})"
            )
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: padding_mode {padding_mode!r} is not supported; fastgrad has only 'zeros'")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = _pair("kernel_size", kernel_size, 1)
        self.stride = _pair("stride", stride, 1)
        self.dilation = _pair("dilation", dilation, 1)
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Conv2d: Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(
                    f"Conv2d: padding='same' is not supported for strided convolutions (stride={self.stride})"
                )
            # conv2d takes the string: an odd total padding (an even kernel extent) puts the
            # extra row and column at the bottom and right, as PyTorch does
            self.padding = padding
        else:
            self.padding = _pair("padding", padding, 0)
        dtype = _float_dtype(dtype)
        kh, kw = self.kernel_size
        check_size("Conv2d", "weight", (out_channels, in_channels // groups, kh, kw), dtype)
        self.weight = Parameter(creation.empty(out_channels, in_channels // groups, kh, kw, dtype=dtype))
        if bias:
            self.bias = Parameter(creation.empty(out_channels, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # PyTorch's defaults: kaiming_uniform_ with a=sqrt(5) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        shape = input.shape
        if (len(shape) == 4 and shape[1] == self.in_channels) or (len(shape) == 3 and shape[0] == self.in_channels):
            return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        raise self._input_error(shape, f"(N, {self.in_channels}, H, W) or ({self.in_channels}, H, W)")

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s
