"""Collectives on Tensors, as torch.distributed's: all_reduce, broadcast, all_gather,
barrier. Each works in place on the tensor's numpy buffer through mpi4py's buffer
interface (no array is pickled) and waits through the process group's watchdog (see
process_group). ``async_op=True`` returns a Work whose ``wait()`` finishes the operation.
"""

import enum

import numpy as np

from ..tensor import Tensor
from .process_group import current_world


class ReduceOp(enum.Enum):
    SUM = "sum"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"


_MPI_OPS = {
    ReduceOp.SUM: "SUM",
    ReduceOp.PRODUCT: "PROD",
    ReduceOp.MIN: "MIN",
    ReduceOp.MAX: "MAX",
    ReduceOp.BAND: "BAND",
    ReduceOp.BOR: "BOR",
    ReduceOp.BXOR: "BXOR",
}
_SUPPORTED = {np.dtype(t) for t in (np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_)}


class Work:
    """A collective in flight. ``wait()`` returns once it is done (then runs ``finish``, which
    copies results out where the operation needs it)."""

    def __init__(self, world, request, what, finish=None, nbytes=0):
        self.world, self.request, self.what, self.finish, self.nbytes = world, request, what, finish, nbytes
        self.done = False

    def is_completed(self):
        if not self.done and self.request.Test():
            self._complete()
        return self.done

    def wait(self, timeout=None):
        if not self.done:
            self.world.wait(self.request, self.what, self.nbytes)
            self._complete()
        return True

    def _complete(self):
        self.done = True
        if self.finish is not None:
            self.finish()


def _buffer(tensor, what):
    """The tensor's array, checked to be something MPI can read and write in place."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what}: expected a Tensor, got {type(tensor).__name__}")
    a = tensor.data
    if a.dtype not in _SUPPORTED:
        raise TypeError(f"{what}: dtype {a.dtype} is not supported (float32, float64, int32, int64, uint8, bool)")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what}: the tensor must be contiguous (shape {tuple(a.shape)}, strides {a.strides})")
    if not a.flags.writeable:
        raise ValueError(f"{what}: the tensor's array is read-only")
    return a


def _run(work, async_op):
    if async_op:
        return work
    work.wait()
    return None


def _check_op(op, what):
    if not isinstance(op, ReduceOp):
        raise TypeError(f"{what}: op must be a ReduceOp, got {op!r}")


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Combine ``tensor`` across ranks with ``op``; every rank ends with the result, in place."""
    _check_op(op, "all_reduce")
    a = _buffer(tensor, "all_reduce")
    world = current_world()
    request = world.comm.Iallreduce(world.MPI.IN_PLACE, a, op=getattr(world.MPI, _MPI_OPS[op]))
    return _run(Work(world, request, "all_reduce", nbytes=a.nbytes), async_op)


def broadcast(tensor, src, group=None, async_op=False):
    """Copy rank ``src``'s ``tensor`` into every rank's ``tensor``, in place."""
    a = _buffer(tensor, "broadcast")
    world = current_world()
    if not isinstance(src, (int, np.integer)) or not 0 <= src < world.size:
        raise ValueError(f"broadcast: src must be a rank in [0, {world.size}), got {src!r}")
    request = world.comm.Ibcast(a, root=int(src))
    return _run(Work(world, request, "broadcast", nbytes=a.nbytes), async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill ``tensor_list[r]`` with rank r's ``tensor`` on every rank."""
    a = _buffer(tensor, "all_gather")
    world = current_world()
    if not isinstance(tensor_list, list) or len(tensor_list) != world.size:
        got = len(tensor_list) if isinstance(tensor_list, list) else type(tensor_list).__name__
        raise ValueError(f"all_gather: tensor_list must be a list of {world.size} tensors (one per rank), got {got}")
    outs = [_buffer(t, "all_gather") for t in tensor_list]
    for r, out in enumerate(outs):
        if out.shape != a.shape or out.dtype != a.dtype:
            raise ValueError(
                f"all_gather: tensor_list[{r}] is {tuple(out.shape)} {out.dtype}, "
                f"the input is {tuple(a.shape)} {a.dtype}"
            )
    gathered = np.empty((world.size,) + a.shape, a.dtype)
    request = world.comm.Iallgather(a, gathered)

    def finish():
        for r, out in enumerate(outs):
            out[...] = gathered[r]

    return _run(Work(world, request, "all_gather", finish, nbytes=gathered.nbytes), async_op)


def barrier(group=None, async_op=False):
    """Return once every rank has called barrier."""
    world = current_world()
    return _run(Work(world, world.comm.Ibarrier(), "barrier"), async_op)
