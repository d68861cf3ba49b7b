# Design: batch normalization kernels; the twin of fastgrad/reference/norm.py (same names,
# same signatures, same results).
# - Layout: the input is seen as (N, C, S), C-contiguous: N samples, C channels, S values
#   per channel and sample (S = H * W for BatchNorm2d, L for (N, C, L), 1 for (N, C)).
#   Statistics are per channel, over its N * S values: N contiguous runs of S.
# - Sums accumulate in double, in sixteen independent partial sums per channel that each
#   of its runs adds into, folded once (src_c/norm_sums.h), so the loops vectorize, are
#   not one serial dependency chain, and a short run costs no fold of its own;
#   the variance is shifted, corrected: with m values, a shift mean0 (the first sample's
#   mean: one run in N), then d = x - mean0 summed and squared in one pass, and
#   mean = mean0 + sum(d) / m, var = max(sum(d^2) / m - (sum(d) / m)^2, 0). Where sum(d) is
#   not finite (a channel holding inf or NaN) the shift is the whole channel's mean, which
#   such a channel keeps with its NaN variance. The correction removes the shift's offset
#   in double; its rounding error grows with (mean0 - mean)^2 / var, which a mean of the
#   channel's own values keeps below m (Samuelson's inequality): within m units of double
#   rounding, far below float's. A constant channel gets its value as mean and a variance
#   of exactly 0.
# - Passes run over chunks of channels in memory order (see _train_chunk).
# - Elementwise passes are axpy-shaped per run: out = (x - mean) * scale + shift with
#   per-channel constants, which gcc vectorizes.
# - Per-channel optional arrays (weight, bias, running statistics) arrive as NULL when
#   absent: weight 1, bias 0, no running update.
# - Threads: chunks of channels are split with a static prange when the input is big enough
#   to pay for a parallel region (~50 us); each thread writes only its own channels' outputs.
# - Outputs may be the matching input array itself (out = x, grad_input = grad_out or x):
#   a chunk's values are all read before any of them is written (and the elementwise pass
#   reads each element before writing it); any other overlap
#   between an output and another argument is refused.

import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport isfinite, sqrt
from libc.string cimport memset

from _checks cimport check_apart, check_array, check_number, check_shape, check_threads

cnp.import_array()

# the fastest code of this module is AVX2+FMA: an AVX-512 CPU runs that (_simd_level says so)
SIMD_KERNELS_TOP = 1
include "_simd.pxi"

__all__ = ["batch_norm_forward_train", "batch_norm_forward_eval", "batch_norm_backward"]

# ~3 passes over the data at ~0.5 ns per element: below this a parallel region costs more
# than it saves.
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 1 << 15


# --------------------------------------------------------------------------- lane sums

cdef extern from "norm_sums.h" nogil:
    # lane-parallel double sums that vectorize on every SIMD path, added into the lane
    # arrays given, folded once per channel (see the header)
    enum: FGN_LANES
    double fgn_fold(double *s)
    void fgn_sum_f32(const float *p, Py_ssize_t n, double *s)
    void fgn_sum_f64(const double *p, Py_ssize_t n, double *s)
    void fgn_dev_sums_f32(const float *p, Py_ssize_t n, double mean, double *s, double *t)
    void fgn_dev_sums_f64(const double *p, Py_ssize_t n, double mean, double *s, double *t)
    void fgn_dot_dev_f32(const float *g, const float *x, Py_ssize_t n, double mean, double *s)
    void fgn_dot_dev_f64(const double *g, const double *x, Py_ssize_t n, double mean, double *s)
    void fgn_affine_relu_f32(const float *x, float *y, Py_ssize_t n, float mean, float scale,
                             float shift)
    void fgn_affine_relu_f64(const double *x, double *y, Py_ssize_t n, double mean, double scale,
                             double shift)
    float fgn_masked_f32(float g, float y)
    double fgn_masked_f64(double g, double y)
    void fgn_masked_sums_f32(const float *g, const float *y, const float *x, Py_ssize_t n,
                             double mean, double *s, double *t)
    void fgn_masked_sums_f64(const double *g, const double *y, const double *x, Py_ssize_t n,
                             double mean, double *s, double *t)


