/* Design: max pooling with 2x2 windows, stride 2, no padding, no dilation (the pooling
 * layer of LeNet and of most small CNNs), for float and double; used by src_c/_pool.pyx.
 *
 * Forward, a plane at a time: each output row reads the two input rows its windows
 * cover, once. Each window is visited in the generic kernels' order, a = (0,0),
 * b = (0,1), c = (1,0), d = (1,1), with their rule: a value replaces the running maximum
 * when it is greater, or NaN. The generic scan starts from -inf, and its first step always
 * leaves (a, index of a) (a replaces -inf unless it equals it), so starting from a gives
 * the same result bit for bit, ties (first wins) and NaN (the last NaN wins) included.
 * Indices are h * W + w within the plane.
 *
 * Backward, a row of windows at a time: when the row's indices all lie in their own
 * windows (checked first), each of its input elements gets its window's gradient or 0,
 * so grad_x is written in one pass, no memset and no scatter. Values are written as
 * 0 + g, as "zero, then +=" writes them (so -0 becomes +0, as before). At the first
 * index found elsewhere the plane stops and reports it: the caller then takes the
 * generic path, which rewrites all of grad_x. (The caller has checked, before anything
 * is written, that every index lies inside its plane.)
 *
 * SIMD: AVX2 loops written with intrinsics (8 floats or 4 doubles of output at a time;
 * the even/odd columns of a row pair are split with in-lane shuffles and put back in
 * order with one cross-lane permute), compiled natively in the x86-64-v3 build and under
 * a target("avx2") attribute in the baseline build, which picks them per call when the
 * selected SIMD level (cpu_features.h) is AVX2 or above. The portable scalar loops do
 * the remainders and everything elsewhere.
 * Compares and blends are exact, so every path gives the same bits.
 */
#ifndef FASTGRAD_POOL_KERNELS_H
#define FASTGRAD_POOL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_features.h"

#if defined(__AVX2__)
#define FG_POOL_AVX2 1
#define FG_POOL_AVX2_ATTR
#include <immintrin.h>
#elif FG_X86
#define FG_POOL_AVX2 1
#define FG_POOL_AVX2_ATTR __attribute__((target("avx2")))
#include <immintrin.h>
#else
#define FG_POOL_AVX2 0
#endif
/* the selected level (cpu_features.h), read per call */
#define FG_POOL_USE_AVX2() (FG_POOL_AVX2 && fg_simd_level() >= FG_SIMD_AVX2)

/* ------------------------------------------------------------------ index check */

/* Whether some idx[i], i < n, lies outside [0, limit): a branch-free pass that vectorises
 * (negative values wrap to huge unsigned ones). Used by every max-pool backward call
 * before it writes anything. */
static inline __attribute__((always_inline)) int
fg_pool_any_outside_body(const int64_t *idx, ptrdiff_t n, int64_t limit)
{
    uint64_t outside = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        outside |= (uint64_t)idx[i] >= (uint64_t)limit;
    return outside != 0;
}
FG_SIMD_CLONE(int, fg_pool_any_outside, (const int64_t *idx, ptrdiff_t n, int64_t limit),
              (idx, n, limit))

/* ------------------------------------------------------------------ portable loops */
/* Branch-free (selects, not ifs: on random data a branch mispredicts half the time). */

