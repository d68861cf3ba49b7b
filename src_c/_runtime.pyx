# Design: facts about the compiled build that only C can tell (OpenMP on or off,
# the OpenMP thread ceiling, the SIMD level the compiler targeted). No kernels here.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fg_openmp_enabled(void) { return 1; }
    static int fg_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fg_openmp_enabled(void) { return 0; }
    static int fg_omp_max_threads(void) { return 1; }
    #endif
    #if defined(__AVX512F__)
    static const char *fg_simd_level(void) { return "avx512"; }
    #elif defined(__AVX2__) && defined(__FMA__)
    static const char *fg_simd_level(void) { return "avx2+fma"; }
    #elif defined(__SSE2__)
    static const char *fg_simd_level(void) { return "sse2"; }
    #else
    static const char *fg_simd_level(void) { return "generic"; }
    #endif
    """
    int fg_openmp_enabled() nogil
    int fg_omp_max_threads() nogil
    const char *fg_simd_level() nogil


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return bool(fg_openmp_enabled())


def omp_max_threads():
    """OpenMP's own default thread count (1 without OpenMP)."""
    return fg_omp_max_threads()


def simd_level():
    """The instruction set the compiler targeted for this build variant."""
    return fg_simd_level().decode()
