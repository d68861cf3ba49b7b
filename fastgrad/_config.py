"""Process-wide settings read by every kernel call: the thread count, the RNG, and the
``show_config`` report.

The thread count is passed to each compiled kernel as an argument at call time, never
stored inside the extension, so changing it from one Python thread cannot disturb a
kernel already running in another.
"""

import os
import platform
import sys

import numpy as np


def _default_threads():
    for var in ("FASTGRAD_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


_num_threads = _default_threads()


def set_num_threads(n):
    """Set how many threads every compiled kernel may use (as torch.set_num_threads)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    _num_threads = int(n)


def get_num_threads():
    """The number of threads compiled kernels use."""
    return _num_threads


_deterministic = False


def use_deterministic_algorithms(mode, *, warn_only=False):
    """Ask for deterministic kernels (as torch.use_deterministic_algorithms).

    Every fastgrad kernel is already deterministic for a given thread count: work is split
    statically and reductions run in a fixed order, with no atomics. The flag is recorded
    so that code written for PyTorch runs unchanged, and any future kernel with a faster
    non-deterministic path must consult it."""
    global _deterministic
    _deterministic = bool(mode)


def are_deterministic_algorithms_enabled():
    return _deterministic


def set_flush_denormal(mode):
    """Flush denormal floats to zero in the compiled kernels (as torch.set_flush_denormal).

    Denormal weights or activations can slow CPU arithmetic tens of times. The mode is set
    in the calling thread and the kernels' OpenMP threads. Returns True when supported."""
    from . import kernels

    if kernels.runtime is None:
        return False
    return kernels.runtime.set_flush_denormal(bool(mode), max(get_num_threads(), 1))


# One generator for factories, initializers and dropout; reseeded by manual_seed.
_rng = np.random.default_rng()


def manual_seed(seed):
    """Seed fastgrad's random number generator (as torch.manual_seed)."""
    global _rng
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed: expected an integer seed, got {type(seed).__name__}")
    _rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    return _rng


def rng():
    """The current numpy Generator behind fastgrad's random factories."""
    return _rng


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_LEVEL_NAMES = {2: "avx512", 1: "avx2", 0: "baseline"}


def simd_report():
    """What runs, as a dict: the SIMD path fastgrad selected, how (FASTGRAD_SIMD or the
    best), the paths this CPU can run, the build variant that runs it and what its
    compiler targeted, and, per compiled family, the level its kernels dispatch on now
    (read back from each module, so it is the level that runs, not the one compiled)."""
    from . import kernels

    forced = os.environ.get("FASTGRAD_SIMD", "").strip().lower()
    report = {
        "simd path": kernels.simd_path or "none (pure Python)",
        "simd chosen by": (
            f"use_simd / FASTGRAD_SIMD={forced}" if forced not in ("", "auto") else "best this CPU runs"
        ),
        "simd paths (cpu)": ", ".join(kernels.simd_paths()),
    }
    if kernels.backend == "compiled":
        report["build variant"] = f"{kernels.simd_variant} ({kernels.runtime.build_target()})"
        levels = {}
        for family in kernels.FAMILIES:
            mod = sys.modules[getattr(kernels, _first_kernel(family)).__module__]
            level = getattr(mod, "_simd_level", None)
            levels[family] = _LEVEL_NAMES[level()] if level else "build's code"
        report["family levels"] = ", ".join(f"{f} {v}" for f, v in levels.items())
        report["caches"] = ", ".join(f"L{i} {kernels.runtime.cache_bytes(i) >> 10} KiB" for i in (1, 2, 3))
    return report


def _first_kernel(family):
    import importlib

    return importlib.import_module(f"fastgrad.reference.{family}").__all__[0]


def config_dict():
    """What ``show_config`` prints, as a dict."""
    from . import __version__, kernels

    info = {
        "fastgrad": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "backend": kernels.backend,
        "simd variant": kernels.simd_variant or "none (pure Python)",
        "openmp": None,
        "threads": get_num_threads(),
        "cpu": _cpu_model(),
    }
    info.update(simd_report())
    if kernels.runtime is not None:
        info["openmp"] = kernels.runtime.openmp_enabled()
        if info["openmp"]:
            from ._openmp import policy

            info["openmp wait policy"] = policy()
    if kernels.load_error:
        info["compiled load error"] = kernels.load_error
    try:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if blas:
            info["blas"] = (
                f"{blas[0].get('internal_api')} {blas[0].get('version')} ({blas[0].get('num_threads')} threads)"
            )
    except ImportError:
        pass
    return info


def show_config():
    """Print the active backend, OpenMP, the SIMD path that runs (per family), threads,
    CPU, caches and versions."""
    for key, value in config_dict().items():
        print(f"{key:>20}: {value}")