/* Outputs [from, n_out) of one row: x0, x1 the two input rows, base = 2 oh W. */
#define FG_POOL2_SCALAR(T, SUF)                                                               \
static inline void fg_pool2_fw_scalar_##SUF(const T *x0, const T *x1, T *y, int64_t *idx,     \
                                            ptrdiff_t from, ptrdiff_t n_out, int64_t base,    \
                                            int64_t W)                                        \
{                                                                                             \
    for (ptrdiff_t ow = from; ow < n_out; ow++) {                                             \
        const T a = x0[2 * ow], b = x0[2 * ow + 1], c = x1[2 * ow], d = x1[2 * ow + 1];      \
        T best = a;                                                                           \
        int64_t off = 0;                                                                      \
        int take = (b > best) | (b != b);                                                     \
        best = take ? b : best;                                                               \
        off = take ? 1 : off;                                                                 \
        take = (c > best) | (c != c);                                                         \
        best = take ? c : best;                                                               \
        off = take ? W : off;                                                                 \
        take = (d > best) | (d != d);                                                         \
        best = take ? d : best;                                                               \
        off = take ? W + 1 : off;                                                             \
        y[ow] = best;                                                                         \
        idx[ow] = base + 2 * ow + off;                                                        \
    }                                                                                         \
}                                                                                             \
static inline void fg_pool2_bw_scalar_##SUF(const T *g, const int64_t *idx, T *gx0, T *gx1,   \
                                            ptrdiff_t from, ptrdiff_t n_out, int64_t base,    \
                                            int64_t W)                                        \
{                                                                                             \
    for (ptrdiff_t ow = from; ow < n_out; ow++) {                                             \
        const int64_t off = idx[ow] - (base + 2 * ow);                                        \
        const T zero = 0, v = zero + g[ow];                                                   \
        gx0[2 * ow] = off == 0 ? v : zero;                                                    \
        gx0[2 * ow + 1] = off == 1 ? v : zero;                                                \
        gx1[2 * ow] = off == W ? v : zero;                                                    \
        gx1[2 * ow + 1] = off == W + 1 ? v : zero;                                            \
    }                                                                                         \
}
FG_POOL2_SCALAR(float, f32)
FG_POOL2_SCALAR(double, f64)

/* 1 when idx[ow] - (base + 2 ow) is one of 0, 1, W, W + 1 for every ow in [from, n_out). */
static inline int fg_pool2_own_scalar(const int64_t *idx, ptrdiff_t from, ptrdiff_t n_out,
                                      int64_t base, int64_t W)
{
    int bad = 0;
    for (ptrdiff_t ow = from; ow < n_out; ow++) {
        const int64_t off = idx[ow] - (base + 2 * ow);
        bad |= (off != 0) & (off != 1) & (off != W) & (off != W + 1);
    }
    return !bad;
}

/* ------------------------------------------------------------------ AVX2 loops */
/* A row of n outputs runs whole vectors, then one more vector ending at n (it overlaps
 * the previous one and writes the same values again); rows shorter than a vector take
 * half-width vectors the same way, and rows shorter than those the scalar loop. */
#if FG_POOL_AVX2
#define FG_POOL2_INLINE FG_POOL_AVX2_ATTR static inline __attribute__((always_inline))

/* The maximum and its offset in the window, for vectors a, b, c, d of the four taps. */
#define FG_POOL2_SELECT(SFX, CAST, a, b, c, d, ob, oc, od, best, off)                         \
    do {                                                                                      \
        __typeof__(best) take_;                                                                \
        best = a;                                                                             \
        take_ = _mm##SFX##_or_p##CAST(_mm##SFX##_cmp_p##CAST(b, best, _CMP_GT_OQ),            \
                                      _mm##SFX##_cmp_p##CAST(b, b, _CMP_UNORD_Q));            \
        best = _mm##SFX##_blendv_p##CAST(best, b, take_);                                     \
        off = _mm##SFX##_blendv_p##CAST(off, ob, take_);                                      \
        take_ = _mm##SFX##_or_p##CAST(_mm##SFX##_cmp_p##CAST(c, best, _CMP_GT_OQ),            \
                                      _mm##SFX##_cmp_p##CAST(c, c, _CMP_UNORD_Q));            \
        best = _mm##SFX##_blendv_p##CAST(best, c, take_);                                     \
        off = _mm##SFX##_blendv_p##CAST(off, oc, take_);                                      \
        take_ = _mm##SFX##_or_p##CAST(_mm##SFX##_cmp_p##CAST(d, best, _CMP_GT_OQ),            \
                                      _mm##SFX##_cmp_p##CAST(d, d, _CMP_UNORD_Q));            \
        best = _mm##SFX##_blendv_p##CAST(best, d, take_);                                     \
        off = _mm##SFX##_blendv_p##CAST(off, od, take_);                                      \
    } while (0)

/* 8 float outputs from ow. The shuffles leave lanes in output order 0 1 4 5 2 3 6 7; one
 * permute of 64-bit quarters (0xD8: 0, 2, 1, 3) puts them back. */
