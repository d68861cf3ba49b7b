"""Dropout: while training, zero each element with probability ``p`` and scale the kept
ones by 1 / (1 - p) (inverted dropout, so evaluation needs no rescaling); the identity
otherwise. The mask is drawn from fastgrad's generator, so ``manual_seed`` fixes it."""
import numpy as np

from .. import _config
from ..autograd import Function
from ._util import check_float
from ._util import check_size


class Dropout(Function):
    def forward(self, x, mask):
        self.mask = mask  # already holds 0 or 1 / (1 - p)
        return x * mask

    def backward(self, grad):
        return (grad * self.mask,)


def dropout(input, p=0.5, training=True, inplace=False):
    """As torch.nn.functional.dropout. ``inplace`` is accepted for compatibility; the
    result is always a new tensor."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    check_float("dropout", input)
    if not training or p == 0:
        return input
    dtype = input.dtype
    check_size("dropout", "input", input.shape, dtype)  # the mask is a full-size array
    if p == 1:
        mask = np.zeros(input.shape, dtype=dtype)
    else:
        mask = (_config.rng().random(input.shape, dtype=dtype) >= dtype.type(p)).astype(dtype)
        mask *= dtype.type(1.0 / (1.0 - p))
    return Dropout.apply(input, mask=mask)
