"""The arrays ops allocate (intermediate outputs, gradients), reused by shape and dtype.

Why: a training step makes the same large arrays every step. Fresh arrays come from the
allocator as fresh pages, and the first touch of each page costs a fault: a ReLU over
4 MB ran at a fifth of memory bandwidth that way. ``empty(shape, dtype)`` hands out an
array that an earlier step made and nobody refers to any more, or makes a new one that
the pool then keeps.

Arrays are kept by element count and dtype; a free one is given the shape asked for in
place (nobody else sees it), so one array serves every shape of its size.

An array is free when the pool holds the only reference to it: CPython's reference
count says so exactly (a Tensor, a view, a saved backward state, a buffer export such
as ``torch.from_numpy`` or a memoryview each hold a reference to the array or to its
base). So an array is never handed out twice while in use, and nothing is identified
by its memory address.

Only arrays of at least ``MIN_BYTES`` are pooled: numpy's own small-block cache serves
smaller ones as well. The pool is per thread (a check and a hand-out are then never
interleaved with another thread's), and whenever a new array would take it past
``MAX_BYTES`` it first drops free arrays, of the shapes it saw least recently first (it
goes past only with arrays in use). In steady state a step takes every large array from
the pool. Its memory is, per array size, the most arrays of that size a step has in use
at once; when sizes reach their most at different moments of a step, that is more than
the plain path's peak (a ResNet-8 batch-64 step: 81 MiB of arrays against 69).
"""

import math
import sys
import threading
from collections import OrderedDict

import numpy as np

MIN_BYTES = 64 * 1024
MAX_BYTES = 1 << 30  # settable: fastgrad.ops.buffer_pool.MAX_BYTES = ...

_getrefcount = sys.getrefcount
_prod = math.prod
_DTYPES = {}  # what callers pass as a dtype (a dtype, a scalar type) -> (dtype, itemsize)


def _free_count():
    """The reference count of a pooled array that nobody else holds, as ``empty`` sees it
    (the pool's list, the loop variable and getrefcount's own argument)."""
    arrays = [np.empty(1)]
    for a in arrays:
        return _getrefcount(a)


FREE = _free_count()


class _Pool(threading.local):
    def __init__(self):
        # (element count, dtype) -> [arrays], least recently used first: one key serves
        # every shape of that size (BatchNorm's (N, C, H*W) view and (N, C, H, W) alike)
        self.by_key = OrderedDict()
        self.bytes = 0
        self.made = 0  # large arrays made rather than reused
        self.enabled = True


_pool = _Pool()


def empty(shape, dtype):
    """An uninitialized C-contiguous array of ``shape`` and ``dtype`` (as numpy.empty)
    that no one else refers to: from this thread's pool when it has one free."""
    known = _DTYPES.get(dtype)
    if known is None:
        known = _DTYPES[dtype] = (np.dtype(dtype), np.dtype(dtype).itemsize)
    dtype, itemsize = known
    if type(shape) is not tuple:
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    elements = _prod(shape)
    count = elements * itemsize
    pool = _pool
    if count < MIN_BYTES or not pool.enabled:
        return np.empty(shape, dtype)
    key = (elements, dtype)
    arrays = pool.by_key.get(key)
    if arrays is None:
        arrays = pool.by_key[key] = []
    else:
        pool.by_key.move_to_end(key)
        for a in arrays:
            if _getrefcount(a) == FREE:
                if a.shape != shape:
                    a.shape = shape  # in place: nobody else sees this array
                return a
    if pool.bytes + count > MAX_BYTES:
        _trim(pool, count)
    a = np.empty(shape, dtype)
    arrays.append(a)
    pool.bytes += count
    pool.made += 1
    return a


def _trim(pool, wanted):
    """Drop free arrays, least recently used shapes first, until ``wanted`` more bytes fit."""
    for key in list(pool.by_key):
        arrays = pool.by_key[key]
        kept = []
        for a in arrays:
            if pool.bytes + wanted > MAX_BYTES and _getrefcount(a) == FREE:
                pool.bytes -= a.nbytes
            else:
                kept.append(a)
        if kept:
            pool.by_key[key] = kept
        else:
            del pool.by_key[key]
        if pool.bytes + wanted <= MAX_BYTES:
            return


def empty_like(a):
    return empty(a.shape, a.dtype)


def copy(a):
    """A C-contiguous copy of ``a`` (as ``np.array(a, order="C", copy=True)``) in an array
    from the pool: what the backward engines sum a node's gradients into."""
    out = empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def add(a, b):
    """``a + b`` in an array from the pool, ``b`` first cast to ``a``'s dtype (the same bits
    as a copy of ``a`` with ``b`` added into it, in one pass instead of two): how the
    backward engines sum the second gradient a node receives."""
    if a.shape != b.shape:  # numpy would broadcast: a gradient of another shape is a fault
        raise ValueError(f"accumulate: src has shape {b.shape}, but dst has {a.shape}; they must match")
    out = empty(a.shape, a.dtype)
    np.add(a, b if b.dtype == a.dtype else b.astype(a.dtype), out=out)
    return out


def clear():
    """Forget every pooled array of this thread (arrays in use stay valid: they are
    ordinary numpy arrays)."""
    _pool.by_key.clear()
    _pool.bytes = 0


def pooled_bytes():
    """Bytes this thread's pool holds, in use or free."""
    return _pool.bytes


def arrays_made():
    """How many pooled-size arrays this thread's pool has made (not reused) so far."""
    return _pool.made


class disabled:
    """``with buffer_pool.disabled():`` every ``empty`` in the block is a plain numpy.empty
    (the plain path, for comparisons)."""

    def __enter__(self):
        self.prev = _pool.enabled
        _pool.enabled = False
        return self

    def __exit__(self, *exc):
        _pool.enabled = self.prev
        return False
