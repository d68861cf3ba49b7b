/* SIMD micro-kernels of fastgrad's conv family (float32), used by src_c/_conv.pyx.
 *
 * Two register-tiled loops carry all of the convolution arithmetic:
 *
 *   gemm: C[m][n] = sum_k A[m][k] * B[off[k] + n]
 *         Output positions n run along SIMD lanes; each "row" k of B is any contiguous run
 *         of memory (a shifted view of the zero-padded input, or an im2col row), named by
 *         its offset off[k]. A is packed in panels of MR rows: panel p holds
 *         A[p*MR + r][k] at Ap[(p*K + k)*MR + r] (rows past M are zero).
 *         Tiles of MR rows x NV vectors live in registers (6x16 ... 1x96 floats on AVX2,
 *         8x48 ... 1x384 on AVX-512); the caller lists the column tiles, each with the
 *         range of k that can be non-zero. The tiles go to C, or (AVX-512) straight
 *         into the output planes (fgc_out: masked stores of the kept columns, bias, ReLU).
 *   dot:  C[m][k] += sum_{i,y,x} A[m*a_chan + i*a_img + y*a_row + x]
 *                                * B[off[k] + i*b_img + y*b_row + x]
 *         A weight gradient: every (output channel, weight element) pair is a dot product
 *         over output positions. Tiles of MR x NR accumulators (12 on AVX2, 24 on
 *         AVX-512), summed across lanes at the tile's end (AVX-512: all 24 at once with a
 *         transpose-add tree); row tails are read with masked loads, so nothing outside
 *         the rows is touched.
 * and two variants of them:
 *   rows: the gemm of a one-row A on the direct path, R output rows per tile, each plane
 *         row loaded once for the kernel rows that read it (fgc_rows_f32).
 *   lanes: the dot's sums with the output channels m along the lanes (a transposed
 *         gradient times broadcast window values: no lane sums; fgc_lanes_f32).
 *
 * Per-ISA code is written once where the ISAs run the same loop: a body macro
 * (FGC_GEMM_TILE_BODY, FGC_ROWS_BODY, FGC_LANES_BODY, FGC_PUT_BODY) instantiated per ISA
 * with its vector type, width and intrinsics; the dot tiles differ by algorithm (AVX-512
 * masks its row tails and sums 16 tiles at once) and are written per ISA.
 * The functions are compiled for AVX2+FMA (8-float vectors, 16 registers, 12-accumulator
 * tiles) and for AVX-512F (16-float vectors, 32 registers, 24-accumulator tiles) through
 * target attributes and chosen at run time (fg_simd_level, cpu_features.h), so a baseline build still
 * runs them on CPUs that have the instructions and never executes them on CPUs that do
 * not. The portable fallback (and every float64 kernel) is Cython code in _conv.pyx.
 */
#ifndef FASTGRAD_CONV_KERNELS_H
#define FASTGRAD_CONV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_features.h"

#if FG_X86
#define FGC_HAVE_X86 1
#include <immintrin.h>
#define FGC_AVX2 FG_TARGET_AVX2
#define FGC_AVX512 FG_TARGET_AVX512
#define FGC_INLINE static inline __attribute__((always_inline))
#else
#define FGC_HAVE_X86 0
#endif

/* Where a gemm stores its tiles when it writes straight into the output (instead of
   into C, to be copied out by a second pass): row m of A is the plane out + m*plane
   (ho rows of wo floats); column n of the gemm is plane position (n / pitch, n % pitch),
   kept when n % pitch < wo and n / pitch < ho (row-wise tiles: only in the tile's own
   row, its other columns belong to the next row's tiles). bias[m] (when not NULL) is
   added, then max(0, .) when relu (NaN stays NaN). */
typedef struct {
    float *out;
    const float *bias;
    Py_ssize_t plane, pitch, wo, ho;
    int relu, rowwise;
} fgc_out;

#if FGC_HAVE_X86

/* ------------------------------------------------------------------ AVX2: gemm tiles */

/* lanes [lo, hi) of v into dst + at (masked: the other lanes touch no memory, so `at`
   may name a place before dst: the address is formed as an integer) */
FGC_AVX512 FGC_INLINE void fgc_put_lanes_avx512(float *dst, Py_ssize_t at, Py_ssize_t lo,
                                                Py_ssize_t hi, __m512 v)
{
    __mmask16 m = (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
    _mm512_mask_storeu_ps((float *)((uintptr_t)dst + (uintptr_t)(at * (Py_ssize_t)sizeof(float))),
                          m, v);
}

/* The output tile's store, out of line (so that the tile's register allocation is the
   plain gemm's): row r's vector v (gemm columns col + W*v ...) is tile[(r*nv + v)*W ...];
   each goes to the plane rows it covers, as fgc_out describes. */
#define FGC_PUT_BODY(VEC, W, LOADU, SET1, ADD, MAX, ZERO, PUT)                             \
    Py_ssize_t pitch = o->pitch, wo = o->wo;                                              \
    Py_ssize_t qt = col / pitch, xt = col - qt * pitch;                                   \
    Py_ssize_t qend = o->rowwise ? qt + 1 : o->ho;                                        \
    for (int v = 0; v < nv; v++) {                                                        \
        Py_ssize_t x = xt + (Py_ssize_t)W * v, q = qt;                                    \
        while (x >= pitch) { x -= pitch; q++; }                                           \
        /* the plane rows this vector covers: lanes [lo, hi) go to dst + at */            \
        Py_ssize_t at[W + 1], lo[W + 1], hi[W + 1];                                       \
        int ns = 0;                                                                       \
        for (Py_ssize_t t = 0; q + t < qend && t * pitch - x < W; t++) {                  \
            Py_ssize_t l = t * pitch - x, h = l + wo;                                     \
            l = l < 0 ? 0 : l;                                                            \
            h = h > W ? W : h;                                                            \
            if (h > l) {                                                                  \
                at[ns] = (q + t) * wo + x - t * pitch;                                    \
                lo[ns] = l;                                                               \
                hi[ns++] = h;                                                             \
            }                                                                             \
        }                                                                                 \
        if (ns == 0)                                                                      \
            continue;                                                                     \
        for (int r = 0; r < mr; r++) {                                                    \
            VEC val = LOADU(tile + (r * nv + v) * W);                                     \
            if (o->bias)                                                                  \
                val = ADD(val, SET1(o->bias[m0 + r]));                                    \
            if (o->relu)                                                                  \
                val = MAX(ZERO(), val);                                                   \
            float *dst = o->out + (m0 + r) * o->plane;                                    \
            for (int i = 0; i < ns; i++)                                                  \
                PUT(dst, at[i], lo[i], hi[i], val);                                       \
        }                                                                                 \
    }

FGC_AVX512 __attribute__((noinline)) static void fgc_put_avx512(const fgc_out *o,
                                                                const float *tile, int nv,
                                                                int mr, Py_ssize_t m0,
                                                                Py_ssize_t col)
{
    FGC_PUT_BODY(__m512, 16, _mm512_loadu_ps, _mm512_set1_ps, _mm512_add_ps, _mm512_max_ps,
                 _mm512_setzero_ps, fgc_put_lanes_avx512)
}
#undef FGC_PUT_BODY

/* One MR x (NV*W) tile of C over the whole K loop, into registers acc[r][v]; rows >= mr
   are computed (A is zero there) but not stored. MR and NV are compile-time constants at
   every call site, so the accumulators stay in registers. One body for every ISA (VEC of
   W floats, its intrinsics passed in); the ISA's tile function stores the result. */
#define FGC_GEMM_TILE_BODY(VEC, W, ZERO, SET1, LOADU, FMA)                                \
    for (int r = 0; r < MR; r++)                                                          \
        for (int v = 0; v < NV; v++)                                                      \
            acc[r][v] = ZERO();                                                           \
    for (Py_ssize_t k = 0; k < K; k++) {                                                  \
        const float *bk = b + off[k];                                                     \
        if (MR <= NV) {  /* few rows: stream B, broadcasts held in registers */           \
            VEC av[8];                                                                    \
            for (int r = 0; r < MR; r++)                                                  \
                av[r] = SET1(a[k * MR + r]);                                              \
            for (int v = 0; v < NV; v++) {                                                \
                VEC bv = LOADU(bk + W * v);                                               \
                for (int r = 0; r < MR; r++)                                              \
                    acc[r][v] = FMA(av[r], bv, acc[r][v]);                                \
            }                                                                             \
        } else {                                                                          \
            VEC bv[8];                                                                    \
            for (int v = 0; v < NV; v++)                                                  \
                bv[v] = LOADU(bk + W * v);                                                \
            for (int r = 0; r < MR; r++) {                                                \
                VEC av = SET1(a[k * MR + r]);                                             \
                for (int v = 0; v < NV; v++)                                              \
                    acc[r][v] = FMA(av, bv[v], acc[r][v]);                                \
            }                                                                             \
        }                                                                                 \
    }

FGC_AVX2 FGC_INLINE void fgc_gemm_tile_avx2(const int MR, const int NV, Py_ssize_t K,
                                            const float *a, const float *b,
                                            const Py_ssize_t *off, float *c,
                                            Py_ssize_t ldc, int mr)
{
    __m256 acc[12][12];  /* [MR][NV] used: 12 of them (the compiler keeps them in registers) */
    FGC_GEMM_TILE_BODY(__m256, 8, _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps,
                       _mm256_fmadd_ps)
    for (int r = 0; r < MR; r++)
        if (r < mr)
            for (int v = 0; v < NV; v++)
                _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
}

/* C (M rows, pitch ldc) = A (packed) * B over a list of column tiles: tile t covers
   columns [tiles[3t], tiles[3t] + NV*8) and depth [tiles[3t+1], tiles[3t+2]) (the rest of
   the depth is known to multiply zeros). The column tile is the outer loop so its slice
   of B stays in L1 across all row panels. */
FGC_AVX2 FGC_INLINE void fgc_gemm_avx2(const int MR, const int NV, Py_ssize_t M,
                                       Py_ssize_t n_tiles, const Py_ssize_t *tiles,
                                       Py_ssize_t K, const float *Ap, const float *B,
                                       const Py_ssize_t *off, float *C, Py_ssize_t ldc)
{
    for (Py_ssize_t t = 0; t < n_tiles; t++) {
        Py_ssize_t col = tiles[3 * t], k0 = tiles[3 * t + 1], k1 = tiles[3 * t + 2];
        for (Py_ssize_t m0 = 0; m0 < M; m0 += MR) {
            int mr = (int)(M - m0 < MR ? M - m0 : MR);
            fgc_gemm_tile_avx2(MR, NV, k1 - k0, Ap + m0 * K + k0 * MR, B + col, off + k0,
                               C + m0 * ldc + col, ldc, mr);
        }
    }
}

/* Six tile shapes, each 12 accumulators: 6x16, 4x24, 3x32, 2x48, 1x96 and 12x8 (rows x
   columns). Few-row shapes serve convolutions with few output rows per group (the input
   gradient of a first layer, depthwise convolutions); 12x8, row-wise, the 8-wide planes
   of ResNet's last stage, where a 16-column tile computes a padded plane's extra
   columns or a second, dropped, half row. */
#define FGC_GEMM_VARIANT(MR, NV)                                                          \
    FGC_AVX2 static void fgc_gemm_f32_avx2_##MR##x##NV(                                   \
        Py_ssize_t M, Py_ssize_t n_tiles, const Py_ssize_t *tiles, Py_ssize_t K,          \
        const float *Ap, const float *B, const Py_ssize_t *off, float *C, Py_ssize_t ldc, \
        const fgc_out *o)                                                                 \
    {                                                                                     \
        (void)o; /* AVX2 tiles go to C only (masked stores are slow on some AVX2 CPUs) */ \
        fgc_gemm_avx2(MR, NV, M, n_tiles, tiles, K, Ap, B, off, C, ldc);                  \
    }
