"""2-D convolution as a differentiable op: ``conv2d`` (PyTorch's semantics) and the fused
``conv2d_relu`` (convolution, bias and ReLU in one pass over the output).

The kernels (``fastgrad.kernels.conv2d_*``) take explicit top/left padding and write into
arrays allocated here; their scratch memory (a workspace array) is cached per Python
thread and per dtype, grown when a larger convolution needs more, so a training loop
allocates it once and two threads running two models never share one.

A plan (``fastgrad.compile``'s, or a Sequential's own) replays ``Conv2d.forward`` and
``backward``, and so their ConvStep, on its slots' arrays (fastgrad/compile/plan.py,
docs/fast-path.md).
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

import numpy as np

from .. import _config, kernels
from ..autograd import Function
from . import buffer_pool
from ._util import MAX_INDEXED_ELEMENTS, check_size, remembered, shared_step, tensor_cls
from .activation import relu_backward_step

if TYPE_CHECKING:
    from ..tensor import Tensor


class _Workspaces(threading.local):
    def __init__(self):
        self.by_dtype = {}


_workspaces = _Workspaces()


@functools.lru_cache(maxsize=512)
def workspace_size(backend, kind, x_shape, w_shape, y_shape, params, n_threads):
    """Elements of scratch memory conv2d_<kind> needs for this geometry. Remembered:
    a training loop asks the same few questions every step. ``backend`` (the kernel home
    and its SIMD path, see ``kernel_home``) is part of the key because each plans
    differently."""
    return kernels.conv2d_workspace_size(kind, x_shape, w_shape, y_shape, *params, n_threads)


def workspace(size, dtype):
    """This thread's scratch array for ``dtype`` with at least ``size`` elements (None
    when size is 0). The kernels only use it during the call, so one buffer per thread
    and dtype serves every layer."""
    if size == 0:
        return None
    buf = _workspaces.by_dtype.get(dtype)
    if buf is None or buf.shape[0] < size:
        buf = np.empty(size, dtype=dtype)
        _workspaces.by_dtype[dtype] = buf
    return buf


def kernel_home():
    """The kernels bound now: the backend and, for the compiled one, its SIMD path (the
    plans, and so the workspace sizes, differ per path: kernels.use_simd switches)."""
    return kernels.backend, kernels.simd_path


class ConvStep:
    """conv2d (+ bias) (then ReLU) of one geometry, forward and backward; weights:
    (weight[, bias]). The arithmetic of the Conv2d op, kept apart from it so that one
    Step serves every call of a geometry (and a replayed plan) without remaking its
    workspace sizes."""

    def __init__(self, x_shape, w_shape, has_bias, params, out_hw, relu, n_threads):
        # params: (stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups), checked
        self.params, self.relu, self.n_threads = params, relu, n_threads
        self.n_weights = 2 if has_bias else 1
        self.x_shape, self.w_shape = x_shape, w_shape
        self.out_shape = (x_shape[0], w_shape[0]) + out_hw
        self.pool_masks = False  # set when a max pool after it applies the ReLU's mask
        backend = kernel_home()
        self.ws_sizes = {
            kind: workspace_size(backend, kind, x_shape, w_shape, self.out_shape, params, n_threads)
            for kind in ("forward", "backward_input", "backward_weight")
        }

    def forward(self, x, weights, keep):
        bias = weights[1] if self.n_weights == 2 else None
        out = buffer_pool.empty(self.out_shape, x.dtype)
        kernels.conv2d_forward(
            x,
            weights[0],
            bias,
            out,
            *self.params,
            self.relu,
            workspace(self.ws_sizes["forward"], x.dtype),
            self.n_threads,
        )
        return out, ((x, out) if keep else None)

    def backward(self, grad, weights, saved, need_x, need_weights):
        x, out = saved
        dtype, params, n_threads = x.dtype, self.params, self.n_threads
        if self.relu and not self.pool_masks:  # gradient flows where the output is positive
            grad = relu_backward_step(out, grad, n_threads)
        gx = None
        if need_x:
            gx = buffer_pool.empty(self.x_shape, dtype)
            kernels.conv2d_backward_input(
                grad, weights[0], gx, *params, workspace(self.ws_sizes["backward_input"], dtype), n_threads
            )
        grads = [None] * self.n_weights
        if need_weights[0]:
            gw = grads[0] = buffer_pool.empty(self.w_shape, dtype)
            kernels.conv2d_backward_weight(
                x, grad, gw, *params, workspace(self.ws_sizes["backward_weight"], dtype), n_threads
            )
        if self.n_weights == 2 and need_weights[1]:
            gb = grads[1] = buffer_pool.empty(self.w_shape[0], dtype)
            kernels.conv2d_backward_bias(grad, gb, n_threads)
        return gx, grads


class Conv2d(Function):
    """out = conv2d(x, weight) (+ bias) (then ReLU), one ConvStep. Inputs: x, weight[, bias]."""

    fresh_grads = True  # ConvStep's gradients are new arrays
    takes_step = True
    replays_kernels = True

    def forward(self, x, weight, bias=None, *, params, out_hw, relu, step=None):
        # step: this geometry's ConvStep when the caller has it (a replayed plan passes the
        # one its capture made: Steps keep no state between calls)
        x = np.ascontiguousarray(x)
        weights = [np.ascontiguousarray(weight)] + ([] if bias is None else [np.ascontiguousarray(bias)])
        if step is None:
            geometry = (x.shape, weight.shape, bias is not None, params, out_hw, relu, _config.get_num_threads())
            step = shared_step(ConvStep, kernel_home(), *geometry)
        out, self.saved = step.forward(x, weights, True in self.needs_input_grad)
        self.step, self.weights = step, weights
        return out

    def backward(self, grad):
        needs = self.needs_input_grad
        grad = np.ascontiguousarray(grad, dtype=self.weights[0].dtype)
        gx, grads = self.step.backward(grad, self.weights, self.saved, needs[0], needs[1:])
        return (gx, *grads)


# --------------------------------------------------------------------------- arguments


def _pair(fn, name, value, minimum):
    if type(value) is int and value >= minimum:  # the common cases, checked first
        return value, value
    if (
        type(value) is tuple
        and len(value) == 2
        and type(value[0]) is int
        and type(value[1]) is int
        and min(value) >= minimum
    ):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in pair):
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _padding(fn, padding, stride, dilation, kernel_hw):
    """(pad_top, pad_left) and whether 'same' asks for the input's size back."""
    if type(padding) is int and padding >= 0:
        return (padding, padding), False
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), False
        if padding != "same":
            raise ValueError(f"{fn}: padding must be 'valid', 'same', an int or a pair of ints, got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"{fn}: padding='same' is not supported for strided convolutions (stride={stride})")
        # The total padding is dil*(k-1); an odd total puts the extra row/column at the
        # bottom/right, as PyTorch does.
        return tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel_hw)), True
    return _pair(fn, "padding", padding, 0), False


