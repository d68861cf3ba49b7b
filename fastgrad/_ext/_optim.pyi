"""Signatures of ``fastgrad._ext._optim`` (compiled from ``src_c/_optim.pyx``; the same
module built for x86-64-v3 lives in ``fastgrad._ext.v3``). The pure-Python twins in
``fastgrad/reference/optim.py`` have the same names and signatures; the docstrings of
either say which arrays are IN and OUT."""

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 or float64 (one dtype per call), C-contiguous
Array = NDArray[np.floating[Any]]

def adam_step(
    params: Sequence[Array],
    grads: Sequence[Array],
    exp_avgs: Sequence[Array],
    exp_avg_sqs: Sequence[Array],
    max_exp_avg_sqs: Sequence[Array],
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    n_threads: int,
) -> None: ...
def rmsprop_step(
    params: Sequence[Array],
    grads: Sequence[Array],
    square_avgs: Sequence[Array],
    grad_avgs: Sequence[Array],
    momentum_buffers: Sequence[Array],
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
    n_threads: int,
) -> None: ...
def sgd_step(
    params: Sequence[Array],
    grads: Sequence[Array],
    momentum_buffers: Sequence[Array],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    first_step: bool,
    n_threads: int,
) -> None: ...

# the SIMD level this module's kernels dispatch on (0 baseline, 1 AVX2+FMA, 2 AVX-512F);
# fastgrad.kernels.use_simd / FASTGRAD_SIMD select it in every module
def _select_simd(level: int) -> int: ...
def _simd_level() -> int: ...

# the highest SIMD level this module has code for (_simd_level is capped at it)
SIMD_KERNELS_TOP: int

def adadelta_step(
    params: list[Array],
    grads: list[Array],
    square_avgs: list[Array],
    acc_deltas: list[Array],
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    n_threads: int,
) -> None: ...
def adagrad_step(
    params: list[Array],
    grads: list[Array],
    state_sums: list[Array],
    step: int,
    lr: float,
    lr_decay: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    n_threads: int,
) -> None: ...
