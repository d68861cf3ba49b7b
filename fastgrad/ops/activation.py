"""Activations: relu, sigmoid, tanh, softmax, log_softmax."""
import numpy as np

from ..autograd import Function
from ._util import check_float, normalize_dims


class ReLU(Function):
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, grad):
        return (grad * self.mask,)


class Sigmoid(Function):
    def forward(self, x):
        # exp of a non-positive argument only: no overflow for large |x|
        e = np.exp(-np.abs(x))
        self.out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)
        return self.out

    def backward(self, grad):
        return (grad * self.out * (1 - self.out),)


class Tanh(Function):
    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    def backward(self, grad):
        return (grad * (1 - self.out * self.out),)


class LogSoftmax(Function):
    def forward(self, x, dim):
        shifted = x - x.max(axis=dim, keepdims=True)
        self.out = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
        self.dim = dim
        return self.out

    def backward(self, grad):
        return (grad - np.exp(self.out) * grad.sum(axis=self.dim, keepdims=True),)


class Softmax(Function):
    def forward(self, x, dim):
        e = np.exp(x - x.max(axis=dim, keepdims=True))
        self.out = e / e.sum(axis=dim, keepdims=True)
        self.dim = dim
        return self.out

    def backward(self, grad):
        out = self.out
        return (out * (grad - (grad * out).sum(axis=self.dim, keepdims=True)),)


def relu(x):
    check_float("relu", x)
    return ReLU.apply(x)


def sigmoid(x):
    check_float("sigmoid", x)
    return Sigmoid.apply(x)


def tanh(x):
    check_float("tanh", x)
    return Tanh.apply(x)


def softmax(x, dim):
    check_float("softmax", x)
    (d,) = normalize_dims("softmax", dim, x.ndim)
    return Softmax.apply(x, dim=d)


def log_softmax(x, dim):
    check_float("log_softmax", x)
    (d,) = normalize_dims("log_softmax", dim, x.ndim)
    return LogSoftmax.apply(x, dim=d)
