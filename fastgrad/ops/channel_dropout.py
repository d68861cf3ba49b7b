"""dropout2d: zero whole channels (every element of a (sample, channel) pair at once) with
probability ``p`` while training, scaling the kept ones by 1 / (1 - p); one mask entry
per channel, broadcast over the spatial dimensions, drawn by the Dropout op."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._util import check_float
from .dropout import Dropout

if TYPE_CHECKING:
    from ..tensor import Tensor


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """As torch.nn.functional.dropout2d for (N, C, H, W) or (C, H, W) input."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    check_float("dropout2d", input)
    if input.ndim not in (3, 4):
        raise ValueError(
            f"dropout2d: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape {tuple(input.shape)}"
        )
    if not training or p == 0:
        return input
    return Dropout.apply(input, p=float(p), per_channel=True)
