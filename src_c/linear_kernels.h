/* Design: the matrix-product core of the linear layer, C = A * B (+ bias, relu), for
 * float and double.
 *
 * One routine, fg_gemm_f32 / fg_gemm_f64, serves the forward pass and both backward
 * products, because A and B are addressed through (row, column) strides:
 *   A(i, p) = a[i * a_rs + p * a_cs]      (M x K)
 *   B(p, j) = b[p * b_rs + j * b_cs]      (K x N)
 *   C(i, j) = c[i * ldc + j]              (M x N, row-major, written fresh)
 * so x @ W.T, grad_out @ W and grad_out.T @ x are the same call with other strides,
 * and no transposed copy of anything is ever made.
 *
 * Blocking (BLIS-like, B packed, A read in place):
 *   for each depth block of KC (k0):          A's M x KC block stays in L2
 *     for each column block of NR (j0):       B's KC x NR panel is packed, zero-padded to
 *                                             NR columns, into an L1-sized stack buffer
 *       for each row block of MR (i0):        a MR x NR register tile of C accumulates
 *                                             A(i, p) * panel[p, :] over the KC depth
 * The register tile is 2 * MR vector accumulators of L lanes (NR = 2 L columns); every
 * step is a broadcast of one A value times one contiguous panel row: no horizontal sum,
 * so the compiler needs no reassociation (no -ffast-math) to use SIMD. The first depth
 * block writes C, later ones add to it; the last one also adds the bias and applies
 * relu, so the fused linear+relu needs no second pass over C. A small batch's forward
 * pass (fg_gemm_nt) instead takes dot products of rows of x and W, read in place.
 *
 * Width: "wide" kernels use 256-bit vectors, FMA and an in-register transpose (AVX2);
 * "narrow" ones 128-bit GCC vector extensions with multiply-add, portable to any
 * target. The x86-64-v3 build of the extension compiles only the wide kernels. The
 * baseline build compiles both on x86-64, the wide ones under a target("avx2,fma")
 * attribute, and picks per call from the selected SIMD level (cpu_features.h: the
 * CPU's best unless fastgrad forces another; two register-tile widths
 * cannot share one source under target_clones, hence the explicit choice).
 * Results differ from a naive dot product only by rounding (summation order, FMA).
 *
 * Row tiles shorter than MR (the last one, or a batch of 1) use a tile function
 * specialised for their row count, so a small batch does not pay for six rows.
 * Two backward cases skip packing and read B in place (fg_gemm picks them): a shallow
 * product (depth <= 16: the weight gradient of a small batch, an outer product or a
 * sum of a few) in tiles of 4 rows x 2 vectors, and one or two rows of A (the input
 * gradient of a batch of 1 or 2) in tiles of 8 or 4 vectors, enough independent chains
 * to hide the multiply-add latency. Both keep fg_gemm's order of operations per element
 * (they only apply within one depth block), so results are the same bit for bit.
 * Everything here is serial and allocation-free; threads split C among themselves
 * in the Cython caller.
 *
 * This file includes itself: the outer part defines the shared types and instantiates
 * the body (FG_LIN_BODY set) once per element type and width.
 */
#ifndef FG_LIN_BODY
#ifndef FASTGRAD_LINEAR_KERNELS_H
#define FASTGRAD_LINEAR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_features.h"

#if defined(__AVX2__) && defined(__FMA__)
#define FG_LIN_WIDE_NATIVE 1    /* the whole translation unit targets AVX2+FMA */
#define FG_LIN_DISPATCH 0
#elif defined(__GNUC__) && defined(__x86_64__)
#define FG_LIN_WIDE_NATIVE 0
#define FG_LIN_DISPATCH 1       /* baseline x86-64 build: wide kernels chosen at run time */
#else
#define FG_LIN_WIDE_NATIVE 0
#define FG_LIN_DISPATCH 0
#endif
#if FG_LIN_WIDE_NATIVE || FG_LIN_DISPATCH
#include <immintrin.h>
#endif

#define FG_LIN_MR 6    /* rows of C per register tile */
/* Depths up to this (a batch this small, in the weight gradient) skip the packed path:
 * see fg_lin_shallow. */
#define FG_LIN_SHALLOW_K 16
#define FG_LIN_KC 256  /* depth of one packed panel of B: KC x NR elements = 16 KiB at most */

/* Vectors for the packed panel (aligned); "_u" types for loads and stores anywhere else. */
#define FG_LIN_VECTOR_TYPES(BYTES)                                                          \
    typedef float fg_lin_vf##BYTES __attribute__((vector_size(BYTES)));                      \
    typedef float fg_lin_vf##BYTES##_u __attribute__((vector_size(BYTES), aligned(4), may_alias)); \
    typedef int fg_lin_vf##BYTES##_i __attribute__((vector_size(BYTES)));                    \
    typedef double fg_lin_vd##BYTES __attribute__((vector_size(BYTES)));                     \
    typedef double fg_lin_vd##BYTES##_u __attribute__((vector_size(BYTES), aligned(8), may_alias)); \
    typedef long long fg_lin_vd##BYTES##_i __attribute__((vector_size(BYTES)));
FG_LIN_VECTOR_TYPES(16)
FG_LIN_VECTOR_TYPES(32)