FG_POOL2_INLINE void fg_pool2_fw8_f32(const float *x0, const float *x1, float *y, int64_t *idx,
                                      ptrdiff_t ow, int64_t base, int32_t W)
{
    const __m256 ob = _mm256_castsi256_ps(_mm256_set1_epi32(1));
    const __m256 oc = _mm256_castsi256_ps(_mm256_set1_epi32(W));
    const __m256 od = _mm256_castsi256_ps(_mm256_set1_epi32(W + 1));
    const __m256 r0a = _mm256_loadu_ps(x0 + 2 * ow), r0b = _mm256_loadu_ps(x0 + 2 * ow + 8);
    const __m256 r1a = _mm256_loadu_ps(x1 + 2 * ow), r1b = _mm256_loadu_ps(x1 + 2 * ow + 8);
    const __m256 a = _mm256_shuffle_ps(r0a, r0b, 0x88), b = _mm256_shuffle_ps(r0a, r0b, 0xDD);
    const __m256 c = _mm256_shuffle_ps(r1a, r1b, 0x88), d = _mm256_shuffle_ps(r1a, r1b, 0xDD);
    __m256 best, off = _mm256_setzero_ps();
    FG_POOL2_SELECT(256, s, a, b, c, d, ob, oc, od, best, off);
    const __m256i offs = _mm256_permute4x64_epi64(_mm256_castps_si256(off), 0xD8);
    const __m256i pos = _mm256_add_epi64(_mm256_set1_epi64x(base + 2 * ow),
                                         _mm256_setr_epi64x(0, 2, 4, 6));
    _mm256_storeu_ps(y + ow, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(best), 0xD8)));
    _mm256_storeu_si256((__m256i *)(idx + ow),
                        _mm256_add_epi64(pos, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(offs))));
    _mm256_storeu_si256((__m256i *)(idx + ow + 4),
                        _mm256_add_epi64(_mm256_add_epi64(pos, _mm256_set1_epi64x(8)),
                                         _mm256_cvtepi32_epi64(_mm256_extracti128_si256(offs, 1))));
}

/* 4 float outputs from ow (128-bit shuffles keep output order). */
FG_POOL2_INLINE void fg_pool2_fw4_f32(const float *x0, const float *x1, float *y, int64_t *idx,
                                      ptrdiff_t ow, int64_t base, int32_t W)
{
    const __m128 ob = _mm_castsi128_ps(_mm_set1_epi32(1));
    const __m128 oc = _mm_castsi128_ps(_mm_set1_epi32(W));
    const __m128 od = _mm_castsi128_ps(_mm_set1_epi32(W + 1));
    const __m128 r0a = _mm_loadu_ps(x0 + 2 * ow), r0b = _mm_loadu_ps(x0 + 2 * ow + 4);
    const __m128 r1a = _mm_loadu_ps(x1 + 2 * ow), r1b = _mm_loadu_ps(x1 + 2 * ow + 4);
    const __m128 a = _mm_shuffle_ps(r0a, r0b, 0x88), b = _mm_shuffle_ps(r0a, r0b, 0xDD);
    const __m128 c = _mm_shuffle_ps(r1a, r1b, 0x88), d = _mm_shuffle_ps(r1a, r1b, 0xDD);
    __m128 best, off = _mm_setzero_ps();
    FG_POOL2_SELECT(, s, a, b, c, d, ob, oc, od, best, off);
    const __m256i pos = _mm256_add_epi64(_mm256_set1_epi64x(base + 2 * ow),
                                         _mm256_setr_epi64x(0, 2, 4, 6));
    _mm_storeu_ps(y + ow, best);
    _mm256_storeu_si256((__m256i *)(idx + ow),
                        _mm256_add_epi64(pos, _mm256_cvtepi32_epi64(_mm_castps_si128(off))));
}

