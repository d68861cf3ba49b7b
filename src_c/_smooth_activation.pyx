# Design: smooth activations (GELU, SiLU, ELU, Hardswish) and PReLU; the twin of
# fastgrad/reference/smooth_activation.py (same names, same signatures, same results up to
# float32 rounding: the reference computes in double, this file in the array's precision).
# - Elementwise kernels see their arrays as one flat C-contiguous buffer of any shape;
#   backward kernels read the forward INPUT and write the input gradient fresh.
# - PReLU sees x as (N, C, S), one slope per channel; its weight gradient is a sum per
#   channel accumulated in double, written fresh.
# - float32 uses plain-arithmetic exp (fast_exp.h), sigmoid, normal CDF (a Chebyshev fit
#   of erfc) and expm1, so the loops vectorize (libm's erff/tanhf/expm1f cost 30-70 ns per
#   call here); float64, the gradient-checking dtype, uses libm (erfc, exp, expm1). GELU's
#   tanh form is computed as x * sigmoid(2u), the same function as 0.5 x (1 + tanh(u)).
# - Comparisons, never fmin/fmax, so NaN propagates as in PyTorch.
# - Threads: elementwise work in BLOCK-sized chunks over a static prange, only when the
#   array is large enough to pay for a parallel region; each thread writes its own chunk.
#   PReLU's weight gradient is one serial pass (a per-channel reduction).

import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport erfc, exp, expm1, fabs

from _checks cimport check_alike, check_array, check_like, check_number, check_shape, check_threads

cnp.import_array()

__all__ = [
    "gelu_forward", "gelu_backward",
    "silu_forward", "silu_backward",
    "elu_forward", "elu_backward",
    "hardswish_forward", "hardswish_backward",
    "prelu_forward", "prelu_backward",
]

cdef extern from *:
    """
    #include "fast_exp.h"
    /* float32 math in plain arithmetic (libm's erff, tanhf and expm1f are opaque calls,
       30-70 ns each here, and block vectorization). */

    /* 1 / (1 + exp(-x)) with exp of -|x| only: no overflow for any x. */
    static inline float fg_sigmoid_f(float x) {
        float e = fg_exp_f(-fabsf(x));
        return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
    }
    /* erfc(z) for z >= 0 as t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), with the Chebyshev fit
       of Press et al. (Numerical Recipes, section 6.2): fractional error below 1.2e-7 for
       every z, so the normal CDF keeps its relative precision far into the tails. */
    static inline float fg_erfc_pos_f(float z) {
        float t = 1.0f / (1.0f + 0.5f * z);
        float p = 0.17087277f;
        p = p * t - 0.82215223f;
        p = p * t + 1.48851587f;
        p = p * t - 1.13520398f;
        p = p * t + 0.27886807f;
        p = p * t - 0.18628806f;
        p = p * t + 0.09678418f;
        p = p * t + 0.37409196f;
        p = p * t + 1.00002368f;
        p = p * t - 1.26551223f;
        return t * fg_exp_f(-z * z + p);
    }
    /* Phi(x), the standard normal CDF: 0.5 erfc(-x / sqrt 2). */
    static inline float fg_normal_cdf_f(float x) {
        float tail = 0.5f * fg_erfc_pos_f(fabsf(x) * 0.70710678f);
        return x >= 0.0f ? 1.0f - tail : tail;
    }
    /* exp(x) - 1: a Taylor polynomial where exp(x) - 1 would cancel (|x| < 0.25, error
       below 1e-8 relative), exp(x) - 1 elsewhere. */
    static inline float fg_expm1_f(float x) {
        float p = 1.0f / 720.0f;
        p = p * x + 1.0f / 120.0f;
        p = p * x + 1.0f / 24.0f;
        p = p * x + 1.0f / 6.0f;
        p = p * x + 0.5f;
        float small = x + x * x * p;
        float big = fg_exp_f(x) - 1.0f;
        return fabsf(x) < 0.25f ? small : big;
    }
    """
    float fg_exp_f(float x) nogil
    float fg_sigmoid_f(float x) nogil
    float fg_normal_cdf_f(float x) nogil
    float fg_expm1_f(float x) nogil


cdef enum:
    BLOCK = 16384
    OP_GELU = 0
    OP_GELU_TANH = 1
    OP_SILU = 2
    OP_ELU = 3
    OP_HARDSWISH = 4

cdef Py_ssize_t PARALLEL_MIN = 1 << 17

cdef double SQRT_HALF = 0.70710678118654752440
cdef double INV_SQRT_2PI = 0.39894228040143267794
cdef double TANH_K = 0.79788456080286535588   # sqrt(2 / pi)
cdef double TANH_C = 0.044715


