"""Selection by a mask: ``where(condition, input, other)`` and ``Tensor.masked_fill``.

The gradient of each operand flows where the condition picks it (summed back over the
dimensions broadcasting stretched); the condition gets none."""

import numbers

import numpy as np

from ..autograd import Function
from ._util import as_operands, broadcast_shape, tensor_cls, unbroadcast


class Where(Function):
    def forward(self, a, b, condition):
        self.condition, self.a_shape, self.b_shape = condition, a.shape, b.shape
        return np.where(condition, a, b)

    def backward(self, grad):
        zero = np.zeros((), grad.dtype)
        ga = unbroadcast(np.where(self.condition, grad, zero), self.a_shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(np.where(self.condition, zero, grad), self.b_shape) if self.needs_input_grad[1] else None
        return ga, gb


def _condition(op, condition):
    data = getattr(condition, "_data", condition)
    data = np.asarray(data)
    if data.dtype != np.bool_:
        raise TypeError(f"{op}: the condition must be a bool tensor, got dtype {data.dtype}")
    return data


def where(condition, input=None, other=None):
    """``input`` where ``condition`` holds, else ``other`` (either may be a Python number);
    ``where(condition)`` alone gives the indices of the True elements, as torch.nonzero(as_tuple=True)."""
    Tensor = tensor_cls()
    cond = _condition("where", condition)
    if input is None and other is None:
        return tuple(Tensor._from_op(i.astype(np.int64), None) for i in np.nonzero(cond))
    if input is None or other is None:
        raise TypeError("where: give both input and other, or neither")
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        input = Tensor(input)
    a, b = as_operands("where", input, other)
    shape = np.broadcast_shapes(cond.shape, a.shape, b.shape)
    broadcast_shape("where", a, b)
    cond = np.broadcast_to(cond, shape)
    return Where.apply(a, b, condition=cond)


def masked_fill(input, mask, value):
    """``input`` with ``value`` wherever ``mask`` (a bool tensor broadcastable to it) is True."""
    Tensor = tensor_cls()
    cond = _condition("masked_fill", mask)
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise RuntimeError(
                f"masked_fill only supports a 0-dimensional value tensor, but got tensor with "
                f"{value.ndim} dimension(s)."
            )
        value = value.item()
    if not isinstance(value, (numbers.Number, np.number)):
        raise TypeError(f"masked_fill: value must be a number, got {type(value).__name__}")
    try:
        np.broadcast_shapes(cond.shape, input.shape)
    except ValueError:
        raise RuntimeError(
            f"masked_fill: the mask of shape {tuple(cond.shape)} cannot be broadcast to the input "
            f"of shape {tuple(input.shape)}"
        ) from None
    if np.broadcast_shapes(cond.shape, input.shape) != tuple(input.shape):
        raise RuntimeError(
            f"masked_fill: the mask of shape {tuple(cond.shape)} would enlarge the input of shape {tuple(input.shape)}"
        )
    fill = Tensor._from_op(np.asarray(value, dtype=input.dtype), None)
    return Where.apply(fill, input, condition=np.broadcast_to(cond, input.shape))
