"""``split`` and ``chunk``: views of consecutive slices along one dimension, each a
differentiable index of the input (the gradient of a piece lands in its slice)."""

import numbers

from ._util import normalize_dims, tensor_cls


def split(tensor, split_size_or_sections, dim=0):
    """As torch.split: pieces of split_size (the last may be smaller), or of the listed sizes."""
    Tensor = tensor_cls()
    if not isinstance(tensor, Tensor):
        raise TypeError(f"split: expected a Tensor, got {type(tensor).__name__}")
    (axis,) = normalize_dims("split", dim, tensor.ndim)
    n = tensor.shape[axis]
    if isinstance(split_size_or_sections, numbers.Integral) and not isinstance(split_size_or_sections, bool):
        size = int(split_size_or_sections)
        if size < 0 or (size == 0 and n):
            raise RuntimeError(f"split expects split_size be non-negative, but got split_size={size}")
        sizes = [min(size, n - start) for start in range(0, n, size)] if size else [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise RuntimeError(
                f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's size at "
                f"dimension {axis}), but got split_sizes={sizes}"
            )
    pieces, start = [], 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(tensor[index])
        start += size
    return tuple(pieces)


def chunk(input, chunks, dim=0):
    """As torch.chunk: at most ``chunks`` pieces of ceil(size / chunks) elements."""
    if isinstance(chunks, bool) or not isinstance(chunks, numbers.Integral) or chunks < 1:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    Tensor = tensor_cls()
    if not isinstance(input, Tensor):
        raise TypeError(f"chunk: expected a Tensor, got {type(input).__name__}")
    (axis,) = normalize_dims("chunk", dim, input.ndim)
    n = input.shape[axis]
    if n == 0:  # as PyTorch: `chunks` empty pieces
        return split(input, [0] * chunks, dim)
    return split(input, -(-n // chunks), dim)