static inline ptrdiff_t fg_lin_mr(void) { return FG_LIN_MR; }

/* Whether [p, p + np elements) and [q, q + nq elements) share a byte (elements of size). */
static inline int fg_lin_overlaps(const void *p, ptrdiff_t np_, const void *q, ptrdiff_t nq,
                                  size_t size)
{
    const uintptr_t p0 = (uintptr_t)p, q0 = (uintptr_t)q;
    return p0 < q0 + (uintptr_t)nq * size && q0 < p0 + (uintptr_t)np_ * size;
}

/* grad_bias[j] = sum over rows i of g[i * n + j], written fresh; rows are added in order,
 * each as one contiguous vectorisable pass. */
#define FG_LIN_SUM_ROWS(T, SUF)                                                             \
    static void fg_lin_sum_rows_##SUF(ptrdiff_t m, ptrdiff_t n, const T *g, T *out)         \
    {                                                                                       \
        ptrdiff_t i, j;                                                                     \
        for (j = 0; j < n; j++)                                                             \
            out[j] = 0;                                                                     \
        for (i = 0; i < m; i++)                                                             \
            for (j = 0; j < n; j++)                                                         \
                out[j] += g[i * n + j];                                                     \
    }
FG_LIN_SUM_ROWS(float, f32)
FG_LIN_SUM_ROWS(double, f64)

/* All three gradients of a small batch in one pass over the weight: for each output
 * feature j, its gradient column g[:, j] (zero where relu_out[:, j] is not positive, when
 * relu_out is given: the ReLU fused into the forward pass) gives
 *   grad_bias[j]      = sum over rows i of g[i, j], rows added in order,
 *   grad_weight[j, :] = sum over rows i of g[i, j] * x[i, :], rows added in order,
 *   grad_x[i, :]      = sum over features j of g[i, j] * w[j, :], features added in order,
 * row by row of x, four features at a time: rows j..j+3 of w and of grad_weight are each
 * touched once per row of x while they are in cache, and grad_x's row is read and written
 * once per four features. Any of the three outputs may be NULL. Plain loops over
 * contiguous rows, which gcc vectorises without reassociating anything: the same results
 * on every build. The caller guarantees that no output shares memory with an input or
 * another output (hence restrict). */
