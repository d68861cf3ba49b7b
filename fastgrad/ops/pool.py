"""2-D pooling as differentiable ops, with PyTorch's names, arguments and semantics:
``max_pool2d``, ``avg_pool2d`` and ``adaptive_avg_pool2d`` over (N, C, H, W) input, or
unbatched (C, H, W).

The output size is computed here (PyTorch's formula, ceil_mode included); the kernels
(``fastgrad.kernels.*_pool2d_*``) take it as the shape of the array they fill. Max
pooling keeps the index of each maximum for its backward pass (and returns it when
``return_indices`` is set).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import _config, kernels
from ..autograd import Function
from . import buffer_pool
from ._util import MAX_INDEXED_ELEMENTS, check_size, remembered, shared_step, tensor_cls
from .activation import relu_backward_step

if TYPE_CHECKING:
    from ..tensor import Tensor


class MaxPoolStep:
    """2-d max pooling of one geometry, forward and backward; saves the index of each
    maximum. The arithmetic of the MaxPool2d op, one per geometry (see ConvStep).

    After a convolution with a fused ReLU it also takes over that ReLU's backward
    (``mask_relu``): every pooled value is one of the ReLU's outputs, so "the output at
    the chosen index is positive" is "the pooled value is positive", and masking the
    pooled gradient before scattering it gives the same gradient bit for bit (each
    element is kept or zeroed whole) in a pass a quarter of the size, for 2x2 windows.
    """

    def __init__(self, x_shape, params, out_hw, n_threads):
        # params: (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w), checked
        self.params = params
        self.x_shape, self.out_shape = x_shape, tuple(x_shape[:2]) + out_hw
        self.n_threads = n_threads
        self.mask_relu = False

    def take_relu_mask(self, conv):
        """Apply the preceding ConvStep's ReLU backward here instead of there."""
        conv.pool_masks = self.mask_relu = True

    def forward(self, x, indices):
        """(out, saved); ``indices`` (out's shape, int64) receives each maximum's index."""
        out = buffer_pool.empty(self.out_shape, x.dtype)
        kernels.max_pool2d_forward(x, out, indices, *self.params, self.n_threads)
        return out, (indices, out)

    def backward(self, grad, saved):
        indices, out = saved
        if self.mask_relu:
            grad = relu_backward_step(out, grad, self.n_threads)
        gx = buffer_pool.empty(self.x_shape, grad.dtype)
        kernels.max_pool2d_backward(grad, indices, gx, self.n_threads)
        return gx


class MaxPool2d(Function):
    """out = max over each window, one MaxPoolStep; ``indices`` receives the index of
    each maximum (the caller may hand them out: return_indices)."""

    takes_step = True
    replays_kernels = True

    def forward(self, x, *, params, out_hw, indices=None, step=None):
        # step: as for Conv2d.forward, the MaxPoolStep a replayed plan already has
        x = np.ascontiguousarray(x)
        self.step = (
            step
            if step is not None
            else shared_step(MaxPoolStep, None, x.shape, params, out_hw, _config.get_num_threads())
        )
        if indices is None:  # made here, so that a replayed plan makes them anew too
            indices = buffer_pool.empty(x.shape[:2] + out_hw, np.int64)
        out, self.saved = self.step.forward(x, indices)
        return out

    def backward(self, grad):
        grad = np.ascontiguousarray(grad, dtype=self.saved[1].dtype)
        return (self.step.backward(grad, self.saved),)


class AvgPool2d(Function):
    """out = mean over each window (divisor: PyTorch's rule)."""

    replays_kernels = True

    def forward(self, x, *, params, out_hw):
        # params: (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
        #          count_include_pad, divisor_override)
        x = np.ascontiguousarray(x)
        out = buffer_pool.empty(x.shape[:2] + out_hw, x.dtype)
        kernels.avg_pool2d_forward(x, out, *params, _config.get_num_threads())
        self.params, self.x_shape, self.dtype = params, x.shape, x.dtype
        return out

    def backward(self, grad):
        grad = np.ascontiguousarray(grad, dtype=self.dtype)
        gx = buffer_pool.empty(self.x_shape, self.dtype)
        kernels.avg_pool2d_backward(grad, gx, *self.params, _config.get_num_threads())
        return (gx,)


