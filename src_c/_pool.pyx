# Design: 2-D pooling kernels (max, average, adaptive average) and their gradients; the
# twin of fastgrad/reference/pool.py (same names, same signatures, same checks).
# Data layout: NCHW, C-contiguous float32/float64; every (n, c) plane is independent,
# so a plane is the unit of work. The output size is out's shape (the ops layer
# computes it with PyTorch's formula, ceil_mode included); the kernels only read the
# input positions a window covers, never the padding.
# Semantics follow PyTorch's CPU kernels exactly:
#   max      scan each window row by row; a value replaces the running maximum when it
#            is greater (so ties keep the FIRST maximum) or when it is NaN (so NaN
#            propagates); indices hold h * W + w within the input plane.
#   average  the window is clipped to the padded input (ceil_mode windows may run past
#            it), its divisor is divisor_override, else its clipped size with padding
#            (count_include_pad) or without; a window with no input position gives 0.
#   adaptive output cell i covers rows floor(i*H/OH) .. ceil((i+1)*H/OH) - 1; sum / kh / kw.
# Gradients are written fresh: zero, then each output's gradient is added to the input
# positions it came from (overlapping windows add up).
# Max pooling's 2x2 stride-2 window (no padding, no dilation) has its own C loops in
# pool_kernels.h: forward reads each row pair once; backward, when the 2x2 blocks tile
# the input and every index lies in its own block, writes grad_x in one pass (each
# element: its block's gradient or 0). Same results, bit for bit, as the generic path.
# Speed: output columns whose windows lie inside the input (all but a padding-wide
# border) are computed a row at a time, one tap per pass, by small C loops that the
# compiler vectorises (see the extern block); border outputs take the scalar path.
# Threads: prange over planes (each thread owns whole planes of the output and of
# grad_x, so no two threads write one element), only when the work is big enough to
# pay for a parallel region.

import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset

from _checks cimport check_array, check_disjoint, check_threads, same_shape

cnp.import_array()

# the fastest code of this module is AVX2+FMA: an AVX-512 CPU runs that (_simd_level says so)
SIMD_KERNELS_TOP = 1
include "_simd.pxi"

__all__ = ["max_pool2d_forward", "max_pool2d_backward",
           "avg_pool2d_forward", "avg_pool2d_backward",
           "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward"]