#define FG_LIN_BACKWARD_SMALL(T, SUF)                                                       \
    static void fg_lin_backward_small_##SUF(ptrdiff_t n, ptrdiff_t k, ptrdiff_t o,          \
                                            const T *restrict x, const T *restrict g,       \
                                            const T *restrict relu_out,                     \
                                            const T *restrict w, T *restrict gx,            \
                                            T *restrict gw, T *restrict gb)                 \
    {                                                                                       \
        ptrdiff_t i, j, p, q, m;                                                            \
        T c[4];                                                                             \
        if (n == 0) {  /* no rows: the sums are empty */                                    \
            if (gw != NULL)                                                                 \
                for (p = 0; p < o * k; p++)                                                 \
                    gw[p] = 0;                                                              \
            if (gb != NULL)                                                                 \
                for (j = 0; j < o; j++)                                                     \
                    gb[j] = 0;                                                              \
            return;                                                                         \
        }                                                                                   \
        for (i = 0; i < n; i++) {                                                           \
            const T *x_row = x + i * k;                                                     \
            T *gx_row = gx != NULL ? gx + i * k : NULL;                                     \
            if (gx_row != NULL)                                                             \
                for (p = 0; p < k; p++)                                                     \
                    gx_row[p] = 0;                                                          \
            for (j = 0; j < o; j += 4) {                                                    \
                m = o - j < 4 ? o - j : 4;                                                  \
                for (q = 0; q < m; q++) {                                                   \
                    T v = g[i * o + j + q];                                                 \
                    c[q] = relu_out != NULL && !(relu_out[i * o + j + q] > 0) ? (T)0 : v;   \
                    if (gb != NULL)                                                         \
                        gb[j + q] = (i == 0 ? (T)0 : gb[j + q]) + c[q];                     \
                }                                                                           \
                if (gw != NULL)                                                             \
                    for (q = 0; q < m; q++) {                                               \
                        T *gw_row = gw + (j + q) * k;                                       \
                        const T cq = c[q];                                                  \
                        if (i == 0)                                                         \
                            for (p = 0; p < k; p++)                                         \
                                gw_row[p] = cq * x_row[p];                                  \
                        else                                                                \
                            for (p = 0; p < k; p++)                                         \
                                gw_row[p] += cq * x_row[p];                                 \
                    }                                                                       \
                if (gx_row != NULL) {                                                       \
                    const T *w0 = w + j * k;                                                \
                    if (m == 4) {                                                           \
                        const T *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;                   \
                        const T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];                 \
                        for (p = 0; p < k; p++)                                             \
                            gx_row[p] = (((gx_row[p] + c0 * w0[p]) + c1 * w1[p])            \
                                         + c2 * w2[p]) + c3 * w3[p];                        \
                    } else                                                                  \
                        for (q = 0; q < m; q++) {                                           \
                            const T cq = c[q];                                              \
                            for (p = 0; p < k; p++)                                         \
                                gx_row[p] += cq * w0[q * k + p];                            \
                        }                                                                   \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }
FG_LIN_BACKWARD_SMALL(float, f32)
FG_LIN_BACKWARD_SMALL(double, f64)

/* Each instantiation of the body sets: FG_T the element type, FG_VB the vector width in
 * bytes, FG_WIDE whether to use AVX2 intrinsics, FG_ATTR a function attribute, FG_V /
 * FG_VU / FG_VI the vector types, FG_NAME the suffix of every function's name. */
#define FG_LIN_BODY

#if FG_LIN_WIDE_NATIVE
#define FG_VB 32
#define FG_WIDE 1
#define FG_ATTR
#define FG_T float
#define FG_V fg_lin_vf32
#define FG_VU fg_lin_vf32_u
#define FG_VI fg_lin_vf32_i
#define FG_IS_F32 1
#define FG_NAME(base) base##_f32
#include "linear_kernels.h"
#undef FG_T
#undef FG_V
#undef FG_VU
#undef FG_VI
#undef FG_IS_F32
#undef FG_NAME
#define FG_T double
#define FG_V fg_lin_vd32
#define FG_VU fg_lin_vd32_u
#define FG_VI fg_lin_vd32_i
#define FG_IS_F32 0
#define FG_NAME(base) base##_f64
#include "linear_kernels.h"
#undef FG_T
#undef FG_V
#undef FG_VU
#undef FG_VI
#undef FG_IS_F32
#undef FG_NAME
#undef FG_VB
#undef FG_WIDE
#undef FG_ATTR

#else /* the narrow kernels, plus the wide ones behind a target attribute */

#define FG_VB 16
#define FG_WIDE 0
#define FG_ATTR
#define FG_T float
#define FG_V fg_lin_vf16
#define FG_VU fg_lin_vf16_u
#define FG_VI fg_lin_vf16_i
#define FG_IS_F32 1
#define FG_NAME(base) base##_f32_narrow
#include "linear_kernels.h"
#undef FG_T
#undef FG_V
#undef FG_VU
#undef FG_VI
#undef FG_IS_F32
#undef FG_NAME
#define FG_T double
#define FG_V fg_lin_vd16
#define FG_VU fg_lin_vd16_u
#define FG_VI fg_lin_vd16_i
#define FG_IS_F32 0
#define FG_NAME(base) base##_f64_narrow
#include "linear_kernels.h"
#undef FG_T
#undef FG_V
#undef FG_VU
#undef FG_VI
#undef FG_IS_F32
#undef FG_NAME
#undef FG_VB
#undef FG_WIDE
#undef FG_ATTR

#if FG_LIN_DISPATCH
#define FG_VB 32
#define FG_WIDE 1
#define FG_ATTR __attribute__((target("avx2,fma")))
#define FG_T float
#define FG_V fg_lin_vf32
#define FG_VU fg_lin_vf32_u
#define FG_VI fg_lin_vf32_i
#define FG_IS_F32 1
#define FG_NAME(base) base##_f32_wide
#include "linear_kernels.h"
#undef FG_T
#undef FG_V
#undef FG_VU
#undef FG_VI
#undef FG_IS_F32
#undef FG_NAME
#define FG_T double
#define FG_V fg_lin_vd32
#define FG_VU fg_lin_vd32_u
#define FG_VI fg_lin_vd32_i
#define FG_IS_F32 0
#define FG_NAME(base) base##_f64_wide
#include "linear_kernels.h"
#undef FG_T
#undef FG_V
#undef FG_VU
#undef FG_VI
#undef FG_IS_F32
#undef FG_NAME
#undef FG_VB
#undef FG_WIDE
#undef FG_ATTR

/* Read each call (a load and a compare): the level fastgrad selected (cpu_features.h). */
static inline int fg_lin_use_wide(void) { return fg_simd_level() >= FG_SIMD_AVX2; }
#define FG_LIN_PICK(name, ...) \
    (fg_lin_use_wide() ? name##_wide(__VA_ARGS__) : name##_narrow(__VA_ARGS__))
#else
#define FG_LIN_PICK(name, ...) name##_narrow(__VA_ARGS__)
#endif

/* The public names: the variant this CPU runs best. */
#define FG_LIN_PUBLIC(T, SUF)                                                               \
    static ptrdiff_t fg_lin_nr_##SUF(void) { return FG_LIN_PICK(fg_lin_nr_##SUF); }         \
    static void fg_gemm_##SUF(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *a,            \
                              ptrdiff_t a_rs, ptrdiff_t a_cs, const T *b, ptrdiff_t b_rs,   \
                              ptrdiff_t b_cs, const T *bias, int relu, T *c, ptrdiff_t ldc) \
    {                                                                                       \
        FG_LIN_PICK(fg_gemm_##SUF, m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, bias, relu, c, ldc); \
    }                                                                                       \
    static void fg_gemm_nt_##SUF(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *a,         \
                                 ptrdiff_t lda, const T *w, ptrdiff_t ldw, const T *bias,   \
                                 int relu, T *c, ptrdiff_t ldc)                             \
    {                                                                                       \
        FG_LIN_PICK(fg_gemm_nt_##SUF, m, n, k, a, lda, w, ldw, bias, relu, c, ldc);         \
    }
FG_LIN_PUBLIC(float, f32)
FG_LIN_PUBLIC(double, f64)

#endif /* FG_LIN_WIDE_NATIVE */
#undef FG_LIN_BODY

#endif /* FASTGRAD_LINEAR_KERNELS_H */

#else /* FG_LIN_BODY: the kernels for one element type FG_T and width FG_VB */

/* FG_SMADD: the scalar twin of FG_MADD's arithmetic (fused in the wide kernels). */
#if FG_WIDE && FG_IS_F32
#define FG_SMADD(acc, b, s) ((acc) = __builtin_fmaf((b), (s), (acc)))
#elif FG_WIDE
#define FG_SMADD(acc, b, s) ((acc) = __builtin_fma((b), (s), (acc)))
#else
#define FG_SMADD(acc, b, s) ((acc) += (b) * (s))
#endif

#if FG_WIDE && FG_IS_F32
#define FG_MADD(acc, b, s) \
    ((acc) = (FG_V)_mm256_fmadd_ps((__m256)(b), _mm256_set1_ps(s), (__m256)(acc)))
#define FG_VMADD(acc, a, b) \
    ((acc) = (FG_V)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(acc)))
#elif FG_WIDE
#define FG_MADD(acc, b, s) \
    ((acc) = (FG_V)_mm256_fmadd_pd((__m256d)(b), _mm256_set1_pd(s), (__m256d)(acc)))
#define FG_VMADD(acc, a, b) \
    ((acc) = (FG_V)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(acc)))
#else
#define FG_MADD(acc, b, s) ((acc) += (b) * (s))
#define FG_VMADD(acc, a, b) ((acc) += (a) * (b))
#endif

#define FG_L ((int)(FG_VB / sizeof(FG_T)))  /* lanes per vector */
#define FG_NR (2 * FG_L)                     /* columns per register tile */

/* Keep negatives out, NaN in (as PyTorch's relu): clear the lanes where v < 0. */
FG_ATTR static inline FG_V FG_NAME(fg_lin_relu)(FG_V v)
{
    const FG_V zero = {0};
    return (FG_V)((FG_VI)v & ~(FG_VI)(v < zero));
}

/* dst[q * ldd + r] = src[r * lds + q] for an L x L block. With 256-bit vectors this is
 * the classic in-register transpose (unpack, shuffle, swap 128-bit halves); packing
 * W.T, the forward pass's B, is then about as cheap as copying it. */
#if FG_WIDE && FG_IS_F32
#define FG_LIN_HAVE_TRANSPOSE 1
FG_ATTR static inline void FG_NAME(fg_lin_transpose_block)(const FG_T *src, ptrdiff_t lds, FG_T *dst,
                                                   ptrdiff_t ldd)
{
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 a0 = _mm256_unpacklo_ps(r0, r1), a1 = _mm256_unpackhi_ps(r0, r1);
    __m256 a2 = _mm256_unpacklo_ps(r2, r3), a3 = _mm256_unpackhi_ps(r2, r3);
    __m256 a4 = _mm256_unpacklo_ps(r4, r5), a5 = _mm256_unpackhi_ps(r4, r5);
    __m256 a6 = _mm256_unpacklo_ps(r6, r7), a7 = _mm256_unpackhi_ps(r6, r7);
    __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE);
    __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xEE);
    __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xEE);
    __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(b0, b4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(b1, b5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(b2, b6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(b3, b7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(b0, b4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(b1, b5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(b2, b6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(b3, b7, 0x31));
}
#elif FG_WIDE
#define FG_LIN_HAVE_TRANSPOSE 1
FG_ATTR static inline void FG_NAME(fg_lin_transpose_block)(const FG_T *src, ptrdiff_t lds, FG_T *dst,
                                                   ptrdiff_t ldd)
{
    __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + lds);
    __m256d r2 = _mm256_loadu_pd(src + 2 * lds), r3 = _mm256_loadu_pd(src + 3 * lds);
    __m256d a0 = _mm256_unpacklo_pd(r0, r1), a1 = _mm256_unpackhi_pd(r0, r1);
    __m256d a2 = _mm256_unpacklo_pd(r2, r3), a3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(a0, a2, 0x20));
    _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(a1, a3, 0x20));
    _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(a0, a2, 0x31));
    _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(a1, a3, 0x31));
}
#else
#define FG_LIN_HAVE_TRANSPOSE 0
#endif

