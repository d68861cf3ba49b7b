/* Design: the per-run sums of the batch normalization kernels (src_c/_norm.pyx), for
 * float and double runs, accumulated in double.
 *
 * Why a header: a sum written as one running total (or four) is a serial chain of
 * double additions that the compiler may not reorder (no -ffast-math), so it ran at a
 * few GB/s, far below memory bandwidth: BatchNorm's forward read its input three times
 * at about 9 GB/s. Here each sum keeps FGN_LANES independent partial sums, lane k
 * taking the elements j with j % FGN_LANES == k, which is a loop the compiler turns
 * into vector conversions and additions on every SIMD path (4 doubles per AVX2
 * register, 2 per SSE2 one) with enough independent chains to hide the adder's
 * latency. The partial sums are then added pairwise (lane k with lane k + w, w = 8, 4,
 * 2, 1); the elements past the last whole group go into lane 0 first. The order
 * depends only on the run's length: the same inputs give the same bits on every SIMD
 * path and thread count.
 *
 * Each macro expansion defines one function per element type T (suffix f32 or f64).
 */
#ifndef FASTGRAD_NORM_SUMS_H
#define FASTGRAD_NORM_SUMS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FGN_LANES 16

/* the pairwise fold of the partial sums, into s[0] */
#define FGN_FOLD(s)                                                                        \
    for (int w_ = FGN_LANES / 2; w_ >= 1; w_ /= 2)                                          \
        for (int k_ = 0; k_ < w_; k_++) (s)[k_] += (s)[k_ + w_];

#define FGN_SUMS(T, U, SFX)                                                                 \
    /* sum of p[0..n) */                                                                    \
    static inline double fgn_sum_##SFX(const T *p, ptrdiff_t n) {                           \
        double s[FGN_LANES] = {0};                                                          \
        ptrdiff_t j = 0, whole = n - n % FGN_LANES;                                         \
        for (; j < whole; j += FGN_LANES)                                                   \
            for (int k = 0; k < FGN_LANES; k++) s[k] += (double)p[j + k];                   \
        for (; j < n; j++) s[0] += (double)p[j];                                            \
        FGN_FOLD(s)                                                                         \
        return s[0];                                                                        \
    }                                                                                       \
    /* sum of (p[j] - mean)^2, returned; sum of (p[j] - mean), added to *sum_dev */         \
    static inline double fgn_dev_sums_##SFX(const T *p, ptrdiff_t n, double mean,           \
                                            double *sum_dev) {                              \
        double s[FGN_LANES] = {0}, t[FGN_LANES] = {0};                                      \
        ptrdiff_t j = 0, whole = n - n % FGN_LANES;                                         \
        for (; j < whole; j += FGN_LANES)                                                   \
            for (int k = 0; k < FGN_LANES; k++) {                                           \
                double d = (double)p[j + k] - mean;                                         \
                t[k] += d;                                                                  \
                s[k] += d * d;                                                              \
            }                                                                               \
        for (; j < n; j++) {                                                                \
            double d = (double)p[j] - mean;                                                 \
            t[0] += d;                                                                      \
            s[0] += d * d;                                                                  \
        }                                                                                   \
        FGN_FOLD(s)                                                                         \
        FGN_FOLD(t)                                                                         \
        *sum_dev += t[0];                                                                   \
        return s[0];                                                                        \
    }                                                                                       \
    /* sum of g[j] * (x[j] - mean) */                                                       \
    static inline double fgn_dot_dev_##SFX(const T *g, const T *x, ptrdiff_t n,             \
                                           double mean) {                                   \
        double s[FGN_LANES] = {0};                                                          \
        ptrdiff_t j = 0, whole = n - n % FGN_LANES;                                         \
        for (; j < whole; j += FGN_LANES)                                                   \
            for (int k = 0; k < FGN_LANES; k++)                                             \
                s[k] += (double)g[j + k] * ((double)x[j + k] - mean);                       \
        for (; j < n; j++) s[0] += (double)g[j] * ((double)x[j] - mean);                    \
        FGN_FOLD(s)                                                                         \
        return s[0];                                                                        \
    }                                                                                       \
    /* g where y > 0, else +0 (relu_backward's value), without a branch: g's bits      */  \
    /* ANDed with all ones or all zeros (U: the unsigned integer of T's width), which    */  \
    /* vectorizes where a conditional does not                                          */  \
    static inline T fgn_masked_##SFX(T g, T y) {                                            \
        U bits;                                                                             \
        memcpy(&bits, &g, sizeof bits);                                                     \
        bits &= (U)0 - (U)(y > 0);                                                          \
        memcpy(&g, &bits, sizeof bits);                                                     \
        return g;                                                                           \
    }                                                                                       \
    /* y = max((x - mean) * scale + shift, 0) as relu_forward gives it (+0 for v <= 0,  */  \
    /* NaN kept), branch-free as fgn_masked                                              */  \
    static inline void fgn_affine_relu_##SFX(const T *x, T *y, ptrdiff_t n, T mean, T scale, \
                                             T shift) {                                     \
        for (ptrdiff_t j = 0; j < n; j++) {                                                 \
            T v = (x[j] - mean) * scale + shift;                                            \
            U bits;                                                                         \
            memcpy(&bits, &v, sizeof bits);                                                 \
            bits &= (U)0 - (U)!(v <= 0);                                                    \
            memcpy(&y[j], &bits, sizeof bits);                                              \
        }                                                                                   \
    }                                                                                       \
    /* the two sums of a gradient g masked by a ReLU's output y (fgn_masked): the sum of */  \
    /* the masked g, added to *sum_g, and its dot with x - mean, returned: the sums that */  \
    /* fgn_sum and fgn_dot_dev give over the masked array, lane for lane                 */  \
    static inline double fgn_masked_sums_##SFX(const T *g, const T *y, const T *x,          \
                                               ptrdiff_t n, double mean, double *sum_g) {   \
        double s[FGN_LANES] = {0}, t[FGN_LANES] = {0};                                      \
        ptrdiff_t j = 0, whole = n - n % FGN_LANES;                                         \
        for (; j < whole; j += FGN_LANES)                                                   \
            for (int k = 0; k < FGN_LANES; k++) {                                           \
                double m = (double)fgn_masked_##SFX(g[j + k], y[j + k]);                    \
                t[k] += m;                                                                  \
                s[k] += m * ((double)x[j + k] - mean);                                      \
            }                                                                               \
        for (; j < n; j++) {                                                                \
            double m = (double)fgn_masked_##SFX(g[j], y[j]);                                \
            t[0] += m;                                                                      \
            s[0] += m * ((double)x[j] - mean);                                              \
        }                                                                                   \
        FGN_FOLD(s)                                                                         \
        FGN_FOLD(t)                                                                         \
        *sum_g += t[0];                                                                     \
        return s[0];                                                                        \
    }

FGN_SUMS(float, uint32_t, f32)
FGN_SUMS(double, uint64_t, f64)

#endif
