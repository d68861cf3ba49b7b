"""Lookup tables: ``embedding`` (rows of a weight matrix picked by integer indices, whose
gradient adds each row's incoming gradients up) and ``one_hot``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._typing import TensorLike
from ..autograd import Function
from ._util import check_size, tensor_cls

if TYPE_CHECKING:
    from ..tensor import Tensor


class Embedding(Function):
    def forward(self, weight, indices, padding_idx):
        self.indices, self.shape, self.padding_idx = indices, weight.shape, padding_idx
        return weight[indices]

    def backward(self, grad):
        g = np.zeros(self.shape, grad.dtype)
        np.add.at(g, self.indices, grad)
        if self.padding_idx is not None:
            g[self.padding_idx] = 0  # the padding row never learns, as in PyTorch
        return (g,)


def _indices(op, input, limit):
    data = np.asarray(getattr(input, "_data", input))
    if data.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected an integer tensor of indices, got dtype {data.dtype}")
    if data.size and (data.min() < 0 or data.max() >= limit):
        bad = data.min() if data.min() < 0 else data.max()
        raise IndexError(f"{op}: index {int(bad)} is out of range for {limit} entries")
    return data.astype(np.int64, copy=False)


def embedding(
    input: TensorLike,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """As torch.nn.functional.embedding: weight[input]. ``max_norm``, ``scale_grad_by_freq`` and
    ``sparse`` are not supported."""
    Tensor = tensor_cls()
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise ValueError("embedding: weight must be a 2-D Tensor (num_embeddings, embedding_dim)")
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not supported")
    n = weight.shape[0]
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"Padding_idx must be within num_embeddings, got {padding_idx} for {n}")
        padding_idx %= n
    indices = _indices("embedding", input, n)
    check_size("embedding", "output", indices.shape + (weight.shape[1],), weight.dtype)
    return Embedding.apply(weight, indices=indices, padding_idx=padding_idx)


def one_hot(tensor: TensorLike, num_classes: int = -1) -> Tensor:
    """As torch.nn.functional.one_hot: int64 of shape tensor.shape + (num_classes,);
    num_classes=-1 takes max + 1."""
    Tensor = tensor_cls()
    data = np.asarray(getattr(tensor, "_data", tensor))
    if data.dtype.kind not in "iu":
        raise RuntimeError(f"one_hot is only applicable to index tensor of type LongTensor, got dtype {data.dtype}")
    if num_classes == -1:
        if data.size == 0:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        num_classes = int(data.max()) + 1
    if data.size and data.min() < 0:
        raise RuntimeError("Class values must be non-negative.")
    if data.size and data.max() >= num_classes:
        raise RuntimeError("Class values must be smaller than num_classes.")
    check_size("one_hot", "output", data.shape + (num_classes,), np.int64)
    out = np.zeros(data.shape + (num_classes,), np.int64)
    np.put_along_axis(out, data[..., None].astype(np.int64), 1, axis=-1)
    return Tensor._from_op(out, None)
