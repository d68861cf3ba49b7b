# Design: activation kernels; the twin of fastgrad/reference/activation.py (same names,
# same signatures, same results).
# - Elementwise kernels (relu, leaky_relu, sigmoid, tanh) see their arrays as one flat,
#   C-contiguous buffer: any shape is accepted as long as every array has the same shape.
#   Backward kernels read what forward saved: relu/sigmoid/tanh the forward OUTPUT (no
#   extra pass to rebuild a mask), leaky_relu the input (a negative slope flips signs).
# - softmax/log_softmax work on the last axis of a 2-D (rows, cols) array; the ops layer
#   moves the softmax dim there. Each row subtracts its maximum before exp, so logits of
#   any finite magnitude give finite results; row sums accumulate in double.
# - Speed: loops are branch-free (selects, not ifs) so gcc vectorizes them; libm's expf is
#   an opaque call that blocks vectorization, so float32 uses fg_exp_f (fast_exp.h), written in
#   plain arithmetic. float64 uses libm (the gradient-checking dtype, not the fast one).
#   Row maxima and sums keep partial results in lanes (gcc does not vectorize a reduction
#   into one scalar without -ffast-math).
# - Every output may be the input array itself (each element is read before it is written
#   at the same index); other overlaps are not supported.
# - Threads: elementwise work is cut into BLOCK-sized chunks, softmax into rows, handed out
#   with a static prange only when the work pays for a parallel region (~50 us). Each
#   thread writes only its own chunk or rows.

import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, fabs, log, tanh

from _checks cimport check_alike, check_threads

cnp.import_array()

# the fastest code of this module is AVX2+FMA: an AVX-512 CPU runs that (_simd_level says so)
SIMD_KERNELS_TOP = 1
include "_simd.pxi"

__all__ = [
    "relu_forward", "relu_backward", "add_relu_forward",
    "leaky_relu_forward", "leaky_relu_backward",
    "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "softmax_forward", "softmax_backward",
    "log_softmax_forward", "log_softmax_backward",
]

cdef extern from *:
    """
    #include "fast_exp.h"
    /* 1 / (1 + exp(-x)) with exp of -|x| only: no overflow for any x. */
    static inline float fg_sigmoid_f(float x) {
        float e = fg_exp_f(-fabsf(x));
        return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
    }
    /* tanh(x): x + x^3 t(x^2) for |x| < 0.625 (t a least-squares fit; the exp form would
       lose relative precision to cancellation there), else sign(x) (1 - e) / (1 + e) with
       e = exp(-2|x|). */
    static inline float fg_tanh_f(float x) {
        float a = fabsf(x), z = x * x;
        float e = fg_exp_f(-2.0f * a);
        float big = copysignf((1.0f - e) / (1.0f + e), x);
        float t = -6.15426525e-3f;
        t = t * z + 2.10448988e-2f;
        t = t * z - 5.38636968e-2f;
        t = t * z + 1.33328885e-1f;
        t = t * z - 3.33333313e-1f;
        float small = x + x * z * t;
        return a < 0.625f ? small : big;
    }
    """
    float fg_exp_f(float x) noexcept nogil
    float fg_sigmoid_f(float x) noexcept nogil
    float fg_tanh_f(float x) noexcept nogil

