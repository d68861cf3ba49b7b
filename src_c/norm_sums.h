/* Design: the per-channel sums of the batch normalization kernels (src_c/_norm.pyx),
 * for float and double runs, accumulated in double.
 *
 * Why a header: a sum written as one running total (or four) is a serial chain of
 * double additions that the compiler may not reorder (no -ffast-math), so it ran at a
 * few GB/s, far below memory bandwidth. Here each sum keeps FGN_LANES independent
 * partial sums ("lanes"), lane k taking the elements j with j % FGN_LANES == k of each
 * run, which is a loop the compiler turns into vector conversions and additions on
 * every SIMD path (4 doubles per AVX2 register, 2 per SSE2 one) with enough independent
 * chains to hide the adder's latency. A channel's runs (one per sample) all add into
 * the same lanes, the elements past a run's last whole group into lane 0, and the lanes
 * are added pairwise once per channel (fgn_fold: lane k with lane k + w, w = 8, 4, 2,
 * 1): a fold per run cost as much as the run's sums on ResNet's 8x8 planes. The order
 * depends only on the shape: the same inputs give the same bits on every SIMD path and
 * thread count.
 *
 * Each macro expansion defines one function per element type T (suffix f32 or f64);
 * each adds into the lane arrays it is given (s, and t for a second sum).
 */
#ifndef FASTGRAD_NORM_SUMS_H
#define FASTGRAD_NORM_SUMS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FGN_LANES 16

/* the pairwise fold of the lanes s[0..FGN_LANES) (s is overwritten) */
static inline double fgn_fold(double *s) {
    for (int w = FGN_LANES / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) s[k] += s[k + w];
    return s[0];
}

/* The dev sums' lanes (t[k] += d, s[k] += d * d, d = p[j + k] - mean) over whole groups
 * of FGN_LANES elements, leaving j at `whole`. With two sums per lane, gcc vectorized the
 * scalar-lane loop only in part (0.55-0.68 ns an element on Zen 3, in L1); written on
 * four vectors of four doubles (GCC/Clang vector extensions: AVX2 registers on the v3
 * build, SSE2 pairs on the baseline one), lane k in vector k / 4, it takes 0.29-0.31.
 * Each lane does the same operations in the same order (no contraction: ISO C mode),
 * so the bits are the scalar loop's. The other sums vectorize well as scalar lanes (and
 * ran slower written this way), so they stay so. */
#if defined(__GNUC__)
typedef double fgn_v4d __attribute__((vector_size(32)));
typedef float fgn_v4f __attribute__((vector_size(16)));
/* four elements of p from p + at, widened to double (unaligned loads) */
#define FGN_LOAD4(T, p, at, out)                                                           \
    do {                                                                                   \
        if (sizeof(T) == sizeof(float)) {                                                  \
            fgn_v4f f_;                                                                    \
            memcpy(&f_, (p) + (at), sizeof f_);                                            \
            (out) = __builtin_convertvector(f_, fgn_v4d);                                  \
        } else {                                                                           \
            memcpy(&(out), (p) + (at), sizeof(out));                                       \
        }                                                                                  \
    } while (0)
#define FGN_DEV_LANES(T, p, whole, mean, s, t, j)                                          \
    {                                                                                      \
        fgn_v4d a_[4], b_[4], m_ = {mean, mean, mean, mean}, d_;                           \
        memcpy(a_, s, sizeof a_);                                                          \
        memcpy(b_, t, sizeof b_);                                                          \
        for (; j < whole; j += FGN_LANES)                                                  \
            for (int v_ = 0; v_ < 4; v_++) {                                               \
                FGN_LOAD4(T, p, j + 4 * v_, d_);                                           \
                d_ -= m_;                                                                  \
                b_[v_] += d_;                                                              \
                a_[v_] += d_ * d_;                                                         \
            }                                                                              \
        memcpy(s, a_, sizeof a_);                                                          \
        memcpy(t, b_, sizeof b_);                                                          \
    }
#else
#define FGN_DEV_LANES(T, p, whole, mean, s, t, j)                                          \
    for (; j < whole; j += FGN_LANES)                                                      \
        for (int k = 0; k < FGN_LANES; k++) {                                              \
            double d = (double)p[j + k] - mean;                                            \
            t[k] += d;                                                                     \
            s[k] += d * d;                                                                 \
        }
#endif

#define FGN_SUMS(T, U, SFX)                                                                 \
    /* lanes s += p[0..n) */                                                                \
    static inline void fgn_sum_##SFX(const T *p, ptrdiff_t n, double *s) {                  \
        ptrdiff_t j = 0, whole = n - n % FGN_LANES;                                         \
        for (; j < whole; j += FGN_LANES)                                                   \
            for (int k = 0; k < FGN_LANES; k++) s[k] += (double)p[j + k];                   \
        for (; j < n; j++) s[0] += (double)p[j];                                            \
    }                                                                                       \
    /* lanes s += (p[j] - mean)^2 and t += p[j] - mean */                                   \
    static inline void fgn_dev_sums_##SFX(const T *p, ptrdiff_t n, double mean, double *s,  \
                                          double *t) {                                      \
        ptrdiff_t j = 0, whole = n - n % FGN_LANES;                                         \
        FGN_DEV_LANES(T, p, whole, mean, s, t, j)                                           \
        for (; j < n; j++) {                                                                \
            double d = (double)p[j] - mean;                                                 \
            t[0] += d;                                                                      \
            s[0] += d * d;                                                                  \
        }                                                                                   \
    }                                                                                       \
    /* lanes s += g[j] * (x[j] - mean) */                                                   \
    static inline void fgn_dot_dev_##SFX(const T *g, const T *x, ptrdiff_t n, double mean,  \
                                         double *s) {                                       \
        ptrdiff_t j = 0, whole = n - n % FGN_LANES;                                         \
        for (; j < whole; j += FGN_LANES)                                                   \
            for (int k = 0; k < FGN_LANES; k++)                                             \
                s[k] += (double)g[j + k] * ((double)x[j + k] - mean);                       \
        for (; j < n; j++) s[0] += (double)g[j] * ((double)x[j] - mean);                    \
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
    /* the two sums of a gradient g masked by a ReLU's output y (fgn_masked): lanes     */  \
    /* t += the masked g and s += its product with x - mean, as fgn_sum and fgn_dot_dev */  \
    /* add them over the masked array, lane for lane                                    */  \
    static inline void fgn_masked_sums_##SFX(const T *g, const T *y, const T *x,            \
                                             ptrdiff_t n, double mean, double *s,           \
                                             double *t) {                                   \
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
    }

FGN_SUMS(float, uint32_t, f32)
FGN_SUMS(double, uint64_t, f64)

#endif