/* 4 double outputs from ow: unpacks leave output order 0 2 1 3, the permute restores it. */
FG_POOL2_INLINE void fg_pool2_fw4_f64(const double *x0, const double *x1, double *y,
                                      int64_t *idx, ptrdiff_t ow, int64_t base, int32_t W)
{
    const __m256d ob = _mm256_castsi256_pd(_mm256_set1_epi64x(1));
    const __m256d oc = _mm256_castsi256_pd(_mm256_set1_epi64x(W));
    const __m256d od = _mm256_castsi256_pd(_mm256_set1_epi64x((int64_t)W + 1));
    const __m256d r0a = _mm256_loadu_pd(x0 + 2 * ow), r0b = _mm256_loadu_pd(x0 + 2 * ow + 4);
    const __m256d r1a = _mm256_loadu_pd(x1 + 2 * ow), r1b = _mm256_loadu_pd(x1 + 2 * ow + 4);
    const __m256d a = _mm256_unpacklo_pd(r0a, r0b), b = _mm256_unpackhi_pd(r0a, r0b);
    const __m256d c = _mm256_unpacklo_pd(r1a, r1b), d = _mm256_unpackhi_pd(r1a, r1b);
    __m256d best, off = _mm256_setzero_pd();
    FG_POOL2_SELECT(256, d, a, b, c, d, ob, oc, od, best, off);
    const __m256i pos = _mm256_add_epi64(_mm256_set1_epi64x(base + 2 * ow),
                                         _mm256_setr_epi64x(0, 2, 4, 6));
    _mm256_storeu_pd(y + ow, _mm256_permute4x64_pd(best, 0xD8));
    const __m256i offs = _mm256_permute4x64_epi64(_mm256_castpd_si256(off), 0xD8);
    _mm256_storeu_si256((__m256i *)(idx + ow), _mm256_add_epi64(pos, offs));
}

/* 2 double outputs from ow. */
FG_POOL2_INLINE void fg_pool2_fw2_f64(const double *x0, const double *x1, double *y,
                                      int64_t *idx, ptrdiff_t ow, int64_t base, int32_t W)
{
    const __m128d ob = _mm_castsi128_pd(_mm_set1_epi64x(1));
    const __m128d oc = _mm_castsi128_pd(_mm_set1_epi64x(W));
    const __m128d od = _mm_castsi128_pd(_mm_set1_epi64x((int64_t)W + 1));
    const __m128d r0a = _mm_loadu_pd(x0 + 2 * ow), r0b = _mm_loadu_pd(x0 + 2 * ow + 2);
    const __m128d r1a = _mm_loadu_pd(x1 + 2 * ow), r1b = _mm_loadu_pd(x1 + 2 * ow + 2);
    const __m128d a = _mm_unpacklo_pd(r0a, r0b), b = _mm_unpackhi_pd(r0a, r0b);
    const __m128d c = _mm_unpacklo_pd(r1a, r1b), d = _mm_unpackhi_pd(r1a, r1b);
    __m128d best, off = _mm_setzero_pd();
    FG_POOL2_SELECT(, d, a, b, c, d, ob, oc, od, best, off);
    _mm_storeu_pd(y + ow, best);
    const __m128i pos = _mm_add_epi64(_mm_set1_epi64x(base + 2 * ow), _mm_set_epi64x(2, 0));
    _mm_storeu_si128((__m128i *)(idx + ow), _mm_add_epi64(pos, _mm_castpd_si128(off)));
}

/* Whether the 4 indices from ow lie in their own windows (all-ones lanes) or not. */
FG_POOL2_INLINE __m256i fg_pool2_hits4(const int64_t *idx, ptrdiff_t ow, int64_t base, int64_t W)
{
    const __m256i pos = _mm256_add_epi64(_mm256_set1_epi64x(base + 2 * ow),
                                         _mm256_setr_epi64x(0, 2, 4, 6));
    const __m256i off = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(idx + ow)), pos);
    return _mm256_or_si256(
        _mm256_or_si256(_mm256_cmpeq_epi64(off, _mm256_setzero_si256()),
                        _mm256_cmpeq_epi64(off, _mm256_set1_epi64x(1))),
        _mm256_or_si256(_mm256_cmpeq_epi64(off, _mm256_set1_epi64x(W)),
                        _mm256_cmpeq_epi64(off, _mm256_set1_epi64x(W + 1))));
}

FG_POOL2_INLINE __m128i fg_pool2_hits2(const int64_t *idx, ptrdiff_t ow, int64_t base, int64_t W)
{
    const __m128i pos = _mm_add_epi64(_mm_set1_epi64x(base + 2 * ow), _mm_set_epi64x(2, 0));
    const __m128i off = _mm_sub_epi64(_mm_loadu_si128((const __m128i *)(idx + ow)), pos);
    return _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi64(off, _mm_setzero_si128()),
                                     _mm_cmpeq_epi64(off, _mm_set1_epi64x(1))),
                        _mm_or_si128(_mm_cmpeq_epi64(off, _mm_set1_epi64x(W)),
                                     _mm_cmpeq_epi64(off, _mm_set1_epi64x(W + 1))));
}

