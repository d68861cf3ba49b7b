"""Signatures of ``fastgrad._ext._loss`` (compiled from ``src_c/_loss.pyx``; the same
module built for x86-64-v3 lives in ``fastgrad._ext.v3``). The pure-Python twins in
``fastgrad/reference/loss.py`` have the same names and signatures; the docstrings of
either say which arrays are IN and OUT."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 or float64 (one dtype per call), C-contiguous
Array = NDArray[np.floating[Any]]
IntArray = NDArray[np.int64]

def binary_cross_entropy_with_logits_forward(
    input: Array,
    target: Array,
    weight: Array | None,
    pos_weight: Array | None,
    grad_scale: float,
    losses: Array | None,
    grad: Array | None,
    n_threads: int = 1,
) -> float: ...
def cross_entropy_forward(
    logits: Array,
    target: IntArray,
    weight: Array | None,
    ignore_index: int,
    label_smoothing: float,
    normalize: bool,
    losses: Array,
    grad: Array | None,
    n_threads: int = 1,
) -> tuple[float, float]: ...
def mse_loss_backward(diff: Array, grad_loss: Array, scale: float, grad_input: Array, n_threads: int = 1) -> None: ...
def mse_loss_forward(input: Array, target: Array, diff: Array, squares: Array | None, n_threads: int = 1) -> float: ...
def nll_loss_backward(
    target: IntArray,
    weight: Array | None,
    ignore_index: int,
    grad_losses: Array,
    grad_input: Array,
    n_threads: int = 1,
) -> None: ...
def nll_loss_forward(
    log_probs: Array,
    target: IntArray,
    weight: Array | None,
    ignore_index: int,
    losses: Array,
    n_threads: int = 1,
) -> tuple[float, float]: ...

# the SIMD level this module's kernels dispatch on (0 baseline, 1 AVX2+FMA, 2 AVX-512F);
# fastgrad.kernels.use_simd / FASTGRAD_SIMD select it in every module
def _select_simd(level: int) -> int: ...
def _simd_level() -> int: ...

# the highest SIMD level this module has code for (_simd_level is capped at it)
SIMD_KERNELS_TOP: int
