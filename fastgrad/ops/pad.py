"""F.pad: constant, reflect, replicate and circular padding of the last dimensions.

``pad`` lists (left, right) amounts from the last dimension backwards, as PyTorch's. Each
mode is an index map from output positions to input positions along each padded axis
(constant mode maps the new positions nowhere and fills them), so the forward is a
gather and the backward a scatter-add of the gradient through the same maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..autograd import Function
from ._util import check_size, tensor_cls

if TYPE_CHECKING:
    from ..tensor import Tensor

MODES = ("constant", "reflect", "replicate", "circular")


def _source_index(mode, n, left, right):
    """Input index of every output position along one axis (-1 where constant fills)."""
    pos = np.arange(-left, n + right)
    if mode == "constant":
        return np.where((pos >= 0) & (pos < n), pos, -1)
    if mode == "replicate":
        return np.clip(pos, 0, n - 1)
    if mode == "circular":
        return pos % n
    period = 2 * (n - 1)  # reflect, the edge not repeated
    p = np.abs(pos) % period if period else np.zeros_like(pos)
    return np.where(p < n, p, period - p)


class Pad(Function):
    def forward(self, x, maps, value):
        self.shape, self.maps = x.shape, maps
        out = x
        for axis, idx in maps:
            taken = np.take(out, np.maximum(idx, 0), axis=axis)
            if (idx < 0).any():
                mask_shape = [1] * out.ndim
                mask_shape[axis] = idx.size
                taken = np.where((idx >= 0).reshape(mask_shape), taken, np.asarray(value, x.dtype))
            out = taken
        return np.ascontiguousarray(out)

    def backward(self, grad):
        g = grad
        for axis, idx in reversed(self.maps):
            n = self.shape[axis]
            shape = list(g.shape)
            shape[axis] = n
            acc = np.zeros(shape, g.dtype)
            keep = idx >= 0
            where = [slice(None)] * g.ndim
            where[axis] = idx[keep]
            src = np.compress(keep, g, axis=axis)
            np.add.at(acc, tuple(where), src)
            g = acc
        return (g,)


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    """As torch.nn.functional.pad (non-negative pads)."""
    Tensor = tensor_cls()
    if not isinstance(input, Tensor):
        raise TypeError(f"pad: input must be a Tensor, got {type(input).__name__}")
    pad = tuple(pad)
    if len(pad) % 2 or any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) for p in pad):
        raise ValueError(f"Padding length must be divisible by 2, and the pads integers: got {pad!r}")
    if len(pad) // 2 > input.ndim:
        raise ValueError(
            f"Padding length should be less than or equal to two times the input dimension but got "
            f"padding length {len(pad)} and input of dimension {input.ndim}"
        )
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding (cropping) is not supported, got {pad!r}")
    if mode not in MODES:
        raise NotImplementedError(f"pad: unknown padding mode {mode!r}; expected one of {MODES}")
    if mode != "constant" and value not in (None, 0):
        raise ValueError(f'Padding mode "{mode}" doesn\'t take in value argument')
    maps, shape = [], list(input.shape)
    for i in range(len(pad) // 2):
        axis, (left, right) = input.ndim - 1 - i, pad[2 * i : 2 * i + 2]
        n = shape[axis]
        if left == right == 0:
            continue
        if mode == "reflect" and (left >= n or right >= n):
            raise ValueError(
                f"pad: padding size should be less than the corresponding input dimension, but got "
                f"padding ({left}, {right}) at dimension {axis} of input {list(input.shape)}"
            )
        if mode in ("replicate", "circular") and n == 0:
            raise ValueError(f"pad: {mode} padding of an empty dimension {axis}")
        if mode == "circular" and (left > n or right > n):
            raise ValueError(f"pad: circular padding ({left}, {right}) is larger than dimension {axis} ({n})")
        maps.append((axis, _source_index(mode, n, left, right)))
        shape[axis] = n + left + right
    check_size("pad", "output", shape, input.dtype)
    return Pad.apply(input, maps=maps, value=0 if value is None else value)
