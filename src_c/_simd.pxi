# The SIMD selection of this extension module (src_c/cpu_features.h), included by every
# family that dispatches on it. fastgrad.kernels selects one level in every module it
# binds (FASTGRAD_SIMD); kernels read fg_simd_level() when they plan or dispatch. The
# including .pyx sets SIMD_KERNELS_TOP, the highest level it has code for.

cdef extern from "cpu_features.h" nogil:
    int fg_cpu_simd_level()
    int fg_simd_level()
    int fg_simd_select(int level)
    int FG_SIMD_BUILD_FLOOR


def _select_simd(int level):
    """Dispatch this module's kernels at ``level`` (0: baseline, 1: AVX2+FMA, 2: AVX-512F)
    from now on. Raises ValueError, changing nothing, when this CPU cannot execute that
    level or this build variant compiles everything above it. Not thread-safe: select
    before kernels run."""
    if fg_simd_select(level) < 0:
        raise ValueError(
            f"SIMD level {level} cannot run in {__name__}: this CPU runs levels 0..."
            f"{fg_cpu_simd_level()} and this build variant levels {FG_SIMD_BUILD_FLOOR} and up")
    return level


def _simd_level():
    """The SIMD level this module's kernels run at now: the selected level, capped at the
    highest one this module has code for (SIMD_KERNELS_TOP, set by the including .pyx)."""
    return min(fg_simd_level(), SIMD_KERNELS_TOP)
