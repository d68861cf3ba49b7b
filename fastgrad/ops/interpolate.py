"""F.interpolate: nearest (1-, 2- and 3-D) and bilinear (2-D) resampling, with PyTorch's
coordinate rules.

The output position i maps to the source coordinate ``(i + 0.5) * scale - 0.5`` for
bilinear (clamped at 0), or ``i * (in - 1) / (out - 1)`` with align_corners=True; nearest
takes ``floor(i * scale)``. ``scale`` is in/out, or 1/scale_factor when a scale_factor is
given (and recompute_scale_factor is not set), as in PyTorch. Bilinear is separable: each
axis is a (rows -> two source rows with weights) map applied by a gather, and the
backward scatters the gradient back through the same maps.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..autograd import Function
from ._util import check_float, check_size, tensor_cls

if TYPE_CHECKING:
    from ..tensor import Tensor


def _nearest_index(n_in, n_out, scale):
    # PyTorch computes the product in float32 (floorf(i * scale)); so does this
    pos = np.arange(n_out, dtype=np.float32) * np.float32(scale)
    return np.minimum(np.floor(pos).astype(np.int64), n_in - 1)


def _linear_map(n_in, n_out, scale, align_corners):
    """Two source indices and their weights for each output position."""
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = np.maximum((i + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    return lo, hi, frac


class Nearest(Function):
    def forward(self, x, indices):
        self.shape, self.indices = x.shape, indices
        out = x
        for axis, idx in indices:
            out = np.take(out, idx, axis=axis)
        return np.ascontiguousarray(out)

    def backward(self, grad):
        g = grad
        for axis, idx in reversed(self.indices):
            shape = list(g.shape)
            shape[axis] = self.shape[axis]
            acc = np.zeros(shape, g.dtype)
            where = [slice(None)] * g.ndim
            where[axis] = idx
            np.add.at(acc, tuple(where), g)
            g = acc
        return (g,)


class Linear(Function):
    def forward(self, x, maps):
        self.shape, self.maps = x.shape, maps
        out = x
        for axis, (lo, hi, frac) in maps:
            w = frac.astype(x.dtype).reshape([-1 if d == axis else 1 for d in range(x.ndim)])
            a, b = np.take(out, lo, axis=axis), np.take(out, hi, axis=axis)
            out = a + (b - a) * w
        return np.ascontiguousarray(out)

    def backward(self, grad):
        g = grad
        for axis, (lo, hi, frac) in reversed(self.maps):
            w = frac.astype(g.dtype).reshape([-1 if d == axis else 1 for d in range(g.ndim)])
            shape = list(g.shape)
            shape[axis] = self.shape[axis]
            acc = np.zeros(shape, g.dtype)
            where = [slice(None)] * g.ndim
            where[axis] = lo
            np.add.at(acc, tuple(where), g * (1 - w))
            where[axis] = hi
            np.add.at(acc, tuple(where), g * w)
            g = acc
        return (g,)


def _per_dim(name, value, n):
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(values) != n:
        raise ValueError(
            f"Input and {name} must have the same number of spatial dimensions, but got input with "
            f"spatial dimensions of {n} and {name} {value!r}"
        )
    return values


def interpolate(
    input: Tensor,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """As torch.nn.functional.interpolate, for mode "nearest" and "bilinear"."""
    Tensor = tensor_cls()
    if not isinstance(input, Tensor):
        raise TypeError(f"interpolate: input must be a Tensor, got {type(input).__name__}")
    if mode not in ("nearest", "bilinear"):
        raise NotImplementedError(
            f"interpolate: mode {mode!r} is not supported (fastgrad has 'nearest' and 'bilinear')"
        )
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    if mode == "nearest" and align_corners is not None:
        raise ValueError(
            "align_corners option can only be set with the interpolating modes: linear | bilinear | bicubic | trilinear"
        )
    n_spatial = input.ndim - 2
    if mode == "bilinear" and input.ndim != 4:
        raise NotImplementedError(f"Got {input.ndim}D input, but bilinear mode needs 4D input")
    if n_spatial not in (1, 2, 3):
        raise ValueError(
            f"interpolate: expected a 3-D, 4-D or 5-D input (N, C, *spatial), got shape {tuple(input.shape)}"
        )
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined")
    check_float("interpolate", input)
    in_sizes = input.shape[2:]
    if size is not None:
        out_sizes = _per_dim("size", size, n_spatial)
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in out_sizes):
            raise ValueError(f"interpolate: size must be positive integers, got {size!r}")
        scales = [n_in / n_out for n_in, n_out in zip(in_sizes, out_sizes)]
    else:
        factors = _per_dim("scale_factor", scale_factor, n_spatial)
        if any(not isinstance(f, numbers.Real) or not f > 0 for f in factors):
            raise ValueError(f"interpolate: scale_factor must be positive, got {scale_factor!r}")
        out_sizes = tuple(int(math.floor(n * f)) for n, f in zip(in_sizes, factors))
        if recompute_scale_factor:
            scales = [n_in / n_out for n_in, n_out in zip(in_sizes, out_sizes)]
        else:
            scales = [1.0 / f for f in factors]
    if any(n == 0 for n in out_sizes) or any(n == 0 for n in in_sizes):
        raise ValueError(f"interpolate: input {tuple(input.shape)} and output sizes {out_sizes} must be non-empty")
    check_size("interpolate", "output", tuple(input.shape[:2]) + tuple(out_sizes), input.dtype)
    axes = range(2, input.ndim)
    if mode == "nearest":
        indices = [(a, _nearest_index(n_in, n_out, s)) for a, n_in, n_out, s in zip(axes, in_sizes, out_sizes, scales)]
        return Nearest.apply(input, indices=indices)
    maps = [
        (a, _linear_map(n_in, n_out, s, bool(align_corners)))
        for a, n_in, n_out, s in zip(axes, in_sizes, out_sizes, scales)
    ]
    return Linear.apply(input, maps=maps)