cdef inline void _run_sum(const floating *p, Py_ssize_t n, double *s) noexcept nogil:
    # lanes s += p[0..n)
    if floating is float:
        fgn_sum_f32(p, n, s)
    else:
        fgn_sum_f64(p, n, s)


cdef inline void _run_dev_sums(const floating *p, Py_ssize_t n, double mean, double *s,
                               double *t) noexcept nogil:
    # lanes s += (p[j] - mean)^2, t += p[j] - mean
    if floating is float:
        fgn_dev_sums_f32(p, n, mean, s, t)
    else:
        fgn_dev_sums_f64(p, n, mean, s, t)


cdef inline void _run_dot_dev(const floating *g, const floating *x, Py_ssize_t n,
                              double mean, double *s) noexcept nogil:
    # lanes s += g[j] * (x[j] - mean)
    if floating is float:
        fgn_dot_dev_f32(g, x, n, mean, s)
    else:
        fgn_dot_dev_f64(g, x, n, mean, s)


cdef inline void _run_masked_sums(const floating *g, const floating *y, const floating *x,
                                  Py_ssize_t n, double mean, double *s, double *t) noexcept nogil:
    # over g masked by a ReLU's output y: lanes t += it, s += its product with x - mean
    if floating is float:
        fgn_masked_sums_f32(g, y, x, n, mean, s, t)
    else:
        fgn_masked_sums_f64(g, y, x, n, mean, s, t)


cdef inline floating _masked(floating g, floating y) noexcept nogil:
    # g where y > 0, else +0, branch-free (so the loops using it vectorize)
    if floating is float:
        return fgn_masked_f32(g, y)
    else:
        return fgn_masked_f64(g, y)


cdef inline void _run_affine(const floating *x, floating *y, Py_ssize_t n, floating mean,
                             floating scale, floating shift, bint relu) noexcept nogil:
    cdef Py_ssize_t j
    if not relu:
        for j in range(n):
            y[j] = (x[j] - mean) * scale + shift
        return
    # then relu_forward's max(v, 0): +0 for v <= 0, NaN kept
    if floating is float:
        fgn_affine_relu_f32(x, y, n, mean, scale, shift)
    else:
        fgn_affine_relu_f64(x, y, n, mean, scale, shift)


# --------------------------------------------------------------------------- chunks of channels

# Channels are processed CHUNK at a time, each pass over the chunk in memory order
# (sample by sample, its runs one after the other) with the chunk's lanes side by side:
# channel by channel, every run of a channel started a new page (a 32x32 plane is one
# page), and the prefetchers, which do not cross pages, left each run's start to wait
# for memory (the eval affine pass took 1.4x a copy; in memory order it takes a copy's
# time). Every channel's sums still take its runs in sample order: the same bits.
cdef enum:
    CHUNK = 64


