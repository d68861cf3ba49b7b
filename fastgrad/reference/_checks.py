"""The argument checks of the pure-Python kernels, written once: the same rules and the
same message per fault as the compiled kernels' src_c/_checks.pxd, so a bad call raises
the same exception with the same words on either backend.

TypeError: not an ndarray; not float32/float64; a dtype unlike the call's others; an
integer argument that is not an integer; a scalar that is not a number. ValueError:
wrong number of dimensions or shape; not C-contiguous; a read-only output; an output
sharing memory with an input; a count out of range; a scalar that must be finite and
>= 0 and is not.
"""

import math

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
THREADS_MAX = 1 << 16


def check_array(kernel, name, arr, ndim=None, dtype=None, output=False):
    """arr is an ndarray of ``dtype`` (None: float32 or float64), with ``ndim``
    dimensions (None: any), C-contiguous, and writable when it is an ``output``. Returns
    its dtype."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{kernel}: {name} must be a numpy array, got {type(arr).__name__}")
    if dtype is None:
        if arr.dtype not in FLOATS:
            raise TypeError(f"{kernel}: {name} must be float32 or float64, got {arr.dtype}")
    elif arr.dtype != dtype:
        raise TypeError(f"{kernel}: {name} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{kernel}: {name} must have {ndim} dimensions, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(
            f"{kernel}: {name} must be C-contiguous (use np.ascontiguousarray), "
            f"got strides {arr.strides} for shape {arr.shape}"
        )
    if output and not arr.flags.writeable:
        raise ValueError(f"{kernel}: {name} is read-only, but it is an output")
    return arr.dtype


def check_shape(kernel, name, arr, expected):
    """arr (an ndarray, checked before) has shape ``expected``."""
    if arr.shape != tuple(expected):
        raise ValueError(f"{kernel}: {name} has shape {arr.shape}, expected {tuple(expected)}")


def check_like(kernel, name, arr, first_name, first):
    """arr has the shape of ``first`` (both ndarrays, checked before)."""
    if arr.shape != first.shape:
        raise ValueError(f"{kernel}: {name} has shape {arr.shape}, but {first_name} has {first.shape}; they must match")


def check_alike(kernel, names, arrays, n_outputs, ndim=None):
    """check_array for each of ``arrays`` (named by ``names``), the last ``n_outputs`` of
    them outputs, all of the first one's dtype (float32 or float64) and shape (check_like);
    returns the dtype."""
    dtype = None
    for k, (name, a) in enumerate(zip(names, arrays)):
        dtype = check_array(kernel, name, a, ndim, dtype, k >= len(arrays) - n_outputs)
        if k:
            check_like(kernel, name, a, names[0], arrays[0])
    return dtype


def overlaps(a, b):
    """The memory of two ndarrays may intersect (None: never)."""
    return a is not None and b is not None and a.size > 0 and b.size > 0 and np.may_share_memory(a, b)


def check_disjoint(kernel, out_name, out, name, a):
    """The output ``out`` shares no memory with ``a`` (None: absent)."""
    if overlaps(out, a):
        raise ValueError(f"{kernel}: {out_name} overlaps {name} in memory")


def same_memory(a, b):
    """Two ndarrays that are one array in memory: the same first byte, shape and dtype."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.dtype == b.dtype
        and a.shape == b.shape
    )


def check_apart(kernel, outputs, inputs, in_place=()):
    """No output of ``outputs`` ((name, array) pairs, the array None when absent) shares
    memory with an input of ``inputs`` or an earlier output (each output checked against
    the inputs, then the outputs before it); a (output name, input name) pair of
    ``in_place`` lets that output be exactly that input (same_memory)."""
    for i, (name, out) in enumerate(outputs):
        for other_name, other in tuple(inputs) + tuple(outputs[:i]):
            if overlaps(out, other) and not ((name, other_name) in in_place and same_memory(out, other)):
                raise ValueError(f"{kernel}: {name} overlaps {other_name} in memory")


def check_number(kernel, name, value, nonnegative=False):
    """A scalar hyperparameter (a Python or numpy number, not a bool) as a float; with
    ``nonnegative`` it must also be finite and >= 0 (an eps or a momentum: NaN, inf or a
    negative value there is a mistake)."""
    if value is None or isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{kernel}: {name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{kernel}: {name} must be a number, got {value!r}") from None
    if nonnegative and not (v >= 0 and v != math.inf):
        raise ValueError(f"{kernel}: {name} must be a finite number >= 0, got {value!r}")
    return v


def check_threads(kernel, n_threads):
    """n_threads is a positive integer; returns it, capped at THREADS_MAX."""
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)):
        raise TypeError(f"{kernel}: n_threads must be a positive integer, got {n_threads!r}")
    if n_threads < 1:
        raise ValueError(f"{kernel}: n_threads must be a positive integer, got {n_threads!r}")
    return min(int(n_threads), THREADS_MAX)


def check_elements(kernel, name, shape, limit):
    """A shape of at most ``limit`` elements."""
    count = 1
    for d in shape:
        count *= int(d)
    if count > limit:
        raise ValueError(
            f"{kernel}: {name} {shape} is too large: {count} elements, more than the {int(limit)} allowed per array"
        )