# relu's two loops are pure memory streams; written in C so that baseline x86-64 builds
# also carry an AVX2 copy, run when the selected SIMD level has it (cpu_features.h;
# about 10% faster when the arrays sit in L2). Same selects as the generic loops, so the
# same bits. No restrict: the output may be an input.
cdef extern from *:
    """
    #include <stddef.h>
    #include "cpu_features.h"
    #define FG_ACT_RELU(T, SUF)                                                          \
    static inline __attribute__((always_inline)) void                                    \
    fg_relu_forward_##SUF##_body(const T *x, T *y, ptrdiff_t n)                          \
    {                                                                                    \
        for (ptrdiff_t i = 0; i < n; i++) {                                              \
            const T v = x[i];                                                            \
            y[i] = v <= 0 ? (T)0 : v;  /* NaN stays NaN */                               \
        }                                                                                \
    }                                                                                    \
    FG_SIMD_CLONE_VOID(fg_relu_forward_##SUF, (const T *x, T *y, ptrdiff_t n), (x, y, n)) \
    static inline __attribute__((always_inline)) void                                    \
    fg_relu_backward_##SUF##_body(const T *out, const T *g, T *gi, ptrdiff_t n)          \
    {                                                                                    \
        for (ptrdiff_t i = 0; i < n; i++) {                                              \
            const T s = out[i], gv = g[i];                                               \
            gi[i] = s > 0 ? gv : (T)0;                                                   \
        }                                                                                \
    }                                                                                    \
    FG_SIMD_CLONE_VOID(fg_relu_backward_##SUF, (const T *out, const T *g, T *gi, ptrdiff_t n), \
                       (out, g, gi, n))                                                  \
    static inline __attribute__((always_inline)) void                                    \
    fg_add_relu_forward_##SUF##_body(const T *a, const T *b, T *y, ptrdiff_t n)          \
    {                                                                                    \
        for (ptrdiff_t i = 0; i < n; i++) {                                              \
            const T v = a[i] + b[i];  /* the sum numpy's add makes, then relu's select */ \
            y[i] = v <= 0 ? (T)0 : v;                                                    \
        }                                                                                \
    }                                                                                    \
    FG_SIMD_CLONE_VOID(fg_add_relu_forward_##SUF, (const T *a, const T *b, T *y, ptrdiff_t n), \
                       (a, b, y, n))
    FG_ACT_RELU(float, f32)
    FG_ACT_RELU(double, f64)
    """
    void fg_relu_forward_f32(const float *x, float *y, Py_ssize_t n) noexcept nogil
    void fg_relu_forward_f64(const double *x, double *y, Py_ssize_t n) noexcept nogil
    void fg_relu_backward_f32(const float *out, const float *g, float *gi,
                              Py_ssize_t n) noexcept nogil
    void fg_relu_backward_f64(const double *out, const double *g, double *gi,
                              Py_ssize_t n) noexcept nogil
    void fg_add_relu_forward_f32(const float *a, const float *b, float *y,
                                 Py_ssize_t n) noexcept nogil
    void fg_add_relu_forward_f64(const double *a, const double *b, double *y,
                                 Py_ssize_t n) noexcept nogil

cdef enum:
    OP_RELU
    OP_ADD_RELU  # relu(x + x2): the one binary op
    OP_LEAKY_RELU
    OP_SIGMOID
    OP_TANH

cdef Py_ssize_t BLOCK = 8192
# Below these element counts a parallel region costs more than it saves: relu is a memory
# stream (~0.1 ns/element), sigmoid/tanh/softmax cost ~1 ns/element in float32 and ~5-10 ns
# in float64 (scalar libm calls).
cdef Py_ssize_t PARALLEL_MIN_CHEAP = 1 << 18
cdef Py_ssize_t PARALLEL_MIN_EXP = 1 << 15


# --------------------------------------------------------------------------- scalar math

cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return fg_exp_f(v)
    else:
        return exp(v)


cdef inline floating _sigmoid(floating v) noexcept nogil:
    # exp of a non-positive argument only: no overflow for large |v|
    cdef double e
    if floating is float:
        return fg_sigmoid_f(v)
    else:
        e = exp(-fabs(v))
        return (1 if v >= 0 else e) / (1 + e)


cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return fg_tanh_f(v)
    else:
        return tanh(v)


# --------------------------------------------------------------------------- elementwise

