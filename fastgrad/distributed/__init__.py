"""fastgrad.distributed: data-parallel training over MPI, as torch.distributed with the MPI
backend. Start the processes with ``mpiexec -n N``; ``init_process_group()`` joins them.
Needs the ``mpi`` extra (mpi4py and an MPI): ``pip install 'fastgrad[mpi]'``."""

from .collectives import ReduceOp, Work, all_gather, all_reduce, barrier, broadcast
from .process_group import (
    DistributedError,
    destroy_process_group,
    get_backend,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_initialized,
    launched_by_mpiexec,
)

__all__ = [
    "DistributedError",
    "ReduceOp",
    "Work",
    "all_gather",
    "all_reduce",
    "barrier",
    "broadcast",
    "destroy_process_group",
    "get_backend",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_available",
    "is_initialized",
    "launched_by_mpiexec",
]