/* panel[p * NR + j] = B(p, j) for p < kc, j < n; columns n..NR-1 are zero so that a
 * narrow last block runs the same full-width tile. */
FG_ATTR static void FG_NAME(fg_lin_pack)(FG_T *restrict panel, const FG_T *b, ptrdiff_t b_rs,
                                 ptrdiff_t b_cs, ptrdiff_t kc, int n)
{
    ptrdiff_t p = 0;
    int j;
    if (b_cs == 1 && n == FG_NR) {  /* rows of B are contiguous: copy them as vectors */
        for (p = 0; p < kc; p++) {
            *(FG_V *)(panel + p * FG_NR) = *(const FG_VU *)(b + p * b_rs);
            *(FG_V *)(panel + p * FG_NR + FG_L) = *(const FG_VU *)(b + p * b_rs + FG_L);
        }
        return;
    }
    if (b_cs == 1) {
        for (p = 0; p < kc; p++)
            for (j = 0; j < FG_NR; j++)
                panel[p * FG_NR + j] = j < n ? b[p * b_rs + j] : 0;
        return;
    }
    /* columns of B are contiguous (B = W.T): transpose L x L blocks, then the rest */
#if FG_LIN_HAVE_TRANSPOSE
    if (b_rs == 1 && n == FG_NR) {
        for (p = 0; p + FG_L <= kc; p += FG_L) {
            FG_NAME(fg_lin_transpose_block)(b + p, b_cs, panel + p * FG_NR, FG_NR);
            FG_NAME(fg_lin_transpose_block)(b + FG_L * b_cs + p, b_cs, panel + p * FG_NR + FG_L,
                                            FG_NR);
        }
    }
#endif
    for (j = 0; j < FG_NR; j++) {
        const FG_T *src = b + j * b_cs;
        ptrdiff_t q;
        for (q = p; q < kc; q++)
            panel[q * FG_NR + j] = j < n ? src[q * b_rs] : 0;
    }
}
#undef FG_LIN_HAVE_TRANSPOSE