cdef void _forward_block(int op, const floating *x, const floating *x2, floating *y,
                         Py_ssize_t n, floating slope) noexcept nogil:
    # x2: the second operand of OP_ADD_RELU (NULL for the others)
    cdef Py_ssize_t i
    cdef floating v
    if op == OP_RELU:  # y = 0 if x <= 0 else x: NaN stays NaN, as in PyTorch
        if floating is float:
            fg_relu_forward_f32(x, y, n)
        else:
            fg_relu_forward_f64(x, y, n)
    elif op == OP_ADD_RELU:
        if floating is float:
            fg_add_relu_forward_f32(x, x2, y, n)
        else:
            fg_add_relu_forward_f64(x, x2, y, n)
    elif op == OP_LEAKY_RELU:
        for i in range(n):
            v = x[i]
            y[i] = v if v > 0 else v * slope
    elif op == OP_SIGMOID:
        for i in range(n):
            y[i] = _sigmoid(x[i])
    else:
        for i in range(n):
            y[i] = _tanh(x[i])


cdef void _backward_block(int op, const floating *saved, const floating *g, floating *gi,
                          Py_ssize_t n, floating slope) noexcept nogil:
    # Both operands are loaded before the select: a load inside one arm of a conditional
    # cannot be if-converted, and the loop would stay scalar and branchy.
    cdef Py_ssize_t i
    cdef floating s, gv
    if op == OP_RELU:           # saved: forward output; gi = g if out > 0 else 0
        if floating is float:
            fg_relu_backward_f32(saved, g, gi, n)
        else:
            fg_relu_backward_f64(saved, g, gi, n)
    elif op == OP_LEAKY_RELU:   # saved: forward input
        for i in range(n):
            s, gv = saved[i], g[i]
            gi[i] = gv if s > 0 else gv * slope
    elif op == OP_SIGMOID:      # saved: forward output y, dy/dx = y (1 - y)
        for i in range(n):
            s = saved[i]
            gi[i] = g[i] * (s * (1 - s))
    else:                       # saved: forward output y, dy/dx = 1 - y^2
        for i in range(n):      # in double: 1 - y^2 cancels as |y| -> 1
            s = saved[i]
            gi[i] = <floating>(g[i] * (1 - <double>s * s))


cdef inline Py_ssize_t _parallel_min(int op) noexcept nogil:
    if op == OP_RELU or op == OP_ADD_RELU or op == OP_LEAKY_RELU:
        return PARALLEL_MIN_CHEAP
    return PARALLEL_MIN_EXP


cdef void _forward(int op, const floating *x, const floating *x2, floating *y, Py_ssize_t n,
                   floating slope, int n_threads) noexcept nogil:
    cdef Py_ssize_t b, start, nblocks
    if n_threads <= 1 or n < _parallel_min(op):
        _forward_block(op, x, x2, y, n, slope)
        return
    nblocks = (n + BLOCK - 1) // BLOCK
    for b in prange(nblocks, schedule="static", num_threads=n_threads):
        start = b * BLOCK
        _forward_block(op, x + start, (x2 + start) if x2 != NULL else NULL, y + start,
                       min(BLOCK, n - start), slope)


cdef void _backward(int op, const floating *saved, const floating *g, floating *gi,
                    Py_ssize_t n, floating slope, int n_threads) noexcept nogil:
    cdef Py_ssize_t b, start, nblocks
    if n_threads <= 1 or n < _parallel_min(op):
        _backward_block(op, saved, g, gi, n, slope)
        return
    nblocks = (n + BLOCK - 1) // BLOCK
    for b in prange(nblocks, schedule="static", num_threads=n_threads):
        start = b * BLOCK
        _backward_block(op, saved + start, g + start, gi + start, min(BLOCK, n - start), slope)


# --------------------------------------------------------------------------- softmax rows

cdef enum:
    CHUNK = 64  # exps computed into a stack buffer this long, then summed


# Row reductions keep LANES independent partial results (array slots, not a loop-carried
# scalar), which gcc maps onto vector registers; a plain running max or sum would stay
# scalar, one element per add latency.
from _rowmath cimport LANES, _row_max, _sum




