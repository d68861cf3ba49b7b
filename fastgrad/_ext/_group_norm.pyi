"""Signatures of ``fastgrad._ext._group_norm`` (compiled from ``src_c/_group_norm.pyx``; the same
module built for x86-64-v3 lives in ``fastgrad._ext.v3``). The pure-Python twins in
``fastgrad/reference/group_norm.py`` have the same names and signatures; the docstrings of
either say which arrays are IN and OUT."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

# float32 or float64 (one dtype per call), C-contiguous
Array = NDArray[np.floating[Any]]

def group_norm_backward(
    x: Array,
    grad_out: Array,
    weight: Array | None,
    mean: Array,
    rstd: Array,
    num_groups: int,
    grad_input: Array | None,
    grad_weight: Array | None,
    grad_bias: Array | None,
    n_threads: int = 1,
) -> None: ...
def group_norm_forward(
    x: Array,
    weight: Array | None,
    bias: Array | None,
    num_groups: int,
    eps: float,
    out: Array,
    mean: Array,
    rstd: Array,
    n_threads: int = 1,
) -> None: ...
def layer_norm_backward(
    x: Array,
    grad_out: Array,
    weight: Array | None,
    mean: Array,
    rstd: Array,
    grad_input: Array | None,
    grad_weight: Array | None,
    grad_bias: Array | None,
    n_threads: int = 1,
) -> None: ...
def layer_norm_forward(
    x: Array,
    weight: Array | None,
    bias: Array | None,
    eps: float,
    out: Array,
    mean: Array,
    rstd: Array,
    n_threads: int = 1,
) -> None: ...