/* One R x NR tile of C from R rows of A (R <= MR, a compile-time constant after
 * inlining, so the accumulators live in registers) and a panel of B whose rows are
 * ldp elements apart (NR when packed, B's own row stride when read in place).
 * Writes n <= NR columns. */
FG_ATTR static inline __attribute__((always_inline)) void
FG_NAME(fg_lin_tile)(const int R, ptrdiff_t kc, const FG_T *a, ptrdiff_t a_rs, ptrdiff_t a_cs,
                     const FG_T *panel, ptrdiff_t ldp, FG_T *c, ptrdiff_t ldc, int n,
                     int accumulate, const FG_T *bias, int relu)
{
    FG_V acc0[FG_LIN_MR], acc1[FG_LIN_MR];
    ptrdiff_t p;
    int r, j;
    for (r = 0; r < R; r++) {
        acc0[r] = (FG_V){0};
        acc1[r] = (FG_V){0};
    }
    for (p = 0; p < kc; p++) {
        const FG_V b0 = *(const FG_VU *)(panel + p * ldp);
        const FG_V b1 = *(const FG_VU *)(panel + p * ldp + FG_L);
        const FG_T *ap = a + p * a_cs;
        for (r = 0; r < R; r++) {
            const FG_T s = ap[r * a_rs];
            FG_MADD(acc0[r], b0, s);
            FG_MADD(acc1[r], b1, s);
        }
    }
    if (n == FG_NR) {
        for (r = 0; r < R; r++) {
            FG_T *cr = c + r * ldc;
            FG_V v0 = acc0[r], v1 = acc1[r];
            if (accumulate) {
                v0 = *(FG_VU *)cr + v0;
                v1 = *(FG_VU *)(cr + FG_L) + v1;
            }
            if (bias) {
                v0 += *(const FG_VU *)bias;
                v1 += *(const FG_VU *)(bias + FG_L);
            }
            if (relu) {
                v0 = FG_NAME(fg_lin_relu)(v0);
                v1 = FG_NAME(fg_lin_relu)(v1);
            }
            *(FG_VU *)cr = v0;
            *(FG_VU *)(cr + FG_L) = v1;
        }
        return;
    }
    /* a narrow last column block: spill the tile and write only its n valid columns */
    FG_T tile[FG_LIN_MR][FG_NR] __attribute__((aligned(64)));
    for (r = 0; r < R; r++) {
        *(FG_V *)&tile[r][0] = acc0[r];
        *(FG_V *)&tile[r][FG_L] = acc1[r];
    }
    for (r = 0; r < R; r++) {
        FG_T *cr = c + r * ldc;
        for (j = 0; j < n; j++) {
            FG_T v = tile[r][j];
            if (accumulate)
                v = cr[j] + v;
            if (bias)
                v += bias[j];
            if (relu && v < 0)
                v = 0;
            cr[j] = v;
        }
    }
}

#define FG_LIN_TILE_CASE(R) \
    case R: FG_NAME(fg_lin_tile)(R, kc, a, a_rs, a_cs, panel, ldp, c, ldc, n, accumulate, bias, relu); break

/* Out of line on purpose: inlined into its callers, its 12 accumulators no longer all
 * fit in registers (one spills) and the packed product runs 30% slower. */
FG_ATTR static __attribute__((noinline)) void
FG_NAME(fg_lin_tile_rows)(int rows, ptrdiff_t kc, const FG_T *a, ptrdiff_t a_rs,
                          ptrdiff_t a_cs, const FG_T *panel, ptrdiff_t ldp, FG_T *c,
                          ptrdiff_t ldc, int n, int accumulate, const FG_T *bias, int relu)
{
    switch (rows) {
    FG_LIN_TILE_CASE(6);
    FG_LIN_TILE_CASE(5);
    FG_LIN_TILE_CASE(4);
    FG_LIN_TILE_CASE(3);
    FG_LIN_TILE_CASE(2);
    default: FG_LIN_TILE_CASE(1);
    }
}
#undef FG_LIN_TILE_CASE

/* C = bias (or 0), relu'd: the product over an empty depth. */
FG_ATTR static void FG_NAME(fg_lin_fill_bias)(ptrdiff_t m, ptrdiff_t n, const FG_T *bias, int relu,
                                      FG_T *c, ptrdiff_t ldc)
{
    ptrdiff_t i, j;
    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) {
            FG_T v = bias ? bias[j] : 0;
            c[i * ldc + j] = (relu && v < 0) ? 0 : v;
        }
}

