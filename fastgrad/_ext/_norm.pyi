"""Signatures of ``fastgrad._ext._norm`` (compiled from ``src_c/_norm.pyx``; the same
module built for x86-64-v3 lives in ``fastgrad._ext.v3``). The pure-Python twins in
``fastgrad/reference/norm.py`` have the same names and signatures; the docstrings of
either say which arrays are IN and OUT."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 or float64 (one dtype per call), C-contiguous
Array = NDArray[np.floating[Any]]

def batch_norm_backward(
    grad_out: Array,
    x: Array,
    weight: Array | None,
    save_mean: Array,
    save_invstd: Array,
    use_batch_stats: bool,
    grad_input: Array | None,
    grad_weight: Array | None,
    grad_bias: Array | None,
    n_threads: int = 1,
    relu_out: Array | None = None,
) -> None: ...
def batch_norm_forward_eval(
    x: Array,
    weight: Array | None,
    bias: Array | None,
    running_mean: Array,
    running_var: Array,
    eps: float,
    out: Array,
    save_invstd: Array,
    n_threads: int = 1,
    relu: bool = False,
) -> None: ...
def batch_norm_forward_train(
    x: Array,
    weight: Array | None,
    bias: Array | None,
    running_mean: Array | None,
    running_var: Array | None,
    momentum: float,
    eps: float,
    out: Array,
    save_mean: Array,
    save_invstd: Array,
    n_threads: int = 1,
    relu: bool = False,
) -> None: ...

# the SIMD level this module's kernels dispatch on (0 baseline, 1 AVX2+FMA, 2 AVX-512F);
# fastgrad.kernels.use_simd / FASTGRAD_SIMD select it in every module
def _select_simd(level: int) -> int: ...
def _simd_level() -> int: ...

# the highest SIMD level this module has code for (_simd_level is capped at it)
SIMD_KERNELS_TOP: int