FGC_GEMM_VARIANT(6, 2)
FGC_GEMM_VARIANT(4, 3)
FGC_GEMM_VARIANT(3, 4)
FGC_GEMM_VARIANT(2, 6)
FGC_GEMM_VARIANT(1, 12)
FGC_GEMM_VARIANT(12, 1)
#undef FGC_GEMM_VARIANT

/* ------------------------------------------------------------------ AVX2: dot tiles */

static const int fgc_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

FGC_AVX2 FGC_INLINE float fgc_hsum_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

FGC_AVX2 FGC_INLINE __m256 fgc_load_avx2(const float *p, int masked, __m256i mask)
{
    return masked ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
}

/* One 8-lane step of an MR x NR dot tile. The shorter side is held in registers and the
   longer one streamed, so 12 accumulators + the held vectors + 1 fit in 16 registers. */
FGC_AVX2 FGC_INLINE void fgc_dot_step_avx2(const int MR, const int NR, __m256 acc[6][6],
                                           const float *const *pa, Py_ssize_t xa,
                                           const float *const *pb, Py_ssize_t xb,
                                           int masked, __m256i mask)
{
    if (MR <= NR) {
        __m256 av[6];
        for (int r = 0; r < MR; r++)
            av[r] = fgc_load_avx2(pa[r] + xa, masked, mask);
        for (int j = 0; j < NR; j++) {
            __m256 bv = fgc_load_avx2(pb[j] + xb, masked, mask);
            for (int r = 0; r < MR; r++)
                acc[r][j] = _mm256_fmadd_ps(av[r], bv, acc[r][j]);
        }
    } else {
        __m256 bv[6];
        for (int j = 0; j < NR; j++)
            bv[j] = fgc_load_avx2(pb[j] + xb, masked, mask);
        for (int r = 0; r < MR; r++) {
            __m256 av = fgc_load_avx2(pa[r] + xa, masked, mask);
            for (int j = 0; j < NR; j++)
                acc[r][j] = _mm256_fmadd_ps(av, bv[j], acc[r][j]);
        }
    }
}

/* One MR x NR tile of dot products. Rows past M and columns past K re-read the last valid
   one (valid memory) and are not stored. */
FGC_AVX2 FGC_INLINE void fgc_dot_tile_avx2(const int MR, const int NR, int mr, int nr,
                                           const float *A, Py_ssize_t a_chan,
                                           Py_ssize_t a_row, const float *B,
                                           const Py_ssize_t *off, Py_ssize_t b_row,
                                           Py_ssize_t rows, Py_ssize_t cols, float *C,
                                           Py_ssize_t ldc, Py_ssize_t imgs, Py_ssize_t a_img,
                                           Py_ssize_t b_img)
{
    __m256 acc[6][6];
    const float *pa[6], *pb[6];
    for (int r = 0; r < MR; r++) {
        pa[r] = A + (r < mr ? r : mr - 1) * a_chan;
        for (int j = 0; j < NR; j++)
            acc[r][j] = _mm256_setzero_ps();
    }
    for (int j = 0; j < NR; j++)
        pb[j] = B + off[j < nr ? j : nr - 1];
    Py_ssize_t full = cols & ~(Py_ssize_t)7;
    __m256i tail = _mm256_loadu_si256((const __m256i *)(fgc_mask_table + 8 - (cols - full)));
    for (Py_ssize_t i = 0; i < imgs; i++)
        for (Py_ssize_t y = 0; y < rows; y++) {
            Py_ssize_t ya = i * a_img + y * a_row, yb = i * b_img + y * b_row;
            for (Py_ssize_t x = 0; x < full; x += 8)
                fgc_dot_step_avx2(MR, NR, acc, pa, ya + x, pb, yb + x, 0, tail);
            if (full < cols)
                fgc_dot_step_avx2(MR, NR, acc, pa, ya + full, pb, yb + full, 1, tail);
        }
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++)
            if (r < mr && j < nr)
                C[r * ldc + j] += fgc_hsum_avx2(acc[r][j]);
}

FGC_AVX2 FGC_INLINE void fgc_dot_avx2(const int MR, const int NR, Py_ssize_t M, Py_ssize_t K,
                                      const float *A, Py_ssize_t a_chan, Py_ssize_t a_row,
                                      const float *B, const Py_ssize_t *off, Py_ssize_t b_row,
                                      Py_ssize_t rows, Py_ssize_t cols, float *C,
                                      Py_ssize_t ldc, Py_ssize_t imgs, Py_ssize_t a_img,
                                      Py_ssize_t b_img)
{
    for (Py_ssize_t m0 = 0; m0 < M; m0 += MR) {
        int mr = (int)(M - m0 < MR ? M - m0 : MR);
        for (Py_ssize_t k0 = 0; k0 < K; k0 += NR) {
            int nr = (int)(K - k0 < NR ? K - k0 : NR);
            fgc_dot_tile_avx2(MR, NR, mr, nr, A + m0 * a_chan, a_chan, a_row, B, off + k0,
                              b_row, rows, cols, C + m0 * ldc + k0, ldc, imgs, a_img, b_img);
        }
    }
}

