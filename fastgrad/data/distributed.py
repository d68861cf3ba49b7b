"""DistributedSampler: each process's share of a dataset's indices, as
``torch.utils.data.distributed.DistributedSampler``.

Layout (PyTorch's): the epoch's order (shuffled or 0..n-1) is padded by repeating its
first indices up to a multiple of ``num_replicas`` (or cut down to one, with
``drop_last``), and rank r takes positions r, r + num_replicas, r + 2 num_replicas, ...
Shuffled order is fastgrad's DataLoader order for the same seed and epoch,
``numpy.random.default_rng([seed, epoch]).permutation(n)``; so batch k of ``b`` samples
on every rank together are exactly positions [k b W, (k+1) b W) of that order: the batch
one process would take with batch size ``b W``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sized

import numpy as np


class DistributedSampler:
    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if num_replicas is None or rank is None:
            from .. import distributed as dist

            if not dist.is_initialized():
                raise RuntimeError(
                    "DistributedSampler: pass num_replicas and rank, or call "
                    "fastgrad.distributed.init_process_group() first"
                )
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        for name, value, low in (("num_replicas", num_replicas, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"DistributedSampler: {name} must be an integer >= {low}, got {value!r}")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank!r}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last and n % self.num_replicas:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order on the next iteration (call it on every rank)."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as an int64 array."""
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        if self.total_size > n:  # pad by repeating the order from its start (several times if n is tiny)
            order = np.resize(order, self.total_size)
        else:
            order = order[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas].astype(np.int64, copy=False)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples
