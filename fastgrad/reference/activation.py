"""Activation kernels in pure Python: the twin of ``src_c/_activation.pyx``.

Elementwise kernels (relu, leaky_relu, sigmoid, tanh) see their arrays as one flat
buffer of any shape; softmax and log_softmax work row by row on a 2-D (rows, cols)
array, subtracting each row's maximum before exp. Backward kernels read the forward
output (relu, sigmoid, tanh, softmax, log_softmax) or input (leaky_relu) and write the
input gradient fresh. Loops run over Python floats; ``n_threads`` is accepted and ignored.
"""

import math

import numpy as np

from ._checks import check_alike, check_threads

__all__ = [
    "relu_forward",
    "relu_backward",
    "add_relu_forward",
    "leaky_relu_forward",
    "leaky_relu_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "tanh_forward",
    "tanh_backward",
    "softmax_forward",
    "softmax_backward",
    "log_softmax_forward",
    "log_softmax_backward",
]


# --------------------------------------------------------------------------- validation


def _slope(kernel, negative_slope):
    try:
        return float(negative_slope)
    except (TypeError, ValueError):
        raise TypeError(f"{kernel}: negative_slope must be a number, got {negative_slope!r}") from None


def _write(out, values):
    out.reshape(-1)[:] = values


# --------------------------------------------------------------------------- elementwise


def relu_forward(x, out, n_threads=1):
    """out = max(x, 0) elementwise (NaN propagates).

    x: IN, float32/float64, C-contiguous, any shape.
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    check_alike("relu_forward", ("x", "out"), (x, out), 1)
    check_threads("relu_forward", n_threads)
    result = []
    for v in x.reshape(-1).tolist():
        result.append(0.0 if v <= 0 else v)
    _write(out, result)


def relu_backward(out, grad_out, grad_input, n_threads=1):
    """grad_input = grad_out where the forward output is > 0, else 0.

    out: IN, the output of relu_forward. grad_out: IN, same shape and dtype.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    check_alike("relu_backward", ("out", "grad_out", "grad_input"), (out, grad_out, grad_input), 1)
    check_threads("relu_backward", n_threads)
    result = []
    for y, g in zip(out.reshape(-1).tolist(), grad_out.reshape(-1).tolist()):
        result.append(g if y > 0 else 0.0)
    _write(grad_input, result)


def add_relu_forward(a, b, out, n_threads=1):
    """out = max(a + b, 0) elementwise (NaN propagates): a sum and its ReLU in one pass.

    a, b: IN, float32/float64, C-contiguous, same shape and dtype.
    out: OUT, same shape and dtype, written fresh (may be a or b itself).
    """
    dtype = check_alike("add_relu_forward", ("a", "b", "out"), (a, b, out), 1)
    check_threads("add_relu_forward", n_threads)
    result = []
    for u, v in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist()):
        s = float(np.asarray(u + v, dtype))  # the sum rounded to the arrays' dtype first
        result.append(0.0 if s <= 0 else s)
    _write(out, result)


def leaky_relu_forward(x, out, negative_slope, n_threads=1):
    """out = x if x > 0 else negative_slope * x, elementwise.

    x: IN, float32/float64, C-contiguous, any shape.
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    slope = _slope("leaky_relu_forward", negative_slope)
    check_alike("leaky_relu_forward", ("x", "out"), (x, out), 1)
    check_threads("leaky_relu_forward", n_threads)
    if x.dtype == np.float32:  # the compiled kernel multiplies in float32
        slope = float(np.float32(slope))
    result = []
    for v in x.reshape(-1).tolist():
        result.append(v if v > 0 else v * slope)
    _write(out, result)


def leaky_relu_backward(x, grad_out, grad_input, negative_slope, n_threads=1):
    """grad_input = grad_out where the forward INPUT x > 0, else negative_slope * grad_out.

    x: IN, the input of leaky_relu_forward. grad_out: IN, same shape and dtype.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    slope = _slope("leaky_relu_backward", negative_slope)
    check_alike("leaky_relu_backward", ("x", "grad_out", "grad_input"), (x, grad_out, grad_input), 1)
    check_threads("leaky_relu_backward", n_threads)
    if x.dtype == np.float32:
        slope = float(np.float32(slope))
    result = []
    for v, g in zip(x.reshape(-1).tolist(), grad_out.reshape(-1).tolist()):
        result.append(g if v > 0 else g * slope)
    _write(grad_input, result)


def _sigmoid(v):
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)  # v < 0: exp cannot overflow
    return e / (1.0 + e)


