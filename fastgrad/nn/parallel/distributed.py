"""DistributedDataParallel: the same model in every process, each process on its share of
the batch, gradients averaged across processes during backward (as torch's DDP).

Design. At construction every rank checks that all ranks hold the same parameters and
buffers (names, shapes, dtypes) and copies rank 0's values into its own, so all start
equal. The parameters are grouped into buckets of at most ``bucket_cap_mb`` megabytes (25,
PyTorch's default), in reverse registration order, which is roughly the order backward
finishes them. Each parameter carries a post-accumulate-grad hook: when backward has
finished a parameter's gradient, the hook copies it into its bucket's flat buffer; when a
bucket is full, a non-blocking allreduce (MPI_Iallreduce) of it starts while backward goes
on with earlier layers. Buckets are started in index order on every rank, so all ranks
issue the same collectives in the same order. When the last bucket has started, the hook
waits for all of them and writes the averaged sums back into every ``.grad``; so when
``loss.backward()`` returns, every rank holds the same averaged gradients and the same
optimizer step keeps the weights identical.

Only a forward through this wrapper (in grad mode, outside ``no_sync()``) arms the hooks
for the next backward. Every parameter that requires grad must get a gradient in each
synchronised backward (PyTorch's default, ``find_unused_parameters=False``); a forward
that finds the previous reduction unfinished raises and names the parameters that got no
gradient. BatchNorm statistics stay per process, as in PyTorch without SyncBatchNorm;
with ``broadcast_buffers`` (default) rank 0's buffers are copied to all ranks before each
training forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import distributed as dist
from ...autograd import is_grad_enabled
from ..module import Module, Parameter

if TYPE_CHECKING:
    from ...distributed.process_group import _World
    from ...tensor import Tensor

_MB = 1024 * 1024


class _Bucket:
    """A flat buffer for the gradients of some parameters of one dtype, reduced in one call."""

    def __init__(self, params: list[tuple[str, Parameter, int, int]], dtype: np.dtype) -> None:
        self.params = params  # [(name, Parameter, offset, numel)]
        self.buffer = np.empty(sum(n for *_, n in params), dtype)
        self.pending = len(params)
        self.work = None


class DistributedDataParallel(Module):
    def __init__(
        self,
        module: Module,
        device_ids: list[int] | None = None,
        output_device: int | None = None,
        dim: int = 0,
        broadcast_buffers: bool = True,
        process_group: Any = None,
        bucket_cap_mb: float | None = None,
        find_unused_parameters: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(
                f"DistributedDataParallel: module must be a fastgrad.nn.Module, got {type(module).__name__}"
            )
        if device_ids not in (None, []) or output_device is not None:
            raise ValueError(
                "DistributedDataParallel: fastgrad runs on the CPU; device_ids and output_device must be None"
            )
        if dim != 0:
            raise ValueError(f"DistributedDataParallel: only dim=0 (split along the batch) is supported, got {dim}")
        if find_unused_parameters:
            raise NotImplementedError(
                "DistributedDataParallel: find_unused_parameters=True is not supported; "
                "every parameter that requires grad must receive a gradient"
            )
        if bucket_cap_mb is None:
            bucket_cap_mb = 25
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) or not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
        world = dist.process_group.current_world()
        self.module = module
        object.__setattr__(self, "_world", world)
        object.__setattr__(self, "broadcast_buffers", bool(broadcast_buffers))
        object.__setattr__(self, "bucket_cap_mb", bucket_cap_mb)
        object.__setattr__(self, "require_backward_grad_sync", True)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        _check_same_model_everywhere(world, module)
        _broadcast_state(world, module)
        buckets = _make_buckets(named, int(bucket_cap_mb * _MB))
        object.__setattr__(self, "_buckets", buckets)
        object.__setattr__(self, "_armed", False)  # a synchronised forward ran: reduce in backward
        object.__setattr__(self, "_next_to_start", 0)  # buckets are started in index order
        handles = []
        for index, bucket in enumerate(buckets):
            for slot, (_, p, _, _) in enumerate(bucket.params):
                handles.append(p.register_post_accumulate_grad_hook(self._make_hook(index, slot)))
        object.__setattr__(self, "_hook_handles", handles)
        object.__setattr__(self, "_ready", [[False] * len(b.params) for b in buckets])

    # ----------------------------------------------------------------- forward
    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if self._unfinished():
            missing = [
                name for b, ready in zip(self._buckets, self._ready) for (name, *_), r in zip(b.params, ready) if not r
            ][::-1]  # registration order
            raise RuntimeError(
                "DistributedDataParallel: expected to have finished reduction in the prior iteration "
                "before starting a new one; these parameters got no gradient in that backward: "
                + ", ".join(missing)
                + " (every parameter that requires grad must take part in "
                "the loss; freeze the others with requires_grad_(False) before wrapping)"
            )
        if self.module.training and self.broadcast_buffers and self._world.size > 1:
            _broadcast_buffers(self.module)
        arm = is_grad_enabled() and self.require_backward_grad_sync and bool(self._buckets)
        object.__setattr__(self, "_armed", arm)
        if arm:
            self._reset()
        return self.module(*inputs, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Inside the block, backward accumulates gradients locally without any
        communication; the first synchronised backward after it averages the sums."""
        previous = self.require_backward_grad_sync
        object.__setattr__(self, "require_backward_grad_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "require_backward_grad_sync", previous)

    # ----------------------------------------------------------------- reduction
    def _reset(self) -> None:
        for bucket, ready in zip(self._buckets, self._ready):
            bucket.pending = len(bucket.params)
            bucket.work = None
            ready[:] = [False] * len(ready)
        object.__setattr__(self, "_next_to_start", 0)

    def _unfinished(self) -> bool:
        return self._armed and any(b.pending != len(b.params) for b in self._buckets)

    def _make_hook(self, index: int, slot: int) -> Callable[[Parameter], None]:
        def hook(param: Parameter) -> None:
            if self._armed:
                self._mark_ready(index, slot, param)

        return hook

    def _mark_ready(self, index: int, slot: int, param: Parameter) -> None:
        bucket, ready = self._buckets[index], self._ready[index]
        name, _, offset, numel = bucket.params[slot]
        if ready[slot]:
            raise RuntimeError(
                f"DistributedDataParallel: parameter {name} was marked ready twice in one "
                "iteration (backward through the same forward twice?)"
            )
        ready[slot] = True
        bucket.buffer[offset : offset + numel] = param.grad.data.reshape(-1)
        bucket.pending -= 1
        if bucket.pending == 0:
            self._start_ready_buckets()

    def _start_ready_buckets(self) -> None:
        buckets, i = self._buckets, self._next_to_start
        while i < len(buckets) and buckets[i].pending == 0:
            buckets[i].work = dist.all_reduce(_as_tensor(buckets[i].buffer), async_op=True)
            i += 1
        object.__setattr__(self, "_next_to_start", i)
        if i == len(buckets):
            self._finish()

    def _finish(self) -> None:
        size = self._world.size
        for bucket in self._buckets:
            bucket.work.wait()
            if size > 1:
                np.divide(bucket.buffer, size, out=bucket.buffer)
            for _, p, offset, numel in bucket.params:
                g = p.grad.data
                np.copyto(g, bucket.buffer[offset : offset + numel].reshape(g.shape))
        object.__setattr__(self, "_armed", False)

    # ----------------------------------------------------------------- module plumbing
    def extra_repr(self) -> str:
        return f"world_size={self._world.size}, buckets={len(self._buckets)}, bucket_cap_mb={self.bucket_cap_mb}"


def _as_tensor(array: np.ndarray) -> Tensor:
    from ...tensor import Tensor

    return Tensor._from_op(array, None)


def _signature(module: Module) -> tuple[list[tuple[str, tuple[int, ...], str]], list[tuple[str, tuple[int, ...], str]]]:
    return (
        [(n, tuple(p.shape), str(p.dtype)) for n, p in module.named_parameters()],
        [(n, tuple(b.shape), str(b.dtype)) for n, b in module.named_buffers()],
    )


def _check_same_model_everywhere(world: _World, module: Module) -> None:
    """Raise on every rank, with the same message, if any rank's parameters or buffers
    differ from rank 0's in number, name, shape or dtype."""
    signatures = world.comm.allgather(_signature(module))  # names and shapes only, not arrays
    ref_params, ref_buffers = signatures[0]
    for rank, (params, buffers) in enumerate(signatures[1:], start=1):
        for kind, ref, mine in (("parameter", ref_params, params), ("buffer", ref_buffers, buffers)):
            for i in range(max(len(ref), len(mine))):
                a = ref[i] if i < len(ref) else None
                b = mine[i] if i < len(mine) else None
                if a != b:

                    def show(entry: tuple[str, tuple[int, ...], str] | None) -> str:
                        return "nothing" if entry is None else f"{entry[0]!r} {entry[1]} {entry[2]}"

                    raise ValueError(
                        f"DistributedDataParallel: the model differs across ranks: {kind} {i} is {show(a)} on "
                        f"rank 0 but {show(b)} on rank {rank} (rank 0 has {len(ref)} {kind}s, rank {rank} has "
                        f"{len(mine)}); every rank must build the same model"
                    )


def _broadcast_state(world: _World, module: Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's (in place)."""
    if world.size == 1:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        if not t.data.flags.c_contiguous or not t.data.flags.writeable:
            t.data = np.ascontiguousarray(t.data).copy()
        dist.broadcast(_as_tensor(t.data), 0)


def _broadcast_buffers(module: Module) -> None:
    """Copy rank 0's buffers (BatchNorm's running statistics, ...) to every rank: one
    broadcast per dtype, of all of them packed together."""
    by_dtype = {}
    for b in module.buffers():
        by_dtype.setdefault(b.data.dtype, []).append(b)
    for buffers in by_dtype.values():
        packed = np.concatenate([b.data.reshape(-1) for b in buffers])
        dist.broadcast(_as_tensor(packed), 0)
        offset = 0
        for b in buffers:
            n = b.data.size
            np.copyto(b.data, packed[offset : offset + n].reshape(b.data.shape))
            offset += n


def _make_buckets(named: list[tuple[str, Parameter]], cap_bytes: int) -> list[_Bucket]:
    """Buckets of at most ``cap_bytes`` (a parameter larger than that gets one of its own),
    filled in reverse registration order, one dtype per bucket."""
    buckets, current, size, dtype = [], [], 0, None
    for name, p in reversed(named):
        nbytes = p.data.nbytes
        if current and (p.data.dtype != dtype or size + nbytes > cap_bytes):
            buckets.append(_close(current, dtype))
            current, size = [], 0
        dtype = p.data.dtype
        current.append((name, p))
        size += nbytes
    if current:
        buckets.append(_close(current, dtype))
    return buckets


def _close(named: list[tuple[str, Parameter]], dtype: np.dtype) -> _Bucket:
    entries, offset = [], 0
    for name, p in named:
        entries.append((name, p, offset, int(p.data.size)))
        offset += int(p.data.size)
    return _Bucket(entries, dtype)
