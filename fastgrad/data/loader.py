"""DataLoader: batches of a Dataset as Tensors, in order or shuffled, as
``torch.utils.data.DataLoader``; in the main process, or in ``num_workers`` worker
processes (see ``workers.py``) that yield the same batches in the same order.

Shuffled order is reproducible. With ``seed``, epoch ``e`` visits the samples in the
order ``numpy.random.default_rng([seed, e]).permutation(n)``: the order depends only
on the seed and the epoch number, never on what ran before, so a run resumed at epoch
``e`` (``set_epoch(e)``) sees exactly the batches the uninterrupted run saw. With a
``generator`` (a ``fastgrad.Generator`` or numpy Generator) each epoch draws its
permutation from it; with neither, from fastgrad's generator (``fastgrad.manual_seed``).

With a ``sampler`` (any iterable of indices with a length, such as ``DistributedSampler``),
an epoch visits the indices it yields, in its order; it excludes ``shuffle``, as in PyTorch.

``pin_memory`` is accepted and, with no accelerator to copy to, does nothing beyond
PyTorch's warning for that case.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import _config
from ..tensor import Tensor
from . import workers as _workers
from .dataset import Dataset, collate
from .generator import numpy_rng


class DataLoader:
    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        generator: Any = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        sampler: Iterable[int] | None = None,
    ) -> None:
        if sampler is not None and shuffle:
            raise ValueError("DataLoader with sampler option is mutually exclusive with shuffle")
        if sampler is not None and not hasattr(sampler, "__iter__"):
            raise TypeError(f"DataLoader: sampler must be an iterable of indices, got {type(sampler).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if seed is not None and generator is not None:
            raise ValueError("DataLoader: give seed or generator, not both")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"DataLoader: seed must be a non-negative integer, got {seed!r}")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.generator = generator
        self.collate_fn = collate_fn
        self.epoch = 0  # the epoch the next iteration is (advanced by each __iter__)
        self._init_workers(num_workers, pin_memory, timeout, worker_init_fn, prefetch_factor, persistent_workers)

    def _init_workers(
        self,
        num_workers: int,
        pin_memory: bool,
        timeout: float,
        worker_init_fn: Callable[[int], Any] | None,
        prefetch_factor: int | None,
        persistent_workers: bool,
    ) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(
                "num_workers option should be non-negative; use num_workers=0 to disable "
                f"multiprocessing (got {num_workers!r})"
            )
        if not isinstance(timeout, numbers.Real) or timeout < 0:
            raise ValueError(f"timeout option should be non-negative, got {timeout!r}")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(
                "prefetch_factor option could only be specified in multiprocessing. "
                "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None."
            )
        if prefetch_factor is not None and (not isinstance(prefetch_factor, numbers.Integral) or prefetch_factor < 1):
            raise ValueError(f"prefetch_factor must be a positive integer, got {prefetch_factor!r}")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if pin_memory:
            warnings.warn(
                "'pin_memory' argument is set as true but no accelerator is found, then device "
                "pinned memory won't be used.",
                UserWarning,
                stacklevel=3,
            )
        if num_workers > 0 and not _workers.fork_available():
            warnings.warn(
                f"DataLoader: num_workers={num_workers} needs the 'fork' start method, which this "
                "platform lacks; loading in the main process instead (same batches, no parallelism)",
                RuntimeWarning,
                stacklevel=3,
            )
            num_workers = 0
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.prefetch_factor = (2 if prefetch_factor is None else int(prefetch_factor)) if num_workers else None
        self.persistent_workers = bool(persistent_workers)
        self._pool = None

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its shuffled order, with a seed)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The sample indices of one epoch, in visiting order (does not advance the epoch)."""
        if self.sampler is not None:
            return np.fromiter(iter(self.sampler), dtype=np.int64)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        if self.seed is not None:
            e = self.epoch if epoch is None else int(epoch)
            return np.random.default_rng([self.seed, e]).permutation(n)
        return numpy_rng(self.generator, _config.rng).permutation(n)

    def batch_indices(self, epoch: int | None = None) -> list[np.ndarray]:
        """The index array of every batch of one epoch."""
        order = self.order(epoch)
        n, bs = order.size, self.batch_size
        stop = n - n % bs if self.drop_last else n
        return [order[i : i + bs] for i in range(0, stop, bs)]

    def __iter__(self) -> Iterator[Any]:
        batches = self.batch_indices()
        self.epoch += 1
        if self.num_workers == 0:
            for idx in batches:
                yield self.fetch(idx)
            return
        yield from self._iter_workers(batches)

    def _iter_workers(self, batches: list[np.ndarray]) -> Iterator[Any]:
        if self._pool is None:
            if self.seed is not None:
                base_seed = int(np.random.default_rng([self.seed, self.epoch - 1, 1]).integers(1 << 63))
            else:
                base_seed = int(numpy_rng(self.generator, _config.rng).integers(1 << 63))
            self._pool = _workers.WorkerPool(
                self._fetch_raw, self.dataset, self.num_workers, base_seed, self.worker_init_fn
            )
        try:
            for raw in self._pool.run(batches, self.prefetch_factor, self.timeout):
                yield raw if self.collate_fn is not None else _to_tensors(raw)
        finally:
            if not self.persistent_workers:
                self._shutdown_workers()

    def _shutdown_workers(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __del__(self) -> None:
        try:
            self._shutdown_workers()
        except Exception:  # interpreter shutdown: the queues may already be gone
            pass

    def fetch(self, indices: Sequence[int] | np.ndarray) -> Any:
        """The batch made of the samples at ``indices``, as Tensors."""
        batch = self._fetch_raw(indices)
        return batch if self.collate_fn is not None else _to_tensors(batch)

    def _fetch_raw(self, indices: Sequence[int] | np.ndarray) -> Any:
        """The collated batch at ``indices`` before it becomes Tensors (what a worker sends)."""
        ds = self.dataset
        if self.collate_fn is not None:
            return self.collate_fn([ds[int(i)] for i in indices])
        if hasattr(ds, "__getitems__"):
            return ds.__getitems__(indices)
        return collate([ds[int(i)] for i in indices])


def _to_tensors(batch: Any) -> Any:
    if isinstance(batch, tuple):
        return tuple(_to_tensors(b) for b in batch)
    if isinstance(batch, list):
        return [_to_tensors(b) for b in batch]
    if isinstance(batch, dict):
        return {k: _to_tensors(v) for k, v in batch.items()}
    if isinstance(batch, Tensor):
        return batch
    return Tensor._from_op(np.ascontiguousarray(batch), None)