# Row kernels for the interior of an output row, where every window lies inside the
# input along the width: one tap at a time is a strided pass over the row with no
# bounds tests, written in C so that the running maximum is a branch-free select the
# compiler vectorises (a branch on random data mispredicts about half the time).
# Taps are visited in the same order as the scalar loops, so results are identical.
cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    /* baseline build: also an AVX2 copy, chosen by the selected SIMD level (the selects
       vectorise far better with AVX2's blends and 256-bit compares) */
    #include "cpu_features.h"
    #define FG_POOL_ROW_KERNELS(T, SUF)                                                   \
    static inline __attribute__((always_inline)) void                                     \
    fg_pool_max_tap_body_##SUF(const T *xrow, T *yrow, int64_t *irow, ptrdiff_t lo,       \
                               ptrdiff_t hi, ptrdiff_t sw, ptrdiff_t off, int64_t base)   \
    {                                                                                     \
        for (ptrdiff_t ow = lo; ow < hi; ow++) {                                          \
            const ptrdiff_t iw = ow * sw + off;                                           \
            const T v = xrow[iw], best = yrow[ow];                                        \
            const int take = (v > best) | (v != v);   /* greater, or NaN */               \
            yrow[ow] = take ? v : best;                                                   \
            irow[ow] = take ? base + iw : irow[ow];                                       \
        }                                                                                 \
    }                                                                                     \
    static inline __attribute__((always_inline)) void                                     \
    fg_pool_max_tap_##SUF##_body(const T *xrow, T *yrow, int64_t *irow, ptrdiff_t lo,     \
                                 ptrdiff_t hi, ptrdiff_t sw, ptrdiff_t off, int64_t base) \
    {   /* constant strides for the common cases, so loads need no gathering */          \
        if (sw == 1) fg_pool_max_tap_body_##SUF(xrow, yrow, irow, lo, hi, 1, off, base);  \
        else if (sw == 2) fg_pool_max_tap_body_##SUF(xrow, yrow, irow, lo, hi, 2, off, base); \
        else fg_pool_max_tap_body_##SUF(xrow, yrow, irow, lo, hi, sw, off, base);         \
    }                                                                                     \
    FG_SIMD_CLONE_VOID(fg_pool_max_tap_##SUF,                                             \
                       (const T *xrow, T *yrow, int64_t *irow, ptrdiff_t lo, ptrdiff_t hi, \
                        ptrdiff_t sw, ptrdiff_t off, int64_t base),                       \
                       (xrow, yrow, irow, lo, hi, sw, off, base))                         \
    static inline __attribute__((always_inline)) void                                     \
    fg_pool_sum_tap_body_##SUF(const T *xrow, T *yrow, ptrdiff_t lo, ptrdiff_t hi,        \
                               ptrdiff_t sw, ptrdiff_t off)                               \
    {                                                                                     \
        for (ptrdiff_t ow = lo; ow < hi; ow++)                                            \
            yrow[ow] += xrow[ow * sw + off];                                              \
    }                                                                                     \
    static inline __attribute__((always_inline)) void                                     \
    fg_pool_sum_tap_##SUF##_body(const T *xrow, T *yrow, ptrdiff_t lo, ptrdiff_t hi,      \
                                 ptrdiff_t sw, ptrdiff_t off)                             \
    {                                                                                     \
        if (sw == 1) fg_pool_sum_tap_body_##SUF(xrow, yrow, lo, hi, 1, off);              \
        else if (sw == 2) fg_pool_sum_tap_body_##SUF(xrow, yrow, lo, hi, 2, off);         \
        else fg_pool_sum_tap_body_##SUF(xrow, yrow, lo, hi, sw, off);                     \
    }                                                                                     \
    FG_SIMD_CLONE_VOID(fg_pool_sum_tap_##SUF,                                             \
                       (const T *xrow, T *yrow, ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t sw, \
                        ptrdiff_t off),                                                   \
                       (xrow, yrow, lo, hi, sw, off))
    FG_POOL_ROW_KERNELS(float, f32)
    FG_POOL_ROW_KERNELS(double, f64)
    """
    void fg_pool_max_tap_f32(const float *xrow, float *yrow, int64_t *irow, Py_ssize_t lo,
                             Py_ssize_t hi, Py_ssize_t sw, Py_ssize_t off, int64_t base) nogil
    void fg_pool_max_tap_f64(const double *xrow, double *yrow, int64_t *irow, Py_ssize_t lo,
                             Py_ssize_t hi, Py_ssize_t sw, Py_ssize_t off, int64_t base) nogil
    void fg_pool_sum_tap_f32(const float *xrow, float *yrow, Py_ssize_t lo, Py_ssize_t hi,
                             Py_ssize_t sw, Py_ssize_t off) nogil
    void fg_pool_sum_tap_f64(const double *xrow, double *yrow, Py_ssize_t lo, Py_ssize_t hi,
                             Py_ssize_t sw, Py_ssize_t off) nogil


# 2x2, stride 2, no padding or dilation: forward rows in one pass, backward written in one
# pass when every index lies in its own window (see the header's Design note).
cdef extern from "pool_kernels.h" nogil:
    void fg_pool_max2x2_forward_f32(const float *x, float *y, int64_t *idx, Py_ssize_t rows,
                                    Py_ssize_t cols, Py_ssize_t W, Py_ssize_t OW)
    void fg_pool_max2x2_forward_f64(const double *x, double *y, int64_t *idx, Py_ssize_t rows,
                                    Py_ssize_t cols, Py_ssize_t W, Py_ssize_t OW)
    int fg_pool_max2x2_backward_f32(const float *g, const int64_t *idx, float *gx,
                                    Py_ssize_t OH, Py_ssize_t OW)
    int fg_pool_max2x2_backward_f64(const double *g, const int64_t *idx, double *gx,
                                    Py_ssize_t OH, Py_ssize_t OW)
    int fg_pool_any_outside(const int64_t *idx, Py_ssize_t n, int64_t limit)


# Window elements visited below which a kernel runs on one thread (about 50 us).
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 16
cdef Py_ssize_t PARAM_MAX = 2147483647


# --------------------------------------------------------------------------- windows

cdef inline void _taps(Py_ssize_t o, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t dil,
                       Py_ssize_t k, Py_ssize_t size, Py_ssize_t *first,
                       Py_ssize_t *count) noexcept nogil:
    """The taps start + t*dil (t < k) of window o that fall inside [0, size):
    the first one and how many there are (0 when the window covers only padding)."""
    cdef Py_ssize_t start = o * stride - pad
    cdef Py_ssize_t lo, hi
    if dil == 1:
        lo = -start if start < 0 else 0
        hi = size - start if size - start < k else k
    else:
        lo = (-start + dil - 1) // dil if start < 0 else 0
        hi = (size - start + dil - 1) // dil if size > start else 0
        if hi > k:
            hi = k
    if hi <= lo:
        first[0] = 0
        count[0] = 0
    else:
        first[0] = start + lo * dil
        count[0] = hi - lo


cdef inline void _avg_window(Py_ssize_t o, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t k,
                             Py_ssize_t size, Py_ssize_t *lo, Py_ssize_t *hi,
                             Py_ssize_t *padded) noexcept nogil:
    """Average-pool window o: input range [lo, hi) and its length counting padding, the
    window clipped to the padded input [-pad, size + pad) as PyTorch does."""
    cdef Py_ssize_t start = o * stride - pad
    cdef Py_ssize_t end = start + k
    if end > size + pad:
        end = size + pad
    padded[0] = end - start
    lo[0] = start if start > 0 else 0
    hi[0] = end if end < size else size


cdef inline Py_ssize_t _avg_divisor(Py_ssize_t divisor_override, bint count_include_pad,
                                    Py_ssize_t padded_h, Py_ssize_t padded_w,
                                    Py_ssize_t inside_h, Py_ssize_t inside_w) noexcept nogil:
    if divisor_override != 0:
        return divisor_override
    if count_include_pad:
        return padded_h * padded_w
    return inside_h * inside_w


# --------------------------------------------------------------------------- plane loops

cdef inline void _interior(Py_ssize_t n_out, Py_ssize_t stride, Py_ssize_t pad,
                           Py_ssize_t span, Py_ssize_t size, Py_ssize_t *lo,
                           Py_ssize_t *hi) noexcept nogil:
    """Outputs [lo, hi) whose whole window (span = dil*(k-1)+1 positions from
    o*stride - pad) lies inside [0, size)."""
    cdef Py_ssize_t a = (pad + stride - 1) // stride
    cdef Py_ssize_t b = (size - span + pad) // stride + 1 if size - span + pad >= 0 else 0
    if b > n_out:
        b = n_out
    if a > b:
        a = b
    lo[0] = a
    hi[0] = b


cdef inline void _max_window(const floating *x, floating *y, int64_t *idx, Py_ssize_t W,
                             Py_ssize_t h0, Py_ssize_t nh, Py_ssize_t dh, Py_ssize_t w0,
                             Py_ssize_t nw, Py_ssize_t dw) noexcept nogil:
    """One window, scalar: its valid taps are rows h0 + a*dh (a < nh), columns
    w0 + b*dw (b < nw)."""
    cdef Py_ssize_t a, b, ih, iw, best_i = h0 * W + w0
    cdef floating v, best = -INFINITY
    for a in range(nh):
        ih = h0 + a * dh
        for b in range(nw):
            iw = w0 + b * dw
            v = x[ih * W + iw]
            if v > best or v != v:  # greater (ties keep the first), or NaN
                best = v
                best_i = ih * W + iw
    y[0] = best
    idx[0] = best_i


cdef void _max_forward_plane(const floating *x, floating *y, int64_t *idx,
                             Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                             Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                             Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                             Py_ssize_t dw) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, nh, w0, nw, a, b, ih, lo, hi
    cdef floating *yrow
    cdef int64_t *irow
    if (kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0 and dh == 1
            and dw == 1 and W < 2147483646):  # window offsets fit 32 bits in the C loops
        _max2x2_forward_plane(x, y, idx, H, W, OH, OW)
        return
    _interior(OW, sw, pw, dw * (kw - 1) + 1, W, &lo, &hi)
    for oh in range(OH):
        _taps(oh, sh, ph, dh, kh, H, &h0, &nh)
        yrow = y + oh * OW
        irow = idx + oh * OW
        for ow in range(lo):
            _taps(ow, sw, pw, dw, kw, W, &w0, &nw)
            _max_window(x, yrow + ow, irow + ow, W, h0, nh, dh, w0, nw, dw)
        for ow in range(hi, OW):
            _taps(ow, sw, pw, dw, kw, W, &w0, &nw)
            _max_window(x, yrow + ow, irow + ow, W, h0, nh, dh, w0, nw, dw)
        if lo >= hi:
            continue
        for ow in range(lo, hi):  # the interior, one tap at a time over the whole row
            yrow[ow] = -INFINITY
            irow[ow] = h0 * W + ow * sw - pw
        for a in range(nh):
            ih = h0 + a * dh
            for b in range(kw):
                if floating is float:
                    fg_pool_max_tap_f32(x + ih * W, yrow, irow, lo, hi, sw, b * dw - pw, ih * W)
                else:
                    fg_pool_max_tap_f64(x + ih * W, yrow, irow, lo, hi, sw, b * dw - pw, ih * W)


cdef void _max2x2_forward_plane(const floating *x, floating *y, int64_t *idx, Py_ssize_t H,
                                Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """2x2 windows, stride 2, no padding: the full windows row pair by row pair (C); with
    ceil_mode on an odd H or W, the last row or column of windows holds one input row or
    column and takes the scalar path."""
    cdef Py_ssize_t oh, ow
    cdef Py_ssize_t full_h = min(OH, H // 2), full_w = min(OW, W // 2)
    if full_w > 0:
        if floating is float:
            fg_pool_max2x2_forward_f32(x, y, idx, full_h, full_w, W, OW)
        else:
            fg_pool_max2x2_forward_f64(x, y, idx, full_h, full_w, W, OW)
    for oh in range(OH):
        ow = full_w if oh < full_h else 0
        while ow < OW:
            _max_window(x, y + oh * OW + ow, idx + oh * OW + ow, W, 2 * oh, min(2, H - 2 * oh),
                        1, 2 * ow, min(2, W - 2 * ow), 1)
            ow += 1


cdef void _max_backward_plane(const floating *g, const int64_t *idx, floating *gx,
                              Py_ssize_t n_out, Py_ssize_t n_in) noexcept nogil:
    cdef Py_ssize_t i
    memset(gx, 0, n_in * sizeof(floating))
    for i in range(n_out):
        gx[idx[i]] += g[i]


cdef void _avg_forward_plane(const floating *x, floating *y, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                             bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, h1, hp, w0, w1, wp, ih, iw, lo, hi, b
    cdef floating s, divisor
    cdef floating *yrow
    _interior(OW, sw, pw, kw, W, &lo, &hi)
    for oh in range(OH):
        _avg_window(oh, sh, ph, kh, H, &h0, &h1, &hp)
        yrow = y + oh * OW
        for ow in range(OW):
            if lo <= ow < hi and h0 < h1:
                continue  # the interior: below, one tap at a time over the whole row
            _avg_window(ow, sw, pw, kw, W, &w0, &w1, &wp)
            if h0 >= h1 or w0 >= w1:
                yrow[ow] = 0
                continue
            s = 0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    s += x[ih * W + iw]
            yrow[ow] = s / _avg_divisor(divisor_override, count_include_pad,
                                        hp, wp, h1 - h0, w1 - w0)
        if lo >= hi or h0 >= h1:
            continue
        # interior windows span kw columns inside the input: one divisor for the row
        divisor = _avg_divisor(divisor_override, count_include_pad, hp, kw, h1 - h0, kw)
        for ow in range(lo, hi):
            yrow[ow] = 0
        for ih in range(h0, h1):
            for b in range(kw):
                if floating is float:
                    fg_pool_sum_tap_f32(x + ih * W, yrow, lo, hi, sw, b - pw)
                else:
                    fg_pool_sum_tap_f64(x + ih * W, yrow, lo, hi, sw, b - pw)
        for ow in range(lo, hi):
            yrow[ow] = yrow[ow] / divisor


cdef void _avg_backward_plane(const floating *g, floating *gx, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t kh, Py_ssize_t kw,
                              Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                              bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, h1, hp, w0, w1, wp, ih, iw
    cdef floating share
    memset(gx, 0, H * W * sizeof(floating))
    for oh in range(OH):
        _avg_window(oh, sh, ph, kh, H, &h0, &h1, &hp)
        for ow in range(OW):
            _avg_window(ow, sw, pw, kw, W, &w0, &w1, &wp)
            if h0 >= h1 or w0 >= w1:
                continue
            share = g[oh * OW + ow] / _avg_divisor(divisor_override, count_include_pad,
                                                   hp, wp, h1 - h0, w1 - w0)
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    gx[ih * W + iw] += share


cdef void _adaptive_forward_plane(const floating *x, floating *y, Py_ssize_t H, Py_ssize_t W,
                                  Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, h1, w0, w1, ih, iw
    cdef floating s
    for oh in range(OH):
        h0 = oh * H // OH
        h1 = ((oh + 1) * H + OH - 1) // OH
        for ow in range(OW):
            w0 = ow * W // OW
            w1 = ((ow + 1) * W + OW - 1) // OW
            s = 0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    s += x[ih * W + iw]
            y[oh * OW + ow] = s / <floating>(h1 - h0) / <floating>(w1 - w0)


cdef void _adaptive_backward_plane(const floating *g, floating *gx, Py_ssize_t H, Py_ssize_t W,
                                   Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    cdef Py_ssize_t oh, ow, h0, h1, w0, w1, ih, iw
    cdef floating share
    memset(gx, 0, H * W * sizeof(floating))
    for oh in range(OH):
        h0 = oh * H // OH
        h1 = ((oh + 1) * H + OH - 1) // OH
        for ow in range(OW):
            w0 = ow * W // OW
            w1 = ((ow + 1) * W + OW - 1) // OW
            share = g[oh * OW + ow] / <floating>(h1 - h0) / <floating>(w1 - w0)
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    gx[ih * W + iw] += share


# --------------------------------------------------------------------------- drivers
# One function per kernel and dtype: loop over planes, in parallel when worth it.

cdef void _max_forward(const floating *x, floating *y, int64_t *idx, Py_ssize_t planes,
                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                       int threads) noexcept nogil:
    cdef Py_ssize_t p
    if threads > 1:
        for p in prange(planes, schedule='static', num_threads=threads):
            _max_forward_plane(x + p * H * W, y + p * OH * OW, idx + p * OH * OW,
                               H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw)
    else:
        for p in range(planes):
            _max_forward_plane(x + p * H * W, y + p * OH * OW, idx + p * OH * OW,
                               H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw)


cdef void _max_backward(const floating *g, const int64_t *idx, floating *gx, Py_ssize_t planes,
                        Py_ssize_t n_out, Py_ssize_t n_in, int threads) noexcept nogil:
    cdef Py_ssize_t p
    if threads > 1:
        for p in prange(planes, schedule='static', num_threads=threads):
            _max_backward_plane(g + p * n_out, idx + p * n_out, gx + p * n_in, n_out, n_in)
    else:
        for p in range(planes):
            _max_backward_plane(g + p * n_out, idx + p * n_out, gx + p * n_in, n_out, n_in)


cdef Py_ssize_t _max2x2_backward(const floating *g, const int64_t *idx, floating *gx,
                                 Py_ssize_t planes, Py_ssize_t OH, Py_ssize_t OW,
                                 int threads) noexcept nogil:
    """One-pass grad_x of (2 OH, 2 OW) planes; returns how many planes it could not write
    (an index outside its own window): then the caller takes the generic path."""
    cdef Py_ssize_t p, n_out = OH * OW, refused = 0
    if threads > 1:
        for p in prange(planes, schedule='static', num_threads=threads):
            if floating is float:
                refused += 1 - fg_pool_max2x2_backward_f32(g + p * n_out, idx + p * n_out,
                                                           gx + p * 4 * n_out, OH, OW)
            else:
                refused += 1 - fg_pool_max2x2_backward_f64(g + p * n_out, idx + p * n_out,
                                                           gx + p * 4 * n_out, OH, OW)
    else:
        for p in range(planes):
            if floating is float:
                if not fg_pool_max2x2_backward_f32(g + p * n_out, idx + p * n_out,
                                                   gx + p * 4 * n_out, OH, OW):
                    return 1
            else:
                if not fg_pool_max2x2_backward_f64(g + p * n_out, idx + p * n_out,
                                                   gx + p * 4 * n_out, OH, OW):
                    return 1
    return refused


cdef void _avg_forward(const floating *x, floating *y, Py_ssize_t planes,
                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad,
                       Py_ssize_t divisor_override, int threads) noexcept nogil:
    cdef Py_ssize_t p
    if threads > 1:
        for p in prange(planes, schedule='static', num_threads=threads):
            _avg_forward_plane(x + p * H * W, y + p * OH * OW, H, W, OH, OW, kh, kw, sh, sw,
                               ph, pw, count_include_pad, divisor_override)
    else:
        for p in range(planes):
            _avg_forward_plane(x + p * H * W, y + p * OH * OW, H, W, OH, OW, kh, kw, sh, sw,
                               ph, pw, count_include_pad, divisor_override)


cdef void _avg_backward(const floating *g, floating *gx, Py_ssize_t planes,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad,
                        Py_ssize_t divisor_override, int threads) noexcept nogil:
    cdef Py_ssize_t p
    if threads > 1:
        for p in prange(planes, schedule='static', num_threads=threads):
            _avg_backward_plane(g + p * OH * OW, gx + p * H * W, H, W, OH, OW, kh, kw, sh, sw,
                                ph, pw, count_include_pad, divisor_override)
    else:
        for p in range(planes):
            _avg_backward_plane(g + p * OH * OW, gx + p * H * W, H, W, OH, OW, kh, kw, sh, sw,
                                ph, pw, count_include_pad, divisor_override)


cdef void _adaptive_forward(const floating *x, floating *y, Py_ssize_t planes, Py_ssize_t H,
                            Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                            int threads) noexcept nogil:
    cdef Py_ssize_t p
    if threads > 1:
        for p in prange(planes, schedule='static', num_threads=threads):
            _adaptive_forward_plane(x + p * H * W, y + p * OH * OW, H, W, OH, OW)
    else:
        for p in range(planes):
            _adaptive_forward_plane(x + p * H * W, y + p * OH * OW, H, W, OH, OW)


cdef void _adaptive_backward(const floating *g, floating *gx, Py_ssize_t planes, Py_ssize_t H,
                             Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                             int threads) noexcept nogil:
    cdef Py_ssize_t p
    if threads > 1:
        for p in prange(planes, schedule='static', num_threads=threads):
            _adaptive_backward_plane(g + p * OH * OW, gx + p * H * W, H, W, OH, OW)
    else:
        for p in range(planes):
            _adaptive_backward_plane(g + p * OH * OW, gx + p * H * W, H, W, OH, OW)


# --------------------------------------------------------------------------- checks

cdef Py_ssize_t _param(str kernel, str name, object value, Py_ssize_t minimum) except -1:
    if type(value) is int and minimum <= value <= PARAM_MAX:
        return value  # the common case, without the isinstance chain below
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{kernel}: {name} must be an integer, got {value!r}")
    if not minimum <= value <= PARAM_MAX:
        raise ValueError(f"{kernel}: {name} must be in [{minimum}, {PARAM_MAX}], got {value}")
    return value


cdef int _threads(str kernel, object n_threads, Py_ssize_t work) except -1:
    """The thread count to use: 1 for small work, else n_threads (checked)."""
    cdef int n = check_threads(kernel, n_threads)
    return 1 if work < PARALLEL_MIN_WORK else n


cdef inline Py_ssize_t _dim(object arr, int i) noexcept:
    return cnp.PyArray_DIMS(<cnp.ndarray>arr)[i]


cdef inline void *_data(object arr) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>arr)


cdef Py_ssize_t _first_outside(const int64_t *idx, Py_ssize_t total,
                               Py_ssize_t n_in) noexcept nogil:
    """The position of the first index outside [0, n_in), or -1. Blocks are scanned
    without an early exit (so the loop vectorises), and the first bad one again."""
    cdef Py_ssize_t i, start = 0, end
    cdef uint64_t limit = <uint64_t>n_in
    while start < total:
        end = min(start + 4096, total)
        if fg_pool_any_outside(idx + start, end - start, n_in):
            for i in range(start, end):
                if <uint64_t>idx[i] >= limit:  # negative indices wrap to huge values
                    return i
        start = end
    return -1


cdef _same_planes(str kernel, str a_name, a, str b_name, b):
    if _dim(a, 0) != _dim(b, 0) or _dim(a, 1) != _dim(b, 1):
        raise ValueError(f"{kernel}: {a_name} has shape {a.shape} and {b_name} {b.shape}: "
                         "their batch and channel sizes (N, C) differ")


cdef int _check_disjoint(str kernel, str out_name, object out, tuple ins) except -1:
    """out shares no memory with the (name, array) pairs of ins."""
    for name, a in ins:
        check_disjoint(kernel, out_name, out, name, a)
    return 0


cdef _check_divisor(str kernel, object divisor_override):
    if divisor_override is None:
        return 0
    if isinstance(divisor_override, bool) or not isinstance(divisor_override, (int, np.integer)):
        raise TypeError(f"{kernel}: divisor_override must be None or an integer, got "
                        f"{divisor_override!r}")
    if divisor_override == 0 or not -PARAM_MAX <= divisor_override <= PARAM_MAX:
        raise ValueError(f"{kernel}: divisor_override must be a nonzero integer, got "
                         f"{divisor_override}")
    return divisor_override


cdef _check_max_windows(str kernel, Py_ssize_t size, Py_ssize_t n_out, Py_ssize_t k,
                        Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t dil, str axis):
    """Every max-pool window must hold at least one input position (its index is the
    gradient's destination)."""
    cdef Py_ssize_t o, first, count
    for o in range(n_out):
        _taps(o, stride, pad, dil, k, size, &first, &count)
        if count == 0:
            raise ValueError(f"{kernel}: output {axis} {o} (of {n_out}) has a window that covers "
                             f"no input position (input {axis} {size}, kernel {k}, stride {stride}, "
                             f"padding {pad}, dilation {dil})")


# --------------------------------------------------------------------------- kernels

def max_pool2d_forward(x, out, indices, kernel_h, kernel_w, stride_h, stride_w,
                       pad_h, pad_w, dil_h, dil_w, n_threads):
    """Max over each window; out and indices written fresh.

    x: IN (N, C, H, W); out: OUT (N, C, OH, OW), same dtype; indices: OUT int64, same
    shape as out: h * W + w of each maximum within its input plane (first maximum on
    ties, a NaN wins). Every window must cover at least one input position.
    kernel >= 1, stride >= 1, pad >= 0, dilation >= 1.
    """
    cdef str kn = "max_pool2d_forward"
    cdef int t = check_array(kn, "x", x, 4, -1, False)
    check_array(kn, "out", out, 4, t, True)
    check_array(kn, "indices", indices, 4, cnp.NPY_INT64, True)
    cdef Py_ssize_t kh = _param(kn, "kernel_h", kernel_h, 1), kw = _param(kn, "kernel_w", kernel_w, 1)
    cdef Py_ssize_t sh = _param(kn, "stride_h", stride_h, 1), sw = _param(kn, "stride_w", stride_w, 1)
    cdef Py_ssize_t ph = _param(kn, "pad_h", pad_h, 0), pw = _param(kn, "pad_w", pad_w, 0)
    cdef Py_ssize_t dh = _param(kn, "dil_h", dil_h, 1), dw = _param(kn, "dil_w", dil_w, 1)
    _same_planes(kn, "x", x, "out", out)
    if not same_shape(indices, out):
        raise ValueError(f"{kn}: indices has shape {indices.shape}, expected out's {out.shape}")
    _check_disjoint(kn, "out", out, (("x", x),))
    _check_disjoint(kn, "indices", indices, (("x", x), ("out", out)))
    cdef Py_ssize_t planes = _dim(x, 0) * _dim(x, 1), H = _dim(x, 2), W = _dim(x, 3)
    cdef Py_ssize_t OH = _dim(out, 2), OW = _dim(out, 3)
    if planes == 0 or OH == 0 or OW == 0:
        _threads(kn, n_threads, 0)
        return
    _check_max_windows(kn, H, OH, kh, sh, ph, dh, "row")
    _check_max_windows(kn, W, OW, kw, sw, pw, dw, "column")
    cdef int threads = _threads(kn, n_threads, planes * OH * OW * kh * kw)
    cdef void *xp = _data(x)
    cdef void *yp = _data(out)
    cdef int64_t *ip = <int64_t *>_data(indices)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _max_forward[float](<const float *>xp, <float *>yp, ip, planes, H, W, OH, OW,
                                kh, kw, sh, sw, ph, pw, dh, dw, threads)
        else:
            _max_forward[double](<const double *>xp, <double *>yp, ip, planes, H, W, OH, OW,
                                 kh, kw, sh, sw, ph, pw, dh, dw, threads)


def max_pool2d_backward(grad_out, indices, grad_x, n_threads):
    """grad_x = the gradient routed to each window's maximum; written fresh.

    grad_out: IN (N, C, OH, OW); indices: IN int64, same shape, each in [0, H*W);
    grad_x: OUT (N, C, H, W), same dtype as grad_out. Several outputs may route to one
    input (overlapping windows): their gradients add up.
    """
    cdef str kn = "max_pool2d_backward"
    cdef int t = check_array(kn, "grad_out", grad_out, 4, -1, False)
    check_array(kn, "indices", indices, 4, cnp.NPY_INT64, False)
    check_array(kn, "grad_x", grad_x, 4, t, True)
    if not same_shape(indices, grad_out):
        raise ValueError(f"{kn}: indices has shape {indices.shape}, expected grad_out's "
                         f"{grad_out.shape}")
    _same_planes(kn, "grad_out", grad_out, "grad_x", grad_x)
    _check_disjoint(kn, "grad_x", grad_x, (("grad_out", grad_out), ("indices", indices)))
    cdef Py_ssize_t planes = _dim(grad_x, 0) * _dim(grad_x, 1)
    cdef Py_ssize_t n_in = _dim(grad_x, 2) * _dim(grad_x, 3)
    cdef Py_ssize_t n_out = _dim(grad_out, 2) * _dim(grad_out, 3)
    cdef int threads = _threads(kn, n_threads, planes * (n_in + n_out))
    cdef const int64_t *ip = <const int64_t *>_data(indices)
    cdef Py_ssize_t total = planes * n_out, bad = -1
    cdef Py_ssize_t OH = _dim(grad_out, 2), OW = _dim(grad_out, 3)
    cdef void *gp = _data(grad_out)
    cdef void *gxp = _data(grad_x)
    cdef Py_ssize_t refused
    with nogil:  # every index must land inside its plane before anything is written
        bad = _first_outside(ip, total, n_in)
    if bad >= 0:
        raise ValueError(f"{kn}: indices[{np.unravel_index(bad, grad_out.shape)}] = {ip[bad]} "
                         f"is outside the input plane of {n_in} elements "
                         f"({_dim(grad_x, 2)} x {_dim(grad_x, 3)})")
    if total > 0 and _dim(grad_x, 2) == 2 * OH and _dim(grad_x, 3) == 2 * OW and OW >= 8:
        # 2x2 blocks tile the plane: a row of windows whose every index lies in its own
        # block is written in one pass; at an index elsewhere the whole call goes on to the
        # generic path below, which rewrites everything. Rows of fewer than 8 windows are
        # left to the generic path too: there, scattering a few values into a zeroed plane
        # costs less than writing every element with vectors.
        with nogil:
            if t == cnp.NPY_FLOAT32:
                refused = _max2x2_backward[float](<const float *>gp, ip, <float *>gxp, planes,
                                                  OH, OW, threads)
            else:
                refused = _max2x2_backward[double](<const double *>gp, ip, <double *>gxp,
                                                   planes, OH, OW, threads)
        if refused == 0:
            return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _max_backward[float](<const float *>gp, ip, <float *>gxp, planes, n_out, n_in, threads)
        else:
            _max_backward[double](<const double *>gp, ip, <double *>gxp, planes, n_out, n_in,
                                  threads)


def avg_pool2d_forward(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                       count_include_pad, divisor_override, n_threads):
    """Mean over each window (PyTorch's rule for the divisor); out written fresh.

    x: IN (N, C, H, W); out: OUT (N, C, OH, OW), same dtype. count_include_pad: bool.
    divisor_override: None or a nonzero integer. kernel >= 1, stride >= 1, pad >= 0.
    """
    cdef str kn = "avg_pool2d_forward"
    cdef int t = check_array(kn, "x", x, 4, -1, False)
    check_array(kn, "out", out, 4, t, True)
    cdef Py_ssize_t kh = _param(kn, "kernel_h", kernel_h, 1), kw = _param(kn, "kernel_w", kernel_w, 1)
    cdef Py_ssize_t sh = _param(kn, "stride_h", stride_h, 1), sw = _param(kn, "stride_w", stride_w, 1)
    cdef Py_ssize_t ph = _param(kn, "pad_h", pad_h, 0), pw = _param(kn, "pad_w", pad_w, 0)
    cdef Py_ssize_t div = _check_divisor(kn, divisor_override)
    cdef bint include_pad = bool(count_include_pad)
    _same_planes(kn, "x", x, "out", out)
    _check_disjoint(kn, "out", out, (("x", x),))
    cdef Py_ssize_t planes = _dim(x, 0) * _dim(x, 1), H = _dim(x, 2), W = _dim(x, 3)
    cdef Py_ssize_t OH = _dim(out, 2), OW = _dim(out, 3)
    cdef int threads = _threads(kn, n_threads, planes * OH * OW * kh * kw)
    cdef void *xp = _data(x)
    cdef void *yp = _data(out)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _avg_forward[float](<const float *>xp, <float *>yp, planes, H, W, OH, OW,
                                kh, kw, sh, sw, ph, pw, include_pad, div, threads)
        else:
            _avg_forward[double](<const double *>xp, <double *>yp, planes, H, W, OH, OW,
                                 kh, kw, sh, sw, ph, pw, include_pad, div, threads)


def avg_pool2d_backward(grad_out, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                        count_include_pad, divisor_override, n_threads):
    """grad_x = each output's gradient / its divisor, spread over its window; fresh.

    grad_out: IN (N, C, OH, OW); grad_x: OUT (N, C, H, W), same dtype. The other
    arguments are those of avg_pool2d_forward.
    """
    cdef str kn = "avg_pool2d_backward"
    cdef int t = check_array(kn, "grad_out", grad_out, 4, -1, False)
    check_array(kn, "grad_x", grad_x, 4, t, True)
    cdef Py_ssize_t kh = _param(kn, "kernel_h", kernel_h, 1), kw = _param(kn, "kernel_w", kernel_w, 1)
    cdef Py_ssize_t sh = _param(kn, "stride_h", stride_h, 1), sw = _param(kn, "stride_w", stride_w, 1)
    cdef Py_ssize_t ph = _param(kn, "pad_h", pad_h, 0), pw = _param(kn, "pad_w", pad_w, 0)
    cdef Py_ssize_t div = _check_divisor(kn, divisor_override)
    cdef bint include_pad = bool(count_include_pad)
    _same_planes(kn, "grad_out", grad_out, "grad_x", grad_x)
    _check_disjoint(kn, "grad_x", grad_x, (("grad_out", grad_out),))
    cdef Py_ssize_t planes = _dim(grad_x, 0) * _dim(grad_x, 1), H = _dim(grad_x, 2), W = _dim(grad_x, 3)
    cdef Py_ssize_t OH = _dim(grad_out, 2), OW = _dim(grad_out, 3)
    cdef int threads = _threads(kn, n_threads, planes * (OH * OW * kh * kw + H * W))
    cdef void *gp = _data(grad_out)
    cdef void *gxp = _data(grad_x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _avg_backward[float](<const float *>gp, <float *>gxp, planes, H, W, OH, OW,
                                 kh, kw, sh, sw, ph, pw, include_pad, div, threads)
        else:
            _avg_backward[double](<const double *>gp, <double *>gxp, planes, H, W, OH, OW,
                                  kh, kw, sh, sw, ph, pw, include_pad, div, threads)


def adaptive_avg_pool2d_forward(x, out, n_threads):
    """Mean over PyTorch's adaptive regions for out's (OH, OW); out written fresh.

    x: IN (N, C, H, W) with H, W >= 1 (unless out is empty); out: OUT (N, C, OH, OW).
    """
    cdef str kn = "adaptive_avg_pool2d_forward"
    cdef int t = check_array(kn, "x", x, 4, -1, False)
    check_array(kn, "out", out, 4, t, True)
    _same_planes(kn, "x", x, "out", out)
    _check_disjoint(kn, "out", out, (("x", x),))
    cdef Py_ssize_t planes = _dim(x, 0) * _dim(x, 1), H = _dim(x, 2), W = _dim(x, 3)
    cdef Py_ssize_t OH = _dim(out, 2), OW = _dim(out, 3)
    if planes * OH * OW > 0 and (H == 0 or W == 0):
        raise ValueError(f"{kn}: x has shape {x.shape}: an empty plane cannot be averaged "
                         f"into {OH} x {OW}")
    cdef int threads = _threads(kn, n_threads, planes * (H * W + OH * OW))
    cdef void *xp = _data(x)
    cdef void *yp = _data(out)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _adaptive_forward[float](<const float *>xp, <float *>yp, planes, H, W, OH, OW, threads)
        else:
            _adaptive_forward[double](<const double *>xp, <double *>yp, planes, H, W, OH, OW,
                                      threads)


def adaptive_avg_pool2d_backward(grad_out, grad_x, n_threads):
    """grad_x = each output's gradient / its region's size, spread over it; fresh.

    grad_out: IN (N, C, OH, OW); grad_x: OUT (N, C, H, W), same dtype, H, W >= 1
    (unless grad_out is empty).
    """
    cdef str kn = "adaptive_avg_pool2d_backward"
    cdef int t = check_array(kn, "grad_out", grad_out, 4, -1, False)
    check_array(kn, "grad_x", grad_x, 4, t, True)
    _same_planes(kn, "grad_out", grad_out, "grad_x", grad_x)
    _check_disjoint(kn, "grad_x", grad_x, (("grad_out", grad_out),))
    cdef Py_ssize_t planes = _dim(grad_x, 0) * _dim(grad_x, 1), H = _dim(grad_x, 2), W = _dim(grad_x, 3)
    cdef Py_ssize_t OH = _dim(grad_out, 2), OW = _dim(grad_out, 3)
    if planes * OH * OW > 0 and (H == 0 or W == 0):
        raise ValueError(f"{kn}: grad_x has shape {grad_x.shape}: an empty plane has no "
                         f"{OH} x {OW} regions")
    cdef int threads = _threads(kn, n_threads, planes * (H * W + OH * OW))
    cdef void *gp = _data(grad_out)
    cdef void *gxp = _data(grad_x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _adaptive_backward[float](<const float *>gp, <float *>gxp, planes, H, W, OH, OW,
                                      threads)
        else:
            _adaptive_backward[double](<const double *>gp, <double *>gxp, planes, H, W, OH, OW,
                                       threads)
