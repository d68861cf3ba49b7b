# Design: layer and group normalization; the twin of fastgrad/reference/group_norm.py.
# Both normalize groups of contiguous elements: layer_norm sees x as (R, K), one group per
# row, weight/bias per column; group_norm sees x as (N, C, S), one group per (n, g) of
# (C/G) * S contiguous elements, weight/bias per channel. The normalized value is
# (x - mean) * (rstd * weight) + bias, with rstd * weight formed once per parameter. Statistics are two-pass sums in
# double (mean, then squared deviations: no cancellation for data far from zero); the
# normalized value and its affine map are computed in double and rounded once.
# Backward: grad_input = rstd * (d - mean(d) - xhat * mean(d * xhat)) per group with
# d = grad_out * weight, written fresh. One pass per group gathers sum(g * xhat) and sum(g)
# per run of one parameter: the weight and bias gradients' terms and (times the weight)
# the group's two sums; a second pass writes grad_input. The weight and bias gradients
# (when asked for) add the runs' sums up per parameter in double, written fresh.
# Threads: groups are independent, so forward and grad_input run a static prange over
# groups when the work pays for a parallel region; the weight/bias sums are one serial
# pass afterwards (a reduction across groups; no shared writes inside the prange).

import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY, sqrt

from _checks cimport check_apart, check_array, check_like, check_number, check_shape, check_threads

cnp.import_array()

__all__ = ["layer_norm_forward", "layer_norm_backward", "group_norm_forward", "group_norm_backward"]

cdef Py_ssize_t PARALLEL_MIN = 1 << 16


# --------------------------------------------------------------------------- validation

cdef Py_ssize_t _groups(str kernel, x, num_groups) except -1:
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"{kernel}: num_groups must be an integer, got {num_groups!r}")
    c = x.shape[1]
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"{kernel}: num_groups={num_groups} must be >= 1 and divide the {c} channels of x")
    return <Py_ssize_t>num_groups


cdef int _check_sized(str kernel, int t, tuple arrays, tuple shape, bint output, bint optional) except -1:
    """Arrays ((name, array) pairs; None allowed when ``optional``) of type number ``t``
    and ``shape``: the affine parameters and their gradients, the saved statistics."""
    for name, a in arrays:
        if a is None and optional:
            continue
        check_array(kernel, name, a, -1, t, output)
        check_shape(kernel, name, a, shape)
    return 0


cdef int _check_forward(str k, int t, x, weight, bias, out, mean, rstd, tuple param_shape,
                        tuple stats_shape) except -1:
    """A forward call's arrays after x (checked before, of type number ``t``): the affine
    parameters (of param_shape, or None), out like x, the statistics (stats_shape), and no
    output sharing memory with another argument (the loops read inputs after writing
    outputs: statistics, then the affine map)."""
    _check_sized(k, t, (("weight", weight), ("bias", bias)), param_shape, False, True)
    check_array(k, "out", out, -1, t, True)
    check_like(k, "out", out, "x", x)
    _check_sized(k, t, (("mean", mean), ("rstd", rstd)), stats_shape, True, False)
    check_apart(k, (("out", out), ("mean", mean), ("rstd", rstd)),
                (("x", x), ("weight", weight), ("bias", bias)), ())
    return 0


cdef int _check_backward(str k, int t, x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias,
                         tuple param_shape, tuple stats_shape) except -1:
    """A backward call's arrays after x, as _check_forward's: grad_out and grad_input like
    x, the parameter gradients (of param_shape, or None); no output sharing memory with
    another argument (gradients, then sums)."""
    check_array(k, "grad_out", grad_out, -1, t, False)
    check_like(k, "grad_out", grad_out, "x", x)
    _check_sized(k, t, (("weight", weight),), param_shape, False, True)
    _check_sized(k, t, (("mean", mean), ("rstd", rstd)), stats_shape, False, False)
    check_array(k, "grad_input", grad_input, -1, t, True)
    check_like(k, "grad_input", grad_input, "x", x)
    _check_sized(k, t, (("grad_weight", grad_weight), ("grad_bias", grad_bias)), param_shape, True, True)
    check_apart(k, (("grad_input", grad_input), ("grad_weight", grad_weight), ("grad_bias", grad_bias)),
                (("x", x), ("grad_out", grad_out), ("weight", weight), ("mean", mean), ("rstd", rstd)), ())
    return 0


