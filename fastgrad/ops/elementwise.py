"""Elementwise arithmetic with numpy broadcasting; each backward reduces its gradient to
the shape of its input (``unbroadcast``)."""

import numpy as np

from ..autograd import Function
from . import buffer_pool
from ._util import as_operands, broadcast_shape, check_float, tensor_cls, unbroadcast


def _same_shape_out(a, b):
    """A pooled output array for ``a (op) b`` when no broadcasting or casting happens
    (the common case: a residual add, a dropout mask), else None (numpy allocates)."""
    if a.shape == b.shape and a.dtype == b.dtype and a.dtype.kind == "f":
        return buffer_pool.empty(a.shape, a.dtype)
    return None


class Add(Function):
    # a compiled plan runs an Add whose output only a ReLU reads as activation.AddReLU
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return np.add(a, b, out=_same_shape_out(a, b))

    def backward(self, grad):
        sa, sb = self.shapes
        return unbroadcast(grad, sa), unbroadcast(grad, sb)


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, grad):
        sa, sb = self.shapes
        return (
            unbroadcast(grad, sa) if self.needs_input_grad[0] else None,
            unbroadcast(-grad, sb) if self.needs_input_grad[1] else None,
        )


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return np.multiply(a, b, out=_same_shape_out(a, b))

    def backward(self, grad):
        a, b = self.a, self.b
        return (
            unbroadcast(grad * b, a.shape) if self.needs_input_grad[0] else None,
            unbroadcast(grad * a, b.shape) if self.needs_input_grad[1] else None,
        )


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        a, b = self.a, self.b
        ga = unbroadcast(grad / b, a.shape) if self.needs_input_grad[0] else None
        gb = unbroadcast(-grad * a / (b * b), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Pow(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = np.power(a, b)
        return self.out

    def backward(self, grad):
        a, b = self.a, self.b
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = unbroadcast(grad * b * np.power(a, b - 1), a.shape)
        if self.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_a = np.where(a > 0, np.log(np.where(a > 0, a, 1)), 0).astype(a.dtype)
            gb = unbroadcast(grad * self.out * log_a, b.shape)
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return (-grad,)


class Exp(Function):
    def forward(self, a):
        self.out = np.exp(a)
        return self.out

    def backward(self, grad):
        return (grad * self.out,)


class Log(Function):
    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, grad):
        return (grad / self.a,)


class Sqrt(Function):
    def forward(self, a):
        self.out = np.sqrt(a)
        return self.out

    def backward(self, grad):
        return (grad / (2 * self.out),)


class Abs(Function):
    def forward(self, a):
        self.a = a
        return np.abs(a)

    def backward(self, grad):
        return (grad * np.sign(self.a),)


class Clamp(Function):
    def forward(self, a, low=None, high=None):
        self.a, self.low, self.high = a, low, high
        return np.clip(a, low, high)

    def backward(self, grad):
        a = self.a
        keep = np.ones(a.shape, dtype=bool)
        if self.low is not None:
            keep &= a >= self.low
        if self.high is not None:
            keep &= a <= self.high
        return (grad * keep,)


class Clone(Function):
    def forward(self, a):
        return a.copy()

    def backward(self, grad):
        return (grad,)


class Cast(Function):
    def forward(self, a, dtype):
        self.src = a.dtype
        return a.astype(dtype)

    def backward(self, grad):
        return (grad.astype(self.src),)


def _binary(fn, name, a, b):
    a, b = as_operands(name, a, b)
    broadcast_shape(name, a, b)
    return fn.apply(a, b)


def add(a, b):
    return _binary(Add, "add", a, b)


def sub(a, b):
    return _binary(Sub, "sub", a, b)


def mul(a, b):
    return _binary(Mul, "mul", a, b)


def div(a, b):
    a, b = as_operands("div", a, b)
    broadcast_shape("div", a, b)
    if a.data.dtype.kind != "f":  # true division of integers gives floats, as in PyTorch
        T = tensor_cls()
        a, b = T._from_op(a.data.astype(np.float32), None), T._from_op(b.data.astype(np.float32), None)
    return Div.apply(a, b)


def pow(a, b):
    return _binary(Pow, "pow", a, b)


def _unary_float(fn, name, a):
    check_float(name, a)
    return fn.apply(a)


def neg(a):
    return Neg.apply(a)


def exp(a):
    return _unary_float(Exp, "exp", a)


def log(a):
    return _unary_float(Log, "log", a)


def sqrt(a):
    return _unary_float(Sqrt, "sqrt", a)


def abs(a):
    return Abs.apply(a)


def clamp(a, min=None, max=None):
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return Clamp.apply(a, low=min, high=max)


def clone(a):
    return Clone.apply(a)


def cast(a, dtype):
    if dtype == a.data.dtype:
        return a
    if dtype.kind != "f" or a.data.dtype.kind != "f":
        return tensor_cls()._from_op(a.data.astype(dtype), None)  # no gradient through int/bool
    return Cast.apply(a, dtype=dtype)