class AdaptiveAvgPool2d(Function):
    """out = mean over PyTorch's adaptive regions for the output size out_hw."""

    replays_kernels = True

    def forward(self, x, *, out_hw):
        x = np.ascontiguousarray(x)
        out = buffer_pool.empty(x.shape[:2] + out_hw, x.dtype)
        kernels.adaptive_avg_pool2d_forward(x, out, _config.get_num_threads())
        self.x_shape, self.dtype = x.shape, x.dtype
        return out

    def backward(self, grad):
        grad = np.ascontiguousarray(grad, dtype=self.dtype)
        gx = buffer_pool.empty(self.x_shape, self.dtype)
        kernels.adaptive_avg_pool2d_backward(grad, gx, _config.get_num_threads())
        return (gx,)


# --------------------------------------------------------------------------- arguments


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _pair(fn, name, value, minimum):
    """An int or a sequence of one or two ints, as (h, w), each >= minimum."""
    if _is_int(value):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) in (1, 2) and all(map(_is_int, value)):
        pair = (value[0], value[-1])
    else:
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_input(fn, input):
    Tensor = tensor_cls()
    if not isinstance(input, Tensor):
        raise TypeError(f"{fn}: input must be a Tensor, got {type(input).__name__}")
    if input.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: input must be a float32 or float64 tensor, got dtype {input.dtype}")
    if input.ndim not in (3, 4):
        raise ValueError(
            f"{fn}: expected input with 4 dimensions (N, C, H, W) or 3 (C, H, W), got shape {tuple(input.shape)}"
        )
    if min(input.shape[-3:]) == 0:
        raise ValueError(
            f"{fn}: expected non-empty channel and spatial dimensions, got input of shape {tuple(input.shape)}"
        )
    check_size(fn, "input", input.shape, input.dtype, MAX_INDEXED_ELEMENTS)


def _batched(input, run):
    """Run ``run`` on a 4-D input; an unbatched (C, H, W) one gets a batch of one."""
    if input.ndim == 4:
        return run(input)
    out = run(input.reshape(1, *input.shape))
    if isinstance(out, tuple):  # (values, indices)
        return tuple(o.reshape(*o.shape[1:]) for o in out)
    return out.reshape(*out.shape[1:])


def _window_args(fn, kernel_size, stride, padding, dilation):
    kernel = _pair(fn, "kernel_size", kernel_size, 1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel  # PyTorch's default: non-overlapping windows
    else:
        stride = _pair(fn, "stride", stride, 1)
    pad = _pair(fn, "padding", padding, 0)
    dil = _pair(fn, "dilation", dilation, 1)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"{fn}: padding {pad} must be at most half of kernel_size {kernel} (as PyTorch requires)")
    return kernel, stride, pad, dil


def _out_size(fn, size, k, s, p, d, ceil_mode, axis, shape):
    """PyTorch's pooling output size along one axis."""
    span = d * (k - 1) + 1
    if span > size + 2 * p:
        raise ValueError(
            f"{fn}: the window spans {span} along {axis} (kernel {k}, dilation {d}), "
            f"larger than the padded input ({size} + 2*{p} = {size + 2 * p}); "
            f"input shape {shape}"
        )
    o = (size + 2 * p - span + ((s - 1) if ceil_mode else 0)) // s + 1
    if ceil_mode and (o - 1) * s >= size + p:  # the last window must start inside the input
        o -= 1
    return o


def _check_max_windows(fn, size, k, s, p, d, axis, shape):
    """Windows that start in the padding must still reach the input (with dilation they
    can jump over it); only the first few windows start there."""
    o = 0
    while o * s - p < 0:
        start = o * s - p
        t = (-start + d - 1) // d  # the first tap at or right of position 0
        if t >= k or start + t * d >= size:
            raise ValueError(
                f"{fn}: with kernel {k}, dilation {d} and padding {p}, the window "
                f"of output {axis} {o} covers only padding; input shape {shape}"
            )
        o += 1


def _output_size_arg(fn, output_size, hw):
    if output_size is None or _is_int(output_size):
        pair = (output_size, output_size)
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        pair = tuple(output_size)
    else:
        raise TypeError(f"{fn}: output_size must be an int, None or a pair, got {output_size!r}")
    out = []
    for v, size in zip(pair, hw):
        if v is None:
            out.append(size)
        elif not _is_int(v) or v < 0:
            raise ValueError(f"{fn}: output_size entries must be non-negative ints or None, got {output_size!r}")
        else:
            out.append(int(v))
    return tuple(out)


