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
