"""Every compiled build of a kernel family and every SIMD level each can run on this CPU.

The baseline build runs every level the CPU has (its hand-written kernels dispatch at run
time); the x86-64-v3 build runs AVX2 and up. ``at_level`` selects one for a test and
restores the module's level after, so a test can cover a path the bound one does not run.
"""

import contextlib
import importlib

from fastgrad import kernels

CPU_LEVEL = kernels.SIMD_LEVELS[kernels.simd_paths()[0]]
LEVEL_NAMES = {level: name for name, level in kernels.SIMD_LEVELS.items()}


def builds(family, levels=(0, 1, 2)):
    """``"module:level"`` ids of every build of ``family`` present and each of ``levels``
    it can run here (levels above the CPU's are left out)."""
    found = []
    for pkg, floor in (("fastgrad._ext", 0), ("fastgrad._ext.v3", 1)):
        if floor > CPU_LEVEL:
            continue  # importing an x86-64-v3 build on an older CPU could fault
        try:
            importlib.import_module(f"{pkg}._{family}")
        except ImportError:
            continue
        found += [f"{pkg}._{family}:{LEVEL_NAMES[lv]}" for lv in levels if floor <= lv <= CPU_LEVEL]
    return found


@contextlib.contextmanager
def at_level(build_id):
    """The module of a ``builds`` id with its level selected; the level restored after."""
    name, _, level = build_id.partition(":")
    module = importlib.import_module(name)
    previous = module._simd_level()
    module._select_simd(kernels.SIMD_LEVELS[level])
    try:
        yield module
    finally:
        module._select_simd(previous)
