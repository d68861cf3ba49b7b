"""Tensor: a numpy array with a gradient and a place in the autograd graph.

A Tensor holds ``data`` (a numpy array: float32 by default, float64 on request,
integers or bools for labels, indices and masks), ``requires_grad``, ``grad`` (a Tensor
or None) and ``_ctx``, the Function that produced it (None for leaves). The methods
here only dispatch: the math and its derivative live in ``fastgrad.ops``.
"""

from __future__ import annotations

import builtins
from typing import Any, Callable, NoReturn

import numpy as np
import numpy.typing as npt

from . import _config, _device, autograd, hooks
from ._typing import TensorLike

DEFAULT_FLOAT = np.dtype(np.float32)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _as_array(data: Any, dtype: npt.DTypeLike | None = None) -> np.ndarray:
    """Convert user data to an array with fastgrad's default dtypes (float32 for floats)."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.array(data, dtype=np.dtype(dtype))
    if isinstance(data, np.ndarray):
        arr = np.array(data)
        if arr.dtype == np.float16:
            arr = arr.astype(DEFAULT_FLOAT)
        return arr
    arr = np.array(data)
    if arr.dtype.kind == "f":
        return arr.astype(DEFAULT_FLOAT)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        return arr
    raise TypeError(f"tensor: cannot make a tensor from {type(data).__name__} (numpy dtype {arr.dtype})")


class Tensor:
    # _hooks: a leaf's gradient and post-accumulate-grad hooks (fastgrad.hooks.TensorHooks), or None
    __slots__ = ("_data", "grad", "_requires_grad", "_ctx", "_hooks", "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operators

    def __init__(self, data: Any, requires_grad: builtins.bool = False, dtype: npt.DTypeLike | None = None) -> None:
        self._data = _as_array(data, dtype)
        self.grad = None
        self._ctx = None
        self._hooks = None
        self._requires_grad = False
        self.requires_grad = requires_grad

    @classmethod
    def _from_op(cls, array: np.ndarray, ctx: autograd.Function | None) -> Tensor:
        """Wrap the output of an op without copying or validating it (hot path)."""
        t = object.__new__(Tensor)
        t._data = array
        t.grad = None
        t._ctx = ctx
        t._hooks = None
        t._requires_grad = ctx is not None
        return t

    # ----------------------------------------------------------------- attributes
    @property
    def data(self) -> np.ndarray:
        """The underlying numpy array; assignable (``x.data = x.data - lr * x.grad.data``)."""
        return self._data

    @data.setter
    def data(self, value: TensorLike) -> None:
        if isinstance(value, Tensor):
            value = value._data
        if not isinstance(value, np.ndarray):
            value = np.asarray(value, dtype=self._data.dtype)
        self._data = value

    @property
    def requires_grad(self) -> builtins.bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag: builtins.bool) -> None:
        flag = bool(flag)
        if flag and self._data.dtype not in _FLOATS:
            raise RuntimeError(
                f"requires_grad: only float32/float64 tensors can require gradients, got dtype {self._data.dtype}"
            )
        if not flag and self._ctx is not None:
            raise RuntimeError("requires_grad: cannot turn it off on a non-leaf tensor; use .detach()")
        self._requires_grad = flag

    def requires_grad_(self, requires_grad: builtins.bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> builtins.bool:
        return self._ctx is None

    @property
    def grad_fn(self) -> autograd.Function | None:
        return self._ctx

    @property
    def shape(self) -> tuple[builtins.int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def ndim(self) -> builtins.int:
        return self._data.ndim

    @property
    def T(self) -> Tensor:
        return shape_ops.permute(self, tuple(range(self.ndim - 1, -1, -1)))

    @property
    def device(self) -> _device.device:
        return _device.CPU

    def size(self, dim: builtins.int | None = None) -> tuple[builtins.int, ...] | builtins.int:
        return self._data.shape if dim is None else self._data.shape[dim]

    def dim(self) -> builtins.int:
        return self._data.ndim

    def numel(self) -> builtins.int:
        return int(self._data.size)

    def __len__(self) -> builtins.int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    # ----------------------------------------------------------------- conversion
    def numpy(self) -> np.ndarray:
        if self._requires_grad:
            raise RuntimeError("numpy: the tensor requires grad; call .detach().numpy()")
        return self._data

    def item(self) -> builtins.float | builtins.int | builtins.bool:
        if self._data.size != 1:
            raise ValueError(
                f"item: only a tensor with one element can be converted to a Python "
                f"number, got shape {tuple(self._data.shape)}"
            )
        return self._data.reshape(()).item()

    def tolist(self) -> Any:
        return self._data.tolist()

    def detach(self) -> Tensor:
        return Tensor._from_op(self._data, None)

    def clone(self) -> Tensor:
        return elementwise.clone(self)

    # ----------------------------------------------------------------- devices (the CPU only)
    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        """``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other)``, keywords
        ``device``, ``dtype``, ``non_blocking``, ``copy``: this tensor when nothing changes,
        else a differentiable cast (or copy). A device other than the CPU raises."""
        dtype, copy = _device.parse_to("Tensor.to", args, kwargs)
        if dtype is not None and dtype != self._data.dtype:
            return elementwise.cast(self, dtype)
        return elementwise.clone(self) if copy else self

    def cpu(self) -> Tensor:
        return self

    def cuda(self, device: Any = None, non_blocking: builtins.bool = False) -> NoReturn:
        raise _device.cpu_only_error("Tensor.cuda")

    @property
    def is_cuda(self) -> builtins.bool:
        return False

    # ----------------------------------------------------------------- dtype casts

    def type(self, dtype: npt.DTypeLike) -> Tensor:
        return self.to(dtype)

    def float(self) -> Tensor:
        return self.to(np.float32)

    def double(self) -> Tensor:
        return self.to(np.float64)

    def long(self) -> Tensor:
        return self.to(np.int64)

    def int(self) -> Tensor:
        return self.to(np.int32)

    def bool(self) -> Tensor:
        return self.to(np.bool_)

    def contiguous(self) -> Tensor:
        return self

    def backward(self, gradient: TensorLike | None = None, retain_graph: builtins.bool = False) -> None:
        autograd.backward(self, gradient, retain_graph)

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> hooks.RemovableHandle:
        """Call ``hook(grad)`` each time the gradient with respect to this tensor is computed;
        a returned Tensor replaces the gradient. Returns a handle with ``remove()``."""
        return hooks.register_hook(self, hook)

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in ``.grad`` after backward (leaves always do)."""
        hooks.retain_grad(self)

    @property
    def retains_grad(self) -> builtins.bool:
        return hooks.retains_grad(self)

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> hooks.RemovableHandle:
        """Call ``hook(tensor)`` once per backward pass, after this leaf's ``.grad`` has
        gathered every contribution of that pass (as PyTorch's). Returns a handle whose
        ``remove()`` unregisters the hook."""
        return hooks.register_post_accumulate_grad_hook(self, hook)

    def __repr__(self) -> str:
        body = np.array2string(self._data, separator=", ", prefix="tensor(")
        extra = ""
        if self._data.dtype not in (DEFAULT_FLOAT, np.dtype(np.int64), np.dtype(np.bool_)):
            extra += f", dtype={self._data.dtype}"
        if self._ctx is not None:
            extra += f", grad_fn={self._ctx!r}"
        elif self._requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    def __bool__(self) -> builtins.bool:
        if self._data.size != 1:
            raise RuntimeError(f"bool: the truth value of a tensor of shape {self._data.shape} is ambiguous")
        return bool(self._data.reshape(()))

    def __float__(self) -> builtins.float:
        return float(self.item())

    def __int__(self) -> builtins.int:
        return int(self.item())

    def __index__(self) -> builtins.int:
        if self._data.dtype.kind not in "iu" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    def __array__(self, dtype: npt.DTypeLike | None = None, copy: builtins.bool | None = None) -> np.ndarray:
        return self._data if dtype is None else self._data.astype(dtype)

    __hash__ = object.__hash__

    # ----------------------------------------------------------------- arithmetic
    def __add__(self, other: TensorLike) -> Tensor:
        return elementwise.add(self, other)

    def __radd__(self, other: TensorLike) -> Tensor:
        return elementwise.add(other, self)

    def __sub__(self, other: TensorLike) -> Tensor:
        return elementwise.sub(self, other)

    def __rsub__(self, other: TensorLike) -> Tensor:
        return elementwise.sub(other, self)

    def __mul__(self, other: TensorLike) -> Tensor:
        return elementwise.mul(self, other)

    def __rmul__(self, other: TensorLike) -> Tensor:
        return elementwise.mul(other, self)

    def __truediv__(self, other: TensorLike) -> Tensor:
        return elementwise.div(self, other)

    def __rtruediv__(self, other: TensorLike) -> Tensor:
        return elementwise.div(other, self)

    def __pow__(self, other: TensorLike) -> Tensor:
        return elementwise.pow(self, other)

    def __rpow__(self, other: TensorLike) -> Tensor:
        return elementwise.pow(other, self)

    def __matmul__(self, other: TensorLike) -> Tensor:
        return linalg.matmul(self, other)

    def __rmatmul__(self, other: TensorLike) -> Tensor:
        return linalg.matmul(other, self)

    def __neg__(self) -> Tensor:
        return elementwise.neg(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return elementwise.abs(self)

    # In-place arithmetic changes ``data`` and is allowed where PyTorch allows it:
    # on tensors outside the graph, or under no_grad (as in a hand-written SGD step).
    def _inplace(self, other: TensorLike | None, ufunc: Callable[..., Any], name: str) -> Tensor:
        if self._requires_grad and autograd.is_grad_enabled():
            raise RuntimeError(
                f"{name}: a tensor that requires grad cannot be changed in place "
                "while the graph is recorded; wrap the update in fastgrad.no_grad()"
            )
        other = other._data if isinstance(other, Tensor) else other
        ufunc(self._data, other, out=self._data, casting="same_kind")
        return self

    def __iadd__(self, other: TensorLike) -> Tensor:
        return self._inplace(other, np.add, "+=")

    def __isub__(self, other: TensorLike) -> Tensor:
        return self._inplace(other, np.subtract, "-=")

    def __imul__(self, other: TensorLike) -> Tensor:
        return self._inplace(other, np.multiply, "*=")

    def __itruediv__(self, other: TensorLike) -> Tensor:
        return self._inplace(other, np.true_divide, "/=")

    def add_(self, other: TensorLike, alpha: builtins.float = 1) -> Tensor:
        return self._inplace(other if alpha == 1 else other * alpha, np.add, "add_")

    def sub_(self, other: TensorLike, alpha: builtins.float = 1) -> Tensor:
        return self._inplace(other if alpha == 1 else other * alpha, np.subtract, "sub_")

    def mul_(self, other: TensorLike) -> Tensor:
        return self._inplace(other, np.multiply, "mul_")

    def div_(self, other: TensorLike) -> Tensor:
        return self._inplace(other, np.true_divide, "div_")

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def fill_(self, value: builtins.float) -> Tensor:
        self._inplace(None, lambda a, _, out, casting: out.fill(value), "fill_")
        return self

    def copy_(self, src: TensorLike) -> Tensor:
        return self._inplace(src, lambda a, b, out, casting: np.copyto(out, b, casting="same_kind"), "copy_")

    def uniform_(self, a: builtins.float = 0.0, b: builtins.float = 1.0) -> Tensor:
        return self.copy_(_config.rng().uniform(a, b, self.shape).astype(self.dtype))

    def normal_(self, mean: builtins.float = 0.0, std: builtins.float = 1.0) -> Tensor:
        return self.copy_(_config.rng().normal(mean, std, self.shape).astype(self.dtype))

    # ----------------------------------------------------------------- comparisons (no grad)
    def _compare(self, other: TensorLike, ufunc: np.ufunc) -> Tensor:
        other = other._data if isinstance(other, Tensor) else other
        return Tensor._from_op(ufunc(self._data, other), None)

    def __eq__(self, other: TensorLike) -> Tensor:  # type: ignore[override]
        return self._compare(other, np.equal)

    def __ne__(self, other: TensorLike) -> Tensor:  # type: ignore[override]
        return self._compare(other, np.not_equal)

    def __lt__(self, other: TensorLike) -> Tensor:
        return self._compare(other, np.less)

    def __le__(self, other: TensorLike) -> Tensor:
        return self._compare(other, np.less_equal)

    def __gt__(self, other: TensorLike) -> Tensor:
        return self._compare(other, np.greater)

    def __ge__(self, other: TensorLike) -> Tensor:
        return self._compare(other, np.greater_equal)

    def eq(self, other: TensorLike) -> Tensor:
        return self == other

    # ----------------------------------------------------------------- unary math
    def exp(self) -> Tensor:
        return elementwise.exp(self)

    def log(self) -> Tensor:
        return elementwise.log(self)

    def sqrt(self) -> Tensor:
        return elementwise.sqrt(self)

    def abs(self) -> Tensor:
        return elementwise.abs(self)

    def clamp(self, min: builtins.float | None = None, max: builtins.float | None = None) -> Tensor:
        return elementwise.clamp(self, min, max)

    clip = clamp

    def relu(self) -> Tensor:
        return activation.relu(self)

    def sigmoid(self) -> Tensor:
        return activation.sigmoid(self)

    def tanh(self) -> Tensor:
        return activation.tanh(self)

    def softmax(self, dim: builtins.int) -> Tensor:
        return activation.softmax(self, dim)

    def log_softmax(self, dim: builtins.int) -> Tensor:
        return activation.log_softmax(self, dim)

    # ----------------------------------------------------------------- reductions
    def sum(self, dim: builtins.int | tuple[builtins.int, ...] | None = None, keepdim: builtins.bool = False) -> Tensor:
        return reduce.sum(self, dim, keepdim)

    def mean(
        self, dim: builtins.int | tuple[builtins.int, ...] | None = None, keepdim: builtins.bool = False
    ) -> Tensor:
        return reduce.mean(self, dim, keepdim)

    def max(self, dim: builtins.int | tuple[builtins.int, ...] | None = None, keepdim: builtins.bool = False) -> Tensor:
        return reduce.max(self, dim, keepdim)

    def min(self, dim: builtins.int | tuple[builtins.int, ...] | None = None, keepdim: builtins.bool = False) -> Tensor:
        return reduce.min(self, dim, keepdim)

    def argmax(
        self, dim: builtins.int | tuple[builtins.int, ...] | None = None, keepdim: builtins.bool = False
    ) -> Tensor:
        return reduce.argmax(self, dim, keepdim)

    def argmin(
        self, dim: builtins.int | tuple[builtins.int, ...] | None = None, keepdim: builtins.bool = False
    ) -> Tensor:
        return reduce.argmin(self, dim, keepdim)

    # ----------------------------------------------------------------- shape
    def reshape(self, *shape: builtins.int | tuple[builtins.int, ...]) -> Tensor:
        return shape_ops.reshape(self, shape_ops.shape_arg(shape))

    def view(self, *shape: builtins.int | tuple[builtins.int, ...]) -> Tensor:
        return shape_ops.reshape(self, shape_ops.shape_arg(shape))

    def view_as(self, other: Tensor) -> Tensor:
        return shape_ops.reshape(self, other.shape)

    def flatten(self, start_dim: builtins.int = 0, end_dim: builtins.int = -1) -> Tensor:
        return shape_ops.flatten(self, start_dim, end_dim)

    def transpose(self, dim0: builtins.int, dim1: builtins.int) -> Tensor:
        return shape_ops.transpose(self, dim0, dim1)

    def t(self) -> Tensor:
        return shape_ops.transpose(self, 0, 1) if self.ndim == 2 else self

    def permute(self, *dims: builtins.int | tuple[builtins.int, ...]) -> Tensor:
        return shape_ops.permute(self, shape_ops.shape_arg(dims))

    def squeeze(self, dim: builtins.int | None = None) -> Tensor:
        return shape_ops.squeeze(self, dim)

    def unsqueeze(self, dim: builtins.int) -> Tensor:
        return shape_ops.unsqueeze(self, dim)

    def expand(self, *shape: builtins.int | tuple[builtins.int, ...]) -> Tensor:
        return shape_ops.expand(self, shape_ops.shape_arg(shape))

    def __getitem__(self, index: Any) -> Tensor:
        return shape_ops.index(self, index)

    def __setitem__(self, index: Any, value: TensorLike) -> None:
        self._inplace(
            None,
            lambda a, _, out, casting: out.__setitem__(
                shape_ops.plain_index(index), value._data if isinstance(value, Tensor) else value
            ),
            "[]=",
        )

    # ----------------------------------------------------------------- selection, pieces, half
    def masked_fill(self, mask: TensorLike, value: builtins.float) -> Tensor:
        return select_ops.masked_fill(self, mask, value)

    def chunk(self, chunks: builtins.int, dim: builtins.int = 0) -> list[Tensor]:
        return split_ops.chunk(self, chunks, dim)

    def split(self, split_size: builtins.int | list[builtins.int], dim: builtins.int = 0) -> list[Tensor]:
        return split_ops.split(self, split_size, dim)

    def half(self) -> Tensor:
        """A float16 copy: for storage and conversion (the kernels compute in float32/float64)."""
        return self.to(np.float16)


autograd._tensor_cls = Tensor

# The ops import Tensor from this module; bind them last to keep the cycle benign.
from .ops import activation, elementwise, linalg, reduce  # noqa: E402
from .ops import select as select_ops  # noqa: E402
from .ops import shape as shape_ops  # noqa: E402
from .ops import split as split_ops  # noqa: E402
