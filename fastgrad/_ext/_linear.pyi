"""Signatures of ``fastgrad._ext._linear`` (compiled from ``src_c/_linear.pyx``; the same
module built for x86-64-v3 lives in ``fastgrad._ext.v3``). The pure-Python twins in
``fastgrad/reference/linear.py`` have the same names and signatures; the docstrings of
either say which arrays are IN and OUT."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 or float64 (one dtype per call), C-contiguous
Array = NDArray[np.floating[Any]]

def linear_backward(
    x: Array,
    grad_out: Array,
    relu_out: Array | None,
    weight: Array,
    grad_x: Array | None,
    grad_weight: Array | None,
    grad_bias: Array | None,
    n_threads: int,
) -> None: ...
def linear_backward_bias(grad_out: Array, grad_bias: Array, n_threads: int) -> None: ...
def linear_backward_input(grad_out: Array, weight: Array, grad_x: Array, n_threads: int) -> None: ...
def linear_backward_weight(x: Array, grad_out: Array, grad_weight: Array, n_threads: int) -> None: ...
def linear_forward(
    x: Array,
    weight: Array,
    bias: Array | None,
    out: Array,
    apply_relu: bool,
    n_threads: int,
) -> None: ...

# the SIMD level this module's kernels dispatch on (0 baseline, 1 AVX2+FMA, 2 AVX-512F);
# fastgrad.kernels.use_simd / FASTGRAD_SIMD select it in every module
def _select_simd(level: int) -> int: ...
def _simd_level() -> int: ...

# the highest SIMD level this module has code for (_simd_level is capped at it)
SIMD_KERNELS_TOP: int