# --------------------------------------------------------------------------- elementwise math

cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return fg_exp_f(x)
    else:
        return exp(x)


cdef inline floating _sigmoid(floating x) noexcept nogil:
    cdef double e
    if floating is float:
        return fg_sigmoid_f(x)
    else:
        e = exp(-fabs(x))  # exp of -|x| only: no overflow for any x
        return (1.0 if x >= 0 else e) / (1.0 + e)


cdef inline floating _normal_cdf(floating x) noexcept nogil:
    if floating is float:
        return fg_normal_cdf_f(x)
    else:
        return 0.5 * erfc(-x * SQRT_HALF)  # not 1 + erf(x): no cancellation in the left tail


cdef inline floating _expm1(floating x) noexcept nogil:
    if floating is float:
        return fg_expm1_f(x)
    else:
        return expm1(x)


cdef inline floating _tanh_inner(floating x) noexcept nogil:
    # 2u for GELU's tanh form, u = sqrt(2/pi) (x + 0.044715 x^3): 0.5 (1 + tanh(u)) = sigmoid(2u)
    return <floating>(2 * TANH_K) * (x + <floating>TANH_C * x * x * x)


cdef inline floating _value(int op, floating x, floating alpha) noexcept nogil:
    cdef floating c
    if op == OP_GELU:
        return x * _normal_cdf(x)
    if op == OP_GELU_TANH:
        return x * _sigmoid(_tanh_inner(x))
    if op == OP_SILU:
        return x * _sigmoid(x)
    if op == OP_ELU:
        return x if x > 0 else alpha * _expm1(x)
    c = x + <floating>3
    c = <floating>0 if c < 0 else c
    c = <floating>6 if c > 6 else c
    return x * c / <floating>6


cdef inline floating _slope_at(int op, floating x, floating alpha) noexcept nogil:
    cdef floating s, d
    if op == OP_GELU:
        return _normal_cdf(x) + x * <floating>INV_SQRT_2PI * _exp(<floating>-0.5 * x * x)
    if op == OP_GELU_TANH:
        # d/dx x s(2u) = s + x s (1 - s) 2u', 2u' = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        s = _sigmoid(_tanh_inner(x))
        d = s * (<floating>1 - s)
        if d == 0:
            # the sigmoid is flat to working precision (|x| past ~10): the second term is 0,
            # and computing it would overflow x * x to inf for |x| past ~1e19 in float32
            # (0 * inf = NaN); 0 * x keeps the NaN that +-inf gets, as the twin gives
            return s + <floating>0 * x
        return s + x * d * <floating>(2 * TANH_K) * (<floating>1 + <floating>(3 * TANH_C) * x * x)
    if op == OP_SILU:
        s = _sigmoid(x)
        return s * (<floating>1 + x * (<floating>1 - s))
    if op == OP_ELU:
        return <floating>1 if x > 0 else alpha * _exp(x)
    if x < -3:
        return 0
    if x <= 3:
        return x / <floating>3 + <floating>0.5
    return 1


cdef void _forward_span(int op, const floating *x, floating *y, Py_ssize_t n, floating alpha) noexcept nogil:
    cdef Py_ssize_t i
    # one loop per op with the op a constant, so each inlines to straight-line code
    if op == OP_GELU:
        for i in range(n):
            y[i] = _value(OP_GELU, x[i], alpha)
    elif op == OP_GELU_TANH:
        for i in range(n):
            y[i] = _value(OP_GELU_TANH, x[i], alpha)
    elif op == OP_SILU:
        for i in range(n):
            y[i] = _value(OP_SILU, x[i], alpha)
    elif op == OP_ELU:
        for i in range(n):
            y[i] = _value(OP_ELU, x[i], alpha)
    else:
        for i in range(n):
            y[i] = _value(OP_HARDSWISH, x[i], alpha)


cdef void _backward_span(int op, const floating *x, const floating *g, floating *gi, Py_ssize_t n,
                         floating alpha) noexcept nogil:
    cdef Py_ssize_t i
    if op == OP_GELU:
        for i in range(n):
            gi[i] = g[i] * _slope_at(OP_GELU, x[i], alpha)
    elif op == OP_GELU_TANH:
        for i in range(n):
            gi[i] = g[i] * _slope_at(OP_GELU_TANH, x[i], alpha)
    elif op == OP_SILU:
        for i in range(n):
            gi[i] = g[i] * _slope_at(OP_SILU, x[i], alpha)
    elif op == OP_ELU:
        for i in range(n):
            gi[i] = g[i] * _slope_at(OP_ELU, x[i], alpha)
    else:
        for i in range(n):
            gi[i] = g[i] * _slope_at(OP_HARDSWISH, x[i], alpha)


