"""fastgrad.nn.parallel: DistributedDataParallel (data parallelism over fastgrad.distributed)."""

from .distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