#define FGC_DOT_VARIANT(MR, NR)                                                           \
    FGC_AVX2 static void fgc_dot_f32_avx2_##MR##x##NR(                                    \
        Py_ssize_t M, Py_ssize_t K, const float *A, Py_ssize_t a_chan, Py_ssize_t a_row,  \
        const float *B, const Py_ssize_t *off, Py_ssize_t b_row, Py_ssize_t rows,         \
        Py_ssize_t cols, float *C, Py_ssize_t ldc, Py_ssize_t imgs, Py_ssize_t a_img,     \
        Py_ssize_t b_img)                                                                 \
    {                                                                                     \
        fgc_dot_avx2(MR, NR, M, K, A, a_chan, a_row, B, off, b_row, rows, cols, C, ldc,   \
                     imgs, a_img, b_img);                                                 \
    }
FGC_DOT_VARIANT(4, 3)
FGC_DOT_VARIANT(6, 2)
FGC_DOT_VARIANT(3, 4)
FGC_DOT_VARIANT(2, 6)
#undef FGC_DOT_VARIANT

/* ------------------------------------------------------------------ AVX-512 */

/* The same two loops on 16-float vectors and 32 registers: 24 accumulators per tile (8x16:
   8, for 16-wide rows; the gemm tile from the shared body, the dot tile with masked loads
   and a transposed sum). */

FGC_AVX512 FGC_INLINE void fgc_gemm_tile_avx512(const int MR, const int NV, Py_ssize_t K,
                                                const float *a, const float *b,
                                                const Py_ssize_t *off, float *c,
                                                Py_ssize_t ldc, int mr, const fgc_out *o,
                                                Py_ssize_t m0, Py_ssize_t col)
{
    __m512 acc[8][24];
    FGC_GEMM_TILE_BODY(__m512, 16, _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps,
                       _mm512_fmadd_ps)
    if (o) {
        float tile[8 * 24 * 16];
        for (int r = 0; r < MR; r++)
            if (r < mr)
                for (int v = 0; v < NV; v++)
                    _mm512_storeu_ps(tile + (r * NV + v) * 16, acc[r][v]);
        fgc_put_avx512(o, tile, NV, mr, m0, col);
        return;
    }
    for (int r = 0; r < MR; r++)
        if (r < mr)
            for (int v = 0; v < NV; v++)
                _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
}

#undef FGC_GEMM_TILE_BODY

FGC_AVX512 FGC_INLINE void fgc_gemm_avx512(const fgc_out *o, const int MR, const int NV, Py_ssize_t M,
                                           Py_ssize_t n_tiles, const Py_ssize_t *tiles,
                                           Py_ssize_t K, const float *Ap, const float *B,
                                           const Py_ssize_t *off, float *C, Py_ssize_t ldc)
{
    for (Py_ssize_t t = 0; t < n_tiles; t++) {
        Py_ssize_t col = tiles[3 * t], k0 = tiles[3 * t + 1], k1 = tiles[3 * t + 2];
        for (Py_ssize_t m0 = 0; m0 < M; m0 += MR) {
            int mr = (int)(M - m0 < MR ? M - m0 : MR);
            fgc_gemm_tile_avx512(MR, NV, k1 - k0, Ap + m0 * K + k0 * MR, B + col, off + k0,
                                 C + m0 * ldc + col, ldc, mr, o, m0, col);
        }
    }
}

#define FGC_GEMM512_VARIANT(MR, NV)                                                       \
    FGC_AVX512 static void fgc_gemm_f32_avx512_##MR##x##NV(                               \
        Py_ssize_t M, Py_ssize_t n_tiles, const Py_ssize_t *tiles, Py_ssize_t K,          \
        const float *Ap, const float *B, const Py_ssize_t *off, float *C, Py_ssize_t ldc, \
        const fgc_out *o)                                                                 \
    {                                                                                     \
        if (o)                                                                            \
            fgc_gemm_avx512(o, MR, NV, M, n_tiles, tiles, K, Ap, B, off, C, ldc);         \
        else                                                                              \
            fgc_gemm_avx512(NULL, MR, NV, M, n_tiles, tiles, K, Ap, B, off, C, ldc);      \
    }
FGC_GEMM512_VARIANT(6, 1)
FGC_GEMM512_VARIANT(8, 1)
FGC_GEMM512_VARIANT(8, 3)
FGC_GEMM512_VARIANT(6, 4)
FGC_GEMM512_VARIANT(4, 6)
FGC_GEMM512_VARIANT(3, 8)
FGC_GEMM512_VARIANT(2, 12)
FGC_GEMM512_VARIANT(1, 24)
#undef FGC_GEMM512_VARIANT

FGC_AVX512 FGC_INLINE __m512 fgc_load_avx512(const float *p, __mmask16 mask)
{
    return _mm512_maskz_loadu_ps(mask, p);
}

/* Lane i of the result is the sum of the 16 lanes of a[i]. Each stage adds pairs of
   vectors after interleaving them, halving the vector count while every vector keeps
   partial sums of the inputs it stands for: 45 operations for 16 sums. */
FGC_AVX512 FGC_INLINE __m512 fgc_sum16_avx512(const __m512 *a)
{
    __m512 t[8], u[4], v[2];
    for (int i = 0; i < 8; i++)   /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
        t[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                             _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++)   /* per 128-bit lane: partials of 4 inputs, in order */
        u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int i = 0; i < 2; i++)   /* 128-bit lanes: [inputs 0-3, 0-3, 4-7, 4-7] */
        v[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

FGC_AVX512 FGC_INLINE void fgc_dot_step_avx512(const int MR, const int NR, __m512 acc[8][12],
                                               const float *const *pa, Py_ssize_t xa,
                                               const float *const *pb, Py_ssize_t xb,
                                               __mmask16 mask)
{
    if (MR <= NR) {
        __m512 av[8];
        for (int r = 0; r < MR; r++)
            av[r] = fgc_load_avx512(pa[r] + xa, mask);
        for (int j = 0; j < NR; j++) {
            __m512 bv = fgc_load_avx512(pb[j] + xb, mask);
            for (int r = 0; r < MR; r++)
                acc[r][j] = _mm512_fmadd_ps(av[r], bv, acc[r][j]);
        }
    } else {
        __m512 bv[12];
        for (int j = 0; j < NR; j++)
            bv[j] = fgc_load_avx512(pb[j] + xb, mask);
        for (int r = 0; r < MR; r++) {
            __m512 av = fgc_load_avx512(pa[r] + xa, mask);
            for (int j = 0; j < NR; j++)
                acc[r][j] = _mm512_fmadd_ps(av, bv[j], acc[r][j]);
        }
    }
}

FGC_AVX512 FGC_INLINE void fgc_dot_tile_avx512(const int MR, const int NR, int mr, int nr,
                                               const float *A, Py_ssize_t a_chan,
                                               Py_ssize_t a_row, const float *B,
                                               const Py_ssize_t *off, Py_ssize_t b_row,
                                               Py_ssize_t rows, Py_ssize_t cols, float *C,
                                               Py_ssize_t ldc, Py_ssize_t imgs,
                                               Py_ssize_t a_img, Py_ssize_t b_img)
{
    __m512 acc[8][12];
    const float *pa[8], *pb[12];
    for (int r = 0; r < MR; r++) {
        pa[r] = A + (r < mr ? r : mr - 1) * a_chan;
        for (int j = 0; j < NR; j++)
            acc[r][j] = _mm512_setzero_ps();
    }
    for (int j = 0; j < NR; j++)
        pb[j] = B + off[j < nr ? j : nr - 1];
    Py_ssize_t full = cols & ~(Py_ssize_t)15;
    __mmask16 tail = (__mmask16)((1u << (cols - full)) - 1u);
    for (Py_ssize_t i = 0; i < imgs; i++)
        for (Py_ssize_t y = 0; y < rows; y++) {
            Py_ssize_t ya = i * a_img + y * a_row, yb = i * b_img + y * b_row;
            for (Py_ssize_t x = 0; x < full; x += 16)
                fgc_dot_step_avx512(MR, NR, acc, pa, ya + x, pb, yb + x, (__mmask16)0xFFFF);
            if (full < cols)
                fgc_dot_step_avx512(MR, NR, acc, pa, ya + full, pb, yb + full, tail);
        }
    /* Sum each accumulator's 16 lanes: all sums come out together from a transpose-add
       tree (~3 operations per sum instead of ~8 for one horizontal sum at a time). */
    __m512 v[32];
    float sums[32];
    for (int i = MR * NR; i < 32; i++)
        v[i] = _mm512_setzero_ps();
    for (int r = 0; r < MR; r++)      /* constant indices: acc stays in registers */
        for (int j = 0; j < NR; j++)
            v[r * NR + j] = acc[r][j];
    _mm512_storeu_ps(sums, fgc_sum16_avx512(v));
    _mm512_storeu_ps(sums + 16, fgc_sum16_avx512(v + 16));
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++)
            if (r < mr && j < nr)
                C[r * ldc + j] += sums[r * NR + j];
}

