"""Tensor factories: tensor, from_numpy, zeros/ones/full, randn/rand/randint, arange and
the *_like variants. Random ones draw from the generator seeded by manual_seed."""

import numpy as np

from . import _config
from .tensor import DEFAULT_FLOAT, Tensor


def _size(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"size must be non-negative integers, got {size!r}")
    return tuple(int(s) for s in size)


def _float_dtype(dtype):
    dtype = np.dtype(dtype) if dtype is not None else DEFAULT_FLOAT
    return dtype


def tensor(data, dtype=None, requires_grad=False):
    """A new tensor holding a copy of ``data`` (floats become float32 unless ``dtype``)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def as_tensor(data, dtype=None):
    if isinstance(data, Tensor) and (dtype is None or np.dtype(dtype) == data.dtype):
        return data
    return Tensor(data, dtype=dtype)


def from_numpy(array):
    """A tensor sharing memory with ``array`` (its dtype is kept)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy array, got {type(array).__name__}")
    return Tensor._from_op(array, None)


def zeros(*size, dtype=None, requires_grad=False):
    return Tensor(np.zeros(_size(size), dtype=_float_dtype(dtype)), requires_grad=requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return Tensor(np.ones(_size(size), dtype=_float_dtype(dtype)), requires_grad=requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    if dtype is None:
        dtype = DEFAULT_FLOAT if isinstance(fill_value, float) else np.array(fill_value).dtype
    return Tensor(np.full(_size((size,)), fill_value, dtype=dtype), requires_grad=requires_grad)


def empty(*size, dtype=None, requires_grad=False):
    return zeros(*size, dtype=dtype, requires_grad=requires_grad)


def randn(*size, dtype=None, requires_grad=False):
    dtype = _float_dtype(dtype)
    return Tensor(_config.rng().standard_normal(_size(size)).astype(dtype), requires_grad=requires_grad)


def rand(*size, dtype=None, requires_grad=False):
    dtype = _float_dtype(dtype)
    return Tensor(_config.rng().random(_size(size)).astype(dtype), requires_grad=requires_grad)


def randint(low, high=None, size=(), dtype=None):
    if high is None:
        low, high = 0, low
    return Tensor(_config.rng().integers(low, high, _size((size,))), dtype=dtype or np.int64)


def randperm(n):
    return Tensor(_config.rng().permutation(int(n)))


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    values = np.arange(start, end, step)
    if dtype is None:
        dtype = DEFAULT_FLOAT if values.dtype.kind == "f" else np.int64
    return Tensor(values.astype(dtype), requires_grad=requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False):
    return Tensor(np.linspace(start, end, steps).astype(_float_dtype(dtype)), requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return Tensor(np.zeros(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return Tensor(np.ones(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False):
    return Tensor(np.full(t.shape, fill_value, dtype=dtype or t.dtype), requires_grad=requires_grad)


def randn_like(t, dtype=None, requires_grad=False):
    return randn(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def rand_like(t, dtype=None, requires_grad=False):
    return rand(*t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)