cdef inline void *_data(a) noexcept:
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


# --------------------------------------------------------------------------- shared loops
# A group is `blocks` runs of `run` contiguous elements; run b uses affine parameter
# param0 + b. Layer norm: one row = K runs of 1 element, parameters 0..K-1. Group norm:
# C/G channels of S elements, parameters g*C/G + b. (Nested loops, so no element needs a
# division to find its parameter.)

cdef void _forward_group(const floating *x, floating *y, Py_ssize_t blocks, Py_ssize_t run, Py_ssize_t param0,
                         const floating *w, const floating *b, double eps, floating *mean_out,
                         floating *rstd_out) noexcept nogil:
    cdef Py_ssize_t j, blk, size = blocks * run
    cdef double total = 0, mean, var, rstd, v, scale, shift
    for j in range(size):
        total += x[j]
    mean = total / size if size else 0.0
    total = 0
    for j in range(size):
        v = x[j] - mean
        total += v * v
    var = total / size if size else 0.0
    rstd = 1.0 / sqrt(var + eps) if var + eps > 0 else INFINITY
    mean_out[0] = <floating>mean
    rstd_out[0] = <floating>rstd
    for blk in range(blocks):
        scale = rstd * (<double>w[param0 + blk] if w != NULL else 1.0)
        shift = <double>b[param0 + blk] if b != NULL else 0.0
        for j in range(blk * run, (blk + 1) * run):
            y[j] = <floating>((x[j] - mean) * scale + shift)


cdef void _backward_group(const floating *x, const floating *g, floating *gi, Py_ssize_t blocks, Py_ssize_t run,
                          Py_ssize_t param0, const floating *w, double mean, double rstd,
                          double *block_sums) noexcept nogil:
    # One pass gathers, per run of one parameter, sum(g * xhat) and sum(g): the weight and
    # bias gradients' terms, and (times the weight) the two sums grad_input needs.
    cdef Py_ssize_t j, blk, size = blocks * run
    cdef double sum_d = 0, sum_dx = 0, wv, xhat, mean_d, mean_dx, sw, sb, gj
    if size == 0:
        return
    for blk in range(blocks):
        sw = 0
        sb = 0
        for j in range(blk * run, (blk + 1) * run):
            gj = g[j]
            sb += gj
            sw += gj * ((x[j] - mean) * rstd)
        block_sums[2 * blk] = sw
        block_sums[2 * blk + 1] = sb
        wv = <double>w[param0 + blk] if w != NULL else 1.0
        sum_d += wv * sb
        sum_dx += wv * sw
    mean_d = sum_d / size
    mean_dx = sum_dx / size
    for blk in range(blocks):
        wv = <double>w[param0 + blk] if w != NULL else 1.0
        for j in range(blk * run, (blk + 1) * run):
            xhat = (x[j] - mean) * rstd
            gi[j] = <floating>(rstd * (g[j] * wv - mean_d - xhat * mean_dx))


cdef void _param_grads(const double *block_sums, Py_ssize_t n_groups, Py_ssize_t blocks,
                       Py_ssize_t groups_per_sample, Py_ssize_t period, floating *gw, floating *gb,
                       double *acc_w, double *acc_b) noexcept nogil:
    """Weight/bias gradients: the groups' per-run sums added up per parameter (serially:
    a reduction across groups); acc_w/acc_b are zeroed double scratch of `period` entries."""
    cdef Py_ssize_t grp, blk, p
    for grp in range(n_groups):
        for blk in range(blocks):
            p = (grp % groups_per_sample) * blocks + blk
            acc_w[p] += block_sums[2 * (grp * blocks + blk)]
            acc_b[p] += block_sums[2 * (grp * blocks + blk) + 1]
    for p in range(period):
        if gw != NULL:
            gw[p] = <floating>acc_w[p]
        if gb != NULL:
            gb[p] = <floating>acc_b[p]