/* R rows of C = A * B with B's rows contiguous (b_cs == 1) and read in place, in one
 * depth block (k <= FG_LIN_KC): tiles of R rows x V vectors, then single vectors, then
 * single columns. Every element is the chain fg_lin_tile computes, 0 then one
 * multiply-add per p in order (the same FG_MADD, or its scalar twin), so the results
 * are fg_gemm_packed's, bit for bit. */
FG_ATTR static inline __attribute__((always_inline)) void
FG_NAME(fg_lin_inplace_rows)(const int R, const int V, ptrdiff_t n, ptrdiff_t k, const FG_T *a,
                             ptrdiff_t a_rs, ptrdiff_t a_cs, const FG_T *b, ptrdiff_t b_rs,
                             FG_T *c, ptrdiff_t ldc)
{
    ptrdiff_t j = 0, p;
    int r, v;
    for (; j + V * FG_L <= n; j += V * FG_L) {
        FG_V acc[4][8];
        for (r = 0; r < R; r++)
            for (v = 0; v < V; v++)
                acc[r][v] = (FG_V){0};
        for (p = 0; p < k; p++) {
            const FG_T *bp = b + p * b_rs + j;
            for (r = 0; r < R; r++) {
                const FG_T s = a[r * a_rs + p * a_cs];
                for (v = 0; v < V; v++)
                    FG_MADD(acc[r][v], *(const FG_VU *)(bp + v * FG_L), s);
            }
        }
        for (r = 0; r < R; r++)
            for (v = 0; v < V; v++)
                *(FG_VU *)(c + r * ldc + j + v * FG_L) = acc[r][v];
    }
    for (; j + FG_L <= n; j += FG_L) {
        FG_V acc[4];
        for (r = 0; r < R; r++)
            acc[r] = (FG_V){0};
        for (p = 0; p < k; p++) {
            const FG_V b0 = *(const FG_VU *)(b + p * b_rs + j);
            for (r = 0; r < R; r++)
                FG_MADD(acc[r], b0, a[r * a_rs + p * a_cs]);
        }
        for (r = 0; r < R; r++)
            *(FG_VU *)(c + r * ldc + j) = acc[r];
    }
#if !FG_WIDE
    /* portable kernels: one column at a time (gcc would vectorise the loop below, and a
     * NaN could then come out with another payload than fg_gemm_packed's) */
    for (; j < n; j++)
        for (r = 0; r < R; r++) {
            FG_T acc = 0;
            for (p = 0; p < k; p++)
                FG_SMADD(acc, b[p * b_rs + j], a[r * a_rs + p * a_cs]);
            c[r * ldc + j] = acc;
        }
#endif
    if (j < n) {  /* fewer than L columns: their chains side by side, so they overlap */
        const int rem = (int)(n - j);
        FG_T acc[4][FG_L];
        int q;
        for (r = 0; r < R; r++)
            for (q = 0; q < rem; q++)
                acc[r][q] = 0;
        for (p = 0; p < k; p++)
            for (r = 0; r < R; r++) {
                const FG_T s = a[r * a_rs + p * a_cs];
                for (q = 0; q < rem; q++)
                    FG_SMADD(acc[r][q], b[p * b_rs + j + q], s);
            }
        for (r = 0; r < R; r++)
            for (q = 0; q < rem; q++)
                c[r * ldc + j + q] = acc[r][q];
    }
}

/* C = A * B for one or two rows of A (a backward product of a batch of 1 or 2) and
 * k <= FG_LIN_KC: 8 vectors of C per tile, so that 8 independent multiply-add chains
 * hide their latency (fg_gemm_packed's 2 vectors per row leave it exposed). */
FG_ATTR static __attribute__((noinline)) void
FG_NAME(fg_lin_few_rows)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FG_T *a, ptrdiff_t a_rs,
                         ptrdiff_t a_cs, const FG_T *b, ptrdiff_t b_rs, FG_T *c, ptrdiff_t ldc)
{
    if (m == 1)
        FG_NAME(fg_lin_inplace_rows)(1, 8, n, k, a, a_rs, a_cs, b, b_rs, c, ldc);
    else
        FG_NAME(fg_lin_inplace_rows)(2, 4, n, k, a, a_rs, a_cs, b, b_rs, c, ldc);
}

/* C = A * B, C fresh, for 1 <= k <= FG_LIN_SHALLOW_K and b_cs == 1: a weight gradient
 * over a batch of a few rows is an outer product (a sum of a few), and packing B or
 * starting a register tile per 6 x NR block of C cost more than the arithmetic. */
FG_ATTR static __attribute__((noinline)) void
FG_NAME(fg_lin_shallow)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FG_T *a, ptrdiff_t a_rs,
                        ptrdiff_t a_cs, const FG_T *b, ptrdiff_t b_rs, FG_T *c, ptrdiff_t ldc)
{
    ptrdiff_t i = 0;
#define FG_LIN_ROWS(R) \
    FG_NAME(fg_lin_inplace_rows)(R, 2, n, k, a + i * a_rs, a_rs, a_cs, b, b_rs, c + i * ldc, ldc)
    for (; i + 4 <= m; i += 4)
        FG_LIN_ROWS(4);
    switch (m - i) {
    case 3: FG_LIN_ROWS(3); break;
    case 2: FG_LIN_ROWS(2); break;
    case 1: FG_LIN_ROWS(1); break;
    default: break;
    }
#undef FG_LIN_ROWS
}