FGC_AVX512 FGC_INLINE void fgc_dot_avx512(const int MR, const int NR, Py_ssize_t M,
                                          Py_ssize_t K, const float *A, Py_ssize_t a_chan,
                                          Py_ssize_t a_row, const float *B,
                                          const Py_ssize_t *off, Py_ssize_t b_row,
                                          Py_ssize_t rows, Py_ssize_t cols, float *C,
                                          Py_ssize_t ldc, Py_ssize_t imgs, Py_ssize_t a_img,
                                          Py_ssize_t b_img)
{
    for (Py_ssize_t m0 = 0; m0 < M; m0 += MR) {
        int mr = (int)(M - m0 < MR ? M - m0 : MR);
        for (Py_ssize_t k0 = 0; k0 < K; k0 += NR) {
            int nr = (int)(K - k0 < NR ? K - k0 : NR);
            fgc_dot_tile_avx512(MR, NR, mr, nr, A + m0 * a_chan, a_chan, a_row, B, off + k0,
                                b_row, rows, cols, C + m0 * ldc + k0, ldc, imgs, a_img, b_img);
        }
    }
}

#define FGC_DOT512_VARIANT(MR, NR)                                                        \
    FGC_AVX512 static void fgc_dot_f32_avx512_##MR##x##NR(                                \
        Py_ssize_t M, Py_ssize_t K, const float *A, Py_ssize_t a_chan, Py_ssize_t a_row,  \
        const float *B, const Py_ssize_t *off, Py_ssize_t b_row, Py_ssize_t rows,         \
        Py_ssize_t cols, float *C, Py_ssize_t ldc, Py_ssize_t imgs, Py_ssize_t a_img,     \
        Py_ssize_t b_img)                                                                 \
    {                                                                                     \
        fgc_dot_avx512(MR, NR, M, K, A, a_chan, a_row, B, off, b_row, rows, cols, C, ldc, \
                       imgs, a_img, b_img);                                               \
    }
FGC_DOT512_VARIANT(4, 6)
FGC_DOT512_VARIANT(6, 4)
FGC_DOT512_VARIANT(8, 3)
FGC_DOT512_VARIANT(3, 8)
#undef FGC_DOT512_VARIANT

/* ------------------------------------------------------------------ row-blocked gemm */

/* The gemm of a one-row A (depthwise convolutions, the input gradient of a one-channel
   layer) on the direct path loads a B vector per multiply-add. With kernel-row dilation
   1, output rows oy and oy+1 read the same plane row at kernel rows ky+1 and ky: a tile
   of R output rows x NV vectors loads each plane row once per window column
   j = (channel, kx) and uses it for up to min(R, KH) kernel rows, with the KH weights of
   column j held in registers:
     C[col + r*wp + x] = sum_{j<J, ky<KH} a[ky*J + j] * B[off[j] + col + (r + ky)*wp + x]
   for each tile col = tiles[3t], r < R, x < NV vector lanes; off holds the J offsets of
   kernel row 0 (A packed in depth order k = ky*J + j). */
#define FGC_ROWS_BODY(VEC, W, ZERO, SET1, LOAD, FMA, STORE)                               \
    for (Py_ssize_t t = 0; t < n_tiles; t++) {                                            \
        const float *b = B + tiles[3 * t];                                                \
        float *c = C + tiles[3 * t];                                                      \
        VEC acc[8][2];                                                                    \
        _Pragma("GCC unroll 32") for (int r = 0; r < R; r++)                              \
            _Pragma("GCC unroll 32") for (int v = 0; v < NV; v++)                         \
                acc[r][v] = ZERO();                                                       \
        for (Py_ssize_t j = 0; j < J; j++) {                                              \
            VEC w[7];                                                                     \
            _Pragma("GCC unroll 32") for (int ky = 0; ky < KH; ky++)                      \
                w[ky] = SET1(a[ky * J + j]);                                              \
            const float *bj = b + off[j];                                                 \
            _Pragma("GCC unroll 32") for (int s = 0; s < R + KH - 1; s++)                 \
                _Pragma("GCC unroll 32") for (int v = 0; v < NV; v++) {                   \
                    VEC x = LOAD(bj + s * wp + W * v);                                    \
                    _Pragma("GCC unroll 32") for (int r = 0; r < R; r++)                  \
                        if (s - r >= 0 && s - r < KH)                                     \
                            acc[r][v] = FMA(w[s - r], x, acc[r][v]);                      \
                }                                                                         \
        }                                                                                 \
        _Pragma("GCC unroll 32") for (int r = 0; r < R; r++)                              \
            _Pragma("GCC unroll 32") for (int v = 0; v < NV; v++)                         \
                STORE(c + r * wp + W * v, acc[r][v]);                                     \
    }

FGC_AVX2 FGC_INLINE void fgc_rows_avx2(const int R, const int NV, const int KH,
                                       Py_ssize_t n_tiles, const Py_ssize_t *tiles,
                                       Py_ssize_t J, const float *a, const float *B,
                                       const Py_ssize_t *off, Py_ssize_t wp, float *C)
{
    FGC_ROWS_BODY(__m256, 8, _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps,
                  _mm256_fmadd_ps, _mm256_storeu_ps)
}

FGC_AVX512 FGC_INLINE void fgc_rows_avx512(const int R, const int NV, const int KH,
                                           Py_ssize_t n_tiles, const Py_ssize_t *tiles,
                                           Py_ssize_t J, const float *a, const float *B,
                                           const Py_ssize_t *off, Py_ssize_t wp, float *C)
{
    FGC_ROWS_BODY(__m512, 16, _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps,
                  _mm512_fmadd_ps, _mm512_storeu_ps)
}
#undef FGC_ROWS_BODY

/* AVX2: 4 rows x 16 columns (8 accumulators, KH weights, one loaded vector);
   AVX-512: 6, 7 or 8 rows (the planner picks the one that wastes the fewest rows) x 16
   or 32 columns. KH: kernel heights 3, 5 and 7. */
#define FGC_ROWS2_VARIANT(R, NV, KH)                                                      \
    FGC_AVX2 static void fgc_rows_f32_avx2_##R##x##NV##_##KH(                             \
        Py_ssize_t n_tiles, const Py_ssize_t *tiles, Py_ssize_t J, const float *a,        \
        const float *B, const Py_ssize_t *off, Py_ssize_t wp, float *C)                   \
    {                                                                                     \
        fgc_rows_avx2(R, NV, KH, n_tiles, tiles, J, a, B, off, wp, C);                    \
    }
#define FGC_ROWS512_VARIANT(R, NV, KH)                                                    \
    FGC_AVX512 static void fgc_rows_f32_avx512_##R##x##NV##_##KH(                         \
        Py_ssize_t n_tiles, const Py_ssize_t *tiles, Py_ssize_t J, const float *a,        \
        const float *B, const Py_ssize_t *off, Py_ssize_t wp, float *C)                   \
    {                                                                                     \
        fgc_rows_avx512(R, NV, KH, n_tiles, tiles, J, a, B, off, wp, C);                  \
    }
FGC_ROWS2_VARIANT(4, 2, 3) FGC_ROWS2_VARIANT(4, 2, 5) FGC_ROWS2_VARIANT(4, 2, 7)
#define FGC_ROWS512_HEIGHTS(R, NV)                                                        \
    FGC_ROWS512_VARIANT(R, NV, 3) FGC_ROWS512_VARIANT(R, NV, 5) FGC_ROWS512_VARIANT(R, NV, 7)
