"""Convolutions built on the 2-D convolution kernels: conv1d, conv_transpose2d, and the
1-D pools.

- conv1d, max_pool1d, avg_pool1d are their 2-D ops on an input of height 1 (a view:
  (N, C, L) -> (N, C, 1, L)), so they share the 2-D kernels, their checks and gradients.
- conv_transpose2d is the adjoint of conv2d: its forward is conv2d_backward_input with the
  roles of the two activations swapped, and its backward is conv2d_forward (for the input
  gradient) and conv2d_backward_weight (for the weight). The weight keeps PyTorch's
  transposed layout (C_in, C_out/groups, kH, kW), which is exactly the conv weight that maps
  the output's channels to the input's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import _config, kernels
from ..autograd import Function
from ._util import MAX_INDEXED_ELEMENTS, check_size, tensor_cls
from .conv import _pair, conv2d, kernel_home, workspace, workspace_size
from .pool import avg_pool2d, max_pool2d
from .shape import squeeze, unsqueeze

if TYPE_CHECKING:
    from ..tensor import Tensor


def _single(fn, name, value):
    """An int or a 1-tuple (PyTorch's _single) as an int."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{fn}: {name} must be an int or a 1-tuple, got {value!r}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int or a 1-tuple, got {value!r}")
    return int(value)


def _as_2d(fn, input, batched_ndim=3):
    Tensor = tensor_cls()
    if not isinstance(input, Tensor):
        raise TypeError(f"{fn}: input must be a Tensor, got {type(input).__name__}")
    if input.ndim not in (batched_ndim - 1, batched_ndim):
        raise ValueError(
            f"{fn}: expected input with 3 dimensions (N, C, L) or 2 (C, L), got shape {tuple(input.shape)}"
        )
    return unsqueeze(input, -2)


# --------------------------------------------------------------------------- 1-D


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int] = 1,
    padding: int | tuple[int] | str = 0,
    dilation: int | tuple[int] = 1,
    groups: int = 1,
) -> Tensor:
    """As torch.nn.functional.conv1d: (N, C_in, L) or (C_in, L) input, weight (C_out, C_in/groups, k)."""
    x = _as_2d("conv1d", input)
    Tensor = tensor_cls()
    if not isinstance(weight, Tensor) or weight.ndim != 3:
        raise ValueError(
            f"conv1d: expected weight with 3 dimensions (C_out, C_in/groups, k), got "
            f"{tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__}"
        )
    pad = padding if isinstance(padding, str) else (0, _single("conv1d", "padding", padding))
    out = conv2d(
        x,
        unsqueeze(weight, 2),
        bias,
        (1, _single("conv1d", "stride", stride)),
        pad,
        (1, _single("conv1d", "dilation", dilation)),
        groups,
    )
    return squeeze(out, -2)