/* C = A * B (+ bias[j]) (relu), C written fresh; see the Design note for the strides.
 * bias may be NULL. With k == 0 the product is empty: C = bias (or 0).
 * When A has at most MR rows there is a single row tile per panel and nothing to
 * gain from packing: full-width blocks of a row-major B are then read in place. */
FG_ATTR static void FG_NAME(fg_gemm_packed)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                    const FG_T *a, ptrdiff_t a_rs, ptrdiff_t a_cs,
                                    const FG_T *b, ptrdiff_t b_rs, ptrdiff_t b_cs,
                                    const FG_T *bias, int relu, FG_T *c, ptrdiff_t ldc)
{
    FG_T packed[FG_LIN_KC * FG_NR] __attribute__((aligned(64)));
    const int in_place = (b_cs == 1 && m <= FG_LIN_MR);
    ptrdiff_t i0, j0, k0;
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        FG_NAME(fg_lin_fill_bias)(m, n, bias, relu, c, ldc);
        return;
    }
    for (k0 = 0; k0 < k; k0 += FG_LIN_KC) {
        const ptrdiff_t kc = (k - k0 < FG_LIN_KC) ? k - k0 : FG_LIN_KC;
        const int last = (k0 + kc == k);
        for (j0 = 0; j0 < n; j0 += FG_NR) {
            const int nb = (int)((n - j0 < FG_NR) ? n - j0 : FG_NR);
            const FG_T *panel = b + k0 * b_rs + j0;
            ptrdiff_t ldp = b_rs;
            if (!(in_place && nb == FG_NR)) {
                FG_NAME(fg_lin_pack)(packed, b + k0 * b_rs + j0 * b_cs, b_rs, b_cs, kc, nb);
                panel = packed;
                ldp = FG_NR;
            }
            for (i0 = 0; i0 < m; i0 += FG_LIN_MR) {
                const int rows = (int)((m - i0 < FG_LIN_MR) ? m - i0 : FG_LIN_MR);
                FG_NAME(fg_lin_tile_rows)(rows, kc, a + i0 * a_rs + k0 * a_cs, a_rs, a_cs,
                                          panel, ldp, c + i0 * ldc + j0, ldc, nb, k0 > 0,
                                          (last && bias) ? bias + j0 : NULL, last && relu);
            }
        }
    }
}

/* C = A * B (+ bias[j]) (relu), C fresh: without bias or relu (the backward products),
 * a shallow product (a small batch's weight gradient) takes fg_lin_shallow, one or two
 * rows of A (the input gradient of a batch of 1 or 2) fg_lin_few_rows, the rest
 * fg_gemm_packed.
 * An output that shares memory with an input (the kernels do not refuse it) also takes
 * fg_gemm_packed, whose order of reads and writes such calls have always had. */
FG_ATTR static void FG_NAME(fg_gemm)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                             const FG_T *a, ptrdiff_t a_rs, ptrdiff_t a_cs,
                             const FG_T *b, ptrdiff_t b_rs, ptrdiff_t b_cs,
                             const FG_T *bias, int relu, FG_T *c, ptrdiff_t ldc)
{
    if (m > 0 && n > 0 && k > 0 && (k <= FG_LIN_SHALLOW_K || (m <= 2 && k <= FG_LIN_KC))
        && b_cs == 1 && !bias && !relu
        && !fg_lin_overlaps(c, (m - 1) * ldc + n, a, (m - 1) * a_rs + (k - 1) * a_cs + 1,
                            sizeof(FG_T))
        && !fg_lin_overlaps(c, (m - 1) * ldc + n, b, (k - 1) * b_rs + n, sizeof(FG_T))) {
        if (k <= FG_LIN_SHALLOW_K)
            FG_NAME(fg_lin_shallow)(m, n, k, a, a_rs, a_cs, b, b_rs, c, ldc);
        else
            FG_NAME(fg_lin_few_rows)(m, n, k, a, a_rs, a_cs, b, b_rs, c, ldc);
    } else {
        FG_NAME(fg_gemm_packed)(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, bias, relu, c, ldc);
    }
}

/* Dot-product tile for C = A * W.T with both operands contiguous along the depth:
 * RA rows of A against 4 rows of W, one vector accumulator per pair, lanes summed at
 * the end in a fixed order, then the depth's remainder added in scalar. */