FGC_ROWS512_HEIGHTS(6, 1) FGC_ROWS512_HEIGHTS(7, 1) FGC_ROWS512_HEIGHTS(8, 1)
FGC_ROWS512_HEIGHTS(6, 2) FGC_ROWS512_HEIGHTS(7, 2) FGC_ROWS512_HEIGHTS(8, 2)
#undef FGC_ROWS512_HEIGHTS
#undef FGC_ROWS2_VARIANT
#undef FGC_ROWS512_VARIANT

/* ------------------------------------------------------------------ channel-lane dots */

/* The weight gradient with output channels along the lanes (no lane sums, no extra
   columns): for each image i, output row y < rows and column x < cols,
     C[m][k] += G[i*g_img + (y*cols + x)*ldg + m] * X[i*x_img + off[k] + y*x_row + x]
   G holds each image's output gradient transposed (positions x channels, ldg >= M
   channels, zeros past M); a tile is MV vectors of channels x KT window elements, the
   X values broadcast from the shifted planes. Columns past K re-read the last one and
   are not stored; channels past M are zeros in G and are not stored. */
#define FGC_LANES_BODY(VEC, W, ZERO, SET1, LOAD, FMA, STOREU)                              \
    for (Py_ssize_t m0 = 0; m0 < M; m0 += MV * W)                                         \
        for (Py_ssize_t k0 = 0; k0 < K; k0 += KT) {                                       \
            VEC acc[4][8];                                                                \
            const float *xk[8];                                                           \
            _Pragma("GCC unroll 32") for (int v = 0; v < MV; v++)                         \
                _Pragma("GCC unroll 32") for (int j = 0; j < KT; j++)                     \
                    acc[v][j] = ZERO();                                                   \
            for (Py_ssize_t i = 0; i < imgs; i++) {                                       \
                _Pragma("GCC unroll 32") for (int j = 0; j < KT; j++)                     \
                    xk[j] = X + i * x_img + off[k0 + j < K ? k0 + j : K - 1];             \
                const float *g = G + i * g_img + m0;                                      \
                for (Py_ssize_t y = 0; y < rows; y++) {                                   \
                    const float *gy = g + y * cols * ldg;                                 \
                    Py_ssize_t xy = y * x_row;                                            \
                    for (Py_ssize_t x = 0; x < cols; x++) {                               \
                        VEC gv[4];                                                        \
                        _Pragma("GCC unroll 32") for (int v = 0; v < MV; v++)             \
                            gv[v] = LOAD(gy + x * ldg + W * v);                           \
                        _Pragma("GCC unroll 32") for (int j = 0; j < KT; j++) {           \
                            VEC b = SET1(xk[j][xy + x]);                                  \
                            _Pragma("GCC unroll 32") for (int v = 0; v < MV; v++)         \
                                acc[v][j] = FMA(gv[v], b, acc[v][j]);                     \
                        }                                                                 \
                    }                                                                     \
                }                                                                         \
            }                                                                             \
            float lanes[W];                                                               \
            _Pragma("GCC unroll 32") for (int v = 0; v < MV; v++)                         \
                _Pragma("GCC unroll 32") for (int j = 0; j < KT; j++) {                   \
                    if (k0 + j >= K)                                                      \
                        continue;                                                         \
                    STOREU(lanes, acc[v][j]);                                             \
                    for (int l = 0; l < W && m0 + v * W + l < M; l++)                     \
                        C[(m0 + v * W + l) * ldc + k0 + j] += lanes[l];                   \
                }                                                                         \
        }

#define FGC_LANES_ARGS                                                                    \
    Py_ssize_t M, Py_ssize_t K, const float *G, Py_ssize_t ldg, Py_ssize_t g_img,         \
    const float *X, const Py_ssize_t *off, Py_ssize_t x_row, Py_ssize_t x_img,            \
    Py_ssize_t imgs, Py_ssize_t rows, Py_ssize_t cols, float *C, Py_ssize_t ldc

FGC_AVX2 FGC_INLINE void fgc_lanes_avx2(const int MV, const int KT, FGC_LANES_ARGS)
{
    FGC_LANES_BODY(__m256, 8, _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps,
                   _mm256_fmadd_ps, _mm256_storeu_ps)
}

FGC_AVX512 FGC_INLINE void fgc_lanes_avx512(const int MV, const int KT, FGC_LANES_ARGS)
{
    FGC_LANES_BODY(__m512, 16, _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps,
                   _mm512_fmadd_ps, _mm512_storeu_ps)
}
#undef FGC_LANES_BODY

/* MV channel vectors x KT window elements: AVX2 1x8, 2x6 (up to 12 accumulators next to
   the gradient vectors and a broadcast); AVX-512 1x8, 2x6, 4x6. */
#define FGC_LANES_VARIANT(ISA, ATTR, MV, KT)                                              \
    ATTR static void fgc_lanes_f32_##ISA##_##MV##x##KT(FGC_LANES_ARGS)                    \
    {                                                                                     \
        fgc_lanes_##ISA(MV, KT, M, K, G, ldg, g_img, X, off, x_row, x_img, imgs, rows,    \
                        cols, C, ldc);                                                    \
    }
FGC_LANES_VARIANT(avx2, FGC_AVX2, 1, 8) FGC_LANES_VARIANT(avx2, FGC_AVX2, 2, 6)
FGC_LANES_VARIANT(avx512, FGC_AVX512, 1, 8) FGC_LANES_VARIANT(avx512, FGC_AVX512, 2, 6)
FGC_LANES_VARIANT(avx512, FGC_AVX512, 4, 6)
#undef FGC_LANES_VARIANT

/* ------------------------------------------------------------------ channel-lane forward */

/* The forward with output channels along the lanes (no extra columns: a direct gemm over
   planes wider than the output computes their padding columns too, a third of LeNet
   conv2's): for output row y < rows (its depth entries tiles[3y+1] <= k < tiles[3y+2], the
   direct gemm's row-wise range) and column x < cols,
     T[(y*cols + x)*MW + l] = sum_k A[k*MW + l] * X[off[k] + y*x_row + x]
   (X[... + x*SW] for a column stride SW of 2) for one panel of MW = MV*W channels (A as
   _pack lays out a panel of MW rows). A tile is
   P positions of one row times MV channel vectors; the X values are broadcast from the
   plane. The last tile of a row runs past its end: it reads the plane's next columns
   (padding, or the next row) and writes positions the next row's tiles write again, or,
   after the last row, the P - 1 spare positions T has. The sum over k runs in the order
   of the gemm's (one FMA per depth entry from +0), so the bits are the same. */
#define FGC_FLANES_BODY(VEC, W, ZERO, SET1, LOAD, FMA, STORE)                             \
    for (Py_ssize_t y = 0; y < rows; y++) {                                               \
        Py_ssize_t k0 = tiles[3 * y + 1], k1 = tiles[3 * y + 2];                          \
        for (Py_ssize_t x0 = 0; x0 < cols; x0 += P) {                                     \
            VEC acc[16][4];  /* P x MV used: fixed bounds, so no VLA */              \
            _Pragma("GCC unroll 32") for (int q = 0; q < P; q++)                          \
                _Pragma("GCC unroll 32") for (int v = 0; v < MV; v++)                     \
                    acc[q][v] = ZERO();                                                   \
            const float *xb = X + y * x_row + x0 * SW;                                    \
            const float *a = A + k0 * (MV * W);                                           \
            for (Py_ssize_t k = k0; k < k1; k++, a += MV * W) {                           \
                const float *xk = xb + off[k];                                            \
                VEC av[4];                                                                \
                _Pragma("GCC unroll 32") for (int v = 0; v < MV; v++)                     \
                    av[v] = LOAD(a + W * v);                                              \
                _Pragma("GCC unroll 32") for (int q = 0; q < P; q++) {                    \
                    VEC b = SET1(xk[q * SW]);                                             \
                    _Pragma("GCC unroll 32") for (int v = 0; v < MV; v++)                 \
                        acc[q][v] = FMA(av[v], b, acc[q][v]);                             \
                }                                                                         \
            }                                                                             \
            float *t = T + (y * cols + x0) * (MV * W);                                    \
            _Pragma("GCC unroll 32") for (int q = 0; q < P; q++)                          \
                _Pragma("GCC unroll 32") for (int v = 0; v < MV; v++)                     \
                    STORE(t + q * (MV * W) + v * W, acc[q][v]);                           \
        }                                                                                 \
    }

