"""Smooth activations in pure Python: the twin of ``src_c/_smooth_activation.pyx``.

GELU (exact, with erf, or the tanh approximation), SiLU, ELU and Hardswish are elementwise
on one flat buffer of any shape; PReLU sees its input as (N, C, S) with one slope per
channel. Backward kernels read the forward INPUT and write the input gradient fresh
(PReLU's weight gradient too). Values are computed in double on Python floats and stored
in the array's dtype; ``n_threads`` is accepted and ignored.
"""

import math

import numpy as np

from ._checks import check_alike, check_array, check_like, check_number, check_shape, check_threads

__all__ = [
    "gelu_forward",
    "gelu_backward",
    "silu_forward",
    "silu_backward",
    "elu_forward",
    "elu_backward",
    "hardswish_forward",
    "hardswish_backward",
    "prelu_forward",
    "prelu_backward",
]

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_K = math.sqrt(2.0 / math.pi)
_TANH_C = 0.044715


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _sigmoid(x):
    if x != x:
        return x
    e = _exp(-abs(x))
    return (1.0 if x >= 0 else e) / (1.0 + e)


def _map(kernel, x, out, fn, n_threads):
    check_alike(kernel, ("x", "out"), (x, out), 1)
    check_threads(kernel, n_threads)
    out.reshape(-1)[:] = [fn(v) for v in x.reshape(-1).tolist()]


def _map_backward(kernel, x, grad_out, grad_input, fn, n_threads):
    check_alike(kernel, ("x", "grad_out", "grad_input"), (x, grad_out, grad_input), 1)
    check_threads(kernel, n_threads)
    grad_input.reshape(-1)[:] = [g * fn(v) for v, g in zip(x.reshape(-1).tolist(), grad_out.reshape(-1).tolist())]


# --------------------------------------------------------------------------- GELU


def _tanh_inner(v):
    # 2u for the tanh form, u = sqrt(2/pi) (v + 0.044715 v^3): 0.5 (1 + tanh(u)) = sigmoid(2u),
    # which keeps the left tail that 1 + tanh(u) rounds to 0
    return 2.0 * _TANH_K * (v + _TANH_C * v * v * v)


def _gelu(v, approximate):
    if approximate:
        return v * _sigmoid(_tanh_inner(v))
    return v * 0.5 * math.erfc(-v * _SQRT_HALF)  # Phi(v) without cancellation in the left tail


def _gelu_grad(v, approximate):
    if approximate:
        # d/dx x s(2u) = s + x s (1 - s) 2u'; s (1 - s) keeps the left tail's tiny slope
        # that 1 - tanh(u)^2 rounds to 0
        s = _sigmoid(_tanh_inner(v))
        d = s * (1.0 - s)
        if d == 0:  # flat to working precision; 0 * v keeps +-inf's NaN
            return s + 0.0 * v
        return s + v * d * 2.0 * _TANH_K * (1.0 + 3.0 * _TANH_C * v * v)
    return 0.5 * math.erfc(-v * _SQRT_HALF) + v * _INV_SQRT_2PI * _exp(-0.5 * v * v)


def gelu_forward(x, out, approximate, n_threads=1):
    """out = x * Phi(x) (Phi the normal CDF, with erf), or with approximate the tanh form
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    x: IN, float32/float64, C-contiguous, any shape. out: OUT, same shape and dtype, fresh.
    """
    _map("gelu_forward", x, out, lambda v: _gelu(v, bool(approximate)), n_threads)


def gelu_backward(x, grad_out, grad_input, approximate, n_threads=1):
    """grad_input = grad_out * d gelu(x) / dx (x: the forward INPUT); written fresh."""
    _map_backward("gelu_backward", x, grad_out, grad_input, lambda v: _gelu_grad(v, bool(approximate)), n_threads)


# --------------------------------------------------------------------------- SiLU


def silu_forward(x, out, n_threads=1):
    """out = x * sigmoid(x). x: IN, any shape; out: OUT, same shape and dtype, fresh."""
    _map("silu_forward", x, out, lambda v: v * _sigmoid(v), n_threads)


def silu_backward(x, grad_out, grad_input, n_threads=1):
    """grad_input = grad_out * s (1 + x (1 - s)), s = sigmoid(x) of the forward INPUT."""

    def grad(v):
        s = _sigmoid(v)
        return s * (1.0 + v * (1.0 - s))

    _map_backward("silu_backward", x, grad_out, grad_input, grad, n_threads)


# --------------------------------------------------------------------------- ELU


