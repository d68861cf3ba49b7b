"""Shape and indexing ops: reshape/view/flatten, transpose/permute, squeeze/unsqueeze,
expand, indexing (basic and integer-array) and cat/stack."""

import math

import numpy as np

from ..autograd import Function
from ._util import normalize_dims, tensor_cls


def shape_arg(shape):
    """Accept ``f(2, 3)`` and ``f((2, 3))`` alike, as PyTorch does."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"shape: expected integers, got {shape!r}")
    return tuple(int(s) for s in shape)


class Reshape(Function):
    replays_kernels = True  # a view (a reshape that copies makes an untraced array: run as the op)

    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, grad):
        return (grad.reshape(self.shape),)


class Permute(Function):
    def forward(self, a, dims):
        self.inverse = tuple(np.argsort(dims))
        return a.transpose(dims)

    def backward(self, grad):
        return (grad.transpose(self.inverse),)


class Expand(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        return np.broadcast_to(a, shape)

    def backward(self, grad):
        from ._util import unbroadcast

        return (unbroadcast(grad, self.shape),)


class Index(Function):
    def forward(self, a, index):
        self.shape, self.index = a.shape, index
        self.advanced = _is_advanced(index)
        return a[index]

    def backward(self, grad):
        g = np.zeros(self.shape, dtype=grad.dtype)
        if self.advanced:  # repeated indices must add up
            np.add.at(g, self.index, grad)
        else:
            g[self.index] = grad
        return (g,)


class Cat(Function):
    def forward(self, *arrays, dim):
        self.dim = dim
        self.bounds = np.cumsum([a.shape[dim] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=dim)

    def backward(self, grad):
        return tuple(np.split(grad, self.bounds, axis=self.dim))


class Stack(Function):
    def forward(self, *arrays, dim):
        self.dim = dim
        return np.stack(arrays, axis=dim)

    def backward(self, grad):
        return tuple(np.moveaxis(grad, self.dim, 0))


def reshape(a, shape):
    size = a.data.size
    known = int(math.prod([s for s in shape if s != -1])) if shape else 1
    if (
        shape.count(-1) > 1
        or any(s < -1 for s in shape)
        or (-1 not in shape and known != size)
        or (-1 in shape and (known == 0 or size % known))
    ):
        raise ValueError(f"reshape: shape {shape} is invalid for a tensor of shape {tuple(a.shape)} ({size} elements)")
    return Reshape.apply(a, shape=shape)


def flatten(a, start_dim=0, end_dim=-1):
    if a.ndim == 0:
        return reshape(a, (1,))
    start, end = normalize_dims("flatten", start_dim, a.ndim)[0], normalize_dims("flatten", end_dim, a.ndim)[0]
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    s = a.shape
    return reshape(a, s[:start] + (math.prod(s[start : end + 1]),) + s[end + 1 :])


def permute(a, dims):
    if len(dims) != a.ndim or sorted(d % max(a.ndim, 1) for d in dims) != list(range(a.ndim)):
        raise ValueError(
            f"permute: dims {dims} are not a permutation of the {a.ndim} dimensions "
            f"of a tensor of shape {tuple(a.shape)}"
        )
    return Permute.apply(a, dims=tuple(d % a.ndim for d in dims))


def transpose(a, dim0, dim1):
    d0 = normalize_dims("transpose", dim0, a.ndim)[0]
    d1 = normalize_dims("transpose", dim1, a.ndim)[0]
    dims = list(range(a.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return Permute.apply(a, dims=tuple(dims))


def squeeze(a, dim=None):
    if dim is None:
        shape = tuple(s for s in a.shape if s != 1)
    else:
        dims = normalize_dims("squeeze", dim, a.ndim)
        shape = tuple(s for i, s in enumerate(a.shape) if not (i in dims and s == 1))
    return Reshape.apply(a, shape=shape)


def unsqueeze(a, dim):
    if not -a.ndim - 1 <= dim <= a.ndim:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor with {a.ndim} dimensions")
    d = dim % (a.ndim + 1)
    return Reshape.apply(a, shape=a.shape[:d] + (1,) + a.shape[d:])


def expand(a, shape):
    target = tuple(a.shape[i - len(shape) + a.ndim] if s == -1 else s for i, s in enumerate(shape))
    try:
        np.broadcast_shapes(a.shape, target)
        if np.broadcast_shapes(a.shape, target) != target:
            raise ValueError
    except ValueError:
        raise ValueError(f"expand: cannot expand shape {tuple(a.shape)} to {shape}") from None
    return Expand.apply(a, shape=target)


def plain_index(index):
    """Replace Tensors inside an index by their arrays (numpy does the rest)."""
    T = tensor_cls()
    if isinstance(index, T):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, T) else i for i in index)
    return index


def _is_advanced(index):
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (np.ndarray, list)) for i in items)


def index(a, idx):
    idx = plain_index(idx)
    try:
        a.data[idx]  # validates the index with numpy's own message before recording anything
    except IndexError as exc:
        raise IndexError(f"index: {exc} (tensor of shape {tuple(a.shape)})") from None
    items = idx if isinstance(idx, tuple) else (idx,)
    for i in items:
        if isinstance(i, np.ndarray) and i.dtype.kind == "f":
            raise IndexError("index: tensors used as indices must be integer or bool tensors")
    return Index.apply(a, index=idx)


def _tensors_for(op, tensors):
    T = tensor_cls()
    tensors = [t if isinstance(t, T) else T(t) for t in tensors]
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    dtypes = {t.data.dtype for t in tensors}
    if len(dtypes) > 1:
        raise TypeError(f"{op}: tensors have different dtypes {sorted(map(str, dtypes))}")
    return tensors


def cat(tensors, dim=0):
    tensors = _tensors_for("cat", tensors)
    nd = tensors[0].ndim
    (d,) = normalize_dims("cat", dim, nd)
    for t in tensors:
        if t.ndim != nd or t.shape[:d] + t.shape[d + 1 :] != tensors[0].shape[:d] + tensors[0].shape[d + 1 :]:
            raise ValueError(f"cat: shapes {[tuple(t.shape) for t in tensors]} differ outside dim {dim}")
    return Cat.apply(*tensors, dim=d)


def stack(tensors, dim=0):
    tensors = _tensors_for("stack", tensors)
    if len({t.shape for t in tensors}) > 1:
        raise ValueError(f"stack: all tensors need the same shape, got {[tuple(t.shape) for t in tensors]}")
    nd = tensors[0].ndim + 1
    if not -nd <= dim < nd:
        raise IndexError(f"stack: dim {dim} out of range for {nd} dimensions")
    return Stack.apply(*tensors, dim=dim % nd)