#define FGC_FLANES_ARGS                                                                   \
    Py_ssize_t rows, Py_ssize_t cols, const Py_ssize_t *tiles, const float *A,            \
    const float *X, const Py_ssize_t *off, Py_ssize_t x_row, float *T

FGC_AVX2 FGC_INLINE void fgc_flanes_avx2(const int MV, const int P, const int SW,
                                          FGC_FLANES_ARGS)
{
    FGC_FLANES_BODY(__m256, 8, _mm256_setzero_ps, _mm256_set1_ps, _mm256_load_ps,
                    _mm256_fmadd_ps, _mm256_store_ps)
}

FGC_AVX512 FGC_INLINE void fgc_flanes_avx512(const int MV, const int P, const int SW,
                                              FGC_FLANES_ARGS)
{
    FGC_FLANES_BODY(__m512, 16, _mm512_setzero_ps, _mm512_set1_ps, _mm512_load_ps,
                    _mm512_fmadd_ps, _mm512_store_ps)
}
#undef FGC_FLANES_BODY

/* MV channel vectors x P positions, P accumulator vectors per channel vector: AVX2 (16
   registers) up to 12 with one vector of channels, 12 with two; AVX-512 (32) up to 16,
   24 and 24 with one, two and four. */
#define FGC_FLANES_VARIANT(ISA, ATTR, MV, P, SW)                                          \
    ATTR static void fgc_flanes_f32_##ISA##_##MV##x##P##s##SW(FGC_FLANES_ARGS)            \
    {                                                                                     \
        fgc_flanes_##ISA(MV, P, SW, rows, cols, tiles, A, X, off, x_row, T);              \
    }
/* (level, MV, P, SW): column stride 2 for the row tiles that divide the even widths of
   stride-2 layers' outputs (4, 8, 16, ...), so that they need no tile past a row's end */
#define FGC_FLANES_AVX2(F)                                                                \
    F(1, 1, 4, 1) F(1, 1, 5, 1) F(1, 1, 6, 1) F(1, 1, 7, 1) F(1, 1, 8, 1) F(1, 1, 10, 1)    \
    F(1, 1, 12, 1) F(1, 2, 4, 1) F(1, 2, 5, 1) F(1, 2, 6, 1)                              \
    F(1, 1, 4, 2) F(1, 1, 8, 2) F(1, 2, 4, 2)
#define FGC_FLANES_AVX512(F)                                                              \
    F(2, 1, 4, 1) F(2, 1, 5, 1) F(2, 1, 6, 1) F(2, 1, 7, 1) F(2, 1, 8, 1) F(2, 1, 10, 1)    \
    F(2, 1, 12, 1) F(2, 1, 14, 1) F(2, 1, 16, 1)                                          \
    F(2, 2, 4, 1) F(2, 2, 5, 1) F(2, 2, 6, 1) F(2, 2, 7, 1) F(2, 2, 8, 1) F(2, 2, 10, 1)    \
    F(2, 2, 12, 1) F(2, 4, 3, 1) F(2, 4, 4, 1) F(2, 4, 5, 1) F(2, 4, 6, 1)                \
    F(2, 1, 8, 2) F(2, 1, 16, 2) F(2, 2, 4, 2) F(2, 2, 8, 2) F(2, 4, 4, 2)
#define FGC_FLANES_V2(L, MV, P, SW) FGC_FLANES_VARIANT(avx2, FGC_AVX2, MV, P, SW)
#define FGC_FLANES_V512(L, MV, P, SW) FGC_FLANES_VARIANT(avx512, FGC_AVX512, MV, P, SW)
FGC_FLANES_AVX2(FGC_FLANES_V2)
FGC_FLANES_AVX512(FGC_FLANES_V512)
#undef FGC_FLANES_V2
#undef FGC_FLANES_V512
#undef FGC_FLANES_VARIANT

/* The in-lane stages of a W x W transpose (W = 8 or 16): r[0..W) rows (positions) of
   channels; after them u[4k + j] holds, in each 128-bit lane L, positions 4k .. 4k + 3 of
   channel 4L + j (t: scratch). The ISA's own step gathers the lanes. */
#define FGC_TRANSPOSE_IN_LANES(W, r, t, u, UNPACKLO, UNPACKHI, SHUFFLE)                    \
    do {                                                                                  \
        for (int k = 0; k < (W) / 2; k++) { /* pairs of positions */                      \
            t[2 * k] = UNPACKLO(r[2 * k], r[2 * k + 1]);                                  \
            t[2 * k + 1] = UNPACKHI(r[2 * k], r[2 * k + 1]);                              \
        }                                                                                 \
        for (int k = 0; k < (W) / 4; k++) {                                               \
            u[4 * k] = SHUFFLE(t[4 * k], t[4 * k + 2], _MM_SHUFFLE(1, 0, 1, 0));          \
            u[4 * k + 1] = SHUFFLE(t[4 * k], t[4 * k + 2], _MM_SHUFFLE(3, 2, 3, 2));      \
            u[4 * k + 2] = SHUFFLE(t[4 * k + 1], t[4 * k + 3], _MM_SHUFFLE(1, 0, 1, 0));  \
            u[4 * k + 3] = SHUFFLE(t[4 * k + 1], t[4 * k + 3], _MM_SHUFFLE(3, 2, 3, 2));  \
        }                                                                                 \
    } while (0)

/* The channel-lane forward's store: dst[m*P + q] = T[q*mw + m] (+ bias[m]) (then
   max(0, .): NaN stays NaN, -0 stays -0, as the gemm's stores) for m < rows, q < P, by
   blocks of W positions x W channels transposed in registers. T is 64-byte aligned with
   rows of mw floats, a multiple of W; positions past P are not read. */
FGC_AVX512 static void fgc_store_lanes_avx512(const float *T, Py_ssize_t mw, Py_ssize_t rows,
                                              Py_ssize_t P, float *dst, const float *bias,
                                              int relu)
{
    for (Py_ssize_t m0 = 0; m0 < rows; m0 += 16)
        for (Py_ssize_t q0 = 0; q0 < P; q0 += 16) {
            int nq = P - q0 < 16 ? (int)(P - q0) : 16;
            int nm = rows - m0 < 16 ? (int)(rows - m0) : 16;
            __m512 r[16], t[16], u[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < nq ? _mm512_load_ps(T + (q0 + i) * mw + m0) : _mm512_setzero_ps();
            FGC_TRANSPOSE_IN_LANES(16, r, t, u, _mm512_unpacklo_ps, _mm512_unpackhi_ps,
                                   _mm512_shuffle_ps);
            for (int j = 0; j < 4; j++) {  /* channel 4L + j: lane L of u[j], u[4+j], u[8+j], u[12+j] */
                __m512 x0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x44);
                __m512 x1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xEE);
                __m512 y0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x44);
                __m512 y1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xEE);
                r[j] = _mm512_shuffle_f32x4(x0, y0, 0x88);
                r[4 + j] = _mm512_shuffle_f32x4(x0, y0, 0xDD);
                r[8 + j] = _mm512_shuffle_f32x4(x1, y1, 0x88);
                r[12 + j] = _mm512_shuffle_f32x4(x1, y1, 0xDD);
            }
            __mmask16 keep = (__mmask16)((1u << nq) - 1u);
            for (int m = 0; m < nm; m++) {
                __m512 v = r[m];
                if (bias)
                    v = _mm512_add_ps(v, _mm512_set1_ps(bias[m0 + m]));
                if (relu)
                    v = _mm512_max_ps(_mm512_setzero_ps(), v);
                _mm512_mask_storeu_ps(dst + (m0 + m) * P + q0, keep, v);
            }
        }
}