cdef double _dot(const floating *a, const floating *b, Py_ssize_t n) noexcept nogil:
    cdef double part[LANES]
    cdef double total = 0
    cdef Py_ssize_t j = 0, k
    for k in range(LANES):
        part[k] = 0
    while j + LANES <= n:
        for k in range(LANES):
            part[k] += <double>a[j + k] * b[j + k]
        j += LANES
    while j < n:
        total += <double>a[j] * b[j]
        j += 1
    for k in range(LANES):
        total += part[k]
    return total


cdef double _sum_exp_shifted(const floating *x, floating m, Py_ssize_t n) noexcept nogil:
    """sum_j exp(x[j] - m) without writing anywhere but a stack buffer."""
    cdef floating buf[CHUNK]
    cdef Py_ssize_t start = 0, j, k
    cdef double total = 0
    while start < n:
        k = min(<Py_ssize_t>CHUNK, n - start)
        for j in range(k):
            buf[j] = _exp(x[start + j] - m)
        total += _sum(buf, k)
        start += k
    return total


cdef void _softmax_row(const floating *x, floating *y, Py_ssize_t cols, bint log_out) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating m = _row_max(x, cols)
    cdef double inv, log_total
    if log_out:
        log_total = log(_sum_exp_shifted(x, m, cols))
        for j in range(cols):
            y[j] = <floating>((<double>x[j] - m) - log_total)
    else:
        for j in range(cols):
            y[j] = _exp(x[j] - m)  # x[j] is read before y[j] is written: y may be x
        inv = 1 / _sum(y, cols)
        for j in range(cols):
            y[j] = <floating>(y[j] * inv)


cdef void _softmax_backward_row(const floating *y, const floating *g, floating *gi,
                                Py_ssize_t cols, bint log_out) noexcept nogil:
    # softmax:     gi = y * (g - sum(g * y))
    # log_softmax: gi = g - exp(y) * sum(g)
    cdef Py_ssize_t j
    cdef double total
    if log_out:
        total = _sum(g, cols)
        for j in range(cols):
            gi[j] = <floating>(g[j] - _exp(y[j]) * total)
    else:
        total = _dot(g, y, cols)
        for j in range(cols):
            gi[j] = <floating>(y[j] * (g[j] - total))


cdef void _softmax(const floating *x, floating *y, Py_ssize_t rows, Py_ssize_t cols,
                   bint log_out, int n_threads) noexcept nogil:
    cdef Py_ssize_t r
    if n_threads <= 1 or rows < 2 or rows * cols < PARALLEL_MIN_EXP:
        for r in range(rows):
            _softmax_row(x + r * cols, y + r * cols, cols, log_out)
        return
    for r in prange(rows, schedule="static", num_threads=n_threads):
        _softmax_row(x + r * cols, y + r * cols, cols, log_out)


cdef void _softmax_backward(const floating *y, const floating *g, floating *gi, Py_ssize_t rows,
                            Py_ssize_t cols, bint log_out, int n_threads) noexcept nogil:
    cdef Py_ssize_t r
    if n_threads <= 1 or rows < 2 or rows * cols < PARALLEL_MIN_EXP:
        for r in range(rows):
            _softmax_backward_row(y + r * cols, g + r * cols, gi + r * cols, cols, log_out)
        return
    for r in prange(rows, schedule="static", num_threads=n_threads):
        _softmax_backward_row(y + r * cols, g + r * cols, gi + r * cols, cols, log_out)


# --------------------------------------------------------------------------- validation

cdef inline int _threads(str kernel, object n_threads) except -1:
    return check_threads(kernel, n_threads)


cdef void *_ptr(cnp.ndarray a) noexcept:
    return cnp.PyArray_DATA(a)


