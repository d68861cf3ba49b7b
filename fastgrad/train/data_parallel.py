"""What the Trainer does differently when it trains data-parallel over MPI: wrapping the
model, sharding each global batch, and the few small collectives that keep every rank's
view of the run (metrics, stop decisions, held-out scores) the same."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.distributed import DistributedSampler
from ..data.loader import DataLoader

if TYPE_CHECKING:
    from ..distributed.process_group import _World
    from ..nn import Module


def setup(model: Module, distributed: bool | None) -> tuple[Module, Module, _World | None]:
    """``(model, network to call in training, world or None)``. ``distributed=None`` means:
    data parallel when started by mpiexec. The model passed in may be a
    DistributedDataParallel already; checkpoints and evaluation use the module inside."""
    from .. import distributed as dist
    from ..nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model.module, model, dist.process_group.current_world()
    if distributed is None:
        distributed = dist.is_initialized() or (dist.launched_by_mpiexec() and dist.is_available())
    if not distributed:
        return model, model, None
    if not dist.is_initialized():
        dist.init_process_group("mpi")
    ddp = DistributedDataParallel(model)
    return model, ddp, dist.process_group.current_world()


class ShardedLoader(DataLoader):
    """This rank's batches: batch k on all ranks together is batch k of ``batch_size``
    (global) samples of the single-process order (see DistributedSampler)."""

    def __init__(self, dataset: Any, batch_size: int, shuffle: bool, seed: int | None, world: _World) -> None:
        super().__init__(dataset, batch_size=batch_size // world.size, shuffle=shuffle, seed=seed)
        self.sampler = DistributedSampler(dataset, world.size, world.rank, shuffle=shuffle, seed=seed)

    def __len__(self) -> int:
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size

    def batch_indices(self, epoch: int | None = None) -> list[np.ndarray]:
        self.sampler.set_epoch(self.epoch if epoch is None else epoch)
        idx, b = self.sampler.indices(), self.batch_size
        return [idx[i : i + b] for i in range(0, idx.size, b)]


def _allreduce(world: _World, values: Sequence[float]) -> np.ndarray:
    from .. import distributed as dist
    from ..tensor import Tensor

    t = Tensor._from_op(np.array(values, dtype=np.float64), None)
    dist.all_reduce(t)
    return t.data


def sum_over_ranks(world: _World, mean_loss: float, correct: int | None, count: int) -> tuple[float, int | None, int]:
    """One step's (mean loss, correct, count) over the whole global batch."""
    total = _allreduce(world, [mean_loss * count, -1.0 if correct is None else correct, count])
    n = int(total[2])
    return float(total[0]) / n, (None if total[1] < 0 else int(total[1])), n


def any_rank(world: _World, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on some rank (a stop decided anywhere stops all)."""
    return bool(_allreduce(world, [1.0 if flag else 0.0])[0] > 0)


def evaluated_on_rank_0(
    world: _World, evaluate: Callable[[], tuple[float, float | None]]
) -> tuple[float, float | None]:
    """Rank 0 runs ``evaluate()`` -> (loss, accuracy or None); every rank gets the result."""
    from .. import distributed as dist
    from ..tensor import Tensor

    result = np.full(2, np.nan)
    if world.rank == 0:
        loss, accuracy = evaluate()
        result[:] = (loss, np.nan if accuracy is None else accuracy)
    dist.broadcast(Tensor._from_op(result, None), 0)
    return float(result[0]), (None if np.isnan(result[1]) else float(result[1]))