/* Row 0 and row 1 of 4 windows from ow: a 64-bit mask seen as two 32-bit lanes is already
 * doubled per output, so row 0 is (off == 0) in even lanes and (off == 1) in odd ones. */
FG_POOL2_INLINE void fg_pool2_bw4_f32(const float *g, const int64_t *idx, float *gx0,
                                      float *gx1, ptrdiff_t ow, int64_t base, int64_t W)
{
    const __m128 v = _mm_add_ps(_mm_setzero_ps(), _mm_loadu_ps(g + ow));
    const __m256 dup = _mm256_set_m128(_mm_unpackhi_ps(v, v), _mm_unpacklo_ps(v, v));
    const __m256i pos = _mm256_add_epi64(_mm256_set1_epi64x(base + 2 * ow),
                                         _mm256_setr_epi64x(0, 2, 4, 6));
    const __m256i off = _mm256_sub_epi64(_mm256_loadu_si256((const __m256i *)(idx + ow)), pos);
    const __m256 m0 = _mm256_blend_ps(
        _mm256_castsi256_ps(_mm256_cmpeq_epi64(off, _mm256_setzero_si256())),
        _mm256_castsi256_ps(_mm256_cmpeq_epi64(off, _mm256_set1_epi64x(1))), 0xAA);
    const __m256 m1 = _mm256_blend_ps(
        _mm256_castsi256_ps(_mm256_cmpeq_epi64(off, _mm256_set1_epi64x(W))),
        _mm256_castsi256_ps(_mm256_cmpeq_epi64(off, _mm256_set1_epi64x(W + 1))), 0xAA);
    _mm256_storeu_ps(gx0 + 2 * ow, _mm256_and_ps(m0, dup));
    _mm256_storeu_ps(gx1 + 2 * ow, _mm256_and_ps(m1, dup));
}

FG_POOL2_INLINE void fg_pool2_bw2_f64(const double *g, const int64_t *idx, double *gx0,
                                      double *gx1, ptrdiff_t ow, int64_t base, int64_t W)
{
    const __m128d v = _mm_add_pd(_mm_setzero_pd(), _mm_loadu_pd(g + ow));
    const __m128d g0 = _mm_unpacklo_pd(v, v), g1 = _mm_unpackhi_pd(v, v);
    const __m128i pos = _mm_add_epi64(_mm_set1_epi64x(base + 2 * ow), _mm_set_epi64x(2, 0));
    const __m128i off = _mm_sub_epi64(_mm_loadu_si128((const __m128i *)(idx + ow)), pos);
    const __m128i e0 = _mm_cmpeq_epi64(off, _mm_setzero_si128());
    const __m128i e1 = _mm_cmpeq_epi64(off, _mm_set1_epi64x(1));
    const __m128i ew = _mm_cmpeq_epi64(off, _mm_set1_epi64x(W));
    const __m128i ew1 = _mm_cmpeq_epi64(off, _mm_set1_epi64x(W + 1));
    _mm_storeu_pd(gx0 + 2 * ow, _mm_and_pd(_mm_castsi128_pd(_mm_unpacklo_epi64(e0, e1)), g0));
    _mm_storeu_pd(gx0 + 2 * ow + 2, _mm_and_pd(_mm_castsi128_pd(_mm_unpackhi_epi64(e0, e1)), g1));
    _mm_storeu_pd(gx1 + 2 * ow, _mm_and_pd(_mm_castsi128_pd(_mm_unpacklo_epi64(ew, ew1)), g0));
    _mm_storeu_pd(gx1 + 2 * ow + 2, _mm_and_pd(_mm_castsi128_pd(_mm_unpackhi_epi64(ew, ew1)), g1));
}

/* Run BLOCK (a vector of V outputs at ow) over [0, n): whole vectors, then one ending at
 * n; HALF (V / 2 outputs) when n < V; SCALAR(from) for what is left. */
