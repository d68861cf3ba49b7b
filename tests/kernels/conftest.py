"""Kernel tests: compiled against reference, on the SIMD path fastgrad.kernels runs
(FASTGRAD_SIMD; CI runs this directory once per path in ``kernels.simd_paths()``) and,
where a test names them, on every build and SIMD level of a family (simd_builds.py).

The helper modules are imported by name, so this directory is put on sys.path here (the
suite imports test files with --import-mode=importlib, which does not do that itself)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