cdef void _forward(int op, const floating *x, floating *y, Py_ssize_t n, floating alpha,
                   int n_threads) noexcept nogil:
    cdef Py_ssize_t b, lo, blocks = (n + BLOCK - 1) // BLOCK
    if n_threads <= 1 or n < PARALLEL_MIN:
        _forward_span(op, x, y, n, alpha)
        return
    for b in prange(blocks, schedule="static", num_threads=n_threads):
        lo = b * BLOCK
        _forward_span(op, x + lo, y + lo, min(BLOCK, n - lo), alpha)


cdef void _backward(int op, const floating *x, const floating *g, floating *gi, Py_ssize_t n, floating alpha,
                    int n_threads) noexcept nogil:
    cdef Py_ssize_t b, lo, blocks = (n + BLOCK - 1) // BLOCK
    if n_threads <= 1 or n < PARALLEL_MIN:
        _backward_span(op, x, g, gi, n, alpha)
        return
    for b in prange(blocks, schedule="static", num_threads=n_threads):
        lo = b * BLOCK
        _backward_span(op, x + lo, g + lo, gi + lo, min(BLOCK, n - lo), alpha)


cdef _run_forward(str kernel, int op, x, out, double alpha, n_threads):
    cdef int t = check_alike(kernel, ("x", "out"), (x, out), 1, -1)
    cdef int nt = check_threads(kernel, n_threads)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef void *py = cnp.PyArray_DATA(<cnp.ndarray>out)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _forward(op, <const float *>px, <float *>py, n, <float>alpha, nt)
    else:
        with nogil:
            _forward(op, <const double *>px, <double *>py, n, alpha, nt)


cdef _run_backward(str kernel, int op, x, grad_out, grad_input, double alpha, n_threads):
    cdef int t = check_alike(kernel, ("x", "grad_out", "grad_input"), (x, grad_out, grad_input), 1, -1)
    cdef int nt = check_threads(kernel, n_threads)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef void *pg = cnp.PyArray_DATA(<cnp.ndarray>grad_out)
    cdef void *pgi = cnp.PyArray_DATA(<cnp.ndarray>grad_input)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _backward(op, <const float *>px, <const float *>pg, <float *>pgi, n, <float>alpha, nt)
    else:
        with nogil:
            _backward(op, <const double *>px, <const double *>pg, <double *>pgi, n, alpha, nt)


# --------------------------------------------------------------------------- public kernels

def gelu_forward(x, out, approximate, n_threads=1):
    """out = x * Phi(x) (Phi the normal CDF, with erf), or with approximate the tanh form
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    x: IN, float32/float64, C-contiguous, any shape. out: OUT, same shape and dtype, fresh.
    """
    _run_forward("gelu_forward", OP_GELU_TANH if approximate else OP_GELU, x, out, 0.0, n_threads)


def gelu_backward(x, grad_out, grad_input, approximate, n_threads=1):
    """grad_input = grad_out * d gelu(x) / dx (x: the forward INPUT); written fresh."""
    _run_backward("gelu_backward", OP_GELU_TANH if approximate else OP_GELU, x, grad_out, grad_input, 0.0,
                  n_threads)


def silu_forward(x, out, n_threads=1):
    """out = x * sigmoid(x). x: IN, any shape; out: OUT, same shape and dtype, fresh."""
    _run_forward("silu_forward", OP_SILU, x, out, 0.0, n_threads)


def silu_backward(x, grad_out, grad_input, n_threads=1):
    """grad_input = grad_out * s (1 + x (1 - s)), s = sigmoid(x) of the forward INPUT."""
    _run_backward("silu_backward", OP_SILU, x, grad_out, grad_input, 0.0, n_threads)


def elu_forward(x, out, alpha, n_threads=1):
    """out = x if x > 0 else alpha * (exp(x) - 1). x: IN, any shape; out: OUT, fresh."""
    a = check_number("elu_forward", "alpha", alpha, False)
    _run_forward("elu_forward", OP_ELU, x, out, a, n_threads)


def elu_backward(x, grad_out, grad_input, alpha, n_threads=1):
    """grad_input = grad_out if x > 0 else grad_out * alpha * exp(x) (x: the forward INPUT)."""
    a = check_number("elu_backward", "alpha", alpha, False)
    _run_backward("elu_backward", OP_ELU, x, grad_out, grad_input, a, n_threads)


def hardswish_forward(x, out, n_threads=1):
    """out = x * min(max(x + 3, 0), 6) / 6. x: IN, any shape; out: OUT, fresh."""
    _run_forward("hardswish_forward", OP_HARDSWISH, x, out, 0.0, n_threads)