#define FG_POOL2_COVER(n, V, BLOCK, HALF, SCALAR)                                            \
    do {                                                                                      \
        ptrdiff_t ow_;                                                                        \
        if ((n) >= (V)) {                                                                     \
            for (ow_ = 0; ow_ + (V) <= (n); ow_ += (V)) BLOCK(ow_);                           \
            if (ow_ < (n)) BLOCK((n) - (V));                                                  \
        } else if ((n) >= (V) / 2) {                                                          \
            HALF(0);                                                                          \
            if ((n) > (V) / 2) HALF((n) - (V) / 2);                                           \
        } else {                                                                              \
            SCALAR(0);                                                                        \
        }                                                                                     \
    } while (0)

FG_POOL_AVX2_ATTR static void
fg_pool2_forward_avx2_f32(const float *x, float *y, int64_t *idx, ptrdiff_t rows,
                          ptrdiff_t cols, ptrdiff_t W, ptrdiff_t OW)
{
    for (ptrdiff_t oh = 0; oh < rows; oh++) {
        const float *x0 = x + 2 * oh * W, *x1 = x0 + W;
        float *yr = y + oh * OW;
        int64_t *ir = idx + oh * OW;
        const int64_t base = 2 * oh * W;
#define B8(o) fg_pool2_fw8_f32(x0, x1, yr, ir, o, base, (int32_t)W)
#define B4(o) fg_pool2_fw4_f32(x0, x1, yr, ir, o, base, (int32_t)W)
#define S(o) fg_pool2_fw_scalar_f32(x0, x1, yr, ir, o, cols, base, W)
        FG_POOL2_COVER(cols, 8, B8, B4, S);
#undef B8
#undef B4
#undef S
    }
}

FG_POOL_AVX2_ATTR static void
fg_pool2_forward_avx2_f64(const double *x, double *y, int64_t *idx, ptrdiff_t rows,
                          ptrdiff_t cols, ptrdiff_t W, ptrdiff_t OW)
{
    for (ptrdiff_t oh = 0; oh < rows; oh++) {
        const double *x0 = x + 2 * oh * W, *x1 = x0 + W;
        double *yr = y + oh * OW;
        int64_t *ir = idx + oh * OW;
        const int64_t base = 2 * oh * W;
#define B4(o) fg_pool2_fw4_f64(x0, x1, yr, ir, o, base, (int32_t)W)
#define B2(o) fg_pool2_fw2_f64(x0, x1, yr, ir, o, base, (int32_t)W)
#define S(o) fg_pool2_fw_scalar_f64(x0, x1, yr, ir, o, cols, base, W)
        FG_POOL2_COVER(cols, 4, B4, B2, S);
#undef B4
#undef B2
#undef S
    }
}

/* 1 when every index of row oh of an OH x OW plane (input width 2 OW) lies in its own
 * window. */
FG_POOL2_INLINE int fg_pool2_own_row_avx2(const int64_t *ir, ptrdiff_t OW, int64_t base,
                                          int64_t W)
{
    __m256i ok4 = _mm256_set1_epi64x(-1);
    __m128i ok2 = _mm_set1_epi64x(-1);
    int ok1 = 1;
#define H4(o) (ok4 = _mm256_and_si256(ok4, fg_pool2_hits4(ir, o, base, W)))
#define H2(o) (ok2 = _mm_and_si128(ok2, fg_pool2_hits2(ir, o, base, W)))
#define S(o) (ok1 = fg_pool2_own_scalar(ir, o, OW, base, W))
    FG_POOL2_COVER(OW, 4, H4, H2, S);
#undef H4
#undef H2
#undef S
    return ok1 & (_mm256_movemask_pd(_mm256_castsi256_pd(ok4)) == 0xF)
           & (_mm_movemask_pd(_mm_castsi128_pd(ok2)) == 0x3);
}

/* Row by row: check the row's indices, then write its two rows of grad_x. */
FG_POOL_AVX2_ATTR static int
fg_pool2_backward_avx2_f32(const float *g, const int64_t *idx, float *gx, ptrdiff_t OH,
                           ptrdiff_t OW)
{
    const int64_t W = 2 * OW;
    for (ptrdiff_t oh = 0; oh < OH; oh++) {
        const float *gr = g + oh * OW;
        const int64_t *ir = idx + oh * OW, base = 2 * oh * W;
        float *gx0 = gx + 2 * oh * W, *gx1 = gx0 + W;
        if (!fg_pool2_own_row_avx2(ir, OW, base, W))
            return 0;
#define B8(o) (fg_pool2_bw4_f32(gr, ir, gx0, gx1, o, base, W), \
               fg_pool2_bw4_f32(gr, ir, gx0, gx1, (o) + 4, base, W))
#define B4(o) fg_pool2_bw4_f32(gr, ir, gx0, gx1, o, base, W)
#define S(o) fg_pool2_bw_scalar_f32(gr, ir, gx0, gx1, o, OW, base, W)
        FG_POOL2_COVER(OW, 8, B8, B4, S);
#undef B8
#undef B4
#undef S
    }
    return 1;
}

