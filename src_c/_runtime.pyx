# Design: facts about the compiled build and the CPU that only C can tell (OpenMP on or
# off, the OpenMP thread ceiling, the instruction set the compiler targeted, the SIMD
# levels this CPU can execute and its cache sizes, all from src_c/cpu_features.h), and the
# one piece of CPU state fastgrad sets: flush-to-zero / denormals-are-zero. No kernels here.
# fastgrad.kernels reads the CPU's levels from the baseline build of this module (safe on
# any x86-64 CPU) before it imports any other compiled module.

# this module has AVX-512F code: _simd_level is the selected level itself
SIMD_KERNELS_TOP = 2
include "_simd.pxi"


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
    #if defined(__SSE2__)
    #include <xmmintrin.h>
    /* MXCSR bit 15 flushes denormal results to zero, bit 6 reads denormal inputs as zero. */
    static void fg_set_ftz_daz_here(int on) {
        unsigned int csr = _mm_getcsr();
        _mm_setcsr(on ? (csr | 0x8040u) : (csr & ~0x8040u));
    }
    static int fg_set_flush_denormal(int on, int n_threads) {
        fg_set_ftz_daz_here(on);
        #ifdef _OPENMP
        /* MXCSR is per thread: set it in every thread of the OpenMP pool as well. */
        #pragma omp parallel num_threads(n_threads)
        fg_set_ftz_daz_here(on);
        #endif
        return 1;
    }
    #else
    static int fg_set_flush_denormal(int on, int n_threads) { return 0; }
    #endif
    #if defined(__AVX512F__)
    static const char *fg_build_target(void) { return "avx512"; }
    #elif defined(__AVX2__) && defined(__FMA__)
    static const char *fg_build_target(void) { return "x86-64-v3 (avx2+fma)"; }
    #elif defined(__SSE2__)
    static const char *fg_build_target(void) { return "sse2"; }
    #else
    static const char *fg_build_target(void) { return "generic"; }
    #endif
    """
    int fg_openmp_enabled() nogil
    int fg_omp_max_threads() nogil
    const char *fg_build_target() nogil
    int fg_set_flush_denormal(int on, int n_threads) nogil


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return bool(fg_openmp_enabled())


def omp_max_threads():
    """OpenMP's own default thread count (1 without OpenMP)."""
    return fg_omp_max_threads()


def build_target():
    """The instruction set the compiler targeted for this build variant (the floor of
    what its code may execute; hand-written kernels dispatch above it at run time)."""
    return fg_build_target().decode()


cdef extern from "cpu_features.h" nogil:
    size_t fg_cache_bytes(int level)


def cpu_simd_level():
    """The highest SIMD level this CPU and OS can execute: 0 baseline, 1 AVX2+FMA
    (x86-64-v3), 2 AVX-512F."""
    return fg_cpu_simd_level()


def cache_bytes(int level):
    """The data cache of ``level`` (1, 2 or 3) in bytes, as the OS reports it (or the
    default kernels assume when it reports nothing)."""
    if level not in (1, 2, 3):
        raise ValueError(f"cache_bytes: level must be 1, 2 or 3, got {level}")
    return fg_cache_bytes(level)


def set_flush_denormal(bint on, int n_threads):
    """Set flush-to-zero and denormals-are-zero in this thread and the OpenMP pool's threads.

    Returns False where the CPU has no such mode (non-x86 builds)."""
    if n_threads < 1:
        raise ValueError(f"set_flush_denormal: n_threads must be positive, got {n_threads}")
    cdef int ok
    with nogil:
        ok = fg_set_flush_denormal(on, n_threads)
    return bool(ok)
