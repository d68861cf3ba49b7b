"""Stand-ins that let ``restricted.load`` rebuild numpy arrays of numbers from a pickle
(as the CIFAR-10 python batches hold) without numpy's own unpickling.

A pickled array is ``_reconstruct(ndarray, (0,), b"b")`` followed by BUILD with the state
``(version, shape, dtype, is_fortran, raw_bytes)``; its dtype is ``dtype("u1", 0, 1)``
followed by BUILD with ``(version, byte_order, ...)``. Here ``_reconstruct`` and ``dtype``
return builders whose ``__setstate__`` checks that state (numeric dtypes only, the raw
bytes exactly as long as the shape needs) and makes the array with ``numpy.frombuffer``.
``unwrap`` replaces the builders in a loaded object by the arrays they made.
"""

import numbers

import numpy as np

from .restricted import UnsafePickleError


class _NDArrayClass:
    """Stands in for ``numpy.ndarray`` as the first argument of ``_reconstruct``."""

    def __setstate__(self, state):
        raise UnsafePickleError("refused: state set on numpy.ndarray")


NDARRAY = _NDArrayClass()


class DtypeBuilder:
    __slots__ = ("dtype",)

    def __init__(self, spec, align=False, copy=True):
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or len(spec) > 8:
            raise UnsafePickleError(f"refused: numpy dtype {spec!r:.40}")
        try:
            dtype = np.dtype(spec)
        except TypeError:
            raise UnsafePickleError(f"refused: numpy dtype {spec!r:.40}") from None
        if dtype.kind not in "biuf" or dtype.fields is not None:
            raise UnsafePickleError(f"refused: numpy dtype {dtype} (only numbers and booleans are loaded)")
        self.dtype = dtype

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "=", b"<", b">", b"|"):
            raise UnsafePickleError(f"refused: numpy dtype state {state!r:.80}")
        order = state[1].decode() if isinstance(state[1], bytes) else state[1]
        if order in "<>" and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(order)


class ArrayBuilder:
    __slots__ = ("array",)

    def __init__(self, cls, shape, typecode):
        if cls is not NDARRAY:
            raise UnsafePickleError("refused: _reconstruct of something other than numpy.ndarray")
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise UnsafePickleError(f"refused: numpy array state of {type(state).__name__}")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, DtypeBuilder):
            raise UnsafePickleError("refused: a numpy array whose dtype is not a plain numeric dtype")
        if (
            not isinstance(shape, tuple)
            or len(shape) > 32
            or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0 for s in shape)
        ):
            raise UnsafePickleError(f"refused: numpy array shape {shape!r:.80}")
        if isinstance(raw, str):
            raw = raw.encode("latin1")  # loaded with encoding="latin1"
        if not isinstance(raw, (bytes, bytearray)):
            raise UnsafePickleError(f"refused: numpy array data of type {type(raw).__name__}")
        count = 1
        for s in shape:
            count *= int(s)
        if count * dtype.dtype.itemsize != len(raw):
            raise UnsafePickleError(
                f"malformed numpy array: shape {shape} of {dtype.dtype} needs "
                f"{count * dtype.dtype.itemsize:,} bytes, the pickle holds {len(raw):,}"
            )
        flat = np.frombuffer(raw, dtype=dtype.dtype)
        array = flat.reshape(shape, order="F" if fortran else "C")
        self.array = array.astype(dtype.dtype.newbyteorder("="), copy=True)


def latin1_bytes(text, encoding="latin1"):
    """Stands in for ``_codecs.encode``, with which protocol-2 pickles spell bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refused: _codecs.encode({type(text).__name__}, {encoding!r:.20})")
    return text.encode("latin1")


STAND_INS = {
    ("numpy.core.multiarray", "_reconstruct"): ArrayBuilder,
    ("numpy._core.multiarray", "_reconstruct"): ArrayBuilder,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): DtypeBuilder,
    ("_codecs", "encode"): latin1_bytes,
}


def unwrap(obj, _memo=None):
    """``obj`` with each finished ArrayBuilder replaced by its array (in dicts, lists and
    tuples; an object reached twice is rebuilt once); an unfinished one is refused."""
    memo = {} if _memo is None else _memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, ArrayBuilder):
        if obj.array is None:
            raise UnsafePickleError("malformed pickle: a numpy array without its data")
        out = obj.array
    elif isinstance(obj, dict):
        out = {k: unwrap(v, memo) for k, v in obj.items()}
    elif isinstance(obj, list):
        out = [unwrap(v, memo) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(unwrap(v, memo) for v in obj)
    else:
        return obj
    memo[id(obj)] = out
    return out


def accept(node):
    """``restricted.check_tree`` acceptor: plain containers and arrays of numbers."""
    from .restricted import plain_children

    if isinstance(node, ArrayBuilder):
        return []
    return plain_children(node)