@remembered
def _conv_geometry(fn, x_shape, w_shape, stride, padding, dilation, groups, dtype):
    """Check a convolution of an (N, C, H, W) input by a 4-d weight; return the kernels'
    ``params`` (stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups) and the
    output's (H, W). Raises, naming ``fn``, on any invalid combination."""
    if type(groups) is not int:
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
            raise ValueError(f"{fn}: groups must be a positive integer, got {groups!r}")
        groups = int(groups)
    if groups < 1:
        raise ValueError(f"{fn}: groups must be a positive integer, got {groups!r}")
    stride = _pair(fn, "stride", stride, 1)
    dilation = _pair(fn, "dilation", dilation, 1)
    N, C, H, W = x_shape
    Co, Cg, kh, kw = w_shape
    if min(Co, Cg, kh, kw) < 1:
        raise ValueError(f"{fn}: weight has an empty dimension: shape {tuple(w_shape)}")
    if Co % groups:
        raise ValueError(f"{fn}: {Co} output channels (weight {tuple(w_shape)}) are not divisible by groups={groups}")
    if C != Cg * groups:
        raise ValueError(
            f"{fn}: weight {tuple(w_shape)} with groups={groups} expects input "
            f"with {Cg * groups} channels, got input of shape {tuple(x_shape)}"
        )
    (pt, pl), same = _padding(fn, padding, stride, dilation, (kh, kw))
    eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    ph, pw = (H + eh - 1, W + ew - 1) if same else (H + 2 * pt, W + 2 * pl)
    if eh > ph or ew > pw:
        raise ValueError(
            f"{fn}: kernel size ({kh}, {kw}) with dilation {dilation} spans "
            f"({eh}, {ew}), larger than the padded input ({ph}, {pw})"
        )
    out_hw = (H, W) if same else ((ph - eh) // stride[0] + 1, (pw - ew) // stride[1] + 1)
    # the input may be a broadcast view of almost no memory: count with Python ints
    for name, shape in (("input", (N, C, H, W)), ("weight", (Co, Cg, kh, kw)), ("output", (N, Co) + out_hw)):
        check_size(fn, name, shape, dtype, MAX_INDEXED_ELEMENTS)
    return (stride[0], stride[1], pt, pl, dilation[0], dilation[1], groups), out_hw


_plain_geometries = {}  # the common call's results: int arguments, shapes as tuples


def conv_geometry(fn, x_shape, w_shape, stride, padding, dilation, groups, dtype=np.float32):
    if (
        type(stride) is int
        and type(padding) is int
        and type(dilation) is int
        and type(groups) is int
        and type(x_shape) is tuple
        and type(w_shape) is tuple
    ):
        # one dict lookup: the remembered check's typed key (which tells 1 from 1.0 and
        # True) cost 3.7 us a call, more than half a batch-1 LeNet convolution's kernel
        key = (fn, x_shape, w_shape, stride, padding, dilation, groups, dtype)
        found = _plain_geometries.get(key)
        if found is None:
            found = _conv_geometry(fn, x_shape, w_shape, stride, padding, dilation, groups, np.dtype(dtype))
            if len(_plain_geometries) >= 1024:
                _plain_geometries.clear()
            _plain_geometries[key] = found
        return found
    return _conv_geometry(fn, tuple(x_shape), tuple(w_shape), stride, padding, dilation, groups, np.dtype(dtype))


conv_geometry.__doc__ = _conv_geometry.__doc__


def _conv(fn, input, weight, bias, stride, padding, dilation, groups, relu):
    Tensor = tensor_cls()
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a Tensor, got {type(t).__name__}")
        if t.data.dtype not in (np.float32, np.float64):
            raise TypeError(f"{fn}: {name} must be a float32 or float64 tensor, got dtype {t.data.dtype}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{fn}: bias must be a Tensor or None, got {type(bias).__name__}")
    x_data, w_data = input.data, weight.data
    if x_data.ndim == 3:  # unbatched (C, H, W), as PyTorch accepts
        out = _conv(fn, input.reshape(1, *input.shape), weight, bias, stride, padding, dilation, groups, relu)
        return out.reshape(*out.shape[1:])
    if x_data.ndim != 4:
        raise ValueError(
            f"{fn}: expected input with 4 dimensions (N, C, H, W) or 3 (C, H, W), got shape {x_data.shape}"
        )
    if w_data.ndim != 4:
        raise ValueError(
            f"{fn}: expected weight with 4 dimensions (C_out, C_in/groups, kH, kW), got shape {w_data.shape}"
        )
    if x_data.dtype != w_data.dtype:
        raise TypeError(
            f"{fn}: input has dtype {x_data.dtype} but weight has {w_data.dtype}; "
            "convert one with .float() or .double()"
        )
    params, out_hw = conv_geometry(fn, x_data.shape, w_data.shape, stride, padding, dilation, groups, x_data.dtype)
    if bias is not None:
        Co = w_data.shape[0]
        if bias.data.dtype != x_data.dtype:
            raise TypeError(f"{fn}: bias has dtype {bias.data.dtype} but input has {x_data.dtype}")
        if bias.data.shape != (Co,):
            raise ValueError(f"{fn}: expected bias of shape ({Co},), got {bias.data.shape}")
    if bias is None:
        return Conv2d.apply(input, weight, params=params, out_hw=out_hw, relu=relu)
    return Conv2d.apply(input, weight, bias, params=params, out_hw=out_hw, relu=relu)


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """2-D cross-correlation over (N, C_in, H, W) input (or unbatched (C_in, H, W)), as
    torch.nn.functional.conv2d. weight (C_out, C_in/groups, kH, kW), bias (C_out,) or
    None; stride, padding, dilation an int or a pair; padding also 'valid' or 'same'."""
    return _conv("conv2d", input, weight, bias, stride, padding, dilation, groups, False)


def conv2d_relu(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """relu(conv2d(...)) in one pass over the output: same arguments as conv2d."""
    return _conv("conv2d_relu", input, weight, bias, stride, padding, dilation, groups, True)