cdef void _forward_all(const floating *x, floating *y, Py_ssize_t n_groups, Py_ssize_t blocks, Py_ssize_t run,
                       Py_ssize_t groups_per_sample, const floating *w, const floating *b, double eps,
                       floating *mean, floating *rstd, int n_threads) noexcept nogil:
    cdef Py_ssize_t grp, size = blocks * run
    if n_threads <= 1 or n_groups < 2 or n_groups * size < PARALLEL_MIN:
        for grp in range(n_groups):
            _forward_group(x + grp * size, y + grp * size, blocks, run, (grp % groups_per_sample) * blocks,
                           w, b, eps, mean + grp, rstd + grp)
        return
    for grp in prange(n_groups, schedule="static", num_threads=n_threads):
        _forward_group(x + grp * size, y + grp * size, blocks, run, (grp % groups_per_sample) * blocks,
                       w, b, eps, mean + grp, rstd + grp)


cdef void _backward_all(const floating *x, const floating *g, floating *gi, Py_ssize_t n_groups, Py_ssize_t blocks,
                        Py_ssize_t run, Py_ssize_t groups_per_sample, const floating *w, const floating *mean,
                        const floating *rstd, double *block_sums, int n_threads) noexcept nogil:
    cdef Py_ssize_t grp, size = blocks * run
    if n_threads <= 1 or n_groups < 2 or n_groups * size < PARALLEL_MIN:
        for grp in range(n_groups):
            _backward_group(x + grp * size, g + grp * size, gi + grp * size, blocks, run,
                            (grp % groups_per_sample) * blocks, w, mean[grp], rstd[grp],
                            block_sums + 2 * grp * blocks)
        return
    for grp in prange(n_groups, schedule="static", num_threads=n_threads):
        _backward_group(x + grp * size, g + grp * size, gi + grp * size, blocks, run,
                        (grp % groups_per_sample) * blocks, w, mean[grp], rstd[grp],
                        block_sums + 2 * grp * blocks)


# --------------------------------------------------------------------------- dispatch

cdef _run_forward(x, weight, bias, out, mean, rstd, Py_ssize_t n_groups, Py_ssize_t blocks, Py_ssize_t run,
                  Py_ssize_t groups_per_sample, double eps, int nt):
    cdef void *px = _data(x)
    cdef void *py = _data(out)
    cdef void *pw = _data(weight)
    cdef void *pb = _data(bias)
    cdef void *pm = _data(mean)
    cdef void *pr = _data(rstd)
    if n_groups == 0:
        return
    if x.dtype == np.float32:
        with nogil:
            _forward_all(<const float *>px, <float *>py, n_groups, blocks, run, groups_per_sample,
                         <const float *>pw, <const float *>pb, eps, <float *>pm, <float *>pr, nt)
    else:
        with nogil:
            _forward_all(<const double *>px, <double *>py, n_groups, blocks, run, groups_per_sample,
                         <const double *>pw, <const double *>pb, eps, <double *>pm, <double *>pr, nt)


cdef _run_backward(x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias, Py_ssize_t n_groups,
                   Py_ssize_t blocks, Py_ssize_t run, Py_ssize_t groups_per_sample, Py_ssize_t period, int nt):
    cdef void *px = _data(x)
    cdef void *pg = _data(grad_out)
    cdef void *pw = _data(weight)
    cdef void *pm = _data(mean)
    cdef void *pr = _data(rstd)
    cdef void *pgi = _data(grad_input)
    cdef void *pgw = _data(grad_weight)
    cdef void *pgb = _data(grad_bias)
    cdef bint params = (grad_weight is not None or grad_bias is not None) and period > 0
    cdef double[::1] sums = np.zeros(max(2 * n_groups * blocks, 1))   # per group and run: sum(g xhat), sum(g)
    cdef double[::1] acc = np.zeros(max(2 * period, 1))
    cdef double *ps = &sums[0]
    cdef double *pa = &acc[0]
    if x.dtype == np.float32:
        with nogil:
            _backward_all(<const float *>px, <const float *>pg, <float *>pgi, n_groups, blocks, run,
                          groups_per_sample, <const float *>pw, <const float *>pm, <const float *>pr, ps, nt)
            if params:
                _param_grads(ps, n_groups, blocks, groups_per_sample, period, <float *>pgw, <float *>pgb, pa,
                             pa + period)
    else:
        with nogil:
            _backward_all(<const double *>px, <const double *>pg, <double *>pgi, n_groups, blocks, run,
                          groups_per_sample, <const double *>pw, <const double *>pm, <const double *>pr, ps, nt)
            if params:
                _param_grads(ps, n_groups, blocks, groups_per_sample, period, <double *>pgw, <double *>pgb, pa,
                             pa + period)