cdef inline Py_ssize_t _chunk(Py_ssize_t C, int team) noexcept nogil:
    """Channels per chunk: CHUNK, or fewer so that each thread of the team gets one."""
    return max(<Py_ssize_t>1, min(<Py_ssize_t>CHUNK, (C + team - 1) // team))


cdef void _train_chunk(const floating *x, floating *out, Py_ssize_t N, Py_ssize_t C,
                       Py_ssize_t S, Py_ssize_t c0, Py_ssize_t c1, const floating *weight,
                       const floating *bias, floating *running_mean, floating *running_var,
                       double momentum, double eps, floating *save_mean,
                       floating *save_invstd, bint relu) noexcept nogil:
    cdef Py_ssize_t n, c, i, m = N * S
    cdef double total, mean, var, invstd, sum_dev, shift_mean
    cdef double lanes[CHUNK][FGN_LANES]
    cdef double dev_lanes[CHUNK][FGN_LANES]
    cdef double shift[CHUNK]
    cdef floating fmean[CHUNK]
    cdef floating fscale[CHUNK]
    cdef floating fshift[CHUNK]
    # The deviations are summed from a shift near the mean, the first sample's mean (one
    # run in N: a pass over the data fewer than the mean itself), and corrected by their
    # own mean (in double, see the module's notes)
    for c in range(c0, c1):
        i = c - c0
        memset(lanes[i], 0, sizeof(lanes[i]))
        _run_sum(x + c * S, S, lanes[i])
        shift[i] = fgn_fold(lanes[i]) / S
        memset(lanes[i], 0, sizeof(lanes[i]))
        memset(dev_lanes[i], 0, sizeof(dev_lanes[i]))
    for n in range(N):
        for c in range(c0, c1):
            i = c - c0
            _run_dev_sums(x + (n * C + c) * S, S, shift[i], lanes[i], dev_lanes[i])
    for c in range(c0, c1):
        i = c - c0
        mean = shift[i]
        total = fgn_fold(lanes[i])
        sum_dev = fgn_fold(dev_lanes[i])
        shift_mean = sum_dev / m
        if not isfinite(shift_mean):
            # the channel holds inf or NaN (or a deviation overflowed): from its whole
            # mean, as before such a channel's mean is that and its variance NaN
            memset(lanes[i], 0, sizeof(lanes[i]))
            for n in range(N):
                _run_sum(x + (n * C + c) * S, S, lanes[i])
            mean = fgn_fold(lanes[i]) / m
            memset(lanes[i], 0, sizeof(lanes[i]))
            memset(dev_lanes[i], 0, sizeof(dev_lanes[i]))
            for n in range(N):
                _run_dev_sums(x + (n * C + c) * S, S, mean, lanes[i], dev_lanes[i])
            total = fgn_fold(lanes[i])
            sum_dev = fgn_fold(dev_lanes[i])
            shift_mean = sum_dev / m
        if isfinite(shift_mean):
            mean = mean + shift_mean
            # squared deviations from the corrected mean: never below 0, whatever the rounding
            total = total - sum_dev * shift_mean
            if total < 0:
                total = 0
        var = total / m  # biased: what normalizes the batch
        invstd = 1 / sqrt(var + eps)
        save_mean[c] = <floating>mean
        save_invstd[c] = <floating>invstd
        if running_mean != NULL:
            # PyTorch's update: the running variance takes the unbiased estimate
            running_mean[c] = <floating>((1 - momentum) * running_mean[c] + momentum * mean)
            running_var[c] = <floating>((1 - momentum) * running_var[c] + momentum * (total / (m - 1)))
        fmean[i] = <floating>mean
        fscale[i] = <floating>((weight[c] if weight != NULL else 1) * invstd)
        fshift[i] = <floating>(bias[c] if bias != NULL else 0)
    for n in range(N):
        for c in range(c0, c1):
            i = c - c0
            _run_affine(x + (n * C + c) * S, out + (n * C + c) * S, S, fmean[i], fscale[i],
                        fshift[i], relu)


cdef void _eval_chunk(const floating *x, floating *out, Py_ssize_t N, Py_ssize_t C,
                      Py_ssize_t S, Py_ssize_t c0, Py_ssize_t c1, const floating *weight,
                      const floating *bias, const floating *running_mean,
                      const floating *running_var, double eps, floating *save_invstd,
                      bint relu) noexcept nogil:
    cdef Py_ssize_t n, c, i
    cdef double invstd
    cdef floating fscale[CHUNK]
    cdef floating fshift[CHUNK]
    for c in range(c0, c1):
        i = c - c0
        invstd = 1 / sqrt(<double>running_var[c] + eps)
        save_invstd[c] = <floating>invstd
        fscale[i] = <floating>((weight[c] if weight != NULL else 1) * invstd)
        fshift[i] = <floating>(bias[c] if bias != NULL else 0)
    for n in range(N):
        for c in range(c0, c1):
            i = c - c0
            _run_affine(x + (n * C + c) * S, out + (n * C + c) * S, S, running_mean[c],
                        fscale[i], fshift[i], relu)


cdef void _backward_chunk(const floating *g, const floating *x, const floating *y,
                          Py_ssize_t N, Py_ssize_t C, Py_ssize_t S, Py_ssize_t c0,
                          Py_ssize_t c1, const floating *weight, const floating *save_mean,
                          const floating *save_invstd, bint batch_stats,
                          floating *grad_input, floating *grad_weight,
                          floating *grad_bias) noexcept nogil:
    # y: a fused ReLU's output (the gradient is g where y > 0, else 0, as relu_backward
    # makes it), or NULL
    cdef Py_ssize_t n, c, i, j, m = N * S, at
    cdef double sum_g, dot, invstd
    cdef double g_lanes[CHUNK][FGN_LANES]
    cdef double dot_lanes[CHUNK][FGN_LANES]
    cdef floating fmean[CHUNK]
    cdef floating fscale[CHUNK]
    cdef floating mean_g[CHUNK]
    cdef floating kx[CHUNK]
    cdef floating gm, fm, sc, mg, k
    cdef bint stats = batch_stats and m > 0
    cdef const floating *gr
    cdef const floating *xr
    cdef const floating *yr
    cdef floating *dr
    for c in range(c0, c1):
        i = c - c0
        memset(g_lanes[i], 0, sizeof(g_lanes[i]))
        memset(dot_lanes[i], 0, sizeof(dot_lanes[i]))
    for n in range(N):
        for c in range(c0, c1):
            i = c - c0
            at = (n * C + c) * S
            if y != NULL:
                _run_masked_sums(g + at, y + at, x + at, S, save_mean[c], dot_lanes[i], g_lanes[i])
            else:
                _run_sum(g + at, S, g_lanes[i])
                _run_dot_dev(g + at, x + at, S, save_mean[c], dot_lanes[i])
    for c in range(c0, c1):
        i = c - c0
        invstd = save_invstd[c]
        sum_g = fgn_fold(g_lanes[i])
        dot = fgn_fold(dot_lanes[i])
        if grad_bias != NULL:
            grad_bias[c] = <floating>sum_g
        if grad_weight != NULL:
            grad_weight[c] = <floating>(dot * invstd)
        fmean[i] = save_mean[c]
        fscale[i] = <floating>(invstd * (weight[c] if weight != NULL else 1))
        if stats:
            mean_g[i] = <floating>(sum_g / m)
            kx[i] = <floating>(dot * invstd * invstd / m)
    if grad_input == NULL:
        return
    for n in range(N):
        for c in range(c0, c1):
            i = c - c0
            at = (n * C + c) * S
            gr = g + at
            xr = x + at
            dr = grad_input + at
            sc = fscale[i]
            if not stats:  # mean and invstd are constants: a per-channel scale
                if y != NULL:
                    yr = y + at
                    for j in range(S):
                        gm = _masked(gr[j], yr[j])
                        dr[j] = gm * sc
                else:
                    for j in range(S):
                        dr[j] = gr[j] * sc
                continue
            # The batch statistics depend on every x of the channel:
            # dx = scale * (g - mean(g) - (x - mean) * invstd^2 * mean(g * (x - mean)))
            fm, mg, k = fmean[i], mean_g[i], kx[i]
            if y != NULL:
                yr = y + at
                for j in range(S):
                    gm = _masked(gr[j], yr[j])
                    dr[j] = (gm - mg - (xr[j] - fm) * k) * sc
            else:
                for j in range(S):
                    dr[j] = (gr[j] - mg - (xr[j] - fm) * k) * sc


# --------------------------------------------------------------------------- chunk loops

cdef inline int _team(Py_ssize_t elements, Py_ssize_t C, int n_threads) noexcept nogil:
    return n_threads if n_threads > 1 and C > 1 and elements >= PARALLEL_MIN_ELEMENTS else 1


cdef void _train(const floating *x, floating *out, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                 const floating *weight, const floating *bias, floating *running_mean,
                 floating *running_var, double momentum, double eps, floating *save_mean,
                 floating *save_invstd, bint relu, int n_threads) noexcept nogil:
    cdef Py_ssize_t t
    cdef int team = _team(N * C * S, C, n_threads)
    cdef Py_ssize_t step = _chunk(C, team)
    if team == 1:  # no parallel region (it costs microseconds)
        for t in range((C + step - 1) // step):
            _train_chunk(x, out, N, C, S, t * step, min(C, (t + 1) * step), weight, bias,
                         running_mean, running_var, momentum, eps, save_mean, save_invstd, relu)
        return
    for t in prange((C + step - 1) // step, schedule="static", num_threads=team):
        _train_chunk(x, out, N, C, S, t * step, min(C, (t + 1) * step), weight, bias,
                     running_mean, running_var, momentum, eps, save_mean, save_invstd, relu)


cdef void _eval(const floating *x, floating *out, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                const floating *weight, const floating *bias, const floating *running_mean,
                const floating *running_var, double eps, floating *save_invstd, bint relu,
                int n_threads) noexcept nogil:
    cdef Py_ssize_t t
    cdef int team = _team(N * C * S, C, n_threads)
    cdef Py_ssize_t step = _chunk(C, team)
    if team == 1:
        for t in range((C + step - 1) // step):
            _eval_chunk(x, out, N, C, S, t * step, min(C, (t + 1) * step), weight, bias,
                        running_mean, running_var, eps, save_invstd, relu)
        return
    for t in prange((C + step - 1) // step, schedule="static", num_threads=team):
        _eval_chunk(x, out, N, C, S, t * step, min(C, (t + 1) * step), weight, bias,
                    running_mean, running_var, eps, save_invstd, relu)


cdef void _backward(const floating *g, const floating *x, const floating *y, Py_ssize_t N, Py_ssize_t C,
                    Py_ssize_t S, const floating *weight, const floating *save_mean,
                    const floating *save_invstd, bint batch_stats, floating *grad_input,
                    floating *grad_weight, floating *grad_bias, int n_threads) noexcept nogil:
    cdef Py_ssize_t t
    cdef int team = _team(N * C * S, C, n_threads)
    cdef Py_ssize_t step = _chunk(C, team)
    if team == 1:
        for t in range((C + step - 1) // step):
            _backward_chunk(g, x, y, N, C, S, t * step, min(C, (t + 1) * step), weight,
                            save_mean, save_invstd, batch_stats, grad_input, grad_weight,
                            grad_bias)
        return
    for t in prange((C + step - 1) // step, schedule="static", num_threads=team):
        _backward_chunk(g, x, y, N, C, S, t * step, min(C, (t + 1) * step), weight, save_mean,
                        save_invstd, batch_stats, grad_input, grad_weight, grad_bias)


# --------------------------------------------------------------------------- validation

cdef class _Checker:
    """Checks a kernel's arrays against the first one's dtype and (N, C, S) shape."""
    cdef str kernel
    cdef int typenum
    cdef object dtype
    cdef Py_ssize_t N, C, S

    def __init__(self, str kernel, str name, x):
        self.kernel = kernel
        self.typenum = check_array(kernel, name, x, 3, -1, False)
        self.dtype = x.dtype
        self.N, self.C, self.S = x.shape[0], x.shape[1], x.shape[2]

    cdef void *full(self, str name, a, bint output) except? NULL:
        """An (N, C, S) array: its data pointer."""
        check_array(self.kernel, name, a, -1, self.typenum, output)
        check_shape(self.kernel, name, a, (self.N, self.C, self.S))
        return cnp.PyArray_DATA(a)

    cdef void *channel(self, str name, a, bint output, bint optional) except? NULL:
        """A (C,) array (None allowed when optional): its data pointer, NULL for None."""
        if a is None:
            if optional:
                return NULL
            raise TypeError(f"{self.kernel}: {name} is required, got None")
        check_array(self.kernel, name, a, -1, self.typenum, output)
        check_shape(self.kernel, name, a, (self.C,))
        return cnp.PyArray_DATA(a)


cdef inline int _threads(str kernel, object n_threads) except -1:
    return check_threads(kernel, n_threads)


# --------------------------------------------------------------------------- public kernels

def batch_norm_forward_train(x, weight, bias, running_mean, running_var, momentum, eps, out,
                             save_mean, save_invstd, n_threads=1, relu=False):
    """Normalize each channel by its batch statistics; update the running ones.

    x: IN, (N, C, S) float32/float64, C-contiguous; N * S >= 1 (>= 2 with running stats).
    weight, bias: IN, (C,) same dtype, or None (1 and 0).
    running_mean, running_var: IN/OUT, (C,) or both None. When given:
        running = (1 - momentum) * running + momentum * batch statistic, the variance's
        being unbiased (divided by N * S - 1).
    momentum, eps: finite numbers >= 0.
    out: OUT, (N, C, S), written fresh: (x - mean) / sqrt(var + eps) * weight + bias with
        the biased batch variance (may be x itself).
    save_mean, save_invstd: OUT, (C,), written fresh: the batch mean and 1 / sqrt(var + eps),
        for batch_norm_backward.
    relu: when true, out is then max(out, 0) as relu_forward gives it (BatchNorm + ReLU in
        one pass; its backward takes out as relu_out).
    """
    kernel = "batch_norm_forward_train"
    check = _Checker(kernel, "x", x)
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *pout = check.full("out", out, True)
    cdef void *pw = check.channel("weight", weight, False, True)
    cdef void *pb = check.channel("bias", bias, False, True)
    cdef void *prm = check.channel("running_mean", running_mean, True, True)
    cdef void *prv = check.channel("running_var", running_var, True, True)
    cdef void *psm = check.channel("save_mean", save_mean, True, False)
    cdef void *psi = check.channel("save_invstd", save_invstd, True, False)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{kernel}: running_mean and running_var must both be given or both be None")
    cdef double mom = check_number(kernel, "momentum", momentum, True)
    cdef double epsilon = check_number(kernel, "eps", eps, True)
    cdef int nt = _threads(kernel, n_threads)
    cdef bint fuse_relu = bool(relu)
    check_apart(kernel, (("out", out), ("running_mean", running_mean), ("running_var", running_var),
                         ("save_mean", save_mean), ("save_invstd", save_invstd)),
                (("x", x), ("weight", weight), ("bias", bias)), (("out", "x"),))
    cdef Py_ssize_t N = check.N, C = check.C, S = check.S
    if C > 0 and N * S < 1:
        raise ValueError(f"{kernel}: no values per channel (input shape {x.shape}): batch statistics "
                         "need at least one")
    if C > 0 and prm != NULL and N * S < 2:
        raise ValueError(f"{kernel}: one value per channel (input shape {x.shape}): the unbiased "
                         "variance for the running statistics needs at least two")
    if C == 0:
        return
    if check.dtype == np.float32:
        with nogil:
            _train(<const float *>px, <float *>pout, N, C, S, <const float *>pw, <const float *>pb,
                   <float *>prm, <float *>prv, mom, epsilon, <float *>psm, <float *>psi, fuse_relu,
                   nt)
    else:
        with nogil:
            _train(<const double *>px, <double *>pout, N, C, S, <const double *>pw,
                   <const double *>pb, <double *>prm, <double *>prv, mom, epsilon, <double *>psm,
                   <double *>psi, fuse_relu, nt)


def batch_norm_forward_eval(x, weight, bias, running_mean, running_var, eps, out, save_invstd,
                            n_threads=1, relu=False):
    """Normalize each channel by the running statistics.

    x: IN, (N, C, S) float32/float64, C-contiguous.
    weight, bias: IN, (C,) same dtype, or None (1 and 0).
    running_mean, running_var: IN, (C,).
    eps: a finite number >= 0.
    out: OUT, (N, C, S), written fresh: (x - running_mean) / sqrt(running_var + eps) * weight
        + bias (may be x itself).
    save_invstd: OUT, (C,), written fresh: 1 / sqrt(running_var + eps), for batch_norm_backward.
    relu: as for batch_norm_forward_train.
    """
    kernel = "batch_norm_forward_eval"
    check = _Checker(kernel, "x", x)
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *pout = check.full("out", out, True)
    cdef void *pw = check.channel("weight", weight, False, True)
    cdef void *pb = check.channel("bias", bias, False, True)
    cdef void *prm = check.channel("running_mean", running_mean, False, False)
    cdef void *prv = check.channel("running_var", running_var, False, False)
    cdef void *psi = check.channel("save_invstd", save_invstd, True, False)
    cdef double epsilon = check_number(kernel, "eps", eps, True)
    cdef int nt = _threads(kernel, n_threads)
    cdef bint fuse_relu = bool(relu)
    check_apart(kernel, (("out", out), ("save_invstd", save_invstd)),
                (("x", x), ("weight", weight), ("bias", bias), ("running_mean", running_mean),
                 ("running_var", running_var)), (("out", "x"),))
    cdef Py_ssize_t N = check.N, C = check.C, S = check.S
    if C == 0:
        return
    if check.dtype == np.float32:
        with nogil:
            _eval(<const float *>px, <float *>pout, N, C, S, <const float *>pw, <const float *>pb,
                  <const float *>prm, <const float *>prv, epsilon, <float *>psi, fuse_relu, nt)
    else:
        with nogil:
            _eval(<const double *>px, <double *>pout, N, C, S, <const double *>pw,
                  <const double *>pb, <const double *>prm, <const double *>prv, epsilon,
                  <double *>psi, fuse_relu, nt)


def batch_norm_backward(grad_out, x, weight, save_mean, save_invstd, use_batch_stats, grad_input,
                        grad_weight, grad_bias, n_threads=1, relu_out=None):
    """Gradients of batch normalization for the input, weight and bias.

    grad_out: IN, (N, C, S) float32/float64, C-contiguous: the gradient of the output.
    x: IN, (N, C, S): the forward input.
    weight: IN, (C,) or None (1).
    save_mean, save_invstd: IN, (C,): the mean and 1 / sqrt(var + eps) the forward used
        (batch statistics from batch_norm_forward_train, or the running mean and the
        save_invstd of batch_norm_forward_eval).
    use_batch_stats: true when the forward normalized by batch statistics (their own
        dependence on x then enters grad_input), false for running statistics.
    grad_input: OUT, (N, C, S) or None, written fresh (may be grad_out or x itself).
    grad_weight, grad_bias: OUT, (C,) or None, written fresh: sum(grad_out * xhat), sum(grad_out).
    relu_out: IN, (N, C, S) or None: the output of a forward with relu=True; grad_out is
        then taken where relu_out > 0 and as 0 elsewhere (what relu_backward passes on).
    """
    kernel = "batch_norm_backward"
    check = _Checker(kernel, "grad_out", grad_out)
    cdef void *pg = cnp.PyArray_DATA(grad_out)
    cdef void *px = check.full("x", x, False)
    cdef void *pw = check.channel("weight", weight, False, True)
    cdef void *psm = check.channel("save_mean", save_mean, False, False)
    cdef void *psi = check.channel("save_invstd", save_invstd, False, False)
    cdef void *pgi = NULL
    if grad_input is not None:
        pgi = check.full("grad_input", grad_input, True)
    cdef void *pgw = check.channel("grad_weight", grad_weight, True, True)
    cdef void *pgb = check.channel("grad_bias", grad_bias, True, True)
    cdef void *py = NULL
    if relu_out is not None:
        py = check.full("relu_out", relu_out, False)
    cdef bint batch_stats = bool(use_batch_stats)
    cdef int nt = _threads(kernel, n_threads)
    check_apart(kernel, (("grad_input", grad_input), ("grad_weight", grad_weight), ("grad_bias", grad_bias)),
                (("grad_out", grad_out), ("x", x), ("weight", weight), ("save_mean", save_mean),
                 ("save_invstd", save_invstd), ("relu_out", relu_out)),
                (("grad_input", "grad_out"), ("grad_input", "x")))
    cdef Py_ssize_t N = check.N, C = check.C, S = check.S
    if C == 0:
        return
    if check.dtype == np.float32:
        with nogil:
            _backward(<const float *>pg, <const float *>px, <const float *>py, N, C, S, <const float *>pw,
                      <const float *>psm, <const float *>psi, batch_stats, <float *>pgi,
                      <float *>pgw, <float *>pgb, nt)
    else:
        with nogil:
            _backward(<const double *>pg, <const double *>px, <const double *>py, N, C, S,
                      <const double *>pw,
                      <const double *>psm, <const double *>psi, batch_stats, <double *>pgi,
                      <double *>pgw, <double *>pgb, nt)
