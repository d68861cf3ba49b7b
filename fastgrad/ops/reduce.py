"""Reductions over dimensions: sum, mean, max/min (with the index kept for backward)
and argmax/argmin."""

import math
from collections import namedtuple

import numpy as np

from ..autograd import Function
from ._util import normalize_dims, tensor_cls

MaxResult = namedtuple("MaxResult", ["values", "indices"])  # as torch.return_types.max


def _expand_to(grad, shape, dims, keepdim):
    """Re-insert reduced axes into ``grad`` and broadcast it to the input's ``shape``."""
    if not keepdim:
        grad = np.expand_dims(grad, dims) if dims else grad
    return np.broadcast_to(grad, shape)


class Sum(Function):
    def forward(self, a, dims, keepdim):
        self.shape, self.dims, self.keepdim = a.shape, dims, keepdim
        return np.asarray(a.sum(axis=dims, keepdims=keepdim))

    def backward(self, grad):
        return (_expand_to(grad, self.shape, self.dims, self.keepdim),)


class Mean(Function):
    def forward(self, a, dims, keepdim):
        self.shape, self.dims, self.keepdim = a.shape, dims, keepdim
        self.count = math.prod([a.shape[d] for d in dims]) if dims else 1
        return np.asarray(a.mean(axis=dims, keepdims=keepdim))

    def backward(self, grad):
        return (_expand_to(grad / self.count, self.shape, self.dims, self.keepdim),)


class MaxAll(Function):
    """max()/min() over all elements; ties share the gradient equally, as in PyTorch."""

    def forward(self, a, largest):
        out = a.max() if largest else a.min()
        self.mask = a == out
        return np.asarray(out)

    def backward(self, grad):
        mask = self.mask
        return (mask * (grad / mask.sum()).astype(grad.dtype),)


class MaxDim(Function):
    """max(dim)/min(dim): the gradient goes to the first index holding the extreme."""

    def forward(self, a, dim, keepdim, largest):
        idx = np.argmax(a, axis=dim) if largest else np.argmin(a, axis=dim)
        idx = np.expand_dims(idx, dim)
        self.idx, self.shape, self.dim, self.keepdim = idx, a.shape, dim, keepdim
        out = np.take_along_axis(a, idx, axis=dim)
        return out if keepdim else np.squeeze(out, axis=dim)

    def backward(self, grad):
        g = np.zeros(self.shape, dtype=grad.dtype)
        if not self.keepdim:
            grad = np.expand_dims(grad, self.dim)
        np.put_along_axis(g, self.idx, grad, axis=self.dim)
        return (g,)


def sum(a, dim=None, keepdim=False):
    a = _as_tensor(a)
    dims = normalize_dims("sum", dim, a.ndim)
    if a.data.dtype.kind != "f":
        return tensor_cls()._from_op(np.asarray(a.data.sum(axis=dims, keepdims=keepdim)), None)
    return Sum.apply(a, dims=dims, keepdim=keepdim)


def mean(a, dim=None, keepdim=False):
    a = _as_tensor(a)
    if a.data.dtype.kind != "f":
        raise TypeError(f"mean: expected a float tensor, got dtype {a.data.dtype}; call .float() first")
    dims = normalize_dims("mean", dim, a.ndim)
    return Mean.apply(a, dims=dims, keepdim=keepdim)


def _extreme(op, a, dim, keepdim, largest):
    a = _as_tensor(a)
    if a.data.size == 0:
        raise ValueError(f"{op}: the tensor is empty (shape {tuple(a.shape)})")
    if dim is None:
        return MaxAll.apply(a, largest=largest)
    (d,) = normalize_dims(op, dim, a.ndim)
    if a.ndim == 0:
        return MaxResult(a, tensor_cls()._from_op(np.asarray(0), None))
    values = MaxDim.apply(a, dim=d, keepdim=keepdim, largest=largest)
    idx = np.argmax(a.data, axis=d) if largest else np.argmin(a.data, axis=d)
    if keepdim:
        idx = np.expand_dims(idx, d)
    return MaxResult(values, tensor_cls()._from_op(np.asarray(idx, dtype=np.int64), None))


def max(a, dim=None, keepdim=False):
    """max over all elements (a Tensor), or over ``dim`` (a (values, indices) pair)."""
    return _extreme("max", a, dim, keepdim, True)


def min(a, dim=None, keepdim=False):
    return _extreme("min", a, dim, keepdim, False)


def _arg_extreme(op, a, dim, keepdim, largest):
    a = _as_tensor(a)
    if a.data.size == 0:
        raise ValueError(f"{op}: the tensor is empty (shape {tuple(a.shape)})")
    fn = np.argmax if largest else np.argmin
    if dim is None:
        out = np.asarray(fn(a.data))
        if keepdim:
            out = out.reshape((1,) * a.ndim)
    else:
        (d,) = normalize_dims(op, dim, a.ndim)
        out = fn(a.data, axis=d, keepdims=keepdim) if a.ndim else np.asarray(0)
    return tensor_cls()._from_op(np.asarray(out, dtype=np.int64), None)


def argmax(a, dim=None, keepdim=False):
    return _arg_extreme("argmax", a, dim, keepdim, True)


def argmin(a, dim=None, keepdim=False):
    return _arg_extreme("argmin", a, dim, keepdim, False)


def _as_tensor(a):
    T = tensor_cls()
    return a if isinstance(a, T) else T(a)
