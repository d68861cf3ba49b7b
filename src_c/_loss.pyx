# Design: loss kernels; the twin of fastgrad/reference/loss.py (same names, same
# signatures, same results).
# - cross_entropy_forward is fused: one pass per row gives the sample's loss and, when a
#   grad array is passed, the gradient of the summed loss w.r.t. the logits
#   (softmax - smoothed one-hot, times the class weights), already divided by the total
#   weight for the 'mean' reduction, so backward is free when the upstream gradient is 1.
#   Rows subtract their maximum before exp: logits of +-1e4 give finite losses and grads.
# - Class targets are int64; the def wrapper checks every non-ignored target against the
#   class count before any row is read, so the nogil loops never index out of bounds.
# - Per-sample losses go to an array; sums over samples accumulate in double.
# - Speed: float32 exp is fg_exp_f, plain arithmetic that gcc vectorizes, and row maxima
#   and sums keep partial results in lanes; these helpers are the same as in
#   _activation.pyx (each extension module compiles its own copy).
# - Layout: logits (N, C) and elementwise arrays C-contiguous. Outputs must not overlap
#   inputs or each other (the def wrappers refuse any shared memory). Threads: a static
#   prange over rows (or blocks) only when the work is big enough to pay for a parallel
#   region; each thread writes only its own rows.

import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport NAN, exp, fabs, log, log1p, log1pf
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t

from _checks cimport check_apart, check_array, check_shape, check_threads

cnp.import_array()

# the fastest code of this module is AVX2+FMA: an AVX-512 CPU runs that (_simd_level says so)
SIMD_KERNELS_TOP = 1
include "_simd.pxi"

__all__ = [
    "cross_entropy_forward",
    "nll_loss_forward", "nll_loss_backward",
    "mse_loss_forward", "mse_loss_backward",
    "binary_cross_entropy_with_logits_forward",
]

cdef Py_ssize_t PARALLEL_MIN_EXP = 1 << 14     # elements of exp-heavy work
cdef Py_ssize_t PARALLEL_MIN_CHEAP = 1 << 18   # elements of a memory stream
cdef Py_ssize_t BLOCK = 8192


cdef extern from "fast_exp.h":
    float fg_exp_f(float x) noexcept nogil


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return fg_exp_f(v)
    else:
        return exp(v)


cdef inline floating _log1p(floating v) noexcept nogil:
    if floating is float:
        return log1pf(v)
    else:
        return log1p(v)


# --------------------------------------------------------------------------- validation

cdef object _float_array(str kernel, str name, object a, object dtype, tuple shape, bint output):
    """Check one float array (its dtype must equal ``dtype`` unless that is None, its shape
    ``shape`` unless that is None); return its dtype. Checked through numpy's C API: a
    training step calls these kernels with tiny arrays, where Python-level attribute
    reads would cost more than the loss itself."""
    check_array(kernel, name, a, -1, -1 if dtype is None else (<cnp.dtype>dtype).type_num,
                output)
    if shape is not None:
        check_shape(kernel, name, a, shape)
    return <object>cnp.PyArray_DESCR(<cnp.ndarray>a)


cdef object _matrix(str kernel, str name, object a):
    """Check a 2-D (N, C) float array; return its dtype."""
    dtype = _float_array(kernel, name, a, None, None, False)
    if cnp.PyArray_NDIM(<cnp.ndarray>a) != 2:
        raise ValueError(f"{kernel}: {name} must have 2 dimensions (N, C), got shape {a.shape}")
    return dtype