FGC_AVX2 static void fgc_store_lanes_avx2(const float *T, Py_ssize_t mw, Py_ssize_t rows,
                                          Py_ssize_t P, float *dst, const float *bias, int relu)
{
    for (Py_ssize_t m0 = 0; m0 < rows; m0 += 8)
        for (Py_ssize_t q0 = 0; q0 < P; q0 += 8) {
            int nq = P - q0 < 8 ? (int)(P - q0) : 8;
            int nm = rows - m0 < 8 ? (int)(rows - m0) : 8;
            __m256 r[8], t[8], u[8];
            for (int i = 0; i < 8; i++)
                r[i] = i < nq ? _mm256_load_ps(T + (q0 + i) * mw + m0) : _mm256_setzero_ps();
            FGC_TRANSPOSE_IN_LANES(8, r, t, u, _mm256_unpacklo_ps, _mm256_unpackhi_ps,
                                   _mm256_shuffle_ps);
            for (int j = 0; j < 4; j++) {
                r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
                r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
            }
            for (int m = 0; m < nm; m++) {
                __m256 v = r[m];
                if (bias)
                    v = _mm256_add_ps(v, _mm256_set1_ps(bias[m0 + m]));
                if (relu)
                    v = _mm256_max_ps(_mm256_setzero_ps(), v);
                float *d = dst + (m0 + m) * P + q0;
                if (nq == 8) {
                    _mm256_storeu_ps(d, v);
                } else {  /* a row's last block: no masked store (slow on some AVX2 CPUs) */
                    float lanes[8];
                    _mm256_storeu_ps(lanes, v);
                    for (int i = 0; i < nq; i++)
                        d[i] = lanes[i];
                }
            }
        }
}
#undef FGC_TRANSPOSE_IN_LANES

#endif /* FGC_HAVE_X86 */

/* ------------------------------------------------------------------ stride-2 scatter */

/* d[2i] += r[i] for i < n, the row step of a stride-2 col2im (its strided stores were
   scalar). The vectors interleave r with zeros, so the odd places between get + 0.0f:
   an identity on every value such a sum can hold (it starts at +0 and never becomes -0:
   x + y is -0 only when both are), so the bits are the scalar loop's. d[2i + 1] is
   touched for i < n - 1, and for i = n - 1 too when `past` (the caller's row has that
   place). */
FGC_AVX2 static void fgc_add_stride2_avx2(float *d, const float *r, Py_ssize_t n, int past)
{
    Py_ssize_t i = 0, whole = past ? n : n - 1;  /* vectors end at d[2i + 15] <= 2 whole - 1 */
    __m256 z = _mm256_setzero_ps();
    for (; i + 8 <= whole; i += 8) {
        __m256 v = _mm256_loadu_ps(r + i);
        __m256 lo = _mm256_unpacklo_ps(v, z), hi = _mm256_unpackhi_ps(v, z);
        __m256 a = _mm256_permute2f128_ps(lo, hi, 0x20), b = _mm256_permute2f128_ps(lo, hi, 0x31);
        _mm256_storeu_ps(d + 2 * i, _mm256_add_ps(_mm256_loadu_ps(d + 2 * i), a));
        _mm256_storeu_ps(d + 2 * i + 8, _mm256_add_ps(_mm256_loadu_ps(d + 2 * i + 8), b));
    }
    for (; i < n; i++)
        d[2 * i] += r[i];
}

/* ------------------------------------------------------------------ entry points */

/* `level` (1: AVX2, 2: AVX-512) and the tile shape (mr x nr: rows x columns for gemm,
   rows x depth entries for dot) name one compiled variant; each entry point returns 0
   when it has no such variant (then the caller runs its portable loop). */
static int fgc_gemm_f32(int level, int mr, int nr, Py_ssize_t M, Py_ssize_t n_tiles,
                        const Py_ssize_t *tiles, Py_ssize_t K, const float *Ap,
                        const float *B, const Py_ssize_t *off, float *C, Py_ssize_t ldc,
                        const fgc_out *o)
{
#if FGC_HAVE_X86
    if (o != NULL && level < 2)  /* stores into the output: AVX-512 tiles only */
        return 0;
#define FGC_CASE(L, ISA, W, R, V)                                                         \
    if (level == L && mr == R && nr == W * V) {                                           \
        fgc_gemm_f32_##ISA##_##R##x##V(M, n_tiles, tiles, K, Ap, B, off, C, ldc, o);      \
        return 1;                                                                         \
    }
    FGC_CASE(1, avx2, 8, 6, 2) FGC_CASE(1, avx2, 8, 4, 3) FGC_CASE(1, avx2, 8, 3, 4)
    FGC_CASE(1, avx2, 8, 2, 6) FGC_CASE(1, avx2, 8, 1, 12) FGC_CASE(1, avx2, 8, 12, 1)
    FGC_CASE(2, avx512, 16, 6, 1) FGC_CASE(2, avx512, 16, 8, 1) FGC_CASE(2, avx512, 16, 8, 3) FGC_CASE(2, avx512, 16, 6, 4) FGC_CASE(2, avx512, 16, 4, 6)
    FGC_CASE(2, avx512, 16, 3, 8) FGC_CASE(2, avx512, 16, 2, 12) FGC_CASE(2, avx512, 16, 1, 24)
#undef FGC_CASE
#endif
    (void)level; (void)mr; (void)nr; (void)M; (void)n_tiles; (void)tiles; (void)K; (void)Ap;
    (void)B; (void)off; (void)C; (void)ldc; (void)o;
    return 0;
}

static int fgc_dot_f32(int level, int mr, int nr, Py_ssize_t M, Py_ssize_t K, const float *A,
                       Py_ssize_t a_chan, Py_ssize_t a_row, const float *B,
                       const Py_ssize_t *off, Py_ssize_t b_row, Py_ssize_t rows,
                       Py_ssize_t cols, float *C, Py_ssize_t ldc, Py_ssize_t imgs,
                       Py_ssize_t a_img, Py_ssize_t b_img)
{
#if FGC_HAVE_X86
#define FGC_CASE(L, ISA, R, N)                                                            \
    if (level == L && mr == R && nr == N) {                                               \
        fgc_dot_f32_##ISA##_##R##x##N(M, K, A, a_chan, a_row, B, off, b_row, rows, cols,  \
                                      C, ldc, imgs, a_img, b_img);                        \
        return 1;                                                                         \
    }
    FGC_CASE(1, avx2, 4, 3) FGC_CASE(1, avx2, 6, 2) FGC_CASE(1, avx2, 3, 4)
    FGC_CASE(1, avx2, 2, 6)
    FGC_CASE(2, avx512, 4, 6) FGC_CASE(2, avx512, 6, 4) FGC_CASE(2, avx512, 8, 3)
    FGC_CASE(2, avx512, 3, 8)
#undef FGC_CASE
#endif
    (void)level; (void)mr; (void)nr; (void)M; (void)K; (void)A; (void)a_chan; (void)a_row;
    (void)B; (void)off; (void)b_row; (void)rows; (void)cols; (void)C; (void)ldc; (void)imgs;
    (void)a_img; (void)b_img;
    return 0;
}

/* The row-blocked gemm: `rows` output rows x `nr` columns per tile, kernel height kh;
   returns 0 when there is no such variant. */
static int fgc_rows_f32(int level, int rows, int nr, int kh, Py_ssize_t n_tiles,
                        const Py_ssize_t *tiles, Py_ssize_t J, const float *a,
                        const float *B, const Py_ssize_t *off, Py_ssize_t wp, float *C)
{
#if FGC_HAVE_X86
#define FGC_CASE(L, ISA, W, R, NV, KH)                                                    \
    if (level == L && rows == R && nr == W * NV && kh == KH) {                            \
        fgc_rows_f32_##ISA##_##R##x##NV##_##KH(n_tiles, tiles, J, a, B, off, wp, C);      \
        return 1;                                                                         \
    }
    FGC_CASE(1, avx2, 8, 4, 2, 3) FGC_CASE(1, avx2, 8, 4, 2, 5) FGC_CASE(1, avx2, 8, 4, 2, 7)
#define FGC_CASES512(R, NV)                                                               \
    FGC_CASE(2, avx512, 16, R, NV, 3) FGC_CASE(2, avx512, 16, R, NV, 5)                   \
    FGC_CASE(2, avx512, 16, R, NV, 7)
    FGC_CASES512(6, 1) FGC_CASES512(7, 1) FGC_CASES512(8, 1)
    FGC_CASES512(6, 2) FGC_CASES512(7, 2) FGC_CASES512(8, 2)
#undef FGC_CASES512
#undef FGC_CASE
#endif
    (void)level; (void)rows; (void)nr; (void)kh; (void)n_tiles; (void)tiles; (void)J;
    (void)a; (void)B; (void)off; (void)wp; (void)C;
    return 0;
}

