# Design: the linear layer's kernels, y = x @ W.T + b (optionally relu'd) and its three
# gradients; the twin of fastgrad/reference/linear.py (same names, same signatures).
# Data layout: C-contiguous float32/float64 matrices, x (N, in), W (out, in), y (N, out).
# All three products are one blocked matrix-product core, fg_gemm in linear_kernels.h,
# called with the strides that read W or grad_out transposed in place (no copies):
#   forward          y  (N x out) = x (N x in)         * W.T (in x out)
#   grad input       gx (N x in)  = grad_out (N x out) * W (out x in)
#   grad weight      gW (out x in) = grad_out.T (out x N) * x (N x in)
# A forward pass of at most 4 rows takes dot products of rows of x and W instead
# (fg_gemm_nt): packing W would cost as much as the product itself. fg_gemm itself
# skips packing for the small batch's backward products (see linear_kernels.h).
# Threads: when a product is big enough to pay for a parallel region (about 50 us), the
# output matrix is cut into n_threads disjoint column ranges (aligned to the register
# tile width, so each thread packs only its own panels of B), or row ranges when there
# are too few columns; no two threads ever write the same element. The packed panel
# is a 16 KiB buffer on each thread's stack, so the kernels take no workspace.
# Every output is written fresh; an input that shares memory with the output is read
# from a copy (the products read their operands while writing).

import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange

from _checks cimport check_array, check_shape, check_threads, overlaps

cnp.import_array()

# the fastest code of this module is AVX2+FMA: an AVX-512 CPU runs that (_simd_level says so)
SIMD_KERNELS_TOP = 1
include "_simd.pxi"

__all__ = ["linear_forward", "linear_backward_input", "linear_backward_weight",
           "linear_backward_bias", "linear_backward"]

cdef extern from "linear_kernels.h" nogil:
    void fg_gemm_f32(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                     const float *a, Py_ssize_t a_rs, Py_ssize_t a_cs,
                     const float *b, Py_ssize_t b_rs, Py_ssize_t b_cs,
                     const float *bias, int relu, float *c, Py_ssize_t ldc)
    void fg_gemm_f64(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                     const double *a, Py_ssize_t a_rs, Py_ssize_t a_cs,
                     const double *b, Py_ssize_t b_rs, Py_ssize_t b_cs,
                     const double *bias, int relu, double *c, Py_ssize_t ldc)
    void fg_gemm_nt_f32(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float *a, Py_ssize_t lda,
                        const float *w, Py_ssize_t ldw, const float *bias, int relu,
                        float *c, Py_ssize_t ldc)
    void fg_gemm_nt_f64(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double *a, Py_ssize_t lda,
                        const double *w, Py_ssize_t ldw, const double *bias, int relu,
                        double *c, Py_ssize_t ldc)
    void fg_lin_sum_rows_f32(Py_ssize_t m, Py_ssize_t n, const float *g, float *out)
    void fg_lin_sum_rows_f64(Py_ssize_t m, Py_ssize_t n, const double *g, double *out)
    void fg_lin_backward_small_f32(Py_ssize_t n, Py_ssize_t k, Py_ssize_t o, const float *x,
                                   const float *g, const float *relu_out, const float *w,
                                   float *gx, float *gw, float *gb)
    void fg_lin_backward_small_f64(Py_ssize_t n, Py_ssize_t k, Py_ssize_t o, const double *x,
                                   const double *g, const double *relu_out, const double *w,
                                   double *gx, double *gw, double *gb)
    Py_ssize_t fg_lin_nr_f32()
    Py_ssize_t fg_lin_nr_f64()
    Py_ssize_t fg_lin_mr()

# Multiply-adds below which a product runs on one thread: about 50 us of work, the
# point where an OpenMP region (a few us to start) stops costing more than it saves.
cdef Py_ssize_t PARALLEL_MIN_MACS = 1 << 21
# Batches up to this size run the forward pass as dot products over rows of W read in
# place (fg_gemm_nt); larger ones pack W, whose cost is then shared by many rows.
cdef Py_ssize_t DOT_FORWARD_MAX_ROWS = 4


