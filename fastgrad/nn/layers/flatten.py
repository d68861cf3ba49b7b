"""Flatten: merges dimensions start_dim..end_dim into one (by default all but the batch)."""

from __future__ import annotations

from ...tensor import Tensor
from ..module import Module


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim
        # the fewest dimensions an input needs for both dims to exist
        self._min_ndim = max(d + 1 if d >= 0 else -d for d in (start_dim, end_dim))

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim < self._min_ndim:
            raise self._input_error(input.shape, f"at least {self._min_ndim} dimensions")
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