/* The channel-lane weight gradient (see FGC_LANES_BODY) with tiles of mv channel vectors
   x kt window elements; returns 0 when there is no such variant. */
static int fgc_lanes_f32(int level, int mv, int kt, Py_ssize_t M, Py_ssize_t K,
                         const float *G, Py_ssize_t ldg, Py_ssize_t g_img, const float *X,
                         const Py_ssize_t *off, Py_ssize_t x_row, Py_ssize_t x_img,
                         Py_ssize_t imgs, Py_ssize_t rows, Py_ssize_t cols, float *C,
                         Py_ssize_t ldc)
{
#if FGC_HAVE_X86
#define FGC_CASE(L, ISA, MV, KT)                                                          \
    if (level == L && mv == MV && kt == KT) {                                             \
        fgc_lanes_f32_##ISA##_##MV##x##KT(M, K, G, ldg, g_img, X, off, x_row, x_img, imgs,\
                                          rows, cols, C, ldc);                            \
        return 1;                                                                         \
    }
    FGC_CASE(1, avx2, 1, 8) FGC_CASE(1, avx2, 2, 6)
    FGC_CASE(2, avx512, 1, 8) FGC_CASE(2, avx512, 2, 6) FGC_CASE(2, avx512, 4, 6)
#undef FGC_CASE
#endif
    (void)level; (void)mv; (void)kt; (void)M; (void)K; (void)G; (void)ldg; (void)g_img;
    (void)X; (void)off; (void)x_row; (void)x_img; (void)imgs; (void)rows; (void)cols;
    (void)C; (void)ldc;
    return 0;
}

/* The channel-lane forward (see FGC_FLANES_BODY) with tiles of mv channel vectors x p
   positions, column stride sw; returns 0 when there is no such variant. */
static int fgc_flanes_f32(int level, int mv, int p, int sw, Py_ssize_t rows, Py_ssize_t cols,
                          const Py_ssize_t *tiles, const float *A, const float *X,
                          const Py_ssize_t *off, Py_ssize_t x_row, float *T)
{
#if FGC_HAVE_X86
#define FGC_CASE(ISA, L, MV, P, SW)                                                       \
    if (level == L && mv == MV && p == P && sw == SW) {                                   \
        fgc_flanes_f32_##ISA##_##MV##x##P##s##SW(rows, cols, tiles, A, X, off, x_row, T); \
        return 1;                                                                         \
    }
#define FGC_CASE2(L, MV, P, SW) FGC_CASE(avx2, L, MV, P, SW)
#define FGC_CASE512(L, MV, P, SW) FGC_CASE(avx512, L, MV, P, SW)
    FGC_FLANES_AVX2(FGC_CASE2)
    FGC_FLANES_AVX512(FGC_CASE512)
#undef FGC_CASE2
#undef FGC_CASE512
#undef FGC_CASE
#endif
    (void)level; (void)mv; (void)p; (void)sw; (void)rows; (void)cols; (void)tiles; (void)A;
    (void)X; (void)off; (void)x_row; (void)T;
    return 0;
}

/* fgc_store_lanes_<isa> at `level`; 0 when the level has none (mw not a multiple of
   its vectors). */
static int fgc_store_lanes_f32(int level, const float *T, Py_ssize_t mw, Py_ssize_t rows,
                               Py_ssize_t P, float *dst, const float *bias, int relu)
{
#if FGC_HAVE_X86
    if (level == 2 && mw % 16 == 0) {
        fgc_store_lanes_avx512(T, mw, rows, P, dst, bias, relu);
        return 1;
    }
    if (level == 1 && mw % 8 == 0) {
        fgc_store_lanes_avx2(T, mw, rows, P, dst, bias, relu);
        return 1;
    }
#endif
    (void)level; (void)T; (void)mw; (void)rows; (void)P; (void)dst; (void)bias; (void)relu;
    return 0;
}

/* Whether fgc_flanes_f32 has the variant (level, mv, p, sw): the planner's question. */
static int fgc_flanes_has(int level, int mv, int p, int sw)
{
#if FGC_HAVE_X86
#define FGC_CASE(L, MV, P, SW)                                                            \
    if (level == L && mv == MV && p == P && sw == SW)                                     \
        return 1;
    FGC_FLANES_AVX2(FGC_CASE)
    FGC_FLANES_AVX512(FGC_CASE)
#undef FGC_CASE
#endif
    (void)level; (void)mv; (void)p; (void)sw;
    return 0;
}

/* d0[j] = s[2j] and d1[j] = s[2j + 1] for j < n: a source row's two column phases, the
   row step of a stride-2 forward's phase planes (its stride-2 reads were scalar). Reads
   s[0 .. 2n), writes d0[0 .. n) and d1[0 .. n) only. */
FGC_AVX2 static void fgc_split_stride2_avx2(float *d0, float *d1, const float *s, Py_ssize_t n)
{
    if (n < 8) {
        for (Py_ssize_t j = 0; j < n; j++) {
            d0[j] = s[2 * j];
            d1[j] = s[2 * j + 1];
        }
        return;
    }
    for (Py_ssize_t j = 0;; j += 8) {
        /* the last vector ends at n, overlapping the one before (the same values stored
           twice) instead of a scalar tail */
        if (j + 8 > n)
            j = n - 8;
        __m256 a = _mm256_loadu_ps(s + 2 * j), b = _mm256_loadu_ps(s + 2 * j + 8);
        /* per 128-bit half: a's evens then b's evens; the 64-bit chunks 0, 2, 1, 3 put
           a's four before b's four */
        __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        __m256 odd = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        _mm256_storeu_ps(d0 + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even),
                                                                        _MM_SHUFFLE(3, 1, 2, 0))));
        _mm256_storeu_ps(d1 + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(odd),
                                                                        _MM_SHUFFLE(3, 1, 2, 0))));
        if (j + 8 >= n)
            return;
    }
}

/* d[j] = s[2j] for j < n: the even places of a row (a stride-2 phase plane of a kernel
   one wide, a 1x1 stride-2 shortcut's input). Reads s[0 .. 2n - 1) only: the second
   vector of each step starts one place early, so that its odd lanes hold the evens. */
FGC_AVX2 static void fgc_gather_stride2_avx2(float *d, const float *s, Py_ssize_t n)
{
    if (n < 8) {
        for (Py_ssize_t j = 0; j < n; j++)
            d[j] = s[2 * j];
        return;
    }
    for (Py_ssize_t j = 0;; j += 8) {
        if (j + 8 > n)  /* the last vector ends at n, overlapping the one before */
            j = n - 8;
        __m256 a = _mm256_loadu_ps(s + 2 * j), b = _mm256_loadu_ps(s + 2 * j + 7);
        /* per 128-bit half: a's lanes 0, 2 and b's lanes 1, 3; chunks 0, 2, 1, 3 */
        __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 2, 0));
        _mm256_storeu_ps(d + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even),
                                                                       _MM_SHUFFLE(3, 1, 2, 0))));
        if (j + 8 >= n)
            return;
    }
}

/* fgc_gather_stride2_avx2 at `level`; 0 when the level has no such kernel */
static inline int fgc_gather_stride2_f32(int level, float *d, const float *s, Py_ssize_t n)
{
#if FGC_HAVE_X86
    if (level >= 1) {
        fgc_gather_stride2_avx2(d, s, n);
        return 1;
    }
#endif
    (void)level; (void)d; (void)s; (void)n;
    return 0;
}

/* fgc_split_stride2_avx2 at `level`; 0 when the level has no such kernel */
static inline int fgc_split_stride2_f32(int level, float *d0, float *d1, const float *s,
                                        Py_ssize_t n)
{
#if FGC_HAVE_X86
    if (level >= 1) {
        fgc_split_stride2_avx2(d0, d1, s, n);
        return 1;
    }
#endif
    (void)level; (void)d0; (void)d1; (void)s; (void)n;
    return 0;
}

/* d[2i] += r[i] for i < n (fgc_add_stride2_avx2); 0 when the level has no such kernel */
static inline int fgc_add_stride2_f32(int level, float *d, const float *r, Py_ssize_t n,
                                      int past)
{
#if FGC_HAVE_X86
    if (level >= 1) {
        fgc_add_stride2_avx2(d, r, n, past);
        return 1;
    }
#endif
    (void)level; (void)d; (void)r; (void)n; (void)past;
    return 0;
}

#endif /* FASTGRAD_CONV_KERNELS_H */
