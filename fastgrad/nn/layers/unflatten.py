"""Unflatten: splits one dimension into ``unflattened_size`` (which may hold one -1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ...tensor import Tensor
from ..module import Module


class Unflatten(Module):
    def __init__(self, dim: int, unflattened_size: Sequence[int]) -> None:
        super().__init__()
        if isinstance(dim, str):
            raise TypeError("Unflatten: named dimensions are not supported; dim must be an int")
        sizes = tuple(unflattened_size)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) for s in sizes):
            raise TypeError(f"unflattened_size must be a tuple of ints, but found {unflattened_size!r}")
        if sum(s == -1 for s in sizes) > 1 or any(s < -1 for s in sizes):
            raise ValueError(f"Unflatten: unflattened_size {sizes} may hold at most one -1 and no other negatives")
        self.dim, self.unflattened_size = dim, sizes

    def forward(self, input: Tensor) -> Tensor:
        shape = tuple(input.shape)
        ndim = len(shape)
        if not -ndim <= self.dim < ndim:
            raise IndexError(f"Unflatten: dim {self.dim} is out of range for an input with {ndim} dimensions")
        d = self.dim % ndim
        sizes = self.unflattened_size
        if -1 in sizes:
            known = math.prod(s for s in sizes if s != -1)
            if known == 0 or shape[d] % known:
                raise RuntimeError(f"unflatten: cannot split size {shape[d]} into {sizes}")
            sizes = tuple(shape[d] // known if s == -1 else s for s in sizes)
        if math.prod(sizes) != shape[d]:
            raise RuntimeError(
                f"unflatten: Provided sizes {list(self.unflattened_size)} don't multiply up to the "
                f"size of dim {self.dim} ({shape[d]}) in the input tensor"
            )
        return input.reshape(shape[:d] + sizes + shape[d + 1 :])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