cdef _targets(str kernel, object target, Py_ssize_t n):
    if not cnp.PyArray_Check(target):
        raise TypeError(f"{kernel}: target must be a numpy array, got {type(target).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>target
    if cnp.PyArray_TYPE(arr) != cnp.NPY_INT64:
        raise TypeError(f"{kernel}: target must hold int64 class indices, got {target.dtype}")
    if cnp.PyArray_NDIM(arr) != 1 or cnp.PyArray_DIMS(arr)[0] != n:
        raise ValueError(f"{kernel}: target has shape {target.shape}, expected ({n},)")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{kernel}: target must be C-contiguous")


cdef void *_weights(str kernel, object weight, object dtype, Py_ssize_t n_classes) except? NULL:
    if weight is None:
        return NULL
    _float_array(kernel, "weight", weight, dtype, (n_classes,), False)
    return cnp.PyArray_DATA(weight)


cdef inline int _threads(str kernel, object n_threads) except -1:
    return check_threads(kernel, n_threads)


cdef inline void *_ptr(object a) noexcept:
    return cnp.PyArray_DATA(a)


cdef Py_ssize_t _first_bad_target(const int64_t *t, Py_ssize_t n, Py_ssize_t n_classes,
                                  int64_t ignore_index) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if t[i] != ignore_index and (t[i] < 0 or t[i] >= n_classes):
            return i
    return -1


cdef double _weight_sum(const int64_t *t, Py_ssize_t n, const floating *w,
                        int64_t ignore_index) noexcept nogil:
    """Total weight of the non-ignored targets (their count without class weights)."""
    cdef Py_ssize_t i
    cdef double total = 0
    for i in range(n):
        if t[i] != ignore_index:
            total += w[t[i]] if w != NULL else 1.0
    return total


cdef _check_targets(str kernel, object target, Py_ssize_t n_classes, int64_t ignore_index):
    cdef const int64_t *t = <const int64_t *>_ptr(target)
    cdef Py_ssize_t n = target.shape[0], bad
    with nogil:
        bad = _first_bad_target(t, n, n_classes, ignore_index)
    if bad >= 0:
        raise ValueError(f"{kernel}: target[{bad}] = {target[bad]} is out of range for "
                         f"{n_classes} classes (expected 0 <= target < {n_classes}, or "
                         f"ignore_index={ignore_index})")


cdef int64_t _ignore(str kernel, object ignore_index) except? -1:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{kernel}: ignore_index must be an integer, got {ignore_index!r}")
    if not INT64_MIN <= ignore_index <= INT64_MAX:  # C constants: no numpy lookups per call
        raise ValueError(f"{kernel}: ignore_index {ignore_index} does not fit in int64")
    return ignore_index


# --------------------------------------------------------------------------- cross entropy

# Row reductions keep LANES independent partial results (array slots, not a loop-carried
# scalar), which gcc maps onto vector registers; a plain running max or sum would stay
# scalar, one element per add latency.
from _rowmath cimport LANES, _row_max, _sum

cdef enum:
    CHUNK = 64  # exps computed into a stack buffer this long, then summed




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


cdef double _weighted_gap(const floating *z, const floating *w, floating m,
                          Py_ssize_t n) noexcept nogil:
    """sum_j w[j] (m - z[j]) (w NULL: all 1); every term >= 0, so nothing cancels."""
    cdef double part[LANES]
    cdef double total = 0
    cdef Py_ssize_t j = 0, k
    for k in range(LANES):
        part[k] = 0
    if w == NULL:
        while j + LANES <= n:
            for k in range(LANES):
                part[k] += <double>m - z[j + k]
            j += LANES
        while j < n:
            total += <double>m - z[j]
            j += 1
    else:
        while j + LANES <= n:
            for k in range(LANES):
                part[k] += w[j + k] * (<double>m - z[j + k])
            j += LANES
        while j < n:
            total += w[j] * (<double>m - z[j])
            j += 1
    for k in range(LANES):
        total += part[k]
    return total


cdef double _cross_entropy_row(const floating *z, Py_ssize_t C, Py_ssize_t t, const floating *w,
                               double w_total, double eps, double scale,
                               floating *g) noexcept nogil:
    """Loss of one row; with g != NULL also writes scale * d(loss)/dz into g.

    loss = (1 - eps) w_t (lse - z_t) + eps / C * sum_c w_c (lse - z_c),  lse = m + log(s)
    grad = scale * (p * ((1 - eps) w_t + eps / C * W) - (1 - eps) w_t onehot_t - eps / C * w)
    """
    cdef Py_ssize_t j
    cdef floating m = _row_max(z, C)
    cdef double s, spread = 0, log_s, loss, a, b, smooth = eps / C
    cdef double wt = w[t] if w != NULL else 1.0
    loss = (1 - eps) * wt * (<double>m - z[t])
    if eps > 0:
        spread = _weighted_gap(z, w, m, C)
    if g != NULL:
        for j in range(C):
            g[j] = _exp(z[j] - m)
        s = _sum(g, C)
    else:
        s = _sum_exp_shifted(z, m, C)
    log_s = log(s)
    loss += (1 - eps) * wt * log_s + smooth * (spread + w_total * log_s)
    if g != NULL:
        a = scale * ((1 - eps) * wt + smooth * w_total) / s
        b = scale * smooth
        if w != NULL:
            for j in range(C):
                g[j] = <floating>(a * g[j] - b * w[j])
        else:
            for j in range(C):
                g[j] = <floating>(a * g[j] - b)
        g[t] = <floating>(g[t] - scale * (1 - eps) * wt)
    return loss


cdef inline void _cross_entropy_sample(const floating *z, const int64_t *target,
                                       const floating *w, Py_ssize_t i, Py_ssize_t C,
                                       int64_t ignore_index, double w_total, double eps,
                                       double scale, floating *losses,
                                       floating *grad) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating *g = grad + i * C if grad != NULL else NULL
    if target[i] == ignore_index:
        losses[i] = 0
        if g != NULL:
            for j in range(C):
                g[j] = 0
    else:
        losses[i] = <floating>_cross_entropy_row(z + i * C, C, target[i], w, w_total, eps,
                                                 scale, g)


cdef void _cross_entropy(const floating *z, const int64_t *target, const floating *w,
                         Py_ssize_t N, Py_ssize_t C, int64_t ignore_index, double w_total,
                         double eps, double scale, floating *losses, floating *grad,
                         int n_threads) noexcept nogil:
    cdef Py_ssize_t i
    if n_threads <= 1 or N < 2 or N * C < PARALLEL_MIN_EXP:
        for i in range(N):
            _cross_entropy_sample(z, target, w, i, C, ignore_index, w_total, eps, scale, losses, grad)
        return
    for i in prange(N, schedule="static", num_threads=n_threads):
        _cross_entropy_sample(z, target, w, i, C, ignore_index, w_total, eps, scale, losses, grad)


def cross_entropy_forward(logits, target, weight, ignore_index, label_smoothing, normalize,
                          losses, grad, n_threads=1):
    """Per-sample cross-entropy losses from logits, fused with their gradient.

    logits: IN, (N, C) float32/float64, C-contiguous.
    target: IN, (N,) int64 class indices in [0, C), or ignore_index.
    weight: IN, (C,) class weights of the logits' dtype, or None (all 1).
    ignore_index: int; samples with this target get loss 0 and gradient 0.
    label_smoothing: float in [0, 1]; the target distribution is
        (1 - label_smoothing) * one_hot + label_smoothing / C (PyTorch's definition).
    normalize: bool; when true the gradient is divided by the total weight (the 'mean'
        reduction; NaN when every target is ignored).
    losses: OUT, (N,) of the logits' dtype, written fresh: each sample's weighted loss.
    grad: OUT, (N, C) of the logits' dtype, written fresh: the gradient of sum(losses)
        w.r.t. logits (divided by the total weight when normalize); or None to skip it.
    Returns (sum of losses, total weight of the non-ignored targets), as Python floats.
    """
    cdef str k = "cross_entropy_forward"
    dtype = _matrix(k, "logits", logits)
    cdef Py_ssize_t N = logits.shape[0], C = logits.shape[1]
    _targets(k, target, N)
    cdef int64_t ignore = _ignore(k, ignore_index)
    cdef double eps
    try:
        eps = float(label_smoothing)
    except (TypeError, ValueError):
        raise TypeError(f"{k}: label_smoothing must be a number, got {label_smoothing!r}") from None
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{k}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    cdef void *pw = _weights(k, weight, dtype, C)
    _float_array(k, "losses", losses, dtype, (N,), True)
    if grad is not None:
        _float_array(k, "grad", grad, dtype, (N, C), True)
    cdef int nt = _threads(k, n_threads)
    check_apart(k, (("losses", losses), ("grad", grad)),
                (("logits", logits), ("target", target), ("weight", weight)), ())
    _check_targets(k, target, C, ignore)
    cdef const int64_t *pt = <const int64_t *>_ptr(target)
    cdef void *pz = _ptr(logits)
    cdef void *pl = _ptr(losses)
    cdef void *pg = _ptr(grad) if grad is not None else NULL
    cdef double w_total = <double>C, total_weight, scale = 1, loss_sum
    if (<cnp.dtype>dtype).type_num == cnp.NPY_FLOAT32:
        with nogil:
            total_weight = _weight_sum(pt, N, <const float *>pw, ignore)
            if pw != NULL:
                w_total = _sum(<const float *>pw, C)
    else:
        with nogil:
            total_weight = _weight_sum(pt, N, <const double *>pw, ignore)
            if pw != NULL:
                w_total = _sum(<const double *>pw, C)
    if normalize:
        scale = 1.0 / total_weight if total_weight != 0 else NAN
    if (<cnp.dtype>dtype).type_num == cnp.NPY_FLOAT32:
        with nogil:
            _cross_entropy(<const float *>pz, pt, <const float *>pw, N, C, ignore, w_total, eps,
                           scale, <float *>pl, <float *>pg, nt)
            loss_sum = _sum(<const float *>pl, N)
    else:
        with nogil:
            _cross_entropy(<const double *>pz, pt, <const double *>pw, N, C, ignore, w_total, eps,
                           scale, <double *>pl, <double *>pg, nt)
            loss_sum = _sum(<const double *>pl, N)
    return loss_sum, total_weight


# --------------------------------------------------------------------------- nll

cdef void _nll_forward(const floating *logp, const int64_t *target, const floating *w,
                       Py_ssize_t N, Py_ssize_t C, int64_t ignore_index,
                       floating *losses) noexcept nogil:
    cdef Py_ssize_t i, t
    for i in range(N):
        t = target[i]
        if t == ignore_index:
            losses[i] = 0
        elif w != NULL:
            losses[i] = -w[t] * logp[i * C + t]
        else:
            losses[i] = -logp[i * C + t]


cdef void _nll_backward(const int64_t *target, const floating *w, const floating *grad_losses,
                        Py_ssize_t N, Py_ssize_t C, int64_t ignore_index,
                        floating *grad_input) noexcept nogil:
    cdef Py_ssize_t i, j, t
    for i in range(N):
        for j in range(C):
            grad_input[i * C + j] = 0
        t = target[i]
        if t != ignore_index:
            grad_input[i * C + t] = -(w[t] if w != NULL else 1) * grad_losses[i]


def nll_loss_forward(log_probs, target, weight, ignore_index, losses, n_threads=1):
    """Per-sample negative log-likelihood losses: losses[i] = -weight[t] * log_probs[i, t].

    log_probs: IN, (N, C) float32/float64, C-contiguous.
    target: IN, (N,) int64 class indices in [0, C), or ignore_index (loss 0).
    weight: IN, (C,) class weights of the same dtype, or None (all 1).
    losses: OUT, (N,) of the same dtype, written fresh.
    Returns (sum of losses, total weight of the non-ignored targets), as Python floats.
    """
    cdef str k = "nll_loss_forward"
    dtype = _matrix(k, "log_probs", log_probs)
    cdef Py_ssize_t N = log_probs.shape[0], C = log_probs.shape[1]
    _targets(k, target, N)
    cdef int64_t ignore = _ignore(k, ignore_index)
    cdef void *pw = _weights(k, weight, dtype, C)
    _float_array(k, "losses", losses, dtype, (N,), True)
    _threads(k, n_threads)
    check_apart(k, (("losses", losses),),
                (("log_probs", log_probs), ("target", target), ("weight", weight)), ())
    _check_targets(k, target, C, ignore)
    cdef const int64_t *pt = <const int64_t *>_ptr(target)
    cdef void *pz = _ptr(log_probs)
    cdef void *pl = _ptr(losses)
    cdef double loss_sum, total_weight
    if (<cnp.dtype>dtype).type_num == cnp.NPY_FLOAT32:
        with nogil:
            _nll_forward(<const float *>pz, pt, <const float *>pw, N, C, ignore, <float *>pl)
            loss_sum = _sum(<const float *>pl, N)
            total_weight = _weight_sum(pt, N, <const float *>pw, ignore)
    else:
        with nogil:
            _nll_forward(<const double *>pz, pt, <const double *>pw, N, C, ignore, <double *>pl)
            loss_sum = _sum(<const double *>pl, N)
            total_weight = _weight_sum(pt, N, <const double *>pw, ignore)
    return loss_sum, total_weight


def nll_loss_backward(target, weight, ignore_index, grad_losses, grad_input, n_threads=1):
    """grad_input[i, t] = -weight[t] * grad_losses[i] at each sample's target, 0 elsewhere.

    target: IN, (N,) int64 class indices in [0, C), or ignore_index (row left 0).
    weight: IN, (C,) class weights, or None (all 1).
    grad_losses: IN, (N,) float32/float64: the gradient of each sample's loss.
    grad_input: OUT, (N, C) of the same dtype, written fresh.
    """
    cdef str k = "nll_loss_backward"
    dtype = _matrix(k, "grad_input", grad_input)
    _float_array(k, "grad_input", grad_input, dtype, None, True)
    cdef Py_ssize_t N = grad_input.shape[0], C = grad_input.shape[1]
    _targets(k, target, N)
    cdef int64_t ignore = _ignore(k, ignore_index)
    cdef void *pw = _weights(k, weight, dtype, C)
    _float_array(k, "grad_losses", grad_losses, dtype, (N,), False)
    _threads(k, n_threads)
    check_apart(k, (("grad_input", grad_input),),
                (("target", target), ("weight", weight), ("grad_losses", grad_losses)), ())
    _check_targets(k, target, C, ignore)
    cdef const int64_t *pt = <const int64_t *>_ptr(target)
    cdef void *pgl = _ptr(grad_losses)
    cdef void *pgi = _ptr(grad_input)
    if (<cnp.dtype>dtype).type_num == cnp.NPY_FLOAT32:
        with nogil:
            _nll_backward(pt, <const float *>pw, <const float *>pgl, N, C, ignore, <float *>pgi)
    else:
        with nogil:
            _nll_backward(pt, <const double *>pw, <const double *>pgl, N, C, ignore, <double *>pgi)


# --------------------------------------------------------------------------- mse

cdef double _mse_block(const floating *x, const floating *y, floating *diff, floating *sq,
                       Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating d
    cdef double total = 0
    for i in range(n):
        d = x[i] - y[i]
        diff[i] = d
        if sq != NULL:
            sq[i] = d * d
        total += <double>d * d
    return total


cdef double _mse(const floating *x, const floating *y, floating *diff, floating *sq,
                 Py_ssize_t n, int n_threads) noexcept nogil:
    cdef Py_ssize_t b, start, nblocks = (n + BLOCK - 1) // BLOCK
    cdef double total = 0
    if n_threads <= 1 or n < PARALLEL_MIN_CHEAP:
        return _mse_block(x, y, diff, sq, n)
    for b in prange(nblocks, schedule="static", num_threads=n_threads):
        start = b * BLOCK
        total += _mse_block(x + start, y + start, diff + start,
                            sq + start if sq != NULL else NULL, min(BLOCK, n - start))
    return total


def mse_loss_forward(input, target, diff, squares, n_threads=1):
    """diff = input - target, squares = diff^2; returns sum(diff^2) as a Python float.

    input, target: IN, float32/float64 of one shape and dtype, C-contiguous.
    diff: OUT, same shape and dtype, written fresh (kept for backward).
    squares: OUT, same shape and dtype, written fresh; or None to skip it.
    """
    cdef str k = "mse_loss_forward"
    dtype = _float_array(k, "input", input, None, None, False)
    shape = input.shape
    _float_array(k, "target", target, dtype, shape, False)
    _float_array(k, "diff", diff, dtype, shape, True)
    if squares is not None:
        _float_array(k, "squares", squares, dtype, shape, True)
    cdef int nt = _threads(k, n_threads)
    check_apart(k, (("diff", diff), ("squares", squares)), (("input", input), ("target", target)), ())
    cdef Py_ssize_t n = input.size
    cdef void *px = _ptr(input)
    cdef void *py = _ptr(target)
    cdef void *pd = _ptr(diff)
    cdef void *ps = _ptr(squares) if squares is not None else NULL
    cdef double total = 0
    if n == 0:
        return 0.0
    if (<cnp.dtype>dtype).type_num == cnp.NPY_FLOAT32:
        with nogil:
            total = _mse(<const float *>px, <const float *>py, <float *>pd, <float *>ps, n, nt)
    else:
        with nogil:
            total = _mse(<const double *>px, <const double *>py, <double *>pd, <double *>ps, n, nt)
    return total


cdef void _mse_backward_block(const floating *diff, const floating *g, bint g_scalar,
                              floating factor, floating *gi, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating c
    if g_scalar:
        c = factor * g[0]
        for i in range(n):
            gi[i] = c * diff[i]
    else:
        for i in range(n):
            gi[i] = factor * g[i] * diff[i]


cdef void _mse_backward(const floating *diff, const floating *g, bint g_scalar, floating factor,
                        floating *gi, Py_ssize_t n, int n_threads) noexcept nogil:
    cdef Py_ssize_t b, start, nblocks = (n + BLOCK - 1) // BLOCK
    if n_threads <= 1 or n < PARALLEL_MIN_CHEAP:
        _mse_backward_block(diff, g, g_scalar, factor, gi, n)
        return
    for b in prange(nblocks, schedule="static", num_threads=n_threads):
        start = b * BLOCK
        _mse_backward_block(diff + start, g + (0 if g_scalar else start), g_scalar, factor,
                            gi + start, min(BLOCK, n - start))


def mse_loss_backward(diff, grad_loss, scale, grad_input, n_threads=1):
    """grad_input = 2 * scale * grad_loss * diff.

    diff: IN, the diff written by mse_loss_forward, float32/float64, C-contiguous.
    grad_loss: IN, same dtype; one element (the gradient of a summed or averaged loss)
        or diff's shape (the gradient of each squared error).
    scale: float (1 / numel for the 'mean' reduction, else 1).
    grad_input: OUT, diff's shape and dtype, written fresh.
    """
    cdef str k = "mse_loss_backward"
    dtype = _float_array(k, "diff", diff, None, None, False)
    _float_array(k, "grad_loss", grad_loss, dtype, None, False)
    cdef bint g_scalar = grad_loss.size == 1
    if not g_scalar and grad_loss.shape != diff.shape:
        raise ValueError(f"{k}: grad_loss has shape {grad_loss.shape}, expected one element "
                         f"or diff's shape {diff.shape}")
    _float_array(k, "grad_input", grad_input, dtype, diff.shape, True)
    cdef double factor
    try:
        factor = 2.0 * float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"{k}: scale must be a number, got {scale!r}") from None
    cdef int nt = _threads(k, n_threads)
    check_apart(k, (("grad_input", grad_input),), (("diff", diff), ("grad_loss", grad_loss)), ())
    cdef Py_ssize_t n = diff.size
    cdef void *pd = _ptr(diff)
    cdef void *pg = _ptr(grad_loss)
    cdef void *pgi = _ptr(grad_input)
    if n == 0:
        return
    if (<cnp.dtype>dtype).type_num == cnp.NPY_FLOAT32:
        with nogil:
            _mse_backward(<const float *>pd, <const float *>pg, g_scalar, <float>factor,
                          <float *>pgi, n, nt)
    else:
        with nogil:
            _mse_backward(<const double *>pd, <const double *>pg, g_scalar, factor,
                          <double *>pgi, n, nt)


# --------------------------------------------------------------------------- bce with logits

cdef double _bce_row(const floating *x, const floating *y, const floating *w,
                     const floating *pos_weight, double scale, floating *losses, floating *g,
                     Py_ssize_t C) noexcept nogil:
    """Losses (and scale * d(loss)/dx) of one row; returns the row's loss sum.

    loss = w * ((1 - y) x + lw * softplus(-x)),  lw = 1 + (pos_weight - 1) y, written as
           w * ((x >= 0 ? (1 - y) x : -pos_weight y x) + lw * log1p(exp(-|x|)))
    so that no two large terms cancel and exp never sees a positive argument.
    grad = w * (lw * sigmoid(x) - pos_weight * y)
    """
    cdef Py_ssize_t j
    cdef floating e
    cdef double v, t, pw, lw, wj, linear, loss, sig, total = 0
    for j in range(C):
        v, t = x[j], y[j]
        e = _exp(-fabs(x[j]))
        pw = pos_weight[j] if pos_weight != NULL else 1.0
        lw = 1 + (pw - 1) * t
        wj = w[j] if w != NULL else 1.0
        linear = (1 - t) * v if v >= 0 else -pw * t * v
        loss = wj * (linear + lw * _log1p(e))
        total += loss
        if losses != NULL:
            losses[j] = <floating>loss
        if g != NULL:
            sig = 1 / (1 + <double>e) if v >= 0 else e / (1 + <double>e)
            g[j] = <floating>(scale * wj * (lw * sig - pw * t))
    return total


cdef inline double _bce_sample_row(const floating *x, const floating *y, const floating *w,
                                   const floating *pos_weight, double scale, floating *losses,
                                   floating *grad, Py_ssize_t r, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t off = r * C
    return _bce_row(x + off, y + off, w + off if w != NULL else NULL, pos_weight, scale,
                    losses + off if losses != NULL else NULL,
                    grad + off if grad != NULL else NULL, C)


cdef double _bce(const floating *x, const floating *y, const floating *w,
                 const floating *pos_weight, double scale, floating *losses, floating *grad,
                 Py_ssize_t R, Py_ssize_t C, int n_threads) noexcept nogil:
    cdef Py_ssize_t r
    cdef double total = 0
    if n_threads <= 1 or R < 2 or R * C < PARALLEL_MIN_EXP:
        for r in range(R):
            total += _bce_sample_row(x, y, w, pos_weight, scale, losses, grad, r, C)
        return total
    for r in prange(R, schedule="static", num_threads=n_threads):
        total += _bce_sample_row(x, y, w, pos_weight, scale, losses, grad, r, C)
    return total


def binary_cross_entropy_with_logits_forward(input, target, weight, pos_weight, grad_scale,
                                             losses, grad, n_threads=1):
    """Elementwise binary cross-entropy on logits, fused with its gradient.

    input: IN, (R, C) float32/float64 logits, C-contiguous.
    target: IN, (R, C) of the same dtype: probabilities in [0, 1].
    weight: IN, (R, C) of the same dtype (rescales each element), or None.
    pos_weight: IN, (C,) of the same dtype (weight of positive examples per column), or None.
    grad_scale: float multiplying the gradient (1 / numel for the 'mean' reduction).
    losses: OUT, (R, C), written fresh: each element's loss; or None to skip it.
    grad: OUT, (R, C), written fresh: grad_scale * d(loss)/d(input); or None to skip it.
    Returns the sum of all losses as a Python float.
    """
    cdef str k = "binary_cross_entropy_with_logits_forward"
    dtype = _matrix(k, "input", input)
    shape = input.shape
    cdef Py_ssize_t R = input.shape[0], C = input.shape[1]
    _float_array(k, "target", target, dtype, shape, False)
    if weight is not None:
        _float_array(k, "weight", weight, dtype, shape, False)
    if pos_weight is not None:
        _float_array(k, "pos_weight", pos_weight, dtype, (C,), False)
    if losses is not None:
        _float_array(k, "losses", losses, dtype, shape, True)
    if grad is not None:
        _float_array(k, "grad", grad, dtype, shape, True)
    cdef double scale
    try:
        scale = float(grad_scale)
    except (TypeError, ValueError):
        raise TypeError(f"{k}: grad_scale must be a number, got {grad_scale!r}") from None
    cdef int nt = _threads(k, n_threads)
    check_apart(k, (("losses", losses), ("grad", grad)),
                (("input", input), ("target", target), ("weight", weight),
                 ("pos_weight", pos_weight)), ())
    cdef void *px = _ptr(input)
    cdef void *py = _ptr(target)
    cdef void *pw = _ptr(weight) if weight is not None else NULL
    cdef void *ppw = _ptr(pos_weight) if pos_weight is not None else NULL
    cdef void *pl = _ptr(losses) if losses is not None else NULL
    cdef void *pg = _ptr(grad) if grad is not None else NULL
    cdef double total
    if R * C == 0:
        return 0.0
    if (<cnp.dtype>dtype).type_num == cnp.NPY_FLOAT32:
        with nogil:
            total = _bce(<const float *>px, <const float *>py, <const float *>pw,
                         <const float *>ppw, scale, <float *>pl, <float *>pg, R, C, nt)
    else:
        with nogil:
            total = _bce(<const double *>px, <const double *>py, <const double *>pw,
                         <const double *>ppw, scale, <double *>pl, <double *>pg, R, C, nt)
    return total