cdef _run_forward(str kernel, int op, x, out, double slope, n_threads,
                  tuple names=("x", "out"), x2=None):
    # x2: OP_ADD_RELU's second operand, checked like x (names then has three entries)
    cdef int t = check_alike(kernel, names, (x, out) if x2 is None else (x, x2, out), 1, -1)
    cdef int nt = _threads(kernel, n_threads)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef void *px = _ptr(x)
    cdef void *px2 = NULL if x2 is None else _ptr(x2)
    cdef void *py = _ptr(out)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _forward(op, <const float *>px, <const float *>px2, <float *>py, n, <float>slope, nt)
    else:
        with nogil:
            _forward(op, <const double *>px, <const double *>px2, <double *>py, n, slope, nt)


cdef _run_backward(str kernel, str saved_name, int op, saved, grad_out, grad_input,
                   double slope, n_threads):
    cdef int t = check_alike(kernel, (saved_name, "grad_out", "grad_input"),
                          (saved, grad_out, grad_input), 1, -1)
    cdef int nt = _threads(kernel, n_threads)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>saved)
    cdef void *ps = _ptr(saved)
    cdef void *pg = _ptr(grad_out)
    cdef void *pgi = _ptr(grad_input)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _backward(op, <const float *>ps, <const float *>pg, <float *>pgi, n, <float>slope, nt)
    else:
        with nogil:
            _backward(op, <const double *>ps, <const double *>pg, <double *>pgi, n, slope, nt)


cdef double _slope(str kernel, object negative_slope) except? -1:
    try:
        return float(negative_slope)
    except (TypeError, ValueError):
        raise TypeError(f"{kernel}: negative_slope must be a number, got {negative_slope!r}") from None


# --------------------------------------------------------------------------- public kernels

def relu_forward(x, out, n_threads=1):
    """out = max(x, 0) elementwise (NaN propagates).

    x: IN, float32/float64, C-contiguous, any shape.
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    _run_forward("relu_forward", OP_RELU, x, out, 0.0, n_threads)


def relu_backward(out, grad_out, grad_input, n_threads=1):
    """grad_input = grad_out where the forward output is > 0, else 0.

    out: IN, the output of relu_forward. grad_out: IN, same shape and dtype.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    _run_backward("relu_backward", "out", OP_RELU, out, grad_out, grad_input, 0.0, n_threads)


def add_relu_forward(a, b, out, n_threads=1):
    """out = max(a + b, 0) elementwise: a residual join and its ReLU in one pass, the same
    bits as numpy's add then relu_forward. Its backward is relu_backward on out, whose
    result is the gradient of both a and b.

    a, b: IN, float32/float64, C-contiguous, same shape and dtype.
    out: OUT, same shape and dtype, written fresh (may be a or b itself).
    """
    _run_forward("add_relu_forward", OP_ADD_RELU, a, out, 0.0, n_threads, ("a", "b", "out"), b)


def leaky_relu_forward(x, out, negative_slope, n_threads=1):
    """out = x if x > 0 else negative_slope * x, elementwise.

    x: IN, float32/float64, C-contiguous, any shape.
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    slope = _slope("leaky_relu_forward", negative_slope)
    _run_forward("leaky_relu_forward", OP_LEAKY_RELU, x, out, slope, n_threads)


def leaky_relu_backward(x, grad_out, grad_input, negative_slope, n_threads=1):
    """grad_input = grad_out where the forward INPUT x > 0, else negative_slope * grad_out.

    x: IN, the input of leaky_relu_forward. grad_out: IN, same shape and dtype.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    slope = _slope("leaky_relu_backward", negative_slope)
    _run_backward("leaky_relu_backward", "x", OP_LEAKY_RELU, x, grad_out, grad_input, slope,
                  n_threads)


def sigmoid_forward(x, out, n_threads=1):
    """out = 1 / (1 + exp(-x)), computed without overflow for any |x|.

    x: IN, float32/float64, C-contiguous, any shape.
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    _run_forward("sigmoid_forward", OP_SIGMOID, x, out, 0.0, n_threads)


def sigmoid_backward(out, grad_out, grad_input, n_threads=1):
    """grad_input = grad_out * out * (1 - out).

    out: IN, the output of sigmoid_forward. grad_out: IN, same shape and dtype.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    _run_backward("sigmoid_backward", "out", OP_SIGMOID, out, grad_out, grad_input, 0.0, n_threads)


