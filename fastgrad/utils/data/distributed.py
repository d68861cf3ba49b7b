"""``torch.utils.data.distributed``'s place: ``DistributedSampler`` lives in
``fastgrad.data.distributed``."""

from ...data.distributed import DistributedSampler

__all__ = ["DistributedSampler"]
