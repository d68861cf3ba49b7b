"""Small top-level functions of PyTorch's namespace: ``eye``, ``allclose``, ``is_tensor``,
and the ``inference_mode`` context (graph recording off, as no_grad)."""

import numpy as np

from .autograd import set_grad_enabled
from .tensor import Tensor, _as_array


def is_tensor(obj):
    return isinstance(obj, Tensor)


def eye(n, m=None, *, dtype=None, requires_grad=False):
    """The (n, m) identity matrix (m defaults to n), float32 unless dtype says otherwise."""
    m = n if m is None else m
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise RuntimeError(f"eye: {name} must be greater or equal to 0, got {v!r}")
    return Tensor(np.eye(n, m, dtype=np.dtype(dtype) if dtype is not None else np.float32), requires_grad=requires_grad)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|input - other| <= atol + rtol * |other| elementwise (with broadcasting), as a bool."""
    a = input._data if isinstance(input, Tensor) else _as_array(input)
    b = other._data if isinstance(other, Tensor) else _as_array(other)
    if a.dtype != b.dtype and not (a.dtype.kind == b.dtype.kind == "f"):
        raise RuntimeError(
            f"Float did not match {b.dtype}"
            if a.dtype.kind == "f"
            else f"allclose: dtypes differ: {a.dtype} and {b.dtype}"
        )
    return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


class inference_mode(set_grad_enabled):
    """As torch.inference_mode: no graph is recorded inside (``with``, ``@inference_mode()``
    or bare ``@inference_mode``); ``inference_mode(False)`` leaves recording as it is."""

    def __new__(cls, mode=True):
        self = super().__new__(cls)
        if callable(mode):  # used bare, as @inference_mode
            self.__init__()
            return self(mode)
        return self

    def __init__(self, mode=True):
        self.inference = bool(mode) if not callable(mode) else True
        super().__init__(False)

    def __enter__(self):
        if not self.inference:
            from .autograd import is_grad_enabled

            self.mode = is_grad_enabled()
        return super().__enter__()
