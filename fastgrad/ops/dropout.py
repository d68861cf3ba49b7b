"""Dropout: while training, zero each element with probability ``p`` and scale the kept
ones by 1 / (1 - p) (inverted dropout, so evaluation needs no rescaling); the identity
otherwise. The mask is drawn from fastgrad's generator, so ``manual_seed`` fixes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import _config
from ..autograd import Function
from . import buffer_pool
from ._util import check_float, check_size

if TYPE_CHECKING:
    from ..tensor import Tensor


class Dropout(Function):
    def forward(self, x, p, per_channel=False):
        # the mask is drawn here, not by the caller: a replayed plan draws a new one;
        # per_channel (dropout2d): one entry per (sample, channel), broadcast over H and W
        shape = x.shape[:-2] + (1, 1) if per_channel else x.shape
        self.mask = mask = _mask(shape, x.dtype, p)  # 0 or 1 / (1 - p)
        return np.multiply(x, mask, out=buffer_pool.empty(x.shape, x.dtype))

    def backward(self, grad):
        mask = self.mask
        out = buffer_pool.empty(mask.shape, mask.dtype) if grad.shape == mask.shape else None
        return (np.multiply(grad, mask, out=out),)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """As torch.nn.functional.dropout. ``inplace`` is accepted for compatibility; the
    result is always a new tensor."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    check_float("dropout", input)
    if not training or p == 0:
        return input
    check_size("dropout", "input", input.shape, input.dtype)  # the mask is a full-size array
    return Dropout.apply(input, p=float(p))


def _mask(shape, dtype, p):
    """(uniform >= p) as 0.0 or 1.0, scaled by 1 / (1 - p), in a pooled array."""
    mask = buffer_pool.empty(shape, dtype)
    if p == 1:
        mask.fill(0)
        return mask
    _config.rng().random(dtype=dtype, out=mask)
    kept = np.greater_equal(mask, dtype.type(p), out=buffer_pool.empty(shape, np.bool_))
    np.copyto(mask, kept)
    mask *= dtype.type(1.0 / (1.0 - p))
    return mask