FG_ATTR static inline __attribute__((always_inline)) void
FG_NAME(fg_lin_dot_tile)(const int RA, ptrdiff_t k, const FG_T *a, ptrdiff_t lda,
                         const FG_T *w0, const FG_T *w1, const FG_T *w2, const FG_T *w3,
                         FG_T out[2][4])
{
    FG_V acc[2][4];
    FG_T lanes[FG_L];
    const FG_T *w[4] = {w0, w1, w2, w3};
    ptrdiff_t p;
    int r, q, l;
    for (r = 0; r < RA; r++)
        for (q = 0; q < 4; q++)
            acc[r][q] = (FG_V){0};
    for (p = 0; p + FG_L <= k; p += FG_L) {
        const FG_V v0 = *(const FG_VU *)(w0 + p), v1 = *(const FG_VU *)(w1 + p);
        const FG_V v2 = *(const FG_VU *)(w2 + p), v3 = *(const FG_VU *)(w3 + p);
        for (r = 0; r < RA; r++) {
            const FG_V av = *(const FG_VU *)(a + r * lda + p);
            FG_VMADD(acc[r][0], av, v0);
            FG_VMADD(acc[r][1], av, v1);
            FG_VMADD(acc[r][2], av, v2);
            FG_VMADD(acc[r][3], av, v3);
        }
    }
    for (r = 0; r < RA; r++)
        for (q = 0; q < 4; q++) {
            FG_T s = 0;
            ptrdiff_t t;
            *(FG_VU *)lanes = acc[r][q];
            for (l = 0; l < FG_L; l++)
                s += lanes[l];
            for (t = p; t < k; t++)
                s += a[r * lda + t] * w[q][t];
            out[r][q] = s;
        }
}

/* One row of A against 8 rows of W: fg_lin_dot_tile's arithmetic for each pair (the
 * same vector chain, the same lane order, the same scalar remainder), with twice the
 * independent chains, which a batch of one needs to hide the multiply-add latency. */
FG_ATTR static inline __attribute__((always_inline)) void
FG_NAME(fg_lin_dot_row8)(ptrdiff_t k, const FG_T *a, const FG_T *w, ptrdiff_t ldw, FG_T out[8])
{
    FG_V acc[8];
    FG_T lanes[FG_L];
    ptrdiff_t p;
    int q, l;
    for (q = 0; q < 8; q++)
        acc[q] = (FG_V){0};
    for (p = 0; p + FG_L <= k; p += FG_L) {
        const FG_V av = *(const FG_VU *)(a + p);
        for (q = 0; q < 8; q++)
            FG_VMADD(acc[q], av, *(const FG_VU *)(w + q * ldw + p));
    }
    for (q = 0; q < 8; q++) {
        FG_T s = 0;
        ptrdiff_t t;
        *(FG_VU *)lanes = acc[q];
        for (l = 0; l < FG_L; l++)
            s += lanes[l];
        for (t = p; t < k; t++)
            s += a[t] * w[q * ldw + t];
        out[q] = s;
    }
}

/* C = A * W.T (+ bias) (relu), C fresh, for A (m x k) and W (n x k) both row-major:
 * the forward pass of a small batch. Every element of W is read once per pair of rows
 * of A and nothing is packed, so a batch of one costs one pass over W. */
FG_ATTR static void FG_NAME(fg_gemm_nt)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FG_T *a,
                                ptrdiff_t lda, const FG_T *w, ptrdiff_t ldw,
                                const FG_T *bias, int relu, FG_T *c, ptrdiff_t ldc)
{
    FG_T out[2][4], out8[8];
    ptrdiff_t i0, j0 = 0;
    int r, q;
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        FG_NAME(fg_lin_fill_bias)(m, n, bias, relu, c, ldc);
        return;
    }
    if (m == 1)  /* a batch of one: 8 rows of W at a time, the rest below */
        for (; j0 + 8 <= n; j0 += 8) {
            FG_NAME(fg_lin_dot_row8)(k, a, w + j0 * ldw, ldw, out8);
            for (q = 0; q < 8; q++) {
                FG_T v = out8[q];
                if (bias)
                    v += bias[j0 + q];
                if (relu && v < 0)
                    v = 0;
                c[j0 + q] = v;
            }
        }
    for (; j0 < n; j0 += 4) {
        const int nq = (int)((n - j0 < 4) ? n - j0 : 4);
        /* rows of W past the end repeat the last one; their results are dropped */
        const FG_T *w0 = w + j0 * ldw;
        const FG_T *w1 = w + (j0 + (nq > 1 ? 1 : 0)) * ldw;
        const FG_T *w2 = w + (j0 + (nq > 2 ? 2 : 0)) * ldw;
        const FG_T *w3 = w + (j0 + (nq > 3 ? 3 : 0)) * ldw;
        for (i0 = 0; i0 < m; i0 += 2) {
            const int ra = (m - i0 >= 2) ? 2 : 1;
            if (ra == 2)
                FG_NAME(fg_lin_dot_tile)(2, k, a + i0 * lda, lda, w0, w1, w2, w3, out);
            else
                FG_NAME(fg_lin_dot_tile)(1, k, a + i0 * lda, lda, w0, w1, w2, w3, out);
            for (r = 0; r < ra; r++)
                for (q = 0; q < nq; q++) {
                    FG_T v = out[r][q];
                    if (bias)
                        v += bias[j0 + q];
                    if (relu && v < 0)
                        v = 0;
                    c[(i0 + r) * ldc + j0 + q] = v;
                }
        }
    }
}

FG_ATTR static ptrdiff_t FG_NAME(fg_lin_nr)(void) { return FG_NR; }

#undef FG_L
#undef FG_NR
#undef FG_MADD
#undef FG_SMADD
#undef FG_VMADD

#endif /* FG_LIN_BODY */