FG_POOL_AVX2_ATTR static int
fg_pool2_backward_avx2_f64(const double *g, const int64_t *idx, double *gx, ptrdiff_t OH,
                           ptrdiff_t OW)
{
    const int64_t W = 2 * OW;
    for (ptrdiff_t oh = 0; oh < OH; oh++) {
        const double *gr = g + oh * OW;
        const int64_t *ir = idx + oh * OW, base = 2 * oh * W;
        double *gx0 = gx + 2 * oh * W, *gx1 = gx0 + W;
        if (!fg_pool2_own_row_avx2(ir, OW, base, W))
            return 0;
#define B4(o) (fg_pool2_bw2_f64(gr, ir, gx0, gx1, o, base, W), \
               fg_pool2_bw2_f64(gr, ir, gx0, gx1, (o) + 2, base, W))
#define B2(o) fg_pool2_bw2_f64(gr, ir, gx0, gx1, o, base, W)
#define S(o) fg_pool2_bw_scalar_f64(gr, ir, gx0, gx1, o, OW, base, W)
        FG_POOL2_COVER(OW, 4, B4, B2, S);
#undef B4
#undef B2
#undef S
    }
    return 1;
}
#undef FG_POOL2_INLINE
#endif /* FG_POOL_AVX2 */

/* ------------------------------------------------------------------ plane functions */

/* The rows x cols block of full windows of one plane of width W (OW outputs a row):
 * needs 2 rows <= H, 2 cols <= W and W + 1 < 2^31 (the caller checks). */
#define FG_POOL2_PLANES(T, SUF)                                                               \
static void fg_pool_max2x2_forward_##SUF(const T *x, T *y, int64_t *idx, ptrdiff_t rows,      \
                                         ptrdiff_t cols, ptrdiff_t W, ptrdiff_t OW)           \
{                                                                                             \
    FG_POOL2_SIMD(fg_pool2_forward_avx2_##SUF(x, y, idx, rows, cols, W, OW); return);         \
    for (ptrdiff_t oh = 0; oh < rows; oh++)                                                   \
        fg_pool2_fw_scalar_##SUF(x + 2 * oh * W, x + (2 * oh + 1) * W, y + oh * OW,           \
                                 idx + oh * OW, 0, cols, 2 * oh * W, W);                      \
}                                                                                             \
/* grad_x of a (2 OH, 2 OW) plane in one pass when every index lies in its own window     \
 * (returns 1); else 0, after writing only the rows before the foreign index. */        \
static int fg_pool_max2x2_backward_##SUF(const T *g, const int64_t *idx, T *gx, ptrdiff_t OH, \
                                         ptrdiff_t OW)                                        \
{                                                                                             \
    const ptrdiff_t W = 2 * OW;                                                               \
    FG_POOL2_SIMD(return fg_pool2_backward_avx2_##SUF(g, idx, gx, OH, OW));                   \
    for (ptrdiff_t oh = 0; oh < OH; oh++) {                                                   \
        if (!fg_pool2_own_scalar(idx + oh * OW, 0, OW, 2 * oh * W, W))                        \
            return 0;                                                                         \
        fg_pool2_bw_scalar_##SUF(g + oh * OW, idx + oh * OW, gx + 2 * oh * W,                 \
                                 gx + (2 * oh + 1) * W, 0, OW, 2 * oh * W, W);                \
    }                                                                                         \
    return 1;                                                                                 \
}

#if FG_POOL_AVX2
#define FG_POOL2_SIMD(stmt) do { if (FG_POOL_USE_AVX2()) { stmt; } } while (0)
#else
#define FG_POOL2_SIMD(stmt) do { } while (0)
#endif
FG_POOL2_PLANES(float, f32)
FG_POOL2_PLANES(double, f64)
#undef FG_POOL2_SIMD

#endif /* FASTGRAD_POOL_KERNELS_H */