def sigmoid_forward(x, out, n_threads=1):
    """out = 1 / (1 + exp(-x)), computed without overflow for any |x|.

    x: IN, float32/float64, C-contiguous, any shape.
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    check_alike("sigmoid_forward", ("x", "out"), (x, out), 1)
    check_threads("sigmoid_forward", n_threads)
    result = []
    for v in x.reshape(-1).tolist():
        result.append(_sigmoid(v))
    _write(out, result)


def sigmoid_backward(out, grad_out, grad_input, n_threads=1):
    """grad_input = grad_out * out * (1 - out).

    out: IN, the output of sigmoid_forward. grad_out: IN, same shape and dtype.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    check_alike("sigmoid_backward", ("out", "grad_out", "grad_input"), (out, grad_out, grad_input), 1)
    check_threads("sigmoid_backward", n_threads)
    result = []
    for y, g in zip(out.reshape(-1).tolist(), grad_out.reshape(-1).tolist()):
        result.append(g * (y * (1.0 - y)))
    _write(grad_input, result)


def tanh_forward(x, out, n_threads=1):
    """out = tanh(x).

    x: IN, float32/float64, C-contiguous, any shape.
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    check_alike("tanh_forward", ("x", "out"), (x, out), 1)
    check_threads("tanh_forward", n_threads)
    result = []
    for v in x.reshape(-1).tolist():
        result.append(math.tanh(v))
    _write(out, result)


def tanh_backward(out, grad_out, grad_input, n_threads=1):
    """grad_input = grad_out * (1 - out^2).

    out: IN, the output of tanh_forward. grad_out: IN, same shape and dtype.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    check_alike("tanh_backward", ("out", "grad_out", "grad_input"), (out, grad_out, grad_input), 1)
    check_threads("tanh_backward", n_threads)
    result = []
    for y, g in zip(out.reshape(-1).tolist(), grad_out.reshape(-1).tolist()):
        result.append(g * (1.0 - y * y))
    _write(grad_input, result)


# --------------------------------------------------------------------------- softmax rows


def _exp_shifted(row):
    """exp(v - max(row)) for each v: every exponent is <= 0, so nothing overflows."""
    m = row[0]
    for v in row:
        if v > m:
            m = v
    return m, [math.exp(v - m) for v in row]


def softmax_forward(x, out, n_threads=1):
    """out[r, :] = exp(x[r, :] - max) / sum(exp(x[r, :] - max)), row by row.

    x: IN, float32/float64, C-contiguous, shape (rows, cols).
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    check_alike("softmax_forward", ("x", "out"), (x, out), 1, ndim=2)
    check_threads("softmax_forward", n_threads)
    if x.size == 0:
        return
    result = []
    for row in x.tolist():
        _, e = _exp_shifted(row)
        total = 0.0
        for v in e:
            total += v
        inv = 1.0 / total
        result.append([v * inv for v in e])
    out[...] = result


def log_softmax_forward(x, out, n_threads=1):
    """out[r, :] = x[r, :] - max - log(sum(exp(x[r, :] - max))), row by row.

    x: IN, float32/float64, C-contiguous, shape (rows, cols).
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    check_alike("log_softmax_forward", ("x", "out"), (x, out), 1, ndim=2)
    check_threads("log_softmax_forward", n_threads)
    if x.size == 0:
        return
    result = []
    for row in x.tolist():
        m, e = _exp_shifted(row)
        total = 0.0
        for v in e:
            total += v
        log_total = math.log(total)
        result.append([(v - m) - log_total for v in row])
    out[...] = result


def softmax_backward(out, grad_out, grad_input, n_threads=1):
    """grad_input[r, :] = out[r, :] * (grad_out[r, :] - sum(grad_out[r, :] * out[r, :])).

    out: IN, the output of softmax_forward, shape (rows, cols). grad_out: IN, same shape.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    check_alike("softmax_backward", ("out", "grad_out", "grad_input"), (out, grad_out, grad_input), 1, ndim=2)
    check_threads("softmax_backward", n_threads)
    if out.size == 0:
        return
    result = []
    for y_row, g_row in zip(out.tolist(), grad_out.tolist()):
        dot = 0.0
        for y, g in zip(y_row, g_row):
            dot += g * y
        result.append([y * (g - dot) for y, g in zip(y_row, g_row)])
    grad_input[...] = result


def log_softmax_backward(out, grad_out, grad_input, n_threads=1):
    """grad_input[r, :] = grad_out[r, :] - exp(out[r, :]) * sum(grad_out[r, :]).

    out: IN, the output of log_softmax_forward, shape (rows, cols). grad_out: IN, same shape.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    check_alike("log_softmax_backward", ("out", "grad_out", "grad_input"), (out, grad_out, grad_input), 1, ndim=2)
    check_threads("log_softmax_backward", n_threads)
    if out.size == 0:
        return
    result = []
    for y_row, g_row in zip(out.tolist(), grad_out.tolist()):
        total = 0.0
        for g in g_row:
            total += g
        result.append([g - math.exp(y) * total for y, g in zip(y_row, g_row)])
    grad_input[...] = result
