"""Helpers shared by the op families: operand coercion and broadcast-gradient reduction."""

import functools
import os

import numpy as np

_FLOAT_KINDS = "f"


_Tensor = None


def tensor_cls():
    """The Tensor class (imported late: fastgrad.tensor imports the ops)."""
    global _Tensor
    if _Tensor is None:
        from ..tensor import Tensor

        _Tensor = Tensor
    return _Tensor


def as_operands(op, a, b):
    """Return ``a`` and ``b`` as Tensors of one dtype, for a binary op named ``op``.

    Python numbers take the other operand's dtype; an integer or bool tensor is promoted
    to the float operand's dtype (as in PyTorch); float32 and float64 do not mix.
    """
    Tensor = _Tensor or tensor_cls()
    a_is, b_is = isinstance(a, Tensor), isinstance(b, Tensor)
    if a_is and b_is:
        da, db = a._data.dtype, b._data.dtype
        if da == db:
            return a, b
        if da.kind == "f" and db.kind == "f":
            raise TypeError(
                f"{op}: dtype mismatch: {da} and {db} (shapes {tuple(a.shape)} and "
                f"{tuple(b.shape)}); convert one with .float() or .double()"
            )
        if da.kind == "f":
            return a, Tensor._from_op(b.data.astype(da), None)
        if db.kind == "f":
            return Tensor._from_op(a.data.astype(db), None), b
        return a, b
    if a_is:
        return a, _scalar_like(op, b, a)
    if b_is:
        return _scalar_like(op, a, b), b
    raise TypeError(f"{op}: expected at least one Tensor, got {type(a).__name__} and {type(b).__name__}")


def _scalar_like(op, value, like):
    Tensor = tensor_cls()
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and like.data.dtype.kind == "f" and value.dtype != like.data.dtype:
            raise TypeError(f"{op}: dtype mismatch: tensor {like.data.dtype} and array {value.dtype}")
        return Tensor._from_op(
            value.astype(like.data.dtype, copy=False) if like.data.dtype.kind == "f" else value, None
        )
    if isinstance(value, (float, int, np.number)):
        dtype = like._data.dtype
        if dtype.kind != "f" and isinstance(value, float):
            dtype = np.dtype(np.float32)
        return Tensor._from_op(np.asarray(value, dtype=dtype), None)
    raise TypeError(f"{op}: unsupported operand type {type(value).__name__}")


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes that broadcasting added or stretched, to get ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def broadcast_shape(op, a, b):
    sa, sb = a._data.shape, b._data.shape
    if sa == sb or not sa or not sb:  # equal shapes and scalars always broadcast
        return
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together") from None


def normalize_dims(op, dim, ndim):
    """``dim`` (None, int or sequence) as a sorted tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise TypeError(f"{op}: dim must be an integer, got {d!r}")
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"{op}: dim {d} is out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {dim} repeats an axis")
    return tuple(sorted(out))


_KERNEL_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_float(op, t):
    """The kernels compute in float32 or float64 only: refuse other dtypes (float16 too)."""
    if t.data.dtype not in _KERNEL_FLOATS:
        raise TypeError(f"{op}: expected a float32 or float64 tensor, got dtype {t.data.dtype}")


# --------------------------------------------------------------------------- remembered checks


def _types(v):
    """The types of a tuple's parts, nested tuples' parts too."""
    types = tuple(map(type, v))
    if tuple in types:
        types = tuple([_types(x) if type(x) is tuple else type(x) for x in v])
    return types


def _typed(args):
    """A key for ``args`` that also tells the type of every part: 1, 1.0 and True are
    equal as dict keys, but not as arguments of a check (a float stride is refused)."""
    return args, tuple([_types(x) if type(x) is tuple else type(x) for x in args])


def remembered(check, max_entries=1024):
    """``check`` (a function that validates its arguments and returns what it derived)
    remembering what it returned for each set of hashable arguments, so that a training
    loop, which asks the same few questions every step, pays for each once. Errors are
    not remembered: a bad call raises anew every time, with the same message."""
    results = {}

    def remembering(*args):
        try:
            key = _typed(args)
            found = results.get(key, results)
        except TypeError:  # an unhashable argument (a list): checked every time
            return check(*args)
        if found is results:  # not seen before
            found = results[key] = check(*args)
            if len(results) > max_entries:
                results.clear()
        return found

    remembering.__wrapped__ = check
    remembering.__doc__ = check.__doc__
    return remembering


# --------------------------------------------------------------------------- size guard

MAX_INDEXED_ELEMENTS = 2**31  # per array, for the kernels that index planes with C ints


@functools.cache
def memory_bytes():
    """This machine's physical memory in bytes (2**40 when the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 2**40


def check_size(op, name, shape, dtype, max_elements=None):
    """Refuse an array of ``shape`` and ``dtype`` that could not fit in memory (or that
    has more than ``max_elements``), before anything is allocated. The input may be a
    broadcast view that occupies almost nothing while the op's contiguous copies and
    outputs would need all of its elements; the count is taken with Python ints, which
    do not overflow."""
    count = 1
    for d in shape:
        count *= int(d)
    if max_elements is not None and count > max_elements:
        raise ValueError(
            f"{op}: {name} of shape {tuple(shape)} would have {count:,} elements, "
            f"more than the {max_elements:,} allowed per array"
        )
    itemsize = np.dtype(dtype).itemsize
    needed = count * itemsize
    limit = memory_bytes()
    if needed > limit:
        raise ValueError(
            f"{op}: {name} of shape {tuple(shape)} has {count:,} elements, "
            f"{needed / 2**30:,.1f} GiB of {np.dtype(dtype).name}, more than this "
            f"machine's memory ({limit / 2**30:,.1f} GiB)"
        )


@functools.lru_cache(maxsize=1024)
def shared_step(step_cls, home, *args):
    """``step_cls(*args)``, made once per set of arguments: Steps keep no state between
    calls, so every eager call of a training loop shares one. ``home`` only keys the
    cache: what else the Step's construction read (the kernels bound, for a ConvStep's
    workspace sizes), or None."""
    return step_cls(*args)