def hardswish_backward(x, grad_out, grad_input, n_threads=1):
    """grad_input = 0 for x < -3, grad_out * (x / 3 + 0.5) for -3 <= x <= 3, grad_out above
    (PyTorch's choice at the two kinks)."""
    _run_backward("hardswish_backward", OP_HARDSWISH, x, grad_out, grad_input, 0.0, n_threads)


# --------------------------------------------------------------------------- PReLU

cdef void _prelu_forward(const floating *x, const floating *w, floating *y, Py_ssize_t n, Py_ssize_t c,
                         Py_ssize_t s) noexcept nogil:
    cdef Py_ssize_t i, ch, j
    cdef const floating *xp
    cdef floating *yp
    cdef floating slope, v
    for i in range(n):
        for ch in range(c):
            slope = w[ch]
            xp = x + (i * c + ch) * s
            yp = y + (i * c + ch) * s
            for j in range(s):
                v = xp[j]
                yp[j] = v if v > 0 else slope * v


cdef void _prelu_backward(const floating *x, const floating *w, const floating *g, floating *gi, floating *gw,
                          Py_ssize_t n, Py_ssize_t c, Py_ssize_t s) noexcept nogil:
    cdef Py_ssize_t i, ch, j
    cdef const floating *xp
    cdef const floating *gp
    cdef floating *gip
    cdef floating slope, v, gv
    cdef double acc
    for ch in range(c):
        slope = w[ch]
        acc = 0
        for i in range(n):
            xp = x + (i * c + ch) * s
            gp = g + (i * c + ch) * s
            gip = gi + (i * c + ch) * s
            for j in range(s):
                v = xp[j]
                gv = gp[j]  # read first: grad_input may be grad_out (or x) itself
                if v > 0:
                    gip[j] = gv
                else:
                    gip[j] = slope * gv
                    acc += <double>v * <double>gv
        gw[ch] = <floating>acc


def prelu_forward(x, weight, out, n_threads=1):
    """out[n, c, s] = x if x > 0 else weight[c] * x.

    x: IN, (N, C, S) float32/float64, C-contiguous. weight: IN, (C,), same dtype.
    out: OUT, like x, written fresh.
    """
    cdef str k = "prelu_forward"
    cdef int t = check_alike(k, ("x", "out"), (x, out), 1, 3)
    check_array(k, "weight", weight, -1, t, False)
    check_shape(k, "weight", weight, (x.shape[1],))
    check_threads(k, n_threads)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], s = x.shape[2]
    cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef void *pw = cnp.PyArray_DATA(<cnp.ndarray>weight)
    cdef void *py = cnp.PyArray_DATA(<cnp.ndarray>out)
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _prelu_forward(<const float *>px, <const float *>pw, <float *>py, n, c, s)
    else:
        with nogil:
            _prelu_forward(<const double *>px, <const double *>pw, <double *>py, n, c, s)


def prelu_backward(x, weight, grad_out, grad_input, grad_weight, n_threads=1):
    """grad_input = grad_out if x > 0 else weight[c] * grad_out; grad_weight[c] = the sum of
    x * grad_out over the elements of channel c with x <= 0 (summed in double).

    x, grad_out: IN, (N, C, S). weight: IN, (C,). grad_input: OUT, like x, fresh.
    grad_weight: OUT, like weight, fresh.
    """
    cdef str k = "prelu_backward"
    cdef int t = check_alike(k, ("x", "grad_out", "grad_input"), (x, grad_out, grad_input), 1, 3)
    check_array(k, "weight", weight, -1, t, False)
    check_shape(k, "weight", weight, (x.shape[1],))
    check_array(k, "grad_weight", grad_weight, -1, t, True)
    check_like(k, "grad_weight", grad_weight, "weight", weight)
    check_threads(k, n_threads)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], s = x.shape[2]
    cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef void *pw = cnp.PyArray_DATA(<cnp.ndarray>weight)
    cdef void *pg = cnp.PyArray_DATA(<cnp.ndarray>grad_out)
    cdef void *pgi = cnp.PyArray_DATA(<cnp.ndarray>grad_input)
    cdef void *pgw = cnp.PyArray_DATA(<cnp.ndarray>grad_weight)
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _prelu_backward(<const float *>px, <const float *>pw, <const float *>pg, <float *>pgi, <float *>pgw,
                            n, c, s)
    else:
        with nogil:
            _prelu_backward(<const double *>px, <const double *>pw, <const double *>pg, <double *>pgi,
                            <double *>pgw, n, c, s)
