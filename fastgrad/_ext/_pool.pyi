"""Signatures of ``fastgrad._ext._pool`` (compiled from ``src_c/_pool.pyx``; the same
module built for x86-64-v3 lives in ``fastgrad._ext.v3``). The pure-Python twins in
``fastgrad/reference/pool.py`` have the same names and signatures; the docstrings of
either say which arrays are IN and OUT."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 or float64 (one dtype per call), C-contiguous
Array = NDArray[np.floating[Any]]
IntArray = NDArray[np.int64]

def adaptive_avg_pool2d_backward(grad_out: Array, grad_x: Array, n_threads: int) -> None: ...
def adaptive_avg_pool2d_forward(x: Array, out: Array, n_threads: int) -> None: ...
def avg_pool2d_backward(
    grad_out: Array,
    grad_x: Array,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    count_include_pad: bool,
    divisor_override: int | None,
    n_threads: int,
) -> None: ...
def avg_pool2d_forward(
    x: Array,
    out: Array,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    count_include_pad: bool,
    divisor_override: int | None,
    n_threads: int,
) -> None: ...
def max_pool2d_backward(grad_out: Array, indices: IntArray, grad_x: Array, n_threads: int) -> None: ...
def max_pool2d_forward(
    x: Array,
    out: Array,
    indices: IntArray,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    n_threads: int,
) -> None: ...

# the SIMD level this module's kernels dispatch on (0 baseline, 1 AVX2+FMA, 2 AVX-512F);
# fastgrad.kernels.use_simd / FASTGRAD_SIMD select it in every module
def _select_simd(level: int) -> int: ...
def _simd_level() -> int: ...

# the highest SIMD level this module has code for (_simd_level is capped at it)
SIMD_KERNELS_TOP: int