# --------------------------------------------------------------------------- layer norm

def layer_norm_forward(x, weight, bias, eps, out, mean, rstd, n_threads=1):
    """out[r, k] = (x[r, k] - mean[r]) * rstd[r] * weight[k] + bias[k].

    x: IN, (R, K) float32/float64, C-contiguous. weight, bias: IN, (K,) or None.
    out: OUT, like x, fresh. mean, rstd: OUT, (R,), fresh.
    """
    cdef str k = "layer_norm_forward"
    cdef int t = check_array(k, "x", x, 2, -1, False)
    rows, width = x.shape
    _check_forward(k, t, x, weight, bias, out, mean, rstd, (width,), (rows,))
    cdef double e = check_number(k, "eps", eps, True)
    cdef int nt = check_threads(k, n_threads)
    # each row is a group of K runs of one element, parameters 0..K-1
    _run_forward(x, weight, bias, out, mean, rstd, rows, width, 1, 1, e, nt)


def layer_norm_backward(x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias, n_threads=1):
    """Gradients of layer_norm_forward: grad_input = rstd * (d - mean(d) - xhat * mean(d * xhat))
    per row, with d = grad_out * weight and xhat the normalized x; grad_weight[k] = sum over
    rows of grad_out * xhat, grad_bias[k] = sum of grad_out.

    x, grad_out: IN, (R, K). weight: IN, (K,) or None. mean, rstd: IN, (R,), from forward.
    grad_input: OUT, like x, fresh. grad_weight, grad_bias: OUT, (K,) or None, fresh.
    """
    cdef str k = "layer_norm_backward"
    cdef int t = check_array(k, "x", x, 2, -1, False)
    rows, width = x.shape
    _check_backward(k, t, x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias, (width,),
                    (rows,))
    cdef int nt = check_threads(k, n_threads)
    _run_backward(x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias, rows, width, 1, 1,
                  width, nt)


# --------------------------------------------------------------------------- group norm

def group_norm_forward(x, weight, bias, num_groups, eps, out, mean, rstd, n_threads=1):
    """out[n, c, s] = (x - mean[n, g]) * rstd[n, g] * weight[c] + bias[c], g = c // (C / G).

    x: IN, (N, C, S) float32/float64, C-contiguous. weight, bias: IN, (C,) or None.
    out: OUT, like x, fresh. mean, rstd: OUT, (N, G), fresh.
    """
    cdef str k = "group_norm_forward"
    cdef int t = check_array(k, "x", x, 3, -1, False)
    n, c, s = x.shape
    cdef Py_ssize_t g = _groups(k, x, num_groups)
    _check_forward(k, t, x, weight, bias, out, mean, rstd, (c,), (n, g))
    cdef double e = check_number(k, "eps", eps, True)
    cdef int nt = check_threads(k, n_threads)
    # group (n, g) holds channels g*C/G .. (g+1)*C/G - 1: C/G runs of S elements
    _run_forward(x, weight, bias, out, mean, rstd, n * g, c // g, s, g, e, nt)


def group_norm_backward(x, grad_out, weight, mean, rstd, num_groups, grad_input, grad_weight, grad_bias,
                        n_threads=1):
    """Gradients of group_norm_forward, as layer_norm_backward's per group of (C/G) * S
    elements, the weight and bias gradients summed per channel over N and S.

    x, grad_out: IN, (N, C, S). weight: IN, (C,) or None. mean, rstd: IN, (N, G).
    grad_input: OUT, like x, fresh. grad_weight, grad_bias: OUT, (C,) or None, fresh.
    """
    cdef str k = "group_norm_backward"
    cdef int t = check_array(k, "x", x, 3, -1, False)
    n, c, s = x.shape
    cdef Py_ssize_t g = _groups(k, x, num_groups)
    _check_backward(k, t, x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias, (c,),
                    (n, g))
    cdef int nt = check_threads(k, n_threads)
    _run_backward(x, grad_out, weight, mean, rstd, grad_input, grad_weight, grad_bias, n * g, c // g, s, g,
                  c, nt)