def tanh_forward(x, out, n_threads=1):
    """out = tanh(x).

    x: IN, float32/float64, C-contiguous, any shape.
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    _run_forward("tanh_forward", OP_TANH, x, out, 0.0, n_threads)


def tanh_backward(out, grad_out, grad_input, n_threads=1):
    """grad_input = grad_out * (1 - out^2).

    out: IN, the output of tanh_forward. grad_out: IN, same shape and dtype.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    _run_backward("tanh_backward", "out", OP_TANH, out, grad_out, grad_input, 0.0, n_threads)


cdef _run_softmax(str kernel, bint log_out, x, out, n_threads):
    cdef int t = check_alike(kernel, ("x", "out"), (x, out), 1, 2)
    cdef int nt = _threads(kernel, n_threads)
    cdef Py_ssize_t rows = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
    cdef Py_ssize_t cols = cnp.PyArray_DIMS(<cnp.ndarray>x)[1]
    cdef void *px = _ptr(x)
    cdef void *py = _ptr(out)
    if rows == 0 or cols == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _softmax(<const float *>px, <float *>py, rows, cols, log_out, nt)
    else:
        with nogil:
            _softmax(<const double *>px, <double *>py, rows, cols, log_out, nt)


cdef _run_softmax_backward(str kernel, bint log_out, out, grad_out, grad_input, n_threads):
    cdef int t = check_alike(kernel, ("out", "grad_out", "grad_input"), (out, grad_out, grad_input),
                          1, 2)
    cdef int nt = _threads(kernel, n_threads)
    cdef Py_ssize_t rows = cnp.PyArray_DIMS(<cnp.ndarray>out)[0]
    cdef Py_ssize_t cols = cnp.PyArray_DIMS(<cnp.ndarray>out)[1]
    cdef void *py = _ptr(out)
    cdef void *pg = _ptr(grad_out)
    cdef void *pgi = _ptr(grad_input)
    if rows == 0 or cols == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _softmax_backward(<const float *>py, <const float *>pg, <float *>pgi,
                              rows, cols, log_out, nt)
    else:
        with nogil:
            _softmax_backward(<const double *>py, <const double *>pg, <double *>pgi,
                              rows, cols, log_out, nt)


def softmax_forward(x, out, n_threads=1):
    """out[r, :] = exp(x[r, :] - max) / sum(exp(x[r, :] - max)), row by row.

    x: IN, float32/float64, C-contiguous, shape (rows, cols).
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    _run_softmax("softmax_forward", False, x, out, n_threads)


def softmax_backward(out, grad_out, grad_input, n_threads=1):
    """grad_input[r, :] = out[r, :] * (grad_out[r, :] - sum(grad_out[r, :] * out[r, :])).

    out: IN, the output of softmax_forward, shape (rows, cols). grad_out: IN, same shape.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    _run_softmax_backward("softmax_backward", False, out, grad_out, grad_input, n_threads)


def log_softmax_forward(x, out, n_threads=1):
    """out[r, :] = x[r, :] - max - log(sum(exp(x[r, :] - max))), row by row.

    x: IN, float32/float64, C-contiguous, shape (rows, cols).
    out: OUT, same shape and dtype, written fresh (may be x itself).
    """
    _run_softmax("log_softmax_forward", True, x, out, n_threads)


def log_softmax_backward(out, grad_out, grad_input, n_threads=1):
    """grad_input[r, :] = grad_out[r, :] - exp(out[r, :]) * sum(grad_out[r, :]).

    out: IN, the output of log_softmax_forward, shape (rows, cols). grad_out: IN, same shape.
    grad_input: OUT, same shape and dtype, written fresh.
    """
    _run_softmax_backward("log_softmax_backward", True, out, grad_out, grad_input, n_threads)
