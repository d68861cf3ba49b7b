"""DataLoader: batches of a Dataset as Tensors, in order or shuffled, as
``torch.utils.data.DataLoader`` (single process).

Shuffled order is reproducible. With ``seed``, epoch ``e`` visits the samples in the
order ``numpy.random.default_rng([seed, e]).permutation(n)``: the order depends only
on the seed and the epoch number, never on what ran before, so a run resumed at epoch
``e`` (``set_epoch(e)``) sees exactly the batches the uninterrupted run saw. With a
``generator`` (a numpy Generator) each epoch draws its permutation from it; with
neither, from fastgrad's generator (``fastgrad.manual_seed``).
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _config
from ..tensor import Tensor
from .dataset import collate

if TYPE_CHECKING:
    from .dataset import Dataset


class DataLoader:
    def __init__(self, dataset: Dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 seed: int | None = None, generator: np.random.Generator | None = None,
                 collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and generator is not None:
            raise ValueError("DataLoader: give seed or generator, not both")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"DataLoader: seed must be a non-negative integer, got {seed!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.generator = generator
        self.collate_fn = collate_fn
        self.epoch = 0  # the epoch the next iteration is (advanced by each __iter__)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its shuffled order, with a seed)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The sample indices of one epoch, in visiting order (does not advance the epoch)."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        if self.seed is not None:
            e = self.epoch if epoch is None else int(epoch)
            return np.random.default_rng([self.seed, e]).permutation(n)
        rng = self.generator if self.generator is not None else _config.rng()
        return rng.permutation(n)

    def batch_indices(self, epoch: int | None = None) -> list[np.ndarray]:
        """The index array of every batch of one epoch."""
        order = self.order(epoch)
        n, bs = order.size, self.batch_size
        stop = n - n % bs if self.drop_last else n
        return [order[i:i + bs] for i in range(0, stop, bs)]

    def __iter__(self) -> Iterator[Any]:
        batches = self.batch_indices()
        self.epoch += 1
        for idx in batches:
            yield self.fetch(idx)

    def fetch(self, indices: Sequence[int] | np.ndarray) -> Any:
        """The batch made of the samples at ``indices``, as Tensors."""
        ds = self.dataset
        if self.collate_fn is not None:
            return self.collate_fn([ds[int(i)] for i in indices])
        if hasattr(ds, "__getitems__"):
            batch = ds.__getitems__(indices)
        else:
            batch = collate([ds[int(i)] for i in indices])
        return _to_tensors(batch)


def _to_tensors(batch):
    if isinstance(batch, tuple):
        return tuple(_to_tensors(b) for b in batch)
    if isinstance(batch, list):
        return [_to_tensors(b) for b in batch]
    if isinstance(batch, dict):
        return {k: _to_tensors(v) for k, v in batch.items()}
    if isinstance(batch, Tensor):
        return batch
    return Tensor._from_op(np.ascontiguousarray(batch), None)