def max_pool1d(
    input: Tensor,
    kernel_size: int | tuple[int],
    stride: int | tuple[int] | None = None,
    padding: int | tuple[int] = 0,
    dilation: int | tuple[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """As torch.nn.functional.max_pool1d over the last dimension of (N, C, L) or (C, L)."""
    x = _as_2d("max_pool1d", input)
    k = _single("max_pool1d", "kernel_size", kernel_size)
    s = k if stride is None or stride == () else _single("max_pool1d", "stride", stride)
    out = max_pool2d(
        x,
        (1, k),
        (1, s),
        (0, _single("max_pool1d", "padding", padding)),
        (1, _single("max_pool1d", "dilation", dilation)),
        ceil_mode,
        return_indices,
    )
    if return_indices:
        values, indices = out
        return squeeze(values, -2), squeeze(indices, -2)
    return squeeze(out, -2)


def avg_pool1d(
    input: Tensor,
    kernel_size: int | tuple[int],
    stride: int | tuple[int] | None = None,
    padding: int | tuple[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Tensor:
    """As torch.nn.functional.avg_pool1d over the last dimension of (N, C, L) or (C, L)."""
    x = _as_2d("avg_pool1d", input)
    k = _single("avg_pool1d", "kernel_size", kernel_size)
    s = k if stride is None or stride == () else _single("avg_pool1d", "stride", stride)
    out = avg_pool2d(x, (1, k), (1, s), (0, _single("avg_pool1d", "padding", padding)), ceil_mode, count_include_pad)
    return squeeze(out, -2)


# --------------------------------------------------------------------------- transposed


class ConvTranspose2d(Function):
    """y = conv2d's input gradient of x (the adjoint of conv2d by weight), + bias."""

    fresh_grads = True  # every gradient is a new array

    def forward(self, x, weight, bias=None, *, params, out_shape):
        x = np.ascontiguousarray(x)
        weight = np.ascontiguousarray(weight)
        n_threads = _config.get_num_threads()
        backend = kernel_home()
        sizes = {
            kind: workspace_size(backend, kind, out_shape, weight.shape, x.shape, params, n_threads)
            for kind in ("forward", "backward_input", "backward_weight")
        }
        y = np.empty(out_shape, x.dtype)
        kernels.conv2d_backward_input(x, weight, y, *params, workspace(sizes["backward_input"], x.dtype), n_threads)
        if bias is not None:
            y += np.asarray(bias).reshape(1, -1, 1, 1)
        self.x, self.weight, self.params, self.sizes, self.has_bias = x, weight, params, sizes, bias is not None
        return y

    def backward(self, grad):
        x, weight, params = self.x, self.weight, self.params
        grad = np.ascontiguousarray(grad, dtype=x.dtype)
        needs = self.needs_input_grad
        n_threads = _config.get_num_threads()
        gx = gw = gb = None
        if needs[0]:
            gx = np.empty(x.shape, x.dtype)
            kernels.conv2d_forward(
                grad, weight, None, gx, *params, False, workspace(self.sizes["forward"], x.dtype), n_threads
            )
        if needs[1]:
            gw = np.empty(weight.shape, x.dtype)
            kernels.conv2d_backward_weight(
                grad, x, gw, *params, workspace(self.sizes["backward_weight"], x.dtype), n_threads
            )
        if self.has_bias:
            if needs[2]:
                gb = np.empty(weight.shape[1] * params[6], x.dtype)
                kernels.conv2d_backward_bias(grad, gb, n_threads)
            return gx, gw, gb
        return gx, gw


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    output_padding: int | tuple[int, int] = 0,
    groups: int = 1,
    dilation: int | tuple[int, int] = 1,
) -> Tensor:
    """As torch.nn.functional.conv_transpose2d: input (N, C_in, H, W) or (C_in, H, W), weight
    (C_in, C_out/groups, kH, kW); H_out = (H - 1) * stride - 2 * padding + dilation * (kH - 1)
    + output_padding + 1. ``output_padding`` must be smaller than the stride."""
    fn = "conv_transpose2d"
    Tensor = tensor_cls()
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a Tensor, got {type(t).__name__}")
        if t.dtype not in (np.float32, np.float64):
            raise TypeError(f"{fn}: {name} must be a float32 or float64 tensor, got dtype {t.dtype}")
    if input.ndim == 3:
        out = conv_transpose2d(unsqueeze(input, 0), weight, bias, stride, padding, output_padding, groups, dilation)
        return squeeze(out, 0)
    if input.ndim != 4:
        raise ValueError(
            f"{fn}: expected input with 4 dimensions (N, C, H, W) or 3 (C, H, W), got shape {tuple(input.shape)}"
        )
    if weight.ndim != 4:
        raise ValueError(
            f"{fn}: expected weight with 4 dimensions (C_in, C_out/groups, kH, kW), got shape {tuple(weight.shape)}"
        )
    if input.dtype != weight.dtype:
        raise TypeError(f"{fn}: input has dtype {input.dtype} but weight has {weight.dtype}")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive integer, got {groups!r}")
    stride, padding = _pair(fn, "stride", stride, 1), _pair(fn, "padding", padding, 0)
    dilation, output_padding = _pair(fn, "dilation", dilation, 1), _pair(fn, "output_padding", output_padding, 0)
    n, c_in, h, w = input.shape
    wc_in, c_out_g, kh, kw = weight.shape
    if wc_in != c_in:
        raise ValueError(
            f"{fn}: weight {tuple(weight.shape)} expects input with {wc_in} channels, got input of "
            f"shape {tuple(input.shape)}"
        )
    if c_in % groups:
        raise ValueError(f"{fn}: {c_in} input channels are not divisible by groups={groups}")
    if min(c_out_g, kh, kw) < 1:
        raise ValueError(f"{fn}: weight has an empty dimension: shape {tuple(weight.shape)}")
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= s:
            raise ValueError(f"{fn}: output_padding {output_padding} must be smaller than the stride {stride}")
    out_hw = tuple(
        (size - 1) * s - 2 * p + d * (k - 1) + op + 1
        for size, s, p, d, k, op in zip((h, w), stride, padding, dilation, (kh, kw), output_padding)
    )
    if min(out_hw) < 1:
        raise ValueError(
            f"{fn}: the output would have size {out_hw} (input {tuple(input.shape)}, kernel "
            f"{(kh, kw)}, stride {stride}, padding {padding}): padding is too large"
        )
    out_shape = (n, c_out_g * groups) + out_hw
    check_size(fn, "output", out_shape, input.dtype, MAX_INDEXED_ELEMENTS)
    params = (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], int(groups))
    if bias is None:
        return ConvTranspose2d.apply(input, weight, params=params, out_shape=out_shape)
    if not isinstance(bias, Tensor) or tuple(bias.shape) != (out_shape[1],) or bias.dtype != input.dtype:
        raise ValueError(f"{fn}: expected bias of shape ({out_shape[1]},) and dtype {input.dtype}")
    return ConvTranspose2d.apply(input, weight, bias, params=params, out_shape=out_shape)