# --------------------------------------------------------------------------- the core

cdef inline void _gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                       const floating *a, Py_ssize_t a_rs, Py_ssize_t a_cs,
                       const floating *b, Py_ssize_t b_rs, Py_ssize_t b_cs,
                       const floating *bias, int relu, floating *c, Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        fg_gemm_f32(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, bias, relu, c, ldc)
    else:
        fg_gemm_f64(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, bias, relu, c, ldc)


cdef void _gemm_threaded(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                         const floating *a, Py_ssize_t a_rs, Py_ssize_t a_cs,
                         const floating *b, Py_ssize_t b_rs, Py_ssize_t b_cs,
                         const floating *bias, int relu, floating *c, Py_ssize_t ldc,
                         int n_threads) noexcept nogil:
    """C = A * B (+ bias) (relu), C fresh, split over threads when the work is big."""
    cdef Py_ssize_t nr = fg_lin_nr_f32() if floating is float else fg_lin_nr_f64()
    cdef Py_ssize_t mr = fg_lin_mr()
    cdef Py_ssize_t t, lo, hi, chunk
    cdef int parts = 1
    cdef bint by_columns = True
    if n_threads > 1 and m * n * k >= PARALLEL_MIN_MACS:
        if n >= 2 * nr * n_threads:
            parts = n_threads
        elif m >= 2 * mr * n_threads:
            parts = n_threads
            by_columns = False
    if parts == 1:
        _gemm(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, bias, relu, c, ldc)
        return
    if by_columns:  # whole register tiles per thread: ceil(ceil(n / nr) / parts) * nr
        chunk = ((n + nr - 1) // nr + parts - 1) // parts * nr
    else:
        chunk = ((m + mr - 1) // mr + parts - 1) // parts * mr
    for t in prange(parts, schedule='static', num_threads=parts):
        lo = t * chunk
        if by_columns:
            hi = min(n, lo + chunk)
            if lo < hi:
                _gemm(m, hi - lo, k, a, a_rs, a_cs, b + lo * b_cs, b_rs, b_cs,
                      bias + lo if bias != NULL else NULL, relu, c + lo, ldc)
        else:
            hi = min(m, lo + chunk)
            if lo < hi:
                _gemm(hi - lo, n, k, a + lo * a_rs, a_rs, a_cs, b, b_rs, b_cs,
                      bias, relu, c + lo * ldc, ldc)


cdef void _forward_dot_threaded(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *x,
                                const floating *w, const floating *bias, int relu,
                                floating *y, int n_threads) noexcept nogil:
    """y = x @ w.T (+ bias) (relu) for a small batch; output features split over threads."""
    cdef Py_ssize_t t, lo, hi, chunk
    cdef int parts = n_threads if (n_threads > 1 and m * n * k >= PARALLEL_MIN_MACS
                                   and n >= 8 * n_threads) else 1
    if parts == 1:  # no parallel region at all: even with one thread, entering one costs
        if floating is float:
            fg_gemm_nt_f32(m, n, k, x, k, w, k, bias, relu, y, n)
        else:
            fg_gemm_nt_f64(m, n, k, x, k, w, k, bias, relu, y, n)
        return
    chunk = ((n + 3) // 4 + parts - 1) // parts * 4  # whole groups of 4 rows of w
    for t in prange(parts, schedule='static', num_threads=parts):
        lo = t * chunk
        hi = min(n, lo + chunk)
        if lo < hi:
            if floating is float:
                fg_gemm_nt_f32(m, hi - lo, k, x, k, w + lo * k, k,
                               bias + lo if bias != NULL else NULL, relu, y + lo, n)
            else:
                fg_gemm_nt_f64(m, hi - lo, k, x, k, w + lo * k, k,
                               bias + lo if bias != NULL else NULL, relu, y + lo, n)


# --------------------------------------------------------------------------- checks

cdef inline void *_data(object arr) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>arr)


cdef inline Py_ssize_t _dim(object arr, int i) noexcept:
    return cnp.PyArray_DIMS(<cnp.ndarray>arr)[i]


cdef int _check_features(str kernel, object x, object weight) except -1:
    """x (N, in_features) and weight (out_features, in_features) agree."""
    if _dim(weight, 1) != _dim(x, 1):
        raise ValueError(f"{kernel}: x has {_dim(x, 1)} features (shape {x.shape}), weight "
                         f"expects {_dim(weight, 1)} (shape {weight.shape})")


cdef int _expect_shape(str kernel, str name, object a, Py_ssize_t rows, Py_ssize_t cols) except -1:
    """a, when given, has shape (rows, cols), or (rows,) when cols is -1."""
    if a is None:
        return 0
    if cols < 0:
        return check_shape(kernel, name, a, (rows,))
    return check_shape(kernel, name, a, (rows, cols))


# --------------------------------------------------------------------------- kernels

def linear_forward(x, weight, bias, out, apply_relu, n_threads):
    """out = x @ weight.T + bias, then max(0, .) when apply_relu; out written fresh.

    x: IN (N, in_features); weight: IN (out_features, in_features); bias: IN
    (out_features,) or None; out: OUT (N, out_features). One dtype, float32 or float64,
    all C-contiguous. apply_relu: bool (NaN stays NaN, as in PyTorch).
    """
    cdef str kn = "linear_forward"
    cdef int t = check_array(kn, "x", x, 2, -1, False)
    check_array(kn, "weight", weight, 2, t, False)
    check_array(kn, "out", out, 2, t, True)
    if bias is not None:
        check_array(kn, "bias", bias, 1, t, False)
    cdef int threads = check_threads(kn, n_threads)
    cdef Py_ssize_t n = _dim(x, 0), k = _dim(x, 1), o = _dim(weight, 0)
    _check_features(kn, x, weight)
    _expect_shape(kn, "out", out, n, o)
    _expect_shape(kn, "bias", bias, o, -1)
    if overlaps(out, x):
        x = x.copy()
    if overlaps(out, weight):
        weight = weight.copy()
    if bias is not None and overlaps(out, bias):
        bias = bias.copy()
    cdef int relu = 1 if apply_relu else 0
    cdef void *bp = _data(bias) if bias is not None else NULL
    cdef void *xp = _data(x)
    cdef void *wp = _data(weight)
    cdef void *cp = _data(out)
    # A = x (rows of in_features), B(p, j) = weight[j, p]: weight read transposed in place
    with nogil:
        if n <= DOT_FORWARD_MAX_ROWS:
            if t == cnp.NPY_FLOAT32:
                _forward_dot_threaded[float](n, o, k, <const float *>xp, <const float *>wp,
                                             <const float *>bp, relu, <float *>cp, threads)
            else:
                _forward_dot_threaded[double](n, o, k, <const double *>xp, <const double *>wp,
                                              <const double *>bp, relu, <double *>cp, threads)
        elif t == cnp.NPY_FLOAT32:
            _gemm_threaded[float](n, o, k, <const float *>xp, k, 1, <const float *>wp, 1, k,
                                  <const float *>bp, relu, <float *>cp, o, threads)
        else:
            _gemm_threaded[double](n, o, k, <const double *>xp, k, 1, <const double *>wp, 1, k,
                                   <const double *>bp, relu, <double *>cp, o, threads)


def linear_backward_input(grad_out, weight, grad_x, n_threads):
    """grad_x = grad_out @ weight, written fresh.

    grad_out: IN (N, out_features); weight: IN (out_features, in_features);
    grad_x: OUT (N, in_features). One dtype, all C-contiguous.
    """
    cdef str kn = "linear_backward_input"
    cdef int t = check_array(kn, "grad_out", grad_out, 2, -1, False)
    check_array(kn, "weight", weight, 2, t, False)
    check_array(kn, "grad_x", grad_x, 2, t, True)
    cdef int threads = check_threads(kn, n_threads)
    cdef Py_ssize_t n = _dim(grad_out, 0), o = _dim(grad_out, 1), k = _dim(weight, 1)
    if _dim(weight, 0) != o:
        raise ValueError(f"{kn}: grad_out has {o} features (shape {grad_out.shape}), weight has "
                         f"{_dim(weight, 0)} output features (shape {weight.shape})")
    if _dim(grad_x, 0) != n or _dim(grad_x, 1) != k:
        raise ValueError(f"{kn}: grad_x has shape {grad_x.shape}, expected ({n}, {k})")
    if overlaps(grad_x, grad_out):
        grad_out = grad_out.copy()
    if overlaps(grad_x, weight):
        weight = weight.copy()
    cdef void *gp = _data(grad_out)
    cdef void *wp = _data(weight)
    cdef void *cp = _data(grad_x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _gemm_threaded[float](n, k, o, <const float *>gp, o, 1, <const float *>wp, k, 1,
                                  NULL, 0, <float *>cp, k, threads)
        else:
            _gemm_threaded[double](n, k, o, <const double *>gp, o, 1, <const double *>wp, k, 1,
                                   NULL, 0, <double *>cp, k, threads)


def linear_backward_weight(x, grad_out, grad_weight, n_threads):
    """grad_weight = grad_out.T @ x, written fresh.

    x: IN (N, in_features); grad_out: IN (N, out_features);
    grad_weight: OUT (out_features, in_features). One dtype, all C-contiguous.
    """
    cdef str kn = "linear_backward_weight"
    cdef int t = check_array(kn, "x", x, 2, -1, False)
    check_array(kn, "grad_out", grad_out, 2, t, False)
    check_array(kn, "grad_weight", grad_weight, 2, t, True)
    cdef int threads = check_threads(kn, n_threads)
    cdef Py_ssize_t n = _dim(x, 0), k = _dim(x, 1), o = _dim(grad_out, 1)
    if _dim(grad_out, 0) != n:
        raise ValueError(f"{kn}: x has {n} rows (shape {x.shape}), grad_out has "
                         f"{_dim(grad_out, 0)} (shape {grad_out.shape})")
    if _dim(grad_weight, 0) != o or _dim(grad_weight, 1) != k:
        raise ValueError(f"{kn}: grad_weight has shape {grad_weight.shape}, expected ({o}, {k})")
    if overlaps(grad_weight, x):
        x = x.copy()
    if overlaps(grad_weight, grad_out):
        grad_out = grad_out.copy()
    cdef void *xp = _data(x)
    cdef void *gp = _data(grad_out)
    cdef void *cp = _data(grad_weight)
    # A(i, p) = grad_out[p, i]: grad_out read transposed in place; B = x
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _gemm_threaded[float](o, k, n, <const float *>gp, 1, o, <const float *>xp, k, 1,
                                  NULL, 0, <float *>cp, k, threads)
        else:
            _gemm_threaded[double](o, k, n, <const double *>gp, 1, o, <const double *>xp, k, 1,
                                   NULL, 0, <double *>cp, k, threads)


def linear_backward_bias(grad_out, grad_bias, n_threads):
    """grad_bias = grad_out.sum(axis=0), written fresh (rows added in order).

    grad_out: IN (N, out_features); grad_bias: OUT (out_features,). One dtype.
    Single-threaded: one pass over grad_out is memory-bound and small.
    """
    cdef str kn = "linear_backward_bias"
    cdef int t = check_array(kn, "grad_out", grad_out, 2, -1, False)
    check_array(kn, "grad_bias", grad_bias, 1, t, True)
    check_threads(kn, n_threads)
    cdef Py_ssize_t n = _dim(grad_out, 0), o = _dim(grad_out, 1)
    if _dim(grad_bias, 0) != o:
        raise ValueError(f"{kn}: grad_bias has shape {grad_bias.shape}, expected ({o},)")
    if overlaps(grad_bias, grad_out):
        grad_out = grad_out.copy()
    cdef void *gp = _data(grad_out)
    cdef void *bp = _data(grad_bias)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fg_lin_sum_rows_f32(n, o, <const float *>gp, <float *>bp)
        else:
            fg_lin_sum_rows_f64(n, o, <const double *>gp, <double *>bp)


def linear_backward(x, grad_out, relu_out, weight, grad_x, grad_weight, grad_bias, n_threads):
    """All three gradients of a small batch in one pass over the weight (single-threaded):
    grad_x = g @ weight, grad_weight = g.T @ x, grad_bias = g.sum(axis=0), where g is
    grad_out, zeroed where relu_out is not positive when relu_out is given (the ReLU of
    linear_forward's apply_relu). Each output is written fresh; rows are added in order.

    x: IN (N, in_features); grad_out: IN (N, out_features); relu_out: IN (N, out_features)
    or None; weight: IN (out_features, in_features); grad_x: OUT (N, in_features) or None;
    grad_weight: OUT (out_features, in_features) or None; grad_bias: OUT (out_features,)
    or None. One dtype, all C-contiguous; the outputs may not share memory with each other.
    Meant for a few rows: its one pass reads x and grad_out once per output feature.
    """
    cdef str kn = "linear_backward"
    cdef int t = check_array(kn, "x", x, 2, -1, False)
    check_array(kn, "grad_out", grad_out, 2, t, False)
    check_array(kn, "weight", weight, 2, t, False)
    if relu_out is not None:
        check_array(kn, "relu_out", relu_out, 2, t, False)
    if grad_x is not None:
        check_array(kn, "grad_x", grad_x, 2, t, True)
    if grad_weight is not None:
        check_array(kn, "grad_weight", grad_weight, 2, t, True)
    if grad_bias is not None:
        check_array(kn, "grad_bias", grad_bias, 1, t, True)
    check_threads(kn, n_threads)
    cdef Py_ssize_t n = _dim(x, 0), k = _dim(x, 1), o = _dim(weight, 0)
    _check_features(kn, x, weight)
    _expect_shape(kn, "grad_out", grad_out, n, o)
    _expect_shape(kn, "relu_out", relu_out, n, o)
    _expect_shape(kn, "grad_x", grad_x, n, k)
    _expect_shape(kn, "grad_weight", grad_weight, o, k)
    _expect_shape(kn, "grad_bias", grad_bias, o, -1)
    if grad_x is not None and grad_weight is not None and overlaps(grad_x, grad_weight):
        raise ValueError(f"{kn}: outputs grad_x and grad_weight share memory")
    if grad_x is not None and grad_bias is not None and overlaps(grad_x, grad_bias):
        raise ValueError(f"{kn}: outputs grad_x and grad_bias share memory")
    if grad_weight is not None and grad_bias is not None and overlaps(grad_weight, grad_bias):
        raise ValueError(f"{kn}: outputs grad_weight and grad_bias share memory")
    for out in (grad_x, grad_weight, grad_bias):  # inputs sharing an output's memory: copies
        if out is None:
            continue
        if overlaps(out, x):
            x = x.copy()
        if overlaps(out, grad_out):
            grad_out = grad_out.copy()
        if overlaps(out, weight):
            weight = weight.copy()
        if relu_out is not None and overlaps(out, relu_out):
            relu_out = relu_out.copy()
    cdef void *xp = _data(x)
    cdef void *gp = _data(grad_out)
    cdef void *rp = _data(relu_out) if relu_out is not None else NULL
    cdef void *wp = _data(weight)
    cdef void *gxp = _data(grad_x) if grad_x is not None else NULL
    cdef void *gwp = _data(grad_weight) if grad_weight is not None else NULL
    cdef void *gbp = _data(grad_bias) if grad_bias is not None else NULL
    with nogil:
        if t == cnp.NPY_FLOAT32:
            fg_lin_backward_small_f32(n, k, o, <const float *>xp, <const float *>gp,
                                      <const float *>rp, <const float *>wp, <float *>gxp,
                                      <float *>gwp, <float *>gbp)
        else:
            fg_lin_backward_small_f64(n, k, o, <const double *>xp, <const double *>gp,
                                      <const double *>rp, <const double *>wp, <double *>gxp,
                                      <double *>gwp, <double *>gbp)
