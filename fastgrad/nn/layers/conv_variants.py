"""Conv1d and ConvTranspose2d, on the 2-D convolution kernels (see ops/conv_variants.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ... import creation
from ..._typing import DeviceLike
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..module import Module, Parameter
from .linear import _float_dtype


def _ints(layer: str, name: str, value: int | Sequence[int], n: int, minimum: int) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
        raise ValueError(f"{layer}: {name} must be an int or a tuple of {n} ints, got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in values)


def _check_channels(layer: str, in_channels: int, out_channels: int, groups: int) -> None:
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{layer}: {name} must be a positive integer, got {value!r}")
    if in_channels % groups:
        raise ValueError(f"{layer}: in_channels must be divisible by groups")
    if out_channels % groups:
        raise ValueError(f"{layer}: out_channels must be divisible by groups")


class _ConvBase(Module):
    def reset_parameters(self) -> None:
        # PyTorch's defaults: kaiming_uniform_(a=sqrt(5)), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def _make_bias(self, bias: bool, n: int, dtype: np.dtype) -> None:
        if bias:
            self.bias = Parameter(creation.empty(n, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * len(self.kernel_size):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * len(self.kernel_size):
            s += f", dilation={self.dilation}"
        if getattr(self, "output_padding", None) not in (None, (0,) * len(self.kernel_size)):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv1d(_ConvBase):
    """As torch.nn.Conv1d over (N, C, L) or (C, L); padding_mode "zeros" only."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] = 1,
        padding: int | tuple[int] | str = 0,
        dilation: int | tuple[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: DeviceLike | None = None,
        dtype: npt.DTypeLike | None = None,
    ) -> None:
        super().__init__()
        _check_channels("Conv1d", in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError(f"Conv1d: padding_mode {padding_mode!r} is not supported; fastgrad has only 'zeros'")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = _ints("Conv1d", "kernel_size", kernel_size, 1, 1)
        self.stride = _ints("Conv1d", "stride", stride, 1, 1)
        self.dilation = _ints("Conv1d", "dilation", dilation, 1, 1)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Conv1d: Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
            if padding == "same" and self.stride != (1,):
                raise ValueError("Conv1d: padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _ints("Conv1d", "padding", padding, 1, 0)
        self.padding_mode = padding_mode
        dtype = _float_dtype("Conv1d", dtype)
        self.weight = Parameter(creation.empty(out_channels, in_channels // groups, self.kernel_size[0], dtype=dtype))
        self._make_bias(bias, out_channels, dtype)
        self.reset_parameters()

    def forward(self, input: Tensor) -> Tensor:
        shape = input.shape
        if not (
            (len(shape) == 3 and shape[1] == self.in_channels) or (len(shape) == 2 and shape[0] == self.in_channels)
        ):
            raise self._input_error(shape, f"(N, {self.in_channels}, L) or ({self.in_channels}, L)")
        padding = self.padding if isinstance(self.padding, str) else self.padding[0]
        return F.conv1d(input, self.weight, self.bias, self.stride[0], padding, self.dilation[0], self.groups)


class ConvTranspose2d(_ConvBase):
    """As torch.nn.ConvTranspose2d: weight (in, out/groups, kH, kW); output_padding < stride."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, int] = 1,
        padding_mode: str = "zeros",
        device: DeviceLike | None = None,
        dtype: npt.DTypeLike | None = None,
    ) -> None:
        super().__init__()
        _check_channels("ConvTranspose2d", in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError('Only "zeros" padding mode is supported for ConvTranspose2d')
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = _ints("ConvTranspose2d", "kernel_size", kernel_size, 2, 1)
        self.stride = _ints("ConvTranspose2d", "stride", stride, 2, 1)
        self.padding = _ints("ConvTranspose2d", "padding", padding, 2, 0)
        self.dilation = _ints("ConvTranspose2d", "dilation", dilation, 2, 1)
        self.output_padding = _ints("ConvTranspose2d", "output_padding", output_padding, 2, 0)
        self.padding_mode = padding_mode
        dtype = _float_dtype("ConvTranspose2d", dtype)
        kh, kw = self.kernel_size
        self.weight = Parameter(creation.empty(in_channels, out_channels // groups, kh, kw, dtype=dtype))
        self._make_bias(bias, out_channels, dtype)
        self.reset_parameters()

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        if output_size is not None:
            raise NotImplementedError("ConvTranspose2d: output_size is not supported; set output_padding")
        shape = input.shape
        if not (
            (len(shape) == 4 and shape[1] == self.in_channels) or (len(shape) == 3 and shape[0] == self.in_channels)
        ):
            raise self._input_error(shape, f"(N, {self.in_channels}, H, W) or ({self.in_channels}, H, W)")
        return F.conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )
