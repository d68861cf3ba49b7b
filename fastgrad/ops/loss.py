"""Losses: cross_entropy, nll_loss, mse_loss, binary_cross_entropy_with_logits.

Each op validates its arguments (shapes, dtypes, reduction, targets in range) and raises
errors that name it, then calls ``fastgrad.kernels``. cross_entropy and
binary_cross_entropy_with_logits compute the gradient in the same kernel pass as the
loss (already scaled for the reduction), so their backward is free when the upstream
gradient is 1, as it is for ``loss.backward()``.

Class-index losses take input (N, C) with targets (N,), or (N, C, d1, ...) with targets
(N, d1, ...) (the class axis is moved last and the rest flattened into rows), or an
unbatched (C,) with a 0-d target. Gradients flow to ``input`` (and to ``target`` for
mse_loss and binary_cross_entropy_with_logits), never to ``weight`` or ``pos_weight``.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import numpy as np

from .. import kernels
from .._config import get_num_threads
from .._typing import TensorLike
from ..autograd import _SCALAR_ONES, Function
from ._util import check_size, tensor_cls
from .activation import contiguous

if TYPE_CHECKING:
    from ..tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- validation


def _check_reduction(op, reduction):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _float_input(op, input):
    if not isinstance(input, tensor_cls()):
        raise TypeError(f"{op}: expected input to be a Tensor, got {type(input).__name__}")
    if input.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: expected a float32 or float64 input, got dtype {input.dtype}")
    check_size(op, "input", input.shape, input.dtype)


def _as_tensor(op, name, value):
    Tensor = tensor_cls()
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return Tensor._from_op(value, None)
    raise TypeError(f"{op}: expected {name} to be a Tensor, got {type(value).__name__}")


def _float_target(op, input, target):
    """A float target of the input's shape and dtype (for mse and bce)."""
    target = _as_tensor(op, "target", target)
    if target.dtype.kind != "f":
        raise TypeError(
            f"{op}: expected a float target of dtype {input.dtype} (the input's), got "
            f"{target.dtype}; convert it with .float() or .double()"
        )
    if target.dtype != input.dtype:
        raise TypeError(
            f"{op}: input has dtype {input.dtype} but target has {target.dtype}; convert one with .float() or .double()"
        )
    if target.shape != input.shape:
        raise ValueError(
            f"{op}: target shape {tuple(target.shape)} differs from input shape "
            f"{tuple(input.shape)}; they must be equal"
        )
    return target


def _aux_array(op, name, value, dtype):
    """An optional weight-like argument as an array of ``dtype`` (no gradient flows to it)."""
    if value is None:
        return None
    if not isinstance(value, (tensor_cls(), np.ndarray)):
        raise TypeError(f"{op}: expected {name} to be a Tensor or None, got {type(value).__name__}")
    arr = np.asarray(value.data if isinstance(value, tensor_cls()) else value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{op}: {name} must hold numbers, got dtype {arr.dtype}")
    check_size(op, name, arr.shape, dtype)  # before astype copies a broadcast view
    return arr.astype(dtype, copy=False)


def _to_scalar(value, dtype):
    return np.asarray(value, dtype=dtype)


def _mean(total, count):
    return total / count if count != 0 else math.nan  # PyTorch: nan when nothing is counted


# --------------------------------------------------------------------------- class layout


class _ClassLayout:
    """Input (N, C, d1, ...) as (rows, C) with the class axis last, targets as (rows,).

    Also (N, C) with targets (N,), and an unbatched (C,) with a 0-d target.
    """

    def __init__(self, shape):
        self.shape = shape
        if len(shape) == 1:
            self.target_shape, self.rows_shape = (), (1, shape[0])
        else:
            n, c = shape[0], shape[1]
            self.target_shape = (n,) + tuple(shape[2:])
            self.rows_shape = (math.prod(self.target_shape), c)
        self.moved_shape = self.target_shape + (self.rows_shape[1],)

    def to_rows(self, a):
        if len(self.shape) > 2:
            a = np.moveaxis(a, 1, -1)
        return contiguous(a).reshape(self.rows_shape)

    def from_rows(self, rows):
        if len(self.shape) <= 2:
            return rows.reshape(self.shape)
        return np.ascontiguousarray(np.moveaxis(rows.reshape(self.moved_shape), -1, 1))


def _class_args(op, input, target, weight, ignore_index, reduction):
    """Validate a class-index loss call; return (layout, int64 targets as rows, weights)."""
    _float_input(op, input)
    _check_reduction(op, reduction)
    if input.ndim == 0:
        raise ValueError(f"{op}: expected input of shape (N, C), (N, C, d1, ...) or (C,), got a 0-d tensor")
    layout = _ClassLayout(input.shape)
    target = _as_tensor(op, "target", target)
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{op}: expected integer class indices as target (int64), got dtype "
            f"{target.dtype}; class-probability targets are not supported"
        )
    if target.shape != layout.target_shape:
        raise ValueError(
            f"{op}: target shape {tuple(target.shape)} does not match input shape "
            f"{tuple(input.shape)}: expected target shape {layout.target_shape}"
        )
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{op}: ignore_index must be an integer, got {ignore_index!r}")
    n_classes = layout.rows_shape[1]
    targets = target.data.astype(np.int64, copy=False).reshape(-1)
    if targets.size and not _in_range(targets, n_classes):
        _refuse_targets(op, target, targets, ignore_index, n_classes)
    w = _aux_array(op, "weight", weight, input.dtype)
    if w is not None:
        if w.shape != (n_classes,):
            raise ValueError(f"{op}: weight must have shape ({n_classes},), one per class, got {w.shape}")
        w = contiguous(w)
    return layout, contiguous(targets), w


def _refuse_targets(op, target, targets, ignore_index, n_classes):
    """Raise for the first target outside [0, n_classes) that is not ignore_index."""
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= n_classes))
    if bad.any():
        where = np.unravel_index(int(np.argmax(bad)), target.shape) if target.ndim else ()
        value = int(target.data[where])
        raise ValueError(
            f"{op}: target {value} at index {tuple(int(i) for i in where)} is out of "
            f"range for {n_classes} classes (expected 0 <= target < {n_classes}, "
            f"or ignore_index={ignore_index})"
        )


# --------------------------------------------------------------------------- cross entropy


class CrossEntropy(Function):
    """Cross-entropy of logits; ``layout`` None means (N, C) logits used as they are."""

    def forward(self, x, target, weight, ignore_index, reduction, label_smoothing, layout):
        logits = x if layout is None else layout.to_rows(x)
        losses = np.empty(logits.shape[0], x.dtype)
        grad = np.empty(logits.shape, x.dtype) if self.needs_input_grad[0] else None
        loss_sum, total_weight = kernels.cross_entropy_forward(
            logits, target, weight, ignore_index, label_smoothing, reduction == "mean", losses, grad, get_num_threads()
        )
        self.grad, self.reduction, self.layout = grad, reduction, layout
        if reduction == "none":
            return losses.reshape(layout.target_shape)
        if reduction == "sum":
            return _to_scalar(loss_sum, x.dtype)
        return _to_scalar(_mean(loss_sum, total_weight), x.dtype)

    def backward(self, grad_out):
        grad = self.grad  # d(loss)/d(logits) for an upstream gradient of 1
        if self.reduction == "none":
            grad = grad * contiguous(grad_out, grad.dtype).reshape(-1, 1)
        elif grad_out is not _SCALAR_ONES.get(grad_out.dtype) and grad_out != 1:
            grad = grad * grad_out.astype(grad.dtype)
        return (grad if self.layout is None else self.layout.from_rows(grad),)


def cross_entropy(
    input: Tensor,
    target: TensorLike,
    weight: TensorLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy between logits ``input`` (N, C) and class indices ``target`` (N,),
    as torch.nn.functional.cross_entropy (class-probability targets are not supported).

    'mean' divides by the total weight of the non-ignored targets; ``label_smoothing``
    mixes the one-hot target with the uniform distribution, as in PyTorch.
    """
    if (
        weight is None
        and type(reduction) is str
        and reduction == "mean"
        and type(label_smoothing) in (float, int)
        and label_smoothing == 0
        and type(ignore_index) is int
        and ignore_index == -100
    ):
        out = _cross_entropy_rows(input, target)
        if out is not None:
            return out
    op = "cross_entropy"
    layout, targets, w = _class_args(op, input, target, weight, ignore_index, reduction)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"{op}: label_smoothing must be a float, got {label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    return CrossEntropy.apply(
        input,
        target=targets,
        weight=w,
        ignore_index=int(ignore_index),
        reduction=reduction,
        label_smoothing=float(label_smoothing),
        layout=layout,
    )


def _cross_entropy_rows(input, target):
    """The training loop's call, validated in a few checks: contiguous (N, C) float
    logits, (N,) int64 targets in range, default options. Anything else returns None,
    and cross_entropy's full validation runs (and names what is wrong)."""
    Tensor = tensor_cls()
    if type(input) is not Tensor or type(target) is not Tensor:
        return None
    x, t = input._data, target._data
    if (
        x.ndim != 2
        or t.ndim != 1
        or t.dtype != _INT64
        or x.shape[0] != t.shape[0]
        or x.dtype not in _FLOAT_DTYPES
        or not (x.flags.c_contiguous and t.flags.c_contiguous)
    ):
        return None
    if t.size and not _in_range(t, x.shape[1]):
        return None
    return CrossEntropy.apply(
        input, target=t, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, layout=None
    )


def _in_range(targets, n_classes):
    """Every one of the (non-empty) ``targets`` in [0, n_classes)."""
    # numpy's reductions cost microseconds of set-up; a batch's targets are few
    if targets.size <= 512:
        values = targets.tolist()
        return min(values) >= 0 and max(values) < n_classes
    return targets.min() >= 0 and targets.max() < n_classes


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.dtype(np.int64)  # compared as dtypes: no conversion from the type per call


# --------------------------------------------------------------------------- nll


class NLLLoss(Function):
    def forward(self, log_probs, target, weight, ignore_index, reduction, layout):
        rows = layout.to_rows(log_probs)
        losses = np.empty(rows.shape[0], log_probs.dtype)
        loss_sum, total_weight = kernels.nll_loss_forward(rows, target, weight, ignore_index, losses, get_num_threads())
        self.target, self.weight, self.ignore_index = target, weight, ignore_index
        self.reduction, self.layout, self.total_weight = reduction, layout, total_weight
        self.rows_shape, self.dtype = rows.shape, log_probs.dtype
        if reduction == "none":
            return losses.reshape(layout.target_shape)
        if reduction == "sum":
            return _to_scalar(loss_sum, log_probs.dtype)
        return _to_scalar(_mean(loss_sum, total_weight), log_probs.dtype)

    def backward(self, grad_out):
        n = self.rows_shape[0]
        if self.reduction == "none":
            grad_losses = contiguous(grad_out, self.dtype).reshape(n)
        else:
            g = float(grad_out)
            if self.reduction == "mean":
                g = _mean(g, self.total_weight)
            grad_losses = np.full(n, g, self.dtype)
        grad_input = np.empty(self.rows_shape, self.dtype)
        kernels.nll_loss_backward(
            self.target, self.weight, self.ignore_index, grad_losses, grad_input, get_num_threads()
        )
        return (self.layout.from_rows(grad_input),)


def nll_loss(
    input: Tensor,
    target: TensorLike,
    weight: TensorLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of class indices ``target`` (N,) under log-probabilities
    ``input`` (N, C), as torch.nn.functional.nll_loss."""
    layout, targets, w = _class_args("nll_loss", input, target, weight, ignore_index, reduction)
    return NLLLoss.apply(
        input, target=targets, weight=w, ignore_index=int(ignore_index), reduction=reduction, layout=layout
    )


# --------------------------------------------------------------------------- mse


class MSELoss(Function):
    def forward(self, x, y, reduction):
        x, y = contiguous(x), contiguous(y)
        diff = np.empty(x.shape, x.dtype)
        squares = np.empty(x.shape, x.dtype) if reduction == "none" else None
        total = kernels.mse_loss_forward(x, y, diff, squares, get_num_threads())
        self.diff, self.reduction = diff, reduction
        if reduction == "none":
            return squares
        if reduction == "sum":
            return _to_scalar(total, x.dtype)
        return _to_scalar(_mean(total, x.size), x.dtype)

    def backward(self, grad_out):
        diff = self.diff
        scale = 1.0 / diff.size if self.reduction == "mean" and diff.size else 1.0
        grad = np.empty(diff.shape, diff.dtype)
        kernels.mse_loss_backward(diff, contiguous(grad_out, diff.dtype), scale, grad, get_num_threads())
        return (grad if self.needs_input_grad[0] else None, -grad if self.needs_input_grad[1] else None)


def mse_loss(input: Tensor, target: TensorLike, reduction: str = "mean") -> Tensor:
    """Squared error (input - target)^2, averaged, summed or elementwise, as
    torch.nn.functional.mse_loss (input and target must have the same shape)."""
    _float_input("mse_loss", input)
    _check_reduction("mse_loss", reduction)
    target = _float_target("mse_loss", input, target)
    return MSELoss.apply(input, target, reduction=reduction)


# --------------------------------------------------------------------------- bce with logits


class BCEWithLogits(Function):
    def forward(self, x, y, weight, pos_weight, reduction):
        cols = x.shape[-1] if x.ndim else 1
        rows_shape = (x.size // cols if cols else math.prod(x.shape[:-1]), cols)
        xr, yr = contiguous(x).reshape(rows_shape), contiguous(y).reshape(rows_shape)
        wr = None if weight is None else contiguous(weight).reshape(rows_shape)
        scale = 1.0 / x.size if reduction == "mean" and x.size else 1.0
        losses = np.empty(rows_shape, x.dtype) if reduction == "none" else None
        grad = np.empty(rows_shape, x.dtype) if self.needs_input_grad[0] else None
        total = kernels.binary_cross_entropy_with_logits_forward(
            xr, yr, wr, pos_weight, scale, losses, grad, get_num_threads()
        )
        self.grad, self.reduction, self.shape, self.scale = grad, reduction, x.shape, scale
        self.dtype = x.dtype
        if self.needs_input_grad[1]:
            self.x, self.weight, self.pos_weight = x, weight, pos_weight
        if reduction == "none":
            return losses.reshape(x.shape)
        if reduction == "sum":
            return _to_scalar(total, x.dtype)
        return _to_scalar(_mean(total, x.size), x.dtype)

    def backward(self, grad_out):
        grad_out = contiguous(grad_out, self.dtype)
        grad_input = grad_target = None
        if self.needs_input_grad[0]:
            grad = self.grad.reshape(self.shape)  # already times 1/numel for 'mean'
            if self.reduction == "none" or grad_out != 1:
                grad = grad * grad_out.astype(grad.dtype)
            grad_input = grad
        if self.needs_input_grad[1]:
            # d(loss)/d(target) = w * ((pos_weight - 1) * softplus(-x) - x); rarely needed
            x = self.x
            d = -x + (np.logaddexp(0, -x) * (self.pos_weight - 1) if self.pos_weight is not None else 0)
            if self.weight is not None:
                d = d * self.weight
            grad_target = (d * (self.scale * grad_out)).astype(x.dtype).reshape(x.shape)
        return grad_input, grad_target


def _pos_weight_columns(op, pos_weight, shape, dtype):
    """pos_weight as a (C,) array for the last axis of ``shape``."""
    cols = shape[-1] if shape else 1
    arr = _aux_array(op, "pos_weight", pos_weight, dtype)
    lead = arr.shape[:-1] if arr.ndim else ()
    if arr.ndim > max(len(shape), 1) or any(n != 1 for n in lead) or (arr.ndim and arr.shape[-1] not in (1, cols)):
        raise ValueError(
            f"{op}: pos_weight of shape {arr.shape} must broadcast along the last "
            f"dimension of the input {tuple(shape)}: expected shape ({cols},) or (1,)"
        )
    return np.ascontiguousarray(np.broadcast_to(arr.reshape(-1), (cols,)))


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: TensorLike,
    weight: TensorLike | None = None,
    reduction: str = "mean",
    pos_weight: TensorLike | None = None,
) -> Tensor:
    """Binary cross-entropy of targets in [0, 1] under logits ``input`` (any shape), as
    torch.nn.functional.binary_cross_entropy_with_logits; stable for logits of any size.

    ``weight`` broadcasts to the input's shape; ``pos_weight`` weighs positive examples
    per class along the last dimension.
    """
    op = "binary_cross_entropy_with_logits"
    _float_input(op, input)
    _check_reduction(op, reduction)
    target = _float_target(op, input, target)
    w = _aux_array(op, "weight", weight, input.dtype)
    if w is not None:
        try:
            shape = np.broadcast_shapes(w.shape, input.shape)
        except ValueError:
            shape = None
        if shape != input.shape:
            raise ValueError(
                f"{op}: weight of shape {w.shape} does not broadcast to the input shape {tuple(input.shape)}"
            )
        w = np.ascontiguousarray(np.broadcast_to(w, input.shape))
    pw = None
    if pos_weight is not None:
        pw = _pos_weight_columns(op, pos_weight, input.shape, input.dtype)
    return BCEWithLogits.apply(input, target, weight=w, pos_weight=pw, reduction=reduction)