def max_pool_geometry(fn, shape, kernel_size, stride, padding, dilation, ceil_mode):
    return _max_pool_geometry(fn, tuple(shape), kernel_size, stride, padding, dilation, ceil_mode)


@remembered
def _max_pool_geometry(fn, shape, kernel_size, stride, padding, dilation, ceil_mode):
    """Check max pooling of an input of ``shape`` (.., H, W); return the kernels' ``params``
    (kernel, stride, padding and dilation, each as h, w) and the output's (H, W)."""
    kernel, stride, pad, dil = _window_args(fn, kernel_size, stride, padding, dilation)
    H, W = shape[-2:]
    for size, k, s, p, d, axis in (
        (H, kernel[0], stride[0], pad[0], dil[0], "height"),
        (W, kernel[1], stride[1], pad[1], dil[1], "width"),
    ):
        _check_max_windows(fn, size, k, s, p, d, axis, shape)
    out_hw = (
        _out_size(fn, H, kernel[0], stride[0], pad[0], dil[0], ceil_mode, "height", shape),
        _out_size(fn, W, kernel[1], stride[1], pad[1], dil[1], ceil_mode, "width", shape),
    )
    check_size(fn, "output", tuple(shape[:-2]) + out_hw, np.float64, MAX_INDEXED_ELEMENTS)
    return kernel + stride + pad + dil, out_hw


max_pool_geometry.__doc__ = _max_pool_geometry.__doc__


# --------------------------------------------------------------------------- public ops


def max_pool2d(
    input: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Max pooling over (N, C, H, W) or (C, H, W), as torch.nn.functional.max_pool2d.
    With return_indices, also returns the int64 index (h * W + w) of each maximum within
    its input plane. Ties go to the first maximum in the window; NaN propagates."""
    fn = "max_pool2d"
    _check_input(fn, input)
    params, out_hw = max_pool_geometry(fn, tuple(input.shape), kernel_size, stride, padding, dilation, ceil_mode)

    def run(x):
        if not return_indices:
            return MaxPool2d.apply(x, params=params, out_hw=out_hw)
        indices = np.empty(x.shape[:2] + out_hw, np.int64)  # handed out: never pooled
        out = MaxPool2d.apply(x, params=params, out_hw=out_hw, indices=indices)
        return out, tensor_cls()._from_op(indices, None)

    return _batched(input, run)


def avg_pool2d(
    input: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """Average pooling over (N, C, H, W) or (C, H, W), as torch.nn.functional.avg_pool2d
    (windows past the padded input under ceil_mode are clipped, as PyTorch does)."""
    fn = "avg_pool2d"
    _check_input(fn, input)
    kernel, stride, pad, _ = _window_args(fn, kernel_size, stride, padding, 1)
    if divisor_override is not None:
        if not _is_int(divisor_override):
            raise TypeError(f"{fn}: divisor_override must be None or an int, got {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError(f"{fn}: divisor_override must not be zero")
        divisor_override = int(divisor_override)
    shape = tuple(input.shape)
    H, W = shape[-2:]
    out_hw = (
        _out_size(fn, H, kernel[0], stride[0], pad[0], 1, ceil_mode, "height", shape),
        _out_size(fn, W, kernel[1], stride[1], pad[1], 1, ceil_mode, "width", shape),
    )
    params = kernel + stride + pad + (bool(count_include_pad), divisor_override)
    check_size(fn, "output", tuple(input.shape[:-2]) + out_hw, input.dtype, MAX_INDEXED_ELEMENTS)
    return _batched(input, lambda x: AvgPool2d.apply(x, params=params, out_hw=out_hw))


def adaptive_avg_pool2d(input: Tensor, output_size: int | tuple[int | None, int | None]) -> Tensor:
    """Adaptive average pooling to output_size (an int, or a pair whose None entries keep
    the input's size), as torch.nn.functional.adaptive_avg_pool2d."""
    fn = "adaptive_avg_pool2d"
    _check_input(fn, input)
    out_hw = _output_size_arg(fn, output_size, tuple(input.shape[-2:]))
    check_size(fn, "output", tuple(input.shape[:-2]) + out_hw, input.dtype, MAX_INDEXED_ELEMENTS)
    return _batched(input, lambda x: AdaptiveAvgPool2d.apply(x, out_hw=out_hw))