def _in_dtype_of(x, value):
    """``value`` rounded to x's dtype, as the compiled kernels use it (in float32 a tiny
    alpha is 0, and 0 * inf is NaN)."""
    if isinstance(x, np.ndarray) and x.dtype == np.float32:
        return float(np.float32(value))
    return value


def _expm1(v):
    try:
        return math.expm1(v)
    except OverflowError:
        return math.inf


def elu_forward(x, out, alpha, n_threads=1):
    """out = x if x > 0 else alpha * (exp(x) - 1). x: IN, any shape; out: OUT, fresh."""
    a = _in_dtype_of(x, check_number("elu_forward", "alpha", alpha))
    _map("elu_forward", x, out, lambda v: v if v > 0 else a * _expm1(v), n_threads)


def elu_backward(x, grad_out, grad_input, alpha, n_threads=1):
    """grad_input = grad_out if x > 0 else grad_out * alpha * exp(x) (x: the forward INPUT)."""
    a = _in_dtype_of(x, check_number("elu_backward", "alpha", alpha))
    _map_backward("elu_backward", x, grad_out, grad_input, lambda v: 1.0 if v > 0 else a * _exp(v), n_threads)


# --------------------------------------------------------------------------- Hardswish


def _hardswish(v):
    c = v + 3.0
    c = 0.0 if c < 0.0 else c  # comparisons, not min/max: NaN stays NaN
    c = 6.0 if c > 6.0 else c
    return v * c / 6.0


def hardswish_forward(x, out, n_threads=1):
    """out = x * min(max(x + 3, 0), 6) / 6. x: IN, any shape; out: OUT, fresh."""
    _map("hardswish_forward", x, out, _hardswish, n_threads)


def hardswish_backward(x, grad_out, grad_input, n_threads=1):
    """grad_input = 0 for x < -3, grad_out * (x / 3 + 0.5) for -3 <= x <= 3, grad_out above
    (PyTorch's choice at the two kinks)."""

    def grad(v):
        if v < -3.0:
            return 0.0
        if v <= 3.0:
            return v / 3.0 + 0.5
        return 1.0

    _map_backward("hardswish_backward", x, grad_out, grad_input, grad, n_threads)


# --------------------------------------------------------------------------- PReLU


def prelu_forward(x, weight, out, n_threads=1):
    """out[n, c, s] = x if x > 0 else weight[c] * x.

    x: IN, (N, C, S) float32/float64, C-contiguous. weight: IN, (C,), same dtype.
    out: OUT, like x, written fresh.
    """
    k = "prelu_forward"
    dtype = check_alike(k, ("x", "out"), (x, out), 1, ndim=3)
    check_array(k, "weight", weight, None, dtype)
    check_shape(k, "weight", weight, (x.shape[1],))
    check_threads(k, n_threads)
    n, c, s = x.shape
    w = weight.tolist()
    xs = x.reshape(-1).tolist()
    res = []
    for i, v in enumerate(xs):
        res.append(v if v > 0 else w[(i // s) % c] * v)
    out.reshape(-1)[:] = res


def prelu_backward(x, weight, grad_out, grad_input, grad_weight, n_threads=1):
    """grad_input = grad_out if x > 0 else weight[c] * grad_out; grad_weight[c] = the sum of
    x * grad_out over the elements of channel c with x <= 0 (summed in double).

    x, grad_out: IN, (N, C, S). weight: IN, (C,). grad_input: OUT, like x, fresh.
    grad_weight: OUT, like weight, fresh.
    """
    k = "prelu_backward"
    dtype = check_alike(k, ("x", "grad_out", "grad_input"), (x, grad_out, grad_input), 1, ndim=3)
    check_array(k, "weight", weight, None, dtype)
    check_shape(k, "weight", weight, (x.shape[1],))
    check_array(k, "grad_weight", grad_weight, None, dtype, output=True)
    check_like(k, "grad_weight", grad_weight, "weight", weight)
    check_threads(k, n_threads)
    n, c, s = x.shape
    w = weight.tolist()
    xs, gs = x.reshape(-1).tolist(), grad_out.reshape(-1).tolist()
    gi = []
    gw = [0.0] * c
    for i, (v, g) in enumerate(zip(xs, gs)):
        ch = (i // s) % c
        if v > 0:
            gi.append(g)
        else:
            gi.append(w[ch] * g)
            gw[ch] += v * g
    grad_input.reshape(-1)[:] = gi
    grad_weight[:] = gw
