/* Design: the one answer to "which SIMD path runs", shared by every kernel family.
 *
 * Paths, as levels (higher runs wider vectors; each includes the ones below):
 *   FG_SIMD_BASELINE 0  portable C (what the compiler's baseline target gives: SSE2 on x86-64)
 *   FG_SIMD_AVX2     1  AVX2 + FMA, with the rest of x86-64-v3 (BMI1/2, F16C, LZCNT, MOVBE)
 *   FG_SIMD_AVX512   2  AVX-512F on top of level 1
 *
 * fg_cpu_simd_level() is what this CPU and its OS can execute (libgcc's CPUID and XGETBV
 * probe). fg_simd_level() is what the kernels of this extension dispatch on: the CPU's
 * best until fg_simd_select() picks another. Each extension module holds its own copy of
 * the selection (this header is compiled into each of them); fastgrad.kernels selects the
 * same level in every module it binds, from FASTGRAD_SIMD.
 *
 * fg_simd_select() refuses (returns -1, changes nothing) a level above the CPU's, so a
 * forced path can never execute an instruction the CPU lacks, and a level below what the
 * compiler targeted for the whole file (FG_SIMD_BUILD_FLOOR: 1 in the x86-64-v3 build,
 * whose portable loops are themselves AVX2 code), so the level reported is the one that
 * runs.
 *
 * Loops left to the compiler's vectorizer get their AVX2 copy from FG_SIMD_CLONE (below):
 * compiled twice in a baseline x86-64 build and chosen per call by the selected level,
 * so forcing a level changes them too (GCC's target_clones would choose by the CPU).
 *
 * Tile shapes follow from fg_simd_lanes() and fg_simd_registers(); cache-dependent
 * blocking reads fg_cache_bytes() (sysconf, with conservative defaults when the OS
 * reports nothing).
 */
#ifndef FASTGRAD_CPU_FEATURES_H
#define FASTGRAD_CPU_FEATURES_H

#include <stddef.h>
#if defined(__linux__) || defined(__APPLE__)
#include <unistd.h>
#endif

enum { FG_SIMD_BASELINE = 0, FG_SIMD_AVX2 = 1, FG_SIMD_AVX512 = 2 };

#if defined(__GNUC__) && defined(__x86_64__)
#define FG_X86 1
#define FG_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define FG_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#else
#define FG_X86 0
#endif

#if defined(__AVX2__) && defined(__FMA__)
#define FG_SIMD_BUILD_FLOOR FG_SIMD_AVX2
#else
#define FG_SIMD_BUILD_FLOOR FG_SIMD_BASELINE
#endif

static inline int fg_cpu_simd_level(void)
{
#if FG_X86
    __builtin_cpu_init();
    /* everything the x86-64-v3 build may use, not only what the hand-written kernels use */
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
          && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2")
          && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe")))
        return FG_SIMD_BASELINE;
    if (__builtin_cpu_supports("avx512f"))
        return FG_SIMD_AVX512;
    return FG_SIMD_AVX2;
#else
    return FG_SIMD_BASELINE;
#endif
}

static int fg_simd_selected = -1;  /* -1: not chosen yet, the CPU's best */

static inline int fg_simd_level(void)
{
    if (fg_simd_selected < 0)
        fg_simd_selected = fg_cpu_simd_level();
    return fg_simd_selected;
}

/* Run `level` from now on; -1 (and no change) when the CPU cannot or this build does not
   have it. Not thread-safe: select before kernels run. */
static inline int fg_simd_select(int level)
{
    if (level < FG_SIMD_BUILD_FLOOR || level > fg_cpu_simd_level())
        return -1;
    fg_simd_selected = level;
    return level;
}

/* NAME(PARAMS) calling NAME##_body(ARGS), an always-inline function of the caller's
   file: in a baseline x86-64 build it is compiled once as is and once for AVX2+FMA, and
   each call runs the copy of the selected level; elsewhere it is compiled once.
   FG_SIMD_CLONE returns the body's value, FG_SIMD_CLONE_VOID returns nothing. */
#if FG_X86 && FG_SIMD_BUILD_FLOOR == FG_SIMD_BASELINE
#define FG_SIMD_CLONE(RET, NAME, PARAMS, ARGS)                                            \
    FG_TARGET_AVX2 static RET NAME##_avx2 PARAMS { return NAME##_body ARGS; }             \
    static RET NAME##_baseline PARAMS { return NAME##_body ARGS; }                        \
    static RET NAME PARAMS                                                                \
    {                                                                                     \
        return fg_simd_level() >= FG_SIMD_AVX2 ? NAME##_avx2 ARGS : NAME##_baseline ARGS; \
    }
#define FG_SIMD_CLONE_VOID(NAME, PARAMS, ARGS)                                            \
    FG_TARGET_AVX2 static void NAME##_avx2 PARAMS { NAME##_body ARGS; }                   \
    static void NAME##_baseline PARAMS { NAME##_body ARGS; }                              \
    static void NAME PARAMS                                                               \
    {                                                                                     \
        if (fg_simd_level() >= FG_SIMD_AVX2)                                              \
            NAME##_avx2 ARGS;                                                             \
        else                                                                              \
            NAME##_baseline ARGS;                                                         \
    }
#else
#define FG_SIMD_CLONE(RET, NAME, PARAMS, ARGS)                                            \
    static RET NAME PARAMS { return NAME##_body ARGS; }
#define FG_SIMD_CLONE_VOID(NAME, PARAMS, ARGS)                                            \
    static void NAME PARAMS { NAME##_body ARGS; }
#endif

/* float lanes of the widest vector the selected level uses (4: SSE2 / 128-bit portable) */
static inline int fg_simd_lanes(void)
{
    int level = fg_simd_level();
    return level >= FG_SIMD_AVX512 ? 16 : level >= FG_SIMD_AVX2 ? 8 : 4;
}

/* architectural vector registers at the selected level */
static inline int fg_simd_registers(void)
{
    return fg_simd_level() >= FG_SIMD_AVX512 ? 32 : 16;
}

/* Data cache size in bytes of level 1, 2 or 3 per core as the OS reports it; when it
   reports nothing, the smallest common sizes of current x86-64 and Arm cores. */
static inline size_t fg_cache_bytes(int level)
{
    long got = -1;
#if defined(_SC_LEVEL1_DCACHE_SIZE)
    if (level == 1)
        got = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    else if (level == 2)
        got = sysconf(_SC_LEVEL2_CACHE_SIZE);
    else
        got = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    if (got > 0)
        return (size_t)got;
    return level == 1 ? (size_t)32 << 10 : level == 2 ? (size_t)256 << 10 : (size_t)4 << 20;
}

#endif /* FASTGRAD_CPU_FEATURES_H */
