"""Matrix products with numpy's matmul semantics (1-D, 2-D and batched, broadcasting)."""

import numpy as np

from ..autograd import Function
from ._util import as_operands, check_float, unbroadcast


class MatMul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return np.matmul(a, b)

    def backward(self, grad):
        a, b = self.a, self.b
        if a.ndim == 1 and b.ndim == 1:  # a dot product
            return (grad * b if self.needs_input_grad[0] else None, grad * a if self.needs_input_grad[1] else None)
        # Promote 1-D operands to matrices as matmul does, then undo it on the way out.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = grad
        if a.ndim == 1:
            g = np.expand_dims(g, -2)
        if b.ndim == 1:
            g = np.expand_dims(g, -1)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = np.matmul(g, np.swapaxes(b2, -1, -2))
            ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        if self.needs_input_grad[1]:
            gb = np.matmul(np.swapaxes(a2, -1, -2), g)
            gb = unbroadcast(gb, b2.shape).reshape(b.shape)
        return ga, gb


def matmul(a, b):
    a, b = as_operands("matmul", a, b)
    check_float("matmul", a)
    sa, sb = a.shape, b.shape
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least one dimension, got shapes {sa} and {sb}")
    ka = sa[-1]
    kb = sb[0] if b.ndim == 1 else sb[-2]
    if ka != kb:
        raise ValueError(
            f"matmul: shapes {tuple(sa)} and {tuple(sb)} are not aligned ({ka} != {kb} in the contracted dimension)"
        )
    try:
        np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of {tuple(sa)} and {tuple(sb)} cannot be broadcast") from None
    return MatMul.apply(a, b)
